"""Data progress of a pruned run, in full-data ("virtual") iterations.

A pass over the full data takes ``full_batches`` iterations; a pruned pass
takes fewer but still counts as one whole pass of progress. Pass t starts at
virtual iteration ``offset + t * full_batches``. Training ends when the
virtual count reaches the full-data budget (the config's ``max_iters``), and
iteration-based schedules are stepped in virtual iterations.
"""
import math


def batches_per_pass(samples_per_rank: int, batch_size: int,
                     drop_last: bool) -> int:
    """Iterations one rank needs for ``samples_per_rank`` samples."""
    if drop_last:
        return samples_per_rank // batch_size
    return math.ceil(samples_per_rank / batch_size)


def virtual_iter(pass_idx: int, position: int, pass_batches: int,
                 full_batches: int, offset: int = 0) -> int:
    """Full-data iterations done after ``position`` batches of a pass."""
    within = position * full_batches // pass_batches
    return offset + pass_idx * full_batches + within


def end_iter(pass_idx: int, pass_start_iter: int, pass_batches: int,
             full_batches: int, budget_iters: int, offset: int = 0) -> int:
    """The real iteration at which training ends, assuming every pass after
    the current one is full (it is once pruning has annealed)."""
    remaining = budget_iters - (offset + pass_idx * full_batches)
    if remaining <= full_batches:
        # The current pass is the last: end inside it at the budget.
        return pass_start_iter + math.ceil(
            max(remaining, 0) * pass_batches / full_batches)
    return pass_start_iter + pass_batches + remaining - full_batches


def extra_scheduler_steps(pass_idx: int, position: int, pass_batches: int,
                          full_batches: int, budget_iters: float,
                          offset: int = 0) -> int:
    """Scheduler steps owed, beyond mmengine's one, after batch ``position``
    of a pass, so that the schedule's step count equals virtual progress."""
    before = virtual_iter(pass_idx, position, pass_batches, full_batches,
                          offset)
    after = min(
        virtual_iter(pass_idx, position + 1, pass_batches, full_batches,
                     offset), budget_iters)
    return max(int(after) - before - 1, 0)
