"""The pass history: what each pass was, as named fields, and its
checkpoint form, a dict of equal-length 1-D tensors."""
import math
from dataclasses import dataclass, fields
from typing import Dict, List

import torch


@dataclass
class PassRecord:
    """What one pass was, for logs, checkpoints and plots.

    The sampler makes it when it decides the pass (``start_iter`` -1);
    ``InfoBatchHook`` sets ``start_iter`` at the pass's first iteration
    and keeps the run's history.

    ``may_prune`` is whether the pass came before annealing. ``ratio`` is
    its prune ratio r_t (the largest drop probability of any sample; 0
    when nothing was a candidate). ``capped`` tells that ``max_ratio``
    bound a ``target_saving`` ratio, and ``expected`` is the saving the run
    was then expected to reach. NaN where unknown (a checkpoint written
    before it was recorded).
    """
    pass_idx: int
    start_iter: int
    kept: int
    pruned: int
    candidates: int
    iters: int
    threshold: float
    may_prune: bool
    ratio: float = math.nan
    capped: bool = False
    expected: float = math.nan


# Checkpoint keys of the history (short names, as the analysis tool reads).
_HISTORY_KEYS = dict(
    pass_idx=('pass', torch.int64),
    start_iter=('start_iter', torch.int64),
    kept=('kept', torch.int64),
    pruned=('pruned', torch.int64),
    candidates=('candidates', torch.int64),
    iters=('iters', torch.int64),
    threshold=('threshold', torch.float64),
    may_prune=('pruning', torch.bool),
    ratio=('ratio', torch.float64),
    capped=('capped', torch.bool),
    expected=('expected', torch.float64))
# Columns that older checkpoints lack, with the value they read as.
_HISTORY_DEFAULTS = dict(ratio=math.nan, capped=False, expected=math.nan)


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
        f.name:
        state[_HISTORY_KEYS[f.name][0]].tolist() if _HISTORY_KEYS[f.name][0]
        in state else [_HISTORY_DEFAULTS[f.name]] * count
        for f in fields(PassRecord)
    }
    return [
        PassRecord(**{
            name: col[i]
            for name, col in columns.items()
        }) for i in range(count)
    ]
