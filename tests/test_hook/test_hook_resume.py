"""InfoBatchHook's checkpoint and resume on a stand-in runner: what the
checkpoint holds on each rank, the seed the resumed run keeps (and when it
says so), and where an epoch-based run resumed from an iteration
checkpoint lands."""
import logging
from unittest import mock

import pytest
from helpers.stand_in import (BATCH, N, seg_logits_labels, stand_in_runner,
                              start_hook, step)

FULL = N // BATCH
DATA = seg_logits_labels(N, 0)
LOGGER = 'test_hook_resume'
DIST_INFO = 'mmseg_infobatch.hook.infobatch_hook.get_dist_info'


def _runner(**kwargs):
    return stand_in_runner(DATA, logger=LOGGER, **kwargs)


def _train_to(hook, runner, pass_idx, batch, epochs=False):
    """Train until ``batch`` batches of pass ``pass_idx`` are trained; an
    epoch-based loop's epoch is the pass (one epoch a pass)."""
    sampler = hook.sampler
    while (sampler.pass_idx, sampler.trained_batches) < (pass_idx, batch):
        step(hook, runner)
        if epochs:
            runner.train_loop._epoch = sampler.pass_idx


def _save(hook, runner):
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    return checkpoint


def _lines(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


# -- the checkpoint -------------------------------------------------------
def test_rank_0_writes_the_state_and_the_loops_epoch():
    runner = _runner(by_epoch=True)
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 2, epochs=True)
    state = _save(hook, runner)['infobatch']
    assert runner.train_loop.epoch == 1
    assert (state['format'], state['epoch']) == (4, 1)
    assert state['progress'] == dict(
        budget_iters=hook.sampler.plan.budget_iters, offset=0)
    assert state['sampler']['pass_idx'] == 1
    assert state['history']['pass'].tolist() == [0, 1]
    assert state['num_unscored'] == hook.num_skipped_scores
    # The pre-flight estimate, made at the start of pass 1.
    assert hook.report.estimate['pass_idx'] == 1
    assert state['target']['estimate_pass'] == 1
    assert state['target']['estimate_saving'] == \
        hook.report.estimate['saving']


@pytest.mark.parametrize('rank,world', [(1, 2), (3, 4)])
def test_other_ranks_note_that_rank_0_holds_the_state(rank, world):
    runner = _runner()
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 1)
    with mock.patch(DIST_INFO, return_value=(rank, world)):
        checkpoint = _save(hook, runner)
    assert checkpoint == dict(
        meta=dict(iter=runner.iter), infobatch=dict(format=4, on_rank0=True))


def test_rank_0_of_several_writes_the_whole_state():
    runner = _runner()
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 1)
    with mock.patch(DIST_INFO, return_value=(0, 2)):
        state = _save(hook, runner)['infobatch']
    assert 'on_rank0' not in state and state['sampler']['pass_idx'] == 1


# -- the seed -------------------------------------------------------------
SEED_WARNING = (
    'InfoBatchSampler seed 99 of the config differs from the checkpoint\'s '
    '3; the checkpoint\'s is used so the resumed run continues the same '
    'passes.')

# (the resumed run's config, whether it fixes the seed)
# yapf: disable
SEED_CONFIGS = [
    ({}, False),
    (dict(randomness=None, train_dataloader=None), False),
    (dict(randomness=dict(seed=None),
          train_dataloader=dict(sampler=dict(seed=None))), False),
    (dict(randomness=dict(seed=99)), True),
    (dict(randomness=dict(seed=0), train_dataloader=dict(sampler=None)),
     True),
    (dict(train_dataloader=dict(sampler=dict(seed=99))), True),
    (dict(randomness=None,
          train_dataloader=dict(sampler=dict(type='InfoBatchSampler',
                                             seed=99))), True),
]
# yapf: enable


@pytest.mark.parametrize('cfg,fixed', SEED_CONFIGS)
def test_a_seed_the_config_fixes_is_overridden_by_the_checkpoints_aloud(
        cfg, fixed, caplog):
    """Stock mmseg configs fix no seed: each run draws its own, and the
    checkpoint's then wins silently; a seed the config fixes (for the run,
    or for the sampler) is overridden with a warning."""
    runner = _runner(seed=3)
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 3)
    checkpoint = _save(hook, runner)
    sampler = hook.sampler
    resumed = _runner(seed=99, iteration=runner.iter)
    resumed.cfg = cfg
    with caplog.at_level(logging.INFO, logger=LOGGER):
        other = start_hook(resumed, checkpoint)
    assert other.sampler.seed == 3
    assert _lines(caplog, logging.WARNING) == ([SEED_WARNING] if fixed else [])
    assert (f'InfoBatch resumed in pass 1 at batch 3/{sampler.pass_batches} '
            '(seed 3).') in _lines(caplog, logging.INFO)


