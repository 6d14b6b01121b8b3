"""What InfoBatchHook exchanges between ranks, with mmengine's all_gather
mocked: nothing on one rank (no process group is needed), and, with
several, the iteration among what every rank must share at the start of
training."""
from unittest import mock

import pytest
import torch
from helpers.stand_in import (BATCH, N, seg_logits_labels, stand_in_runner,
                              start_hook, step, train)

DATA = seg_logits_labels(N, 0)
HOOK_GATHER = 'mmseg_infobatch.hook.infobatch_hook.all_gather'
CHECK_GATHER = 'mmseg_infobatch.hook.consistency.all_gather'
CHECK_DIST_INFO = 'mmseg_infobatch.hook.consistency.get_dist_info'


def _no_gather(tensor):
    raise AssertionError('a single-rank run gathered')


def test_a_single_rank_run_makes_no_collective_call():
    runner = stand_in_runner(DATA, logger='test_hook_ranks')
    hook = start_hook(runner)
    train(hook, runner, until=N // BATCH + 2)
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    with mock.patch(HOOK_GATHER, _no_gather), \
            mock.patch(CHECK_GATHER, _no_gather):
        resumed = stand_in_runner(
            DATA, iteration=runner.iter, logger='test_hook_ranks')
        other = start_hook(resumed, checkpoint)
        list(iter(other.sampler))  # mmengine's replay
        train(other, resumed)
        other.after_train(resumed)
    assert resumed.iter == resumed.train_loop.max_iters


def test_ranks_at_different_iterations_stop_at_the_start_of_training():
    """Rank 1 reports iteration 1 where rank 0 is at 0; everything else
    agrees."""

    def all_gather(local):
        other = local.clone()
        if local.numel() > 2:  # the state digest, iteration first
            other[0] += 1
        return [local, other]

    runner = stand_in_runner(DATA, world=2, logger='test_hook_ranks')
    with mock.patch(CHECK_GATHER, all_gather), \
            mock.patch(CHECK_DIST_INFO, return_value=(0, 2)), \
            pytest.raises(RuntimeError) as info:
        start_hook(runner)
    lines = str(info.value).splitlines()
    assert lines[0] == (
        'InfoBatch state differs across the 2 ranks at the start of '
        'training; they would train passes of different lengths and hang.')
    assert lines[1] == '  iteration: rank 0: 0, rank 1: 1'


def test_ranks_that_agree_start_training():

    def all_gather(local):
        return [local, local.clone()]

    runner = stand_in_runner(DATA, world=2, logger='test_hook_ranks')
    with mock.patch(CHECK_GATHER, all_gather), \
            mock.patch(CHECK_DIST_INFO, return_value=(0, 2)):
        hook = start_hook(runner)
    assert hook.sampler.world_size == 2


def test_each_first_pass_batch_is_handed_to_the_report_with_its_scores():
    """The report's estimate reads pass 0's scores, batch by batch (all
    ranks' scores of the batch, as the score table gets them)."""
    runner = stand_in_runner(DATA, logger='test_hook_ranks')
    hook = start_hook(runner)
    handed = []
    with mock.patch.object(
            hook.report,
            'add_batch',
            side_effect=lambda t, s: handed.append((t, s.copy()))):
        rows = [step(hook, runner) for _ in range(N // BATCH + 1)]
    assert [t for t, _ in handed] == [row['pass_idx'] for row in rows]
    for (_, scores), row in zip(handed, rows):
        table, seen = row['after']
        batch = row['batch']
        assert isinstance(scores, type(table[batch].numpy()))
        valid = seen[batch]
        assert torch.equal(
            torch.from_numpy(scores)[valid], table[batch][valid])
