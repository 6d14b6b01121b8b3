import pytest

from mmseg_infobatch.progress import (batches_per_pass, end_iter,
                                      extra_scheduler_steps, virtual_iter)


def test_batches_per_pass():
    assert batches_per_pass(10, 4, False) == 3
    assert batches_per_pass(10, 4, True) == 2


def test_full_passes_end_at_budget():
    assert end_iter(0, 0, 10, 10, 35) == 35
    assert end_iter(3, 30, 10, 10, 35) == 35


def test_pruned_pass_moves_end_by_its_saving():
    # Pass 1 keeps 6 of 10 batches: the run ends 4 iterations earlier.
    assert end_iter(1, 10, 6, 10, 35) == 31


def test_partial_last_pass_scales():
    # Budget ends half-way into pass 3, which is pruned to 6 batches.
    assert end_iter(3, 28, 6, 10, 35) == 28 + 3


@pytest.mark.parametrize('pass_batches,full', [(6, 10), (7, 10), (10, 10),
                                               (1, 9), (13, 40)])
def test_schedule_steps_add_up_to_full_pass(pass_batches, full):
    steps = sum(1 + extra_scheduler_steps(2, j, pass_batches, full, 10**9)
                for j in range(pass_batches))
    assert steps == full
    assert virtual_iter(2, pass_batches, pass_batches, full) == 3 * full


def test_schedule_steps_stop_at_budget():
    # Budget of 3 iterations inside a pass pruned to 2 of 10 batches: the
    # loop runs end_iter() = 1 iteration, which carries all 3 steps.
    iters = end_iter(0, 0, 2, 10, 3)
    assert iters == 1
    steps = sum(1 + extra_scheduler_steps(0, j, 2, 10, 3)
                for j in range(iters))
    assert steps == 3