def test_the_checkpoints_own_seed_is_resumed_without_warning(caplog):
    runner = _runner(seed=3)
    hook = start_hook(runner)
    _train_to(hook, runner, 0, 4)
    checkpoint = _save(hook, runner)
    resumed = _runner(seed=3, iteration=runner.iter)
    resumed.cfg = dict(randomness=dict(seed=3))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        start_hook(resumed, checkpoint)
    assert _lines(caplog, logging.WARNING) == []
    assert f'InfoBatch resumed in pass 0 at batch 4/{FULL} (seed 3).' in \
        _lines(caplog, logging.INFO)


def test_the_resume_restores_the_skipped_scores_and_the_estimate():
    runner = _runner()
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 2)
    hook.num_skipped_scores = 7  # as many images without a valid pixel
    checkpoint = _save(hook, runner)
    other = start_hook(_runner(iteration=runner.iter), checkpoint)
    assert other.num_skipped_scores == 7
    assert other.report.estimate == hook.report.estimate
    assert other.report.estimate['pass_idx'] == 1


# -- an epoch-based run resumed ---------------------------------------------
def _rerun_line(epoch, rest, pass_idx):
    return ('Resumed an epoch-based run from an iteration checkpoint: '
            f'mmengine runs epoch {epoch} again from its start, and '
            f'InfoBatch serves in it the {rest} untrained batches of pass '
            f'{pass_idx}.')


def _resume_epoch_run(pass_idx, batch, epoch, caplog, old_format=False):
    """An epoch-based run saved after ``batch`` batches of pass
    ``pass_idx`` (``None``: all of them), resumed in loop epoch ``epoch``:
    the uninterrupted run's hook and the resumed one, its logged lines and
    the indices its next epoch draws."""
    runner = _runner(by_epoch=True)
    hook = start_hook(runner)
    _train_to(hook, runner, pass_idx, 1, epochs=True)
    last = hook.sampler.pass_batches if batch is None else batch
    _train_to(hook, runner, pass_idx, last, epochs=True)
    checkpoint = _save(hook, runner)
    if old_format:
        del checkpoint['infobatch']['epoch']  # as 0.1 wrote it
    resumed = _runner(by_epoch=True, iteration=runner.iter)
    resumed.train_loop._epoch = epoch  # from the checkpoint's meta
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        other = start_hook(resumed, checkpoint)
    lines = [
        line for line in _lines(caplog, logging.INFO)
        if line.startswith('Resumed')
    ]
    return hook, other, lines, list(iter(other.sampler))


@pytest.mark.parametrize('pass_idx,batch', [(0, 2), (1, 1), (1, 3)])
@pytest.mark.parametrize('old_format', [False, True])
def test_an_epoch_rerun_from_an_iteration_checkpoint_serves_the_rest(
        pass_idx, batch, old_format, caplog):
    """mmengine runs the saved epoch again from its start: it gets the
    untrained batches of the saved pass, each trained once overall."""
    hook, other, lines, drawn = _resume_epoch_run(pass_idx, batch, pass_idx,
                                                  caplog, old_format)
    sampler = hook.sampler
    share = sampler.served.rank_indices().tolist()
    rest = sampler.pass_batches - batch
    assert lines == [_rerun_line(pass_idx, rest, pass_idx)]
    assert drawn == share[batch * BATCH:]
    assert other.sampler.pass_idx == pass_idx


def test_an_iteration_checkpoint_at_the_end_of_an_epoch_reruns_it_empty(
        caplog):
    """Saved by iteration after the epoch's last batch, before mmengine
    counts the epoch: its rerun gets no batch, and the next epoch the
    next pass."""
    hook, other, lines, drawn = _resume_epoch_run(1, None, 1, caplog)
    assert lines == [_rerun_line(1, 0, 1)]
    assert drawn == []
    list(iter(other.sampler))
    assert other.sampler.pass_idx == 2


