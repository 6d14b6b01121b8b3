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
from dataclasses import dataclass, fields
from typing import Dict, List

import torch


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
        return dict(
            full_batches=self.full_batches,
            budget_iters=self.budget_iters,
            offset=self.offset)


@dataclass
class PassRecord:
    """What one pass was, for logs, checkpoints and plots.

    ``ratio`` is the pass's prune ratio r_t (the largest drop probability
    of any sample; 0 when nothing was a candidate), NaN where unknown (a
    checkpoint written before it was recorded).
    """
    pass_idx: int
    start_iter: int
    kept: int
    pruned: int
    candidates: int
    iters: int
    threshold: float
    pruning: bool
    ratio: float = math.nan


# Checkpoint keys of the history (short names, as the analysis tool reads).
_HISTORY_KEYS = dict(
    pass_idx=('pass', torch.int64),
    start_iter=('start_iter', torch.int64),
    kept=('kept', torch.int64),
    pruned=('pruned', torch.int64),
    candidates=('candidates', torch.int64),
    iters=('iters', torch.int64),
    threshold=('threshold', torch.float64),
    pruning=('pruning', torch.bool),
    ratio=('ratio', torch.float64))
# Columns that older checkpoints lack, with the value they read as.
_HISTORY_DEFAULTS = dict(ratio=math.nan)


def history_state(records: List[PassRecord]) -> Dict[str, torch.Tensor]:
    """A pass history as a dict of equal-length 1-D tensors."""
    return {
        key: torch.tensor([getattr(r, name) for r in records], dtype=dtype)
        for name, (key, dtype) in _HISTORY_KEYS.items()
    }


def history_from_state(state: Dict[str, torch.Tensor]) -> List[PassRecord]:
    """Inverse of :func:`history_state`; a column that an older
    checkpoint lacks reads as its default."""
    count = len(state['pass'])
    columns = {
        f.name: state[_HISTORY_KEYS[f.name][0]].tolist()
        if _HISTORY_KEYS[f.name][0] in state else
        [_HISTORY_DEFAULTS[f.name]] * count
        for f in fields(PassRecord)
    }
    return [
        PassRecord(**{name: col[i] for name, col in columns.items()})
        for i in range(count)
    ]

