"""The run plan: a pruned run's passes, in full-data ("virtual") iterations.

A pass over the full data takes ``full_pass_batches`` iterations; a pruned
pass takes fewer but still counts as one whole pass of progress. Pass t
starts at virtual iteration ``offset + t * full_pass_batches``, where
``offset`` counts the iterations a run made before it had InfoBatch state
(a resume from a checkpoint without it). Training ends when the virtual
count reaches the full-data budget (the config's ``max_iters``), and
iteration-based schedules are stepped in virtual iterations.
:class:`RunPlan` is the one owner of these facts.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional


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


@dataclass(frozen=True)
class RunPlan:
    """A run's passes: the one owner of the budget, the offset, where
    pruning stops and the full-pass length.

    The sampler makes it when it is configured (the layout; no budget
    yet) and again, whole, when ``InfoBatchHook`` gives it the run's budget
    with the offset a resume restores: it is frozen, so nothing reads a
    plan whose offset is restored later. The sampler's pass itself is the
    sampler's, which gives its :class:`PassPosition` as one value.

    Args:
        num_samples (int): Samples in the dataset (N).
        global_batch (int): Samples one iteration takes on all ranks
            (world size x batch size).
        budget_iters (int): Full-data iterations of the whole schedule
            (per rank; the config's ``max_iters``); 0 while unknown.
            Defaults to 0.
        drop_last (bool): Passes are cut down to whole batches instead of
            padded up. Defaults to False.
        offset (int): Iterations run before the run had InfoBatch state.
            Defaults to 0.
        delta (float, optional): The fraction of the budget's passes that
            may prune; None lets every pass prune (no annealing).
            Defaults to None.
    """
    num_samples: int
    global_batch: int
    budget_iters: int = 0
    drop_last: bool = False
    offset: int = 0
    delta: Optional[float] = None

    def __post_init__(self) -> None:
        for name, low in (('num_samples', 1), ('global_batch', 1),
                          ('budget_iters', 0), ('offset', 0)):
            value = getattr(self, name)
            if isinstance(
                    value,
                    bool) or not (isinstance(value, int) and value >= low):
                raise ValueError(f'RunPlan {name} must be an int >= {low}, '
                                 f'but got {value!r}')

    def pass_iters(self, kept: int) -> int:
        """Per-rank iterations of a pass that keeps ``kept`` samples: whole
        batches, and at least one (the sampler refills a shorter pass)."""
        return batches_per_pass(
            max(int(kept), self.global_batch), 1, self.global_batch,
            self.drop_last)

    @property
    def full_pass_batches(self) -> int:
        """Per-rank iterations of a full pass (F)."""
        return self.pass_iters(self.num_samples)

    @property
    def num_passes(self) -> float:
        """Full-data passes C in the schedule (may be fractional)."""
        return self.budget_iters / self.full_pass_batches

    @property
    def prune_stop(self) -> float:
        """Passes t < prune_stop may prune: ``delta * C`` in the run's own
        pass numbers, which start after ``offset`` (inf without delta)."""
        if self.delta is None:
            return math.inf
        return self.delta * self.num_passes - \
            self.offset / self.full_pass_batches

    def pass_share(self, pass_idx: int) -> float:
        """How much of pass ``pass_idx`` the budget holds: 1 for a whole
        pass, a fraction for the last one of a fractional schedule, 0
        beyond it."""
        full = self.full_pass_batches
        left = self.budget_iters - self.offset - pass_idx * full
        return min(max(left / full, 0.0), 1.0)

    def pass_saving(self, pass_idx: int, pass_iters: int) -> float:
        """Full-data iterations pass ``pass_idx`` saves when it takes
        ``pass_iters`` iterations: what it took fewer than a full pass,
        times its share of the budget (whole while the budget is
        unknown)."""
        share = self.pass_share(pass_idx) if self.budget_iters else 1.0
        return share * (self.full_pass_batches - pass_iters)

    def pruning_share(self, pass_idx: int) -> float:
        """W: the summed shares of the passes from ``pass_idx`` on that may
        prune (annealing passes and passes beyond the budget count 0)."""
        end = math.ceil(
            (self.budget_iters - self.offset) / self.full_pass_batches)
        if math.isfinite(self.prune_stop):
            # Pass p prunes iff p < prune_stop, i.e. p < ceil(prune_stop).
            end = min(end, math.ceil(self.prune_stop))
        return sum(self.pass_share(p) for p in range(max(pass_idx, 0), end))

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
        for analysis (the rest follows from the config)."""
        return dict(budget_iters=self.budget_iters, offset=self.offset)
