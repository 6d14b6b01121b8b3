"""Data progress of a pruned run, in full-data ("virtual") iterations.

A pass over the full data takes ``full_batches`` iterations; a pruned pass
takes fewer but still counts as one whole pass of progress. Pass t starts at
virtual iteration ``offset + t * full_batches``, where ``offset`` counts the
iterations a run made before it had InfoBatch state (a resume from a
checkpoint without it). Training ends when the virtual count reaches the
full-data budget (the config's ``max_iters``), and iteration-based schedules
are stepped in virtual iterations.
"""
import math


def batches_per_pass(num_samples: int, world_size: int, batch_size: int,
                     drop_last: bool = False) -> int:
    """Per-rank iterations of a full pass, cut into whole batches on every
    rank: padded up, or cut down with ``drop_last`` (never below one)."""
    multiple = world_size * batch_size
    if drop_last and num_samples >= multiple:
        return num_samples // multiple
    return math.ceil(num_samples / multiple)


class Progress:
    """Progress arithmetic of one run; the pass itself is the sampler's.

    Args:
        full_batches (int): Iterations of a full pass on one rank.
        budget_iters (int): Full-data iterations of the whole schedule.
        offset (int): Iterations run before InfoBatch state existed.
            Defaults to 0.
    """

    def __init__(self,
                 full_batches: int,
                 budget_iters: int,
                 offset: int = 0) -> None:
        if full_batches < 1:
            raise ValueError('a full pass must take at least one iteration, '
                             f'but got full_batches={full_batches}')
        self.full_batches = int(full_batches)
        self.budget_iters = int(budget_iters)
        self.offset = int(offset)

    @property
    def num_passes(self) -> float:
        """Full-data passes C in the schedule (may be fractional)."""
        return self.budget_iters / self.full_batches

    def prune_stop(self, delta: float) -> float:
        """Passes t < prune_stop may prune: ``delta * C`` in the run's own
        pass numbers, which start after ``offset``."""
        return delta * self.num_passes - self.offset / self.full_batches

    def virtual_iter(self, pass_idx: int, position: int,
                     pass_batches: int) -> int:
        """Full-data iterations done after ``position`` batches of a pass."""
        within = position * self.full_batches // pass_batches
        return self.offset + pass_idx * self.full_batches + within

    def end_iter(self, pass_idx: int, pass_start_iter: int,
                 pass_batches: int) -> int:
        """The real iteration at which training ends, assuming every pass
        after the current one is full (it is once pruning has annealed)."""
        remaining = self.budget_iters - (
            self.offset + pass_idx * self.full_batches)
        if remaining <= self.full_batches:
            # The current pass is the last: end inside it at the budget.
            return pass_start_iter + math.ceil(
                max(remaining, 0) * pass_batches / self.full_batches)
        return pass_start_iter + pass_batches + remaining - self.full_batches

    def extra_scheduler_steps(self, pass_idx: int, position: int,
                              pass_batches: int) -> int:
        """Scheduler steps owed, beyond mmengine's one, after batch
        ``position`` of a pass, so the step count equals virtual progress."""
        before = self.virtual_iter(pass_idx, position, pass_batches)
        after = min(
            self.virtual_iter(pass_idx, position + 1, pass_batches),
            self.budget_iters)
        return max(after - before - 1, 0)

    def state_dict(self) -> dict:
        """Plain ints. Only ``offset`` is read back: the rest follows from
        the config, and is saved for analysis."""
        return dict(
            full_batches=self.full_batches,
            budget_iters=self.budget_iters,
            offset=self.offset)

    def load_state_dict(self, state: dict) -> None:
        """Restore the offset a resumed run continues from."""
        self.offset = int(state['offset'])
