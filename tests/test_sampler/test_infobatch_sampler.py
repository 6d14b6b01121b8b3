import math

import pytest
import torch
from helpers import all_weights, make_sampler

from mmseg_infobatch.sampler.infobatch_sampler import InfoBatchSampler
from mmseg_infobatch.sampler.state import dataset_fingerprint


def _sampler(n=50,
             rank=0,
             world=1,
             batch_size=1,
             drop_last=False,
             prune_stop=math.inf,
             configure=True,
             **kwargs):
    return make_sampler(
        n,
        rank,
        world,
        batch_size if configure else None,
        drop_last,
        prune_stop=prune_stop,
        **kwargs)


def _score_all(sampler, seed=0):
    g = torch.Generator().manual_seed(seed)
    sampler.update_scores(
        torch.arange(sampler.num_samples),
        torch.rand(sampler.num_samples, generator=g))


def _train_pass(sampler):
    """Iterate one pass and count each of its batches as trained, as
    InfoBatchHook does; returns this rank's indices."""
    indices = list(iter(sampler))
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    return indices


def test_first_pass_full_then_prunes_into_full_batches():
    s = _sampler(100, rank=1, world=2, batch_size=8)
    first = _train_pass(s)
    assert s.pass_idx == 0 and s.decision.pruned == 0
    # 100 -> whole batches of world 2 x batch 8: 112 slots, 56 a rank.
    assert s.padded_order.numel() == 112 and len(first) == 56
    assert set(s.padded_order.tolist()) == set(range(100))
    _score_all(s)
    second = _train_pass(s)
    assert s.pass_idx == 1
    assert len(second) == len(s) < 50
    kept = 100 - s.decision.pruned
    assert s.padded_order.numel() == -(-kept // 16) * 16
    assert set(s.padded_order.tolist()) == set(s.padded_order[:kept].tolist())


@pytest.mark.parametrize('n,world,batch', [(17, 1, 2), (3, 1, 2), (17, 2, 2),
                                           (101, 3, 4), (5, 1, 5)])
@pytest.mark.parametrize('ratio', [0.0, 0.5])
def test_every_pass_is_whole_batches_on_every_rank(n, world, batch, ratio):
    samplers = [
        _sampler(
            n,
            rank=r,
            world=world,
            batch_size=batch,
            ratio=ratio,
            prune_stop=2) for r in range(world)
    ]
    for pass_no in range(4):  # full, pruned, pruned, annealing
        for s in samplers:
            if pass_no:
                _score_all(s, pass_no)
            share = _train_pass(s)
            assert len(share) % batch == 0 and len(share) >= batch
        if pass_no in (0, 3):
            assert set(samplers[0].padded_order.tolist()) == set(range(n))


def test_drop_last_cuts_down_to_whole_batches():
    s = _sampler(17, batch_size=4, drop_last=True)
    assert len(_train_pass(s)) == 16 and s.full_pass_batches == 4


@pytest.mark.parametrize('stop,pruning', [(2.6, [1, 2]), (3.0, [1, 2]),
                                          (2.0, [1])])
def test_annealing_starts_at_the_exact_pass(stop, pruning):
    # Passes t < delta * C prune, for fractional and whole-number stops.
    s = _sampler(100, prune_stop=stop)
    _train_pass(s)
    for pass_no in range(1, 5):
        _score_all(s, pass_no)
        _train_pass(s)
        assert s.pass_idx == pass_no
        assert s.prunes_now == (pass_no in pruning)
        if pass_no in pruning:
            assert s.decision.pruned > 0 and (all_weights(s) == 2).any()
        else:
            # Annealing: full data, and every weight reset to 1.
            assert sorted(s.padded_order.tolist()) == list(range(100))
            assert (all_weights(s) == 1).all()


def test_weights_rescale_exactly_the_surviving_candidates():
    s = _sampler(200, ratio=0.3)
    _train_pass(s)
    _score_all(s)
    _train_pass(s)
    below = s.scores < s.scores.double().mean()
    kept = torch.zeros(200, dtype=torch.bool)
    kept[s.order] = True
    assert torch.equal(all_weights(s) == 1 / 0.7, below & kept)
    assert not (~below & ~kept).any()  # only candidates are pruned


def test_tied_scores_prune_nothing():
    s = _sampler(40)
    _train_pass(s)
    s.update_scores(torch.arange(40), torch.full((40, ), 0.25))
    _train_pass(s)
    assert s.decision.candidates == 0 and s.decision.pruned == 0


def test_passes_differ_and_shuffle_false_is_ascending():
    s = _sampler(60, ratio=0.0)
    orders = [_train_pass(s) for _ in range(3)]
    assert orders[0] != orders[1] != orders[2]
    t = _sampler(60, ratio=0.0, shuffle=False)
    assert _train_pass(t) == list(range(60)) == _train_pass(t)


def test_seed_changes_the_order():
    assert _train_pass(_sampler(60,
                                seed=1)) != _train_pass(_sampler(60, seed=2))


def test_iter_is_repeatable_until_the_pass_is_trained():
    s = _sampler(30, batch_size=2)
    first = list(iter(s))
    assert list(iter(s)) == first and s.pass_idx == 0
    s.finish_batch()
    with pytest.raises(RuntimeError, match='restarted after 1 of 15'):
        iter(s)


def test_all_ranks_decide_identically_and_interleave():
    world = 3
    samplers = [_sampler(101, rank=r, world=world) for r in range(world)]
    for pass_no in range(4):
        for s in samplers:
            if pass_no:
                _score_all(s, pass_no)
            _train_pass(s)
        full = samplers[0].padded_order
        assert all(torch.equal(full, s.padded_order) for s in samplers)
        assert all(
            torch.equal(all_weights(samplers[0]), all_weights(s))
            for s in samplers)
        for rank, s in enumerate(samplers):
            # mmengine's DefaultSampler interleaves: rank r takes r::world.
            assert torch.equal(s.served.rank_indices(), full[rank::world])


def test_state_round_trip_and_weights_only_load(tmp_path):
    s = _sampler(40, batch_size=2)
    _train_pass(s)
    _score_all(s)
    list(iter(s))
    s.finish_batch()
    path = tmp_path / 'state.pth'
    torch.save(s.state_dict(), path)
    state = torch.load(path, weights_only=True)
    t = _sampler(40, batch_size=2, seed=99)
    t.load_state_dict(state)
    for key in ('scores', 'seen', 'padded_order', 'order'):
        assert torch.equal(getattr(s, key), getattr(t, key)), key
    assert torch.equal(all_weights(s), all_weights(t))
    assert (t.pass_idx, t.trained_batches, t.seed) == \
        (s.pass_idx, s.trained_batches, 3)
    for _ in range(s.pass_batches - 1):
        s.finish_batch()
        t.finish_batch()
    _score_all(s, 5)
    _score_all(t, 5)
    assert list(iter(s)) == list(iter(t))


@pytest.mark.parametrize('position', [0, 1, 5])
@pytest.mark.parametrize('filler', [0, 3])
def test_replay_lands_on_saved_pass_and_position(position, filler):
    s = _sampler(40, batch_size=2)
    _train_pass(s)
    _score_all(s)
    saved = list(iter(s))
    for _ in range(position):
        s.finish_batch()
    t = _sampler(40, batch_size=2, seed=7)
    t.load_state_dict(s.state_dict())
    t.prepare_replay(filler)
    replay = list(iter(t))
    assert replay[2 * filler:] == saved
    assert len(replay) == 2 * filler + len(saved)
    assert (t.pass_idx, t.trained_batches) == (1, position)
    # The replay is one-shot: after the pass, the next one is decided.
    for _ in range(t.pass_batches - position):
        t.finish_batch()
    list(iter(t))
    assert t.pass_idx == 2


def test_replay_without_state_starts_the_first_pass():
    t = _sampler(10, batch_size=2)
    t.prepare_replay(7)
    replay = list(iter(t))
    assert len(replay) == 14 + 10 and t.pass_idx == 0
    assert sorted(replay[14:]) == list(range(10))


@pytest.mark.parametrize('change,match', [
    (dict(n=41), 'num_samples=40.*num_samples=41'),
    (dict(world=2), 'world_size=1.*world_size=2'),
    (dict(batch_size=3), 'batch_size=2.*batch_size=3.*same train_dataloader'),
    (dict(drop_last=True), 'drop_last=False.*drop_last=True'),
])
def test_resume_refuses_a_changed_layout(change, match):
    s = _sampler(40, batch_size=2)
    _train_pass(s)
    options = dict(n=40, batch_size=2)
    options.update(change)
    with pytest.raises(ValueError, match=match + '.*load_from'):
        _sampler(**options).load_state_dict(s.state_dict())


def test_resume_refuses_other_images_of_the_same_count():

    class Listed(list):

        def __init__(self, paths):
            super().__init__(paths)
            self.data_list = [dict(img_path=p, seg_map_path=p) for p in paths]

    a, b = Listed(['a', 'b', 'c']), Listed(['a', 'b', 'd'])
    assert dataset_fingerprint(a) != dataset_fingerprint(b)
    s = make_sampler(a, batch_size=1, seed=0)
    t = make_sampler(b, batch_size=1, seed=0)
    with pytest.raises(ValueError, match='fingerprint.*same data'):
        t.load_state_dict(s.state_dict())


def test_without_hook_the_second_pass_raises_with_fix():
    s = _sampler(10, configure=False)
    # The prefetch of worker processes before InfoBatchHook runs: no pass
    # is decided before the sampler is configured.
    assert list(iter(s)) == [] and s.pass_idx == -1
    with pytest.raises(
            RuntimeError,
            match="custom_hooks = \\[dict\\(type='InfoBatchHook'"):
        list(iter(s))


def test_a_pass_is_never_empty():
    # 'random' with r = 0.95 drops every one of 16 samples now and then.
    for seed in range(20):
        s = _sampler(16, batch_size=4, policy='random', ratio=0.95, seed=seed)
        _train_pass(s)
        for pass_no in range(1, 4):
            _score_all(s, pass_no)
            assert len(_train_pass(s)) >= 4
            assert s.decision.pruned <= 12


def test_a_refilled_pass_gives_every_rank_a_whole_batch_of_distinct_samples():
    # 'random' at r = 0.95 keeps fewer than 2 ranks x batch 4 of 16
    # samples in most passes: the refill brings such a pass up to 8
    # distinct samples, so that padding repeats none and each rank trains
    # a whole batch of its own.
    refilled = 0
    for seed in range(10):
        ranks = [
            _sampler(
                16,
                rank=r,
                world=2,
                batch_size=4,
                policy='random',
                ratio=0.95,
                seed=seed) for r in (0, 1)
        ]
        for s in ranks:
            _train_pass(s)  # pass 0: full, nothing scored
        for pass_no in range(1, 4):
            for s in ranks:
                _score_all(s, pass_no)
            shares = [_train_pass(s) for s in ranks]
            if ranks[0].order.numel() > 8:
                continue  # not pruned below one batch per rank
            assert ranks[0].order.numel() == 8, (seed, pass_no)
            assert [len(share) for share in shares] == [4, 4]
            assert len(set(shares[0] + shares[1])) == 8, (seed, shares)
            refilled += 1
    assert refilled > 10


def test_update_scores_touches_only_given_finite_samples():
    s = _sampler(6)
    s.update_scores(torch.arange(6), torch.arange(6).float())
    skipped = s.update_scores(
        torch.tensor([0, 1, 2]),
        torch.tensor([10.0, float('nan'), float('inf')]))
    assert skipped == 2
    # A scored sample keeps its old score when its new loss is not finite;
    # samples not in the batch (pruned) keep theirs.
    assert s.scores.tolist() == [10.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    t = _sampler(4)
    t.update_scores(torch.tensor([0, 1]), torch.tensor([1.0, float('nan')]))
    assert t.seen.tolist() == [True, False, False, False]


@pytest.mark.parametrize('kwargs,match', [
    (dict(ratio=1.0), r'ratio .* must be in \[0, 1\), but got 1.0'),
    (dict(ratio=-1), 'but got -1'),
    (dict(policy='sorted'), "policy must be one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoBatchSampler(list(range(4)), seed=0, **kwargs)


def test_empty_dataset_is_named():
    with pytest.raises(ValueError, match='empty dataset'):
        InfoBatchSampler([], seed=0)


def test_too_small_dataset_is_named():
    with pytest.raises(ValueError, match='fewer than world size x batch'):
        _sampler(5, batch_size=6)


def test_deciding_a_pass_leaves_the_score_table_alone():
    # Pruned samples keep their old score (paper Eq. 4): only a trained
    # sample is rescored, and deciding which to train rescores none.
    s = _sampler(100)
    _train_pass(s)
    _score_all(s)
    scores, seen = s.scores.clone(), s.seen.clone()
    _train_pass(s)
    assert s.decision.pruned > 0
    assert torch.equal(s.scores, scores) and torch.equal(s.seen, seen)


def test_update_scores_pairs_each_index_with_its_score():
    s = _sampler(6)
    s.update_scores(torch.tensor([4, 0, 2]), torch.tensor([4.0, 0.5, 2.0]))
    assert s.scores.tolist() == [0.5, 0.0, 2.0, 0.0, 4.0, 0.0]
    assert s.seen.tolist() == [True, False, True, False, True, False]


def test_batch_indices_walk_the_rank_share_batch_by_batch():
    # 20 samples, 2 ranks x batch 3: padded to 24, 4 batches a rank.
    s = _sampler(20, rank=1, world=2, batch_size=3)
    share = list(iter(s))
    assert s.pass_batches == 4
    for position in range(4):
        assert s.batch_indices().tolist() == share[3 * position:3 * position +
                                                   3]
        s.finish_batch()


@pytest.mark.parametrize('policy', ['mean', 'random'])
def test_ratio_zero_is_the_full_data_baseline_with_the_same_shuffles(policy):
    """README: ratio=0 is the full-data baseline "with the same shuffles".
    Under one seed a ratio-0 run trains every sample at weight 1 in every
    pass, with no candidate and no threshold, and its first pass and its
    annealing passes are the pruning run's orders."""
    zero = _sampler(100, ratio=0.0, policy=policy, prune_stop=2)
    pruned = _sampler(100, ratio=0.5, policy=policy, prune_stop=2)
    for pass_idx in range(4):
        orders = []
        for s in (zero, pruned):
            _train_pass(s)
            orders.append(s.order.clone())
            _score_all(s, seed=pass_idx)
        assert zero.decision.kept == 100 and zero.decision.candidates == 0
        assert math.isnan(zero.decision.threshold)
        assert (all_weights(zero) == 1).all()
        if pass_idx == 1:
            assert pruned.decision.pruned > 0
        else:  # pass 0 (nothing scored) and annealing passes 2 and 3
            assert torch.equal(orders[0], orders[1]), pass_idx
