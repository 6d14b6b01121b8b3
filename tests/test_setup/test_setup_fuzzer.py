"""Random but legal set-ups, each trained for a few passes on a tiny model.

Every set-up must either be refused before its first iteration with a
message that names the fix, or train to the end with: whole batches of the
user's batch size, every sample trained in every full pass, the final
iteration the log announced, the LR at the schedule's end value, and as
many optimizer steps as mmengine's accumulation rule gives for that many
iterations. A fixed list of seeds runs in CI; ``pytest --fuzz N`` adds N
more (seeds 1000 and up). Two ranks are emulated in one process: the
sampler sees world size 2 and the score gather duplicates rank 0's scores.
"""
import math
import random
import re
from unittest import mock

import pytest
from helpers import SAMPLER_DIST_INFO
from helpers.configs import (ETA_MIN, load_record, tiny_config,
                             train_counting_steps)

from mmseg_infobatch.sampler.run_plan import batches_per_pass

CI_SEEDS = list(range(24))


def pytest_generate_tests(metafunc):
    if 'fuzz_seed' in metafunc.fixturenames:
        extra = metafunc.config.getoption('--fuzz')
        metafunc.parametrize('fuzz_seed',
                             CI_SEEDS + list(range(1000, 1000 + extra)))


def draw_setup(seed: int) -> dict:
    rng = random.Random(seed)
    policy = rng.choice(['mean', 'mean', 'random', 'quantile'])
    sampler = dict(
        policy=policy,
        prune_high=rng.random() < 0.2,
        rescale=rng.random() < 0.8,
        shuffle=rng.random() < 0.9)
    if policy == 'quantile':
        qs = sorted(rng.sample([0.2, 0.4, 0.5, 0.7, 1.0], rng.randint(1, 3)))
        sampler['buckets'] = [(q, rng.choice([0.0, 0.3, 0.8, 0.95]))
                              for q in qs]
    else:
        sampler['ratio'] = rng.choice([0.0, 0.3, 0.5, 0.9, 0.99])
    return dict(
        num_train=rng.randint(1, 40),
        batch_size=rng.randint(1, 5),
        world_size=rng.choice([1, 1, 2]),
        passes=rng.randint(2, 4),
        sampler=sampler,
        hook=dict(
            delta=rng.choice([0.3, 0.5, 0.7, 0.875, 1.0]),
            anneal=rng.random() < 0.85,
            adjust_schedule=rng.random() < 0.85),
        drop_last=rng.random() < 0.25,
        accumulative_counts=rng.choice([1, 1, 2, 3]),
        val_interval=rng.choice([None, None, 3, 7]),
        workers=rng.choice([0, 0, 0, 2]),
        by_epoch=rng.random() < 0.3)


def _train(cfg, world_size):
    """Train with the sampler seeing ``world_size`` ranks; returns the
    runner and its optimizer-step count."""

    def gather(tensor):
        return [tensor] * world_size

    with mock.patch(SAMPLER_DIST_INFO, return_value=(0, world_size)), \
            mock.patch('mmseg_infobatch.hook.infobatch_hook.all_gather',
                       gather):
        return train_counting_steps(cfg)


def test_random_setup(fuzz_seed, ade40_root, tmp_path, no_pass_pause):
    setup = draw_setup(fuzz_seed)
    cfg = tiny_config(tmp_path, ade40_root, **setup)
    cfg.default_hooks.checkpoint.interval = 10**6
    world, batch = setup['world_size'], setup['batch_size']
    if setup['num_train'] < world * batch:
        per_rank = batches_per_pass(setup['num_train'], world, 1)
        if setup['by_epoch'] and setup['drop_last'] and per_rank < batch:
            # mmengine converts the epoch schedule to iterations from the
            # dataloader's length (0 whole batches here) before any hook
            # runs, and refuses first, as it does for stock mmseg.
            error, match = AssertionError, '`epoch_length` must be a ' \
                'positive integer, but got 0'
        else:
            error, match = ValueError, 'fewer than world size x batch ' \
                'size.*Lower train_dataloader.batch_size'
        with pytest.raises(error, match=match):
            _train(cfg, world)
        assert not (tmp_path / 'record_rank0.pth').exists()
        return
    runner, num_steps = _train(cfg, world)
    record = load_record(tmp_path)
    final = record['final_iter']
    assert final == runner.iter > 0

    # Whole batches of the user's size, each from this rank's share.
    assert all(len(b) == batch for b in record['batches']), setup
    shares = {p['pass_idx']: p for p in record['passes']}
    trained = {}
    for row, b in zip(record['iters'], record['batches']):
        trained.setdefault(row[3], []).extend(b)
    last_pass = max(trained)
    for pass_idx, indices in trained.items():
        share = shares[pass_idx]['rank_indices'].tolist()
        if pass_idx < last_pass:
            assert indices == share, (setup, pass_idx)
        else:  # the last pass may end inside, at the budget
            assert indices == share[:len(indices)], (setup, pass_idx)
        full = shares[pass_idx]['padded_order']
        if record['passes'][0] is shares[pass_idx] or \
                not shares[pass_idx]['prunes']:
            # A full pass holds every sample (drop_last cuts only the
            # remainder of a whole batch per rank).
            expected = setup['num_train']
            if setup['drop_last']:
                expected = full.numel()
            assert len(set(full.tolist())) == expected, (setup, pass_idx)

    # The end the log announced last is where training ended.
    text = ''.join(p.read_text() for p in tmp_path.glob('*/*.log'))
    announced = re.findall(r'ends at (\d+)', text)
    assert announced and int(announced[-1]) == final, setup
    assert f'InfoBatch finished: {final} iterations' in text

    # The schedule reached its end value at the last iteration (an
    # epoch-based run with adjust_schedule=False keeps the stock schedule
    # in full-pass iterations, which then ends later than the data).
    if setup['hook']['adjust_schedule'] or not setup['by_epoch']:
        assert record['final_lr'] == pytest.approx(ETA_MIN, rel=1e-6), setup

    # mmengine's rule: an update every accumulative_counts iterations,
    # and the last partial group at the final iteration.
    assert num_steps == math.ceil(final / setup['accumulative_counts'])


def test_fuzzer_seeds_cover_every_branch():
    setups = [draw_setup(s) for s in CI_SEEDS]
    assert any(s['num_train'] < s['world_size'] * s['batch_size']
               for s in setups)  # a refused set-up
    for key, values in (('world_size', {1, 2}), ('workers', {0, 2}),
                        ('by_epoch', {True,
                                      False}), ('drop_last', {True, False}),
                        ('accumulative_counts', {1, 2, 3})):
        assert {s[key] for s in setups} >= values, key
    policies = {s['sampler']['policy'] for s in setups}
    assert policies == {'mean', 'random', 'quantile'}
    assert any(s['val_interval'] for s in setups)
    assert any(not s['hook']['adjust_schedule'] for s in setups)
    assert any(not s['hook']['anneal'] for s in setups)
    assert any(s['sampler'].get('ratio', 0) >= 0.9 for s in setups)
