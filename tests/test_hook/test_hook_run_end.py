"""The end of a run on a stand-in runner: the closing line, the saving the
hook hands the report (of the budget the loop did not train, or, where the
loop kept its end, of what the passes saved in data), and the schedulers
of every optimizer stepped by data progress."""
import logging
from unittest import mock

import pytest
from helpers.stand_in import (BATCH, IGNORE, PASSES, CountingScheduler, N,
                              seg_logits_labels, stand_in_runner, start_hook,
                              train)

FULL = N // BATCH
BUDGET = PASSES * FULL
EMPTY = 7  # an image without a valid pixel: its score is skipped
LOGITS, LABELS = seg_logits_labels(N, 1)
LABELS[EMPTY] = IGNORE
LOGGER = 'test_hook_run_end'


def _runner(**kwargs):
    return stand_in_runner((LOGITS, LABELS), logger=LOGGER, **kwargs)


def _finish(hook, runner, caplog):
    """``after_train``: its closing line, and the share saved that it
    hands the report."""
    caplog.clear()
    with caplog.at_level(
            logging.INFO, logger=LOGGER), mock.patch.object(
                hook.report, 'at_end', wraps=hook.report.at_end) as at_end:
        hook.after_train(runner)
    closing = [
        r.getMessage() for r in caplog.records
        if r.getMessage().startswith('InfoBatch finished')
    ]
    (logger, sampler, reached), _ = at_end.call_args
    assert logger is runner.logger and sampler is hook.sampler
    return closing, reached


def test_the_closing_line_counts_iterations_passes_and_skipped_scores(caplog):
    runner = _runner()
    hook = start_hook(runner)
    rows = train(hook, runner)
    closing, reached = _finish(hook, runner, caplog)
    trained = len(rows)
    passes = len({row['pass_idx'] for row in rows})
    skipped = sum(int((row['batch'] == EMPTY).sum()) for row in rows)
    assert trained < BUDGET and passes == PASSES and skipped > 0
    saved = BUDGET - trained
    assert closing == [
        f'InfoBatch finished: {trained} iterations instead of {BUDGET} '
        f'({saved} saved, {saved / BUDGET:.1%}) over {passes} passes; '
        f'{skipped} image scores were skipped (no valid pixel or '
        'non-finite loss).'
    ]
    # The loop ended early: the saving is the budget it did not train.
    assert reached == saved / BUDGET


@pytest.mark.parametrize('max_iters', [13, 14, 19])
def test_a_loop_that_keeps_its_end_reports_what_the_passes_saved_in_data(
        max_iters, caplog):
    """adjust_schedule=False: the loop trains all of ``max_iters``, and
    the saving is each pass's iterations short of a full pass, times the
    share of the pass the budget holds (the one under way at the end
    included)."""
    runner = _runner(max_iters=max_iters)
    hook = start_hook(runner, adjust_schedule=False, anneal=False)
    train(hook, runner)
    assert runner.iter == max_iters
    closing, reached = _finish(hook, runner, caplog)
    assert closing[0].startswith(
        f'InfoBatch finished: {max_iters} iterations instead of '
        f'{max_iters} (0 saved, 0.0%) over {len(hook.history)} passes')
    saved = 0.0
    for record in hook.history:
        start = record.pass_idx * FULL  # in full-data iterations
        share = min(max((max_iters - start) / FULL, 0.0), 1.0)
        saved += share * (FULL - record.iters)
    last = hook.history[-1]
    # The pass under way at the end lies partly inside the budget.
    assert 0 < max_iters - last.pass_idx * FULL < FULL
    assert last.iters < FULL
    assert reached == pytest.approx(saved / max_iters, rel=1e-12)


def test_schedulers_of_every_optimizer_step_by_data_progress():
    """With several optimizers (a dict of scheduler lists), each
    iteration-based scheduler ends at the budget's step count; epoch-based
    ones are left to mmengine."""
    schedulers = dict(
        generator=[CountingScheduler(False),
                   CountingScheduler(True)],
        discriminator=[CountingScheduler(False)])
    runner = _runner(param_schedulers=schedulers)
    hook = start_hook(runner)
    train(hook, runner)
    assert runner.iter < BUDGET
    # mmengine steps once a batch; the hook adds the data progress beyond.
    added = BUDGET - runner.iter
    assert [s.steps for s in schedulers['generator']] == [added, 0]
    assert [s.steps for s in schedulers['discriminator']] == [added]


def test_a_loop_that_keeps_its_end_steps_no_scheduler_beyond_mmengine():
    schedulers = [CountingScheduler(False), CountingScheduler(True)]
    runner = _runner(param_schedulers=schedulers)
    hook = start_hook(runner, adjust_schedule=False)
    train(hook, runner)
    assert runner.iter == BUDGET
    assert hook.history[1].iters < FULL  # a pass did prune
    assert [s.steps for s in schedulers] == [0, 0]


def test_each_pass_line_of_a_loop_that_keeps_its_end_says_so(caplog):
    runner = _runner()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        hook = start_hook(runner, adjust_schedule=False)
        train(hook, runner)
    lines = [
        r.getMessage() for r in caplog.records
        if r.getMessage().startswith('InfoBatch pass ')
    ]
    assert len(lines) == len(hook.history) > PASSES
    for t, line in enumerate(lines):
        # Not "(1/4)": more passes than the schedule's fit in its end.
        assert line.startswith(f'InfoBatch pass {t} ({t + 1}): '), line
        assert line.split(', ends at ')[1].startswith(
            f'{BUDGET} (schedule kept)'), line