@pytest.mark.parametrize('old_format', [False, True])
def test_an_epoch_checkpoint_resumes_with_the_next_pass(old_format, caplog):
    """Saved by epoch, the checkpoint says the next epoch: the saved pass
    is whole, and the next one starts."""
    hook, other, lines, drawn = _resume_epoch_run(1, None, 2, caplog,
                                                  old_format)
    assert lines == []
    assert other.sampler.pass_idx == 2
    assert sorted(drawn) == sorted(set(drawn))  # one pass, no replay


def test_an_iteration_based_run_is_never_rerun(caplog):
    runner = _runner()
    hook = start_hook(runner)
    _train_to(hook, runner, 1, 3)
    checkpoint = _save(hook, runner)
    resumed = _runner(iteration=runner.iter)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        other = start_hook(resumed, checkpoint)
    assert not any(
        line.startswith('Resumed') for line in _lines(caplog, logging.INFO))
    # mmengine draws runner.iter batches: filler, then the saved pass.
    drawn = list(iter(other.sampler))
    share = hook.sampler.served.rank_indices().tolist()
    assert len(drawn) == runner.iter * BATCH - 3 * BATCH + len(share)
    assert drawn[-len(share):] == share


# -- loading a checkpoint safely --------------------------------------------
@pytest.fixture
def empty_allow_list():
    """torch's safe-load allow-list, emptied for the test and restored."""
    import torch
    serialization = torch.serialization
    if not hasattr(serialization, 'clear_safe_globals'):
        pytest.skip('torch < 2.4 has no safe-load allow-list')
    saved = serialization.get_safe_globals()
    serialization.clear_safe_globals()
    yield serialization.get_safe_globals
    serialization.clear_safe_globals()
    serialization.add_safe_globals(saved)


def test_building_the_hook_allows_mmengines_checkpoint_types(empty_allow_list):
    """FlexibleRunner loads its checkpoint before calling before_run."""
    from mmengine.logging import HistoryBuffer

    from mmseg_infobatch import InfoBatchHook
    assert HistoryBuffer not in empty_allow_list()
    InfoBatchHook()
    assert HistoryBuffer in empty_allow_list()


def test_before_run_allows_mmengines_checkpoint_types(empty_allow_list):
    """The Runner loads its checkpoint after before_run (torch >= 2.6
    loads safely by default)."""
    from types import SimpleNamespace

    from mmengine.logging import HistoryBuffer

    from mmseg_infobatch import InfoBatchHook
    hook = InfoBatchHook()
    import torch
    torch.serialization.clear_safe_globals()  # what building it allowed
    runner = SimpleNamespace(
        hooks=[hook], cfg={}, logger=logging.getLogger(LOGGER))
    hook.before_run(runner)
    assert HistoryBuffer in empty_allow_list()


@pytest.mark.parametrize('resume_at', [1, FULL + 1])
def test_a_resume_at_any_iteration_continues_the_saved_pass(resume_at):
    runner = _runner()
    hook = start_hook(runner)
    while runner.iter < resume_at:
        step(hook, runner)
    checkpoint = _save(hook, runner)
    saved = hook.sampler
    other = start_hook(_runner(iteration=resume_at), checkpoint)
    assert (other.sampler.pass_idx,
            other.sampler.trained_batches) == (saved.pass_idx,
                                               saved.trained_batches)
    assert len(other.history) == len(hook.history)


def test_an_epoch_run_resumed_in_its_first_pass_moves_its_end_at_once():
    """mmengine counts the loop's iterations from the dataloader's length
    before InfoBatch configures the sampler; the hook moves the end to the
    passes' own at the start of training, also when it resumes inside pass
    0 (whose start, where a fresh run moves it, is past). 11 images on 2
    ranks in batches of 2, drop_last: 5 images a rank, 2 batches a pass, 4
    passes."""
    layout = dict(by_epoch=True, world=2, n=11, batch=2, drop_last=True)
    runner = _runner(**layout)
    hook = start_hook(runner)
    step(hook, runner)
    checkpoint = _save(hook, runner)
    resumed = _runner(iteration=1, **layout)
    other = start_hook(resumed, checkpoint)
    assert (other.sampler.pass_idx, other.sampler.trained_batches) == (0, 1)
    assert other.sampler.plan.budget_iters == 4 * 2
    assert resumed.train_loop.max_iters == 4 * 2
