"""What target saving knows of a pass's candidates.

The solver of :mod:`.target` sees a pass through its :class:`Profile`:
how many samples may be dropped and with which probability, in units of
the pass's ratio r_t. This module makes the profile of a pass from the
score table, scales quantile buckets to a solved ratio, and keeps
:class:`RelativeLosses`, the spread of losses that estimates the profile
of passes to come. All of it is O(N) vectorised work or less.
"""
import math
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from .prune_rule import prune_probabilities

# RelativeLosses: bins of log(loss / the batch's geometric mean loss),
# LOG_STEP wide within +-LOG_RANGE (a loss 1e7 times its batch's is
# counted in the edge bin).
LOG_RANGE, LOG_STEP = 16.0, 0.02


class Profile(NamedTuple):
    """A pass's candidates in units of its ratio r_t: sample i is dropped
    with probability ``r_t * u_i`` (u_i = 1 for a candidate of 'mean' and
    'random', a bucket's ratio over the largest for 'quantile', 0 for any
    other sample).

    Args:
        candidates (int): Samples with u_i > 0.
        first (float): Sum of u_i: the expected pruned samples at r_t = 1.
        second (float): Sum of u_i ** 2, for the variance of the count.
    """
    candidates: int
    first: float
    second: float


def prune_profile(
        scores: torch.Tensor,
        seen: torch.Tensor,
        policy: str = 'mean',
        prune_high: bool = False,
        buckets: Optional[Sequence[Sequence[float]]] = None) -> Profile:
    """The :class:`Profile` of a pass decided from this score table.

    O(N) vectorised work, with one float32 temporary per sample.
    """
    if policy == 'quantile':
        top = max_bucket_ratio(buckets)
        if top <= 0:
            return Profile(0, 0.0, 0.0)
        probs, _ = prune_probabilities(scores, seen, 0.0, policy, prune_high,
                                       buckets)
        probs = probs.numpy()
        first = float(np.add.reduce(probs, dtype=np.float64)) / top
        second = float(np.add.reduce(probs * probs, dtype=np.float64)) / top**2
        return Profile(int(np.count_nonzero(probs)), first, second)
    # At r = 1 each candidate's probability is exactly 1.
    probs, _ = prune_probabilities(scores, seen, 1.0, policy, prune_high)
    count = int(np.count_nonzero(probs.numpy()))
    return Profile(count, float(count), float(count))


def max_bucket_ratio(buckets: Sequence[Sequence[float]]) -> float:
    """The largest ratio of quantile buckets: r_t of a 'quantile' pass."""
    return max(float(r) for _, r in buckets)


def scale_buckets(buckets: Sequence[Sequence[float]], ratio: float) -> list:
    """Quantile buckets with every ratio scaled so the largest is
    ``ratio``; their proportions, and so what the policy prefers to
    prune, stay as written."""
    top = max_bucket_ratio(buckets)
    return [(q, float(r) * ratio / top) for q, r in buckets]


class RelativeLosses:
    """How the losses of one model state spread: a histogram of each
    sample's loss relative to the geometric mean of its batch.

    The scores at the start of pass 1 were made by every model state of
    pass 0, one batch each, and early in training the loss falls fast:
    below their mean lie mostly the samples trained late, not the easy
    ones, so their share below the mean says little about later passes.
    A sample's loss over its batch's geometric mean takes that trend out
    (a batch is one model state; a loss is a sample's difficulty times
    the model's level). The share of those ratios below their mean is
    the share of candidates one model state would give, which the
    estimate assumes for the passes after pass 1.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(
            int(round(2 * LOG_RANGE / LOG_STEP)), dtype=np.int64)

    def add(self, scores: np.ndarray) -> None:
        """Count one batch's scores (non-finite ones skipped; a batch
        of fewer than two scores has no spread and is skipped)."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        if scores.size < 2:
            return
        logs = np.log(np.maximum(scores, 1e-30))
        logs -= logs.mean()
        bins = np.floor((logs + LOG_RANGE) / LOG_STEP).astype(np.int64)
        np.add.at(self.counts, np.clip(bins, 0, self.counts.size - 1), 1)

    def share_below_mean(self) -> float:
        """The share of the ratios below their mean (NaN if none)."""
        total = int(self.counts.sum())
        if total == 0:
            return math.nan
        edges = np.arange(self.counts.size + 1) * LOG_STEP - LOG_RANGE
        centers = 0.5 * (edges[:-1] + edges[1:])
        mean = float(np.dot(self.counts, np.exp(centers))) / total
        cut = math.log(mean)
        below = float(self.counts[edges[1:] <= cut].sum())
        inside = int(np.searchsorted(edges, cut, side='right')) - 1
        if 0 <= inside < self.counts.size:
            # The bin the mean falls in, split linearly.
            below += self.counts[inside] * (cut - edges[inside]) / LOG_STEP
        return below / total

    def state_dict(self) -> dict:
        return dict(counts=torch.from_numpy(self.counts.copy()))

    def load_state_dict(self, state: dict) -> None:
        counts = state.get('counts')
        self.counts[:] = 0 if counts is None else counts.numpy()
