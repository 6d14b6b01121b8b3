import math
from fractions import Fraction

import pytest
import torch

from mmseg_infobatch.sampler.history import (PassRecord, history_from_state,
                                             history_state)
from mmseg_infobatch.sampler.run_plan import (PassPosition, RunPlan,
                                              batches_per_pass)


def _plan(full, budget, offset=0, delta=None):
    """A run plan whose full pass takes ``full`` iterations."""
    return RunPlan(full, 1, budget, offset=offset, delta=delta)


def test_batches_per_pass_is_whole_batches_on_every_rank():
    assert batches_per_pass(10, 1, 4) == 3
    assert batches_per_pass(10, 1, 4, drop_last=True) == 2
    assert batches_per_pass(17, 2, 2) == 5
    # drop_last never cuts a pass to nothing.
    assert batches_per_pass(3, 1, 4, drop_last=True) == 1


def test_full_passes_end_at_budget():
    progress = _plan(10, 35)
    assert progress.end_iter(PassPosition(0, 0, 10), 0) == 35
    assert progress.end_iter(PassPosition(3, 0, 10), 30) == 35


def test_pruned_pass_moves_end_by_its_saving():
    # Pass 1 keeps 6 of 10 batches: the run ends 4 iterations earlier.
    assert _plan(10, 35).end_iter(PassPosition(1, 0, 6), 10) == 31


def test_partial_last_pass_scales():
    # Budget ends half-way into pass 3, which is pruned to 6 batches.
    assert _plan(10, 35).end_iter(PassPosition(3, 0, 6), 28) == 28 + 3


@pytest.mark.parametrize('budget,pass_batches', [(32, 6), (31, 6), (34, 6),
                                                 (37, 9), (31, 3), (33, 7)])
def test_progress_end_rounds_a_partial_last_pass_up(budget, pass_batches):
    # The budget ends inside pass 3 (starting at iteration 30), which is
    # pruned to ``pass_batches`` batches of 10 / pass_batches full-data
    # iterations each: training ends after the fewest batches that reach
    # the budget, not one short of it (e.g. budget 32, 6 batches: one
    # batch is 1.67 of the 2 iterations left, so two batches, not the
    # 1.2 rounded to 1).
    progress = _plan(10, budget)
    end = progress.end_iter(PassPosition(3, 0, pass_batches), 30)
    batches = end - 30
    assert Fraction(10 * batches, pass_batches) >= budget - 30
    assert Fraction(10 * (batches - 1), pass_batches) < budget - 30
    assert progress.virtual_iter(PassPosition(3, batches, pass_batches)) >= \
        budget


def test_offset_shifts_every_pass():
    # 7 iterations ran before InfoBatch state existed (a state-less resume).
    progress = _plan(10, 35, offset=7)
    assert progress.virtual_iter(PassPosition(1, 0, 6)) == 17
    assert progress.end_iter(PassPosition(0, 0, 10), 7) == 35
    assert _plan(
        10, 35, offset=7, delta=0.5).prune_stop == pytest.approx(1.75 - 0.7)


@pytest.mark.parametrize('full,budget,delta,stop', [(10, 40, 0.75, 3.0),
                                                    (10, 35, 0.875, 3.0625),
                                                    (6, 24, 1.0, 4.0)])
def test_prune_stop_is_delta_times_passes(full, budget, delta, stop):
    progress = _plan(full, budget)
    assert progress.num_passes == budget / full
    assert _plan(full, budget, delta=delta).prune_stop == pytest.approx(stop)


@pytest.mark.parametrize('pass_batches,full', [(6, 10), (7, 10), (10, 10),
                                               (1, 9), (13, 40)])
def test_schedule_steps_add_up_to_full_pass(pass_batches, full):
    progress = _plan(full, 10**9)
    steps = sum(
        1 + progress.extra_scheduler_steps(PassPosition(2, j, pass_batches))
        for j in range(pass_batches))
    assert steps == full
    done = PassPosition(2, pass_batches, pass_batches)
    assert progress.virtual_iter(done) == 3 * full


def test_schedule_steps_stop_at_budget():
    # Budget of 3 iterations inside a pass pruned to 2 of 10 batches: the
    # loop runs end_iter() = 1 iteration, which carries all 3 steps.
    progress = _plan(10, 3)
    iters = progress.end_iter(PassPosition(0, 0, 2), 0)
    assert iters == 1
    steps = sum(1 + progress.extra_scheduler_steps(PassPosition(0, j, 2))
                for j in range(iters))
    assert steps == 3


def test_state_round_trip():
    progress = _plan(10, 35, offset=4)
    assert progress.state_dict() == dict(budget_iters=35, offset=4)
    # A resume restores the saved offset over the resumed iteration.
    resumed = _plan(10, 35, offset=progress.state_dict()['offset'])
    assert resumed.offset == 4


def test_history_round_trips_as_named_tensors(tmp_path):
    records = [
        PassRecord(0, 0, 10, 0, 0, 5, math.nan, True, 0.0),
        PassRecord(1, 5, 7, 3, 6, 4, 0.25, False, 0.5, True, 0.3)
    ]
    path = tmp_path / 'history.pth'
    torch.save(history_state(records), path)
    state = torch.load(path, weights_only=True)
    assert state['kept'].tolist() == [10, 7]
    assert state['pruning'].dtype == torch.bool
    back = history_from_state(state)
    assert back[1] == records[1]
    assert math.isnan(back[0].threshold)
    assert state['ratio'].tolist() == [0.0, 0.5]
    assert state['capped'].tolist() == [False, True]
    assert history_from_state(history_state([])) == []


def test_history_of_an_older_checkpoint_reads_ratio_as_unknown():
    state = history_state([PassRecord(0, 0, 10, 0, 0, 5, 0.1, True, 0.5)])
    for key in ('ratio', 'capped', 'expected'):
        del state[key]  # written before they were recorded
    back = history_from_state(state)
    assert back[0].kept == 10 and math.isnan(back[0].ratio)
    assert not back[0].capped and math.isnan(back[0].expected)


def test_a_one_sample_dataset_has_a_plan():
    plan = RunPlan(1, 1, 5)
    assert plan.full_pass_batches == 1 and plan.num_passes == 5


def test_a_pass_that_starts_at_the_budget_ends_there():
    """Training ends at the budget: a pass whose first iteration lies at
    the budget (a resume at the very end) ends before it trains."""
    plan = _plan(10, 30)
    assert plan.end_iter(PassPosition(3, 0, 10), 30) == 30
    assert plan.end_iter(PassPosition(3, 0, 6), 25) == 25


def test_pass_shares_count_from_the_offset():
    """A run that gained InfoBatch state at iteration 7 of a 35-iteration
    budget has 28 iterations of passes: whole passes 0 and 1, then 0.8 of
    pass 2, and nothing after."""
    plan = _plan(10, 35, offset=7)
    assert [plan.pass_share(t) for t in range(4)] == [1.0, 1.0, 0.8, 0.0]
    assert plan.pruning_share(0) == pytest.approx(2.8)


def test_a_pass_saves_its_share_of_the_budget():
    """What a pass saves: the iterations it took fewer than a full pass,
    times its share of the budget; whole while the budget is unknown (a
    sampler the hook has not planned)."""
    plan = _plan(10, 35)
    assert plan.pass_saving(0, 6) == 4
    assert plan.pass_saving(3, 2) == pytest.approx(0.5 * 8)
    assert plan.pass_saving(4, 2) == 0
    assert RunPlan(10, 1).pass_saving(3, 6) == 4
