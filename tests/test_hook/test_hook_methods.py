"""InfoBatchHook method by method, on a stand-in runner.

The hook is called as mmengine's loop calls it (``before_train``, then
``before_train_iter`` / the losses / ``after_train_iter`` per batch), with
real samplers and real ``InfoBatchLoss`` terms but no model and no data
pipeline, so each test takes milliseconds and states exactly what reaches
the losses, the score table, the schedulers, the loop's end and the
checkpoint.
"""
import pytest
import torch
import torch.nn.functional as F
from helpers.stand_in import (BATCH, DELTA, IGNORE, LOSS_WEIGHTS, PASSES,
                              CountingScheduler, N, seg_logits_labels,
                              stand_in_runner, start_hook, step, train)

from mmseg_infobatch import InfoBatchHook
from mmseg_infobatch.sampler.state import sample_tables

# 12 images, batch 2: 6 iterations a full pass; delta * C = 2.8: passes 1,
# 2 prune, 3 anneals.
FULL = N // BATCH
BUDGET = PASSES * FULL
EMPTY = 5  # an image without a valid pixel: never scored

LOGITS, LABELS = seg_logits_labels(N, 0)
LABELS[EMPTY] = IGNORE


def _expected_scores(batch):
    """Per image: the mean over its valid pixels of each term's loss,
    summed over the terms."""
    per_px = F.cross_entropy(
        LOGITS[batch], LABELS[batch], reduction='none', ignore_index=IGNORE)
    valid = LABELS[batch] != IGNORE
    mean = (per_px * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
    return mean * sum(LOSS_WEIGHTS)


def _runner(seed=3, iteration=0, by_epoch=False):
    """A stand-in runner whose two schedulers, iteration- and epoch-based,
    count the steps the hook adds."""
    return stand_in_runner(
        (LOGITS, LABELS),
        seed=seed,
        iteration=iteration,
        by_epoch=by_epoch,
        param_schedulers=[CountingScheduler(False),
                          CountingScheduler(True)],
        logger='test_hook_methods')


def test_each_wrapped_loss_gets_the_pass_weights_of_its_batch():
    runner = _runner()
    hook = start_hook(runner)
    rows = train(hook, runner)
    rescaled = 0
    for row in rows:
        expected = row['pass_weights'][row['batch']]
        for got in row['handed']:
            assert torch.equal(got, expected), row['iter']
        rescaled += int((expected == 2).sum())
        # Cleared after the iteration: validation runs unweighted.
        assert all(row['cleared'])
    assert rescaled > 0  # the pruned passes did rescale
    assert [r.may_prune for r in hook.history] == [True, True, True, False]


def test_only_the_trained_batch_is_scored_with_the_sum_of_its_terms():
    runner = _runner()
    hook = start_hook(runner)
    rows = train(hook, runner)
    for row in rows:
        (scores0, seen0), (scores1, seen1) = row['before'], row['after']
        batch = row['batch']
        others = torch.ones(N, dtype=torch.bool)
        others[batch] = False
        # Pruned and not-yet-trained samples keep their old score.
        assert torch.equal(scores1[others], scores0[others]), row['iter']
        assert torch.equal(seen1[others], seen0[others])
        valid = batch != EMPTY
        torch.testing.assert_close(scores1[batch[valid]],
                                   _expected_scores(batch[valid]))
        assert seen1[batch[valid]].all()
        # No valid pixel: the old score stays, and the sample stays unseen.
        assert not seen1[EMPTY] and scores1[EMPTY] == 0
    assert hook.num_skipped_scores == sum(
        int((row['batch'] == EMPTY).sum()) for row in rows)


def test_schedulers_step_by_data_progress():
    runner = _runner()
    hook = start_hook(runner)
    rows = train(hook, runner)
    assert runner.iter < BUDGET  # pruned passes shortened the run
    for row in rows:
        # mmengine steps once a batch; the hook adds the rest, so the step
        # count is the full-data progress, up to the budget.
        assert row['iter'] + 1 + row['steps'] == min(row['virtual'], BUDGET)
        assert row['epoch_steps'] == 0  # epoch schedulers are not stepped
    assert rows[-1]['iter'] + 1 + rows[-1]['steps'] == BUDGET


def test_loop_end_moves_earlier_by_each_pruned_pass():
    runner = _runner()
    hook = start_hook(runner)
    rows = train(hook, runner)
    saved = 0
    for record in hook.history:
        saved += FULL - record.iters
        ends = {
            row['end']
            for row in rows if row['pass_idx'] == record.pass_idx
        }
        assert ends == {BUDGET - saved}, record
    assert runner.iter == runner.train_loop.max_iters == BUDGET - saved
    assert saved > 0


def test_epoch_based_budget_is_epochs_of_full_passes():
    runner = _runner(by_epoch=True)
    hook = start_hook(runner)
    assert hook.sampler.plan.budget_iters == PASSES * FULL
    assert hook.sampler.prune_stop == pytest.approx(DELTA * PASSES)


def test_resume_without_state_offsets_progress_and_annealing():
    # A run resumed at iteration 6 from a checkpoint made without
    # InfoBatch: its first pass starts fresh (full), and the annealing
    # point and the end count the 6 iterations already made.
    runner = _runner(iteration=FULL)
    hook = start_hook(runner)
    assert hook.sampler.plan.offset == FULL
    assert hook.sampler.prune_stop == pytest.approx(DELTA * PASSES - 1)
    # mmengine draws 6 batches to skip what was trained: filler first,
    # then the fresh first pass.
    replay = list(iter(hook.sampler))
    assert len(replay) == FULL * BATCH + N
    assert sorted(replay[FULL * BATCH:]) == list(range(N))
    rows = train(hook, runner)
    assert [r.may_prune for r in hook.history] == [True, True, False]
    assert hook.history[0].pruned == 0 and hook.history[1].pruned > 0
    saved = sum(FULL - r.iters for r in hook.history)
    assert runner.iter == BUDGET - saved
    assert rows[-1]['iter'] + 1 + rows[-1]['steps'] == BUDGET


def _as_format_3(state):
    """The InfoBatch state as version 0.1 wrote it (format 3): the pass
    decision's statistics also in the sampler's state, the full pass length
    in the progress state, no capped or expected in the history."""
    last = state['history']
    state['sampler']['pass_stats'] = dict(
        threshold=float(last['threshold'][-1]),
        candidates=int(last['candidates'][-1]),
        pruned=int(last['pruned'][-1]),
        ratio=float(last['ratio'][-1]))
    state['progress']['full_batches'] = FULL
    for key in ('capped', 'expected'):
        del last[key]
    state['format'] = 3


def test_a_checkpoint_of_another_format_is_refused_with_the_fix():
    runner = _runner()
    hook = start_hook(runner)
    train(hook, runner, until=FULL + 1)
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    checkpoint['infobatch']['format'] = 99  # a later version's
    with pytest.raises(ValueError, match='(?s)another format.*load_from'):
        start_hook(_runner(iteration=FULL + 1), checkpoint)


@pytest.mark.parametrize('old_format', [False, True])
@pytest.mark.parametrize('resume_at', [FULL + 3, 2 * FULL])
def test_checkpoint_round_trip_continues_the_same_run(resume_at, old_format,
                                                      tmp_path):
    runner = _runner()
    hook = start_hook(runner)
    train(hook, runner, until=resume_at)
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    if old_format:
        _as_format_3(checkpoint['infobatch'])
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    position = hook.sampler.trained_batches
    share = hook.sampler.served.rank_indices().tolist()
    steps = runner.param_schedulers[0].steps
    rest = train(hook, runner)

    # Another seed in the config: the checkpoint's wins.
    resumed = _runner(seed=99, iteration=resume_at)
    # mmengine restores the schedulers from their own checkpoint entry.
    resumed.param_schedulers[0].steps = steps
    other = start_hook(resumed, loaded)
    sampler = other.sampler
    assert (sampler.seed, sampler.pass_idx, sampler.trained_batches) == (
        3, loaded['infobatch']['sampler']['pass_idx'], position)
    assert other.sampler.plan.state_dict() == hook.sampler.plan.state_dict()
    fields = [(r.pass_idx, r.start_iter, r.kept, r.iters, r.ratio)
              for r in other.history]
    assert fields == [(r.pass_idx, r.start_iter, r.kept, r.iters, r.ratio)
                      for r in hook.history[:len(fields)]]
    # mmengine draws resume_at batches: filler up to the saved position,
    # then the saved pass from its start.
    replay = list(iter(sampler))
    filler = (resume_at - position) * BATCH
    assert replay[filler:] == share
    rows = train(other, resumed)
    assert len(rows) == len(rest)
    for got, want in zip(rows, rest):
        assert got['iter'] == want['iter']
        assert torch.equal(got['batch'], want['batch']), got['iter']
        for a, b in zip(got['handed'], want['handed']):
            assert torch.equal(a, b), got['iter']
        assert torch.equal(got['after'][0], want['after'][0])
        assert torch.equal(got['after'][1], want['after'][1])
        assert got['end'] == want['end'], got['iter']
        assert got['virtual'] == want['virtual']
        assert got['steps'] == want['steps'], got['iter']
    # repr: the first pass's threshold is NaN, which never equals itself.
    assert repr(other.history) == repr(hook.history)
    assert other.num_skipped_scores == hook.num_skipped_scores > 0


def _as_format_2(state):
    """The InfoBatch state as versions before the compact tables wrote it
    (format 2): format 3's, with the sampler's plain tables (a bool seen
    mask, float32 weights, the int64 order), and neither the saving before
    the pass, nor r_t, nor the epoch and the report's state."""
    _as_format_3(state)
    sampler = state['sampler']
    tables = sample_tables(sampler)
    for key in ('seen_bits', 'weight_codes', 'weight_table', 'saved_iters',
                'decision'):
        del sampler[key]
    sampler.update(
        seen=tables['seen'], weights=tables['weights'], order=tables['order'])
    del sampler['pass_stats']['ratio']
    del state['history']['ratio']
    del state['epoch'], state['target']
    state['format'] = 2


def _checkpoint_in_pass_2(fmt):
    """A run trained into pass 2, after pass 1 pruned, and its checkpoint
    of that moment in format ``fmt`` (4: this version's)."""
    runner = _runner()
    hook = start_hook(runner)
    while hook.sampler.pass_idx < 2 or hook.sampler.trained_batches < 2:
        step(hook, runner)
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    if fmt == 3:
        _as_format_3(checkpoint['infobatch'])
        # Format 3 as the compact tables first wrote it: no saving before
        # the pass (target_saving came later).
        del checkpoint['infobatch']['sampler']['saved_iters']
    elif fmt == 2:
        _as_format_2(checkpoint['infobatch'])
    return runner, hook, checkpoint


@pytest.mark.parametrize('fmt', [2, 3])
def test_checkpoint_formats_2_and_3_still_resume(fmt, tmp_path):
    runner, hook, checkpoint = _checkpoint_in_pass_2(fmt)
    assert checkpoint['infobatch']['format'] == fmt
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    loaded = torch.load(path, weights_only=True)
    steps = runner.param_schedulers[0].steps
    resume_at = runner.iter
    rest = train(hook, runner)

    resumed = _runner(iteration=resume_at)
    resumed.param_schedulers[0].steps = steps
    other = start_hook(resumed, loaded)
    assert (other.sampler.pass_idx, other.sampler.trained_batches) == (2, 2)
    assert [(r.pass_idx, r.kept, r.iters) for r in other.history] == \
        [(r.pass_idx, r.kept, r.iters) for r in hook.history[:3]]
    list(iter(other.sampler))  # mmengine draws resume_at batches to skip
    rows = train(other, resumed)
    # The rest of the run, batch by batch, as the uninterrupted one.
    assert len(rows) == len(rest) > 0
    for got, want in zip(rows, rest):
        assert torch.equal(got['batch'], want['batch']), got['iter']
        for a, b in zip(got['handed'], want['handed']):
            assert torch.equal(a, b), got['iter']
        assert (got['end'], got['steps']) == (want['end'], want['steps'])
    assert resumed.iter == runner.iter


@pytest.mark.parametrize('fmt', [2, 3])
def test_saving_before_the_pass_is_restored_from_an_older_checkpoint(fmt):
    runner, hook, checkpoint = _checkpoint_in_pass_2(fmt)
    assert 'saved_iters' not in checkpoint['infobatch']['sampler']
    # What passes 0 (full) and 1 (pruned) saved; the history also holds
    # pass 2, under way, whose saving is not yet made.
    pass_1 = hook.history[1]
    assert pass_1.pass_idx == 1 and pass_1.iters < FULL
    assert hook.history[2].pass_idx == 2 and hook.history[2].iters < FULL
    assert hook.sampler.saved_iters == FULL - pass_1.iters
    other = start_hook(_runner(iteration=runner.iter), checkpoint)
    assert other.sampler.saved_iters == FULL - pass_1.iters


def test_anneal_false_prunes_in_every_pass():
    runner = _runner()
    hook = InfoBatchHook(delta=DELTA, anneal=False)
    hook.before_train(runner)
    assert hook.sampler.prune_stop == float('inf')
    train(hook, runner)
    assert [r.may_prune for r in hook.history] == [True] * len(hook.history)
    assert hook.history[-1].pruned > 0
