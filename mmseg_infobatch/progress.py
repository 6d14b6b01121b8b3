"""Data progress of a pruned run, in full-data ("virtual") iterations.

A pass over the full data takes ``full_pass_batches`` iterations; a pruned
pass takes fewer but still counts as one whole pass of progress. Pass t
starts at virtual iteration ``offset + t * full_pass_batches``, where
``offset`` counts the iterations a run made before it had InfoBatch state
(a resume from a checkpoint without it). Training ends when the virtual
count reaches the full-data budget (the config's ``max_iters``), and
iteration-based schedules are stepped in virtual iterations.
"""
import math
from typing import NamedTuple


class PassPosition(NamedTuple):
    """Where a run stands in its passes: the pass, the batches of it
    trained so far, and its length (per-rank iterations)."""
    pass_idx: int
    trained_batches: int
    pass_batches: int


def batches_per_pass(num_samples: int,
                     world_size: int,
                     batch_size: int,
                     drop_last: bool = False) -> int:
    """Per-rank iterations of a full pass, cut into whole batches on every
    rank: padded up, or cut down with ``drop_last`` (never below one)."""
    multiple = world_size * batch_size
    if drop_last and num_samples >= multiple:
        return num_samples // multiple
    return math.ceil(num_samples / multiple)


class Progress:
    """Progress arithmetic of one run; the pass itself is the sampler's,
    which gives its :class:`PassPosition` as one value.

    Args:
        full_pass_batches (int): Iterations of a full pass on one rank.
        budget_iters (int): Full-data iterations of the whole schedule.
        offset (int): Iterations run before InfoBatch state existed.
            Defaults to 0.
    """

    def __init__(self,
                 full_pass_batches: int,
                 budget_iters: int,
                 offset: int = 0) -> None:
        if full_pass_batches < 1:
            raise ValueError(
                'a full pass must take at least one iteration, but got '
                f'full_pass_batches={full_pass_batches}')
        self.full_pass_batches = int(full_pass_batches)
        self.budget_iters = int(budget_iters)
        self.offset = int(offset)

    @property
    def num_passes(self) -> float:
        """Full-data passes C in the schedule (may be fractional)."""
        return self.budget_iters / self.full_pass_batches

    def prune_stop(self, delta: float) -> float:
        """Passes t < prune_stop may prune: ``delta * C`` in the run's own
        pass numbers, which start after ``offset``."""
        return delta * self.num_passes - self.offset / self.full_pass_batches

    def virtual_iter(self, position: PassPosition) -> int:
        """Full-data iterations done at ``position``."""
        full = self.full_pass_batches
        within = position.trained_batches * full // position.pass_batches
        return self.offset + position.pass_idx * full + within

    def end_iter(self, position: PassPosition, now: int) -> int:
        """The real iteration at which training ends, seen at real
        iteration ``now`` at ``position``, assuming every pass after the
        current one is full (it is once pruning has annealed)."""
        full, pass_batches = self.full_pass_batches, position.pass_batches
        # Where the pass's batches began.
        pass_start_iter = now - position.trained_batches
        remaining = self.budget_iters - (
            self.offset + position.pass_idx * full)
        if remaining <= full:
            # The current pass is the last: end inside it at the budget.
            return pass_start_iter + math.ceil(
                max(remaining, 0) * pass_batches / full)
        return pass_start_iter + pass_batches + remaining - full

    def extra_scheduler_steps(self, position: PassPosition) -> int:
        """Scheduler steps owed, beyond mmengine's one, after the next
        batch at ``position``, so the step count equals virtual
        progress."""
        before = self.virtual_iter(position)
        done = position._replace(trained_batches=position.trained_batches + 1)
        after = min(self.virtual_iter(done), self.budget_iters)
        return max(after - before - 1, 0)

    def state_dict(self) -> dict:
        """Plain ints: the offset, which a resume restores, and the budget,
        for analysis (the pass length follows from the config)."""
        return dict(budget_iters=self.budget_iters, offset=self.offset)

    def load_state_dict(self, state: dict) -> None:
        """Restore the offset a resumed run continues from."""
        self.offset = int(state['offset'])
