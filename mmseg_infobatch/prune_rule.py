"""The pruning rule of each policy, from the score table.

Which samples are candidates ('mean': scored below the mean; 'random':
every scored sample; 'quantile': by the bucket of their score) and with
what probability each is dropped. O(N) vectorised work (numpy, faster than
torch on one thread) with no comparison sort and no Python loop over
samples, streamed in chunks of ``pass_layout.CHUNK``.
"""
import math
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .pass_layout import chunks, numpy_view

POLICIES = ('mean', 'quantile', 'random')
# A weight table has at most 256 entries (uint8 codes); code 0 is weight 1.
MAX_WEIGHTS = 256


def validate_policy(policy: str, ratio: float,
                    buckets: Optional[Sequence[Sequence[float]]]) -> None:
    """Raise a ValueError that names the fix for a bad pruning set-up."""
    if policy not in POLICIES:
        raise ValueError(f'InfoBatchSampler policy must be one of {POLICIES}, '
                         f'but got {policy!r}')
    if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
        raise ValueError('InfoBatchSampler ratio (prune probability r) must '
                         f'be in [0, 1), but got {ratio!r}')
    if policy != 'quantile':
        if buckets is not None:
            raise ValueError("InfoBatchSampler buckets are only used with "
                             f"policy='quantile', but policy={policy!r}")
        return
    if not buckets:
        raise ValueError("policy='quantile' needs buckets=[(q1, r1), "
                         '(q2, r2), ...]: increasing quantiles q in (0, 1] '
                         'with a prune probability r in [0, 1) each, but '
                         f'got {buckets!r}')
    if len(buckets) >= MAX_WEIGHTS:
        raise ValueError(
            f'InfoBatchSampler takes at most {MAX_WEIGHTS - 1} buckets (one '
            f'weight code each), but got {len(buckets)}: merge neighbouring '
            'buckets')
    last_q = 0.0
    for bucket in buckets:
        if len(bucket) != 2:
            raise ValueError('each InfoBatchSampler bucket must be a pair '
                             f'(quantile, ratio), but got {bucket!r}')
        q, r = bucket
        if not (last_q < q <= 1):
            raise ValueError('InfoBatchSampler bucket quantiles must increase '
                             f'within (0, 1], but got {list(buckets)!r}')
        if not (0 <= r < 1):
            raise ValueError('InfoBatchSampler bucket ratios must be in '
                             f'[0, 1), but got {r!r} in {list(buckets)!r}')
        last_q = q


class SeenMask:
    """The seen mask, a bool tensor (N) or a packed bitmask (uint8), read
    in chunks so that a packed one is never unpacked whole."""

    def __init__(self, seen: torch.Tensor, num_samples: int) -> None:
        self.mask = numpy_view(seen)
        self.packed = self.mask.dtype != np.bool_
        self.num_samples = num_samples
        counts = [
            int(np.count_nonzero(self.chunk(start, stop)))
            for start, stop in chunks(num_samples)
        ]
        self.count = sum(counts)
        self.all = self.count == num_samples

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if not self.packed:
            return self.mask[start:stop]
        return np.unpackbits(
            self.mask[start >> 3:(stop + 7) >> 3],
            count=stop - start,
            bitorder='little').view(np.bool_)


def _mean_threshold(values: np.ndarray, seen: SeenMask) -> float:
    """The float64 mean of the scored samples' scores (NaN if none)."""
    if seen.count == 0:
        return math.nan
    num_seen = seen.count
    all_seen = seen.all
    # A float64 sum: a float32 one of 10M values loses the low digits.
    # numpy's converts as it sums, where torch's makes a float64 copy
    # first. Chunk by chunk, each continuing from the last one's total:
    # bitwise the sum of one call, without a whole unpacked mask.
    total = np.float64(0.0)
    for start, stop in chunks(values.size):
        part = values[start:stop]
        if all_seen:
            total = np.add.reduce(part, dtype=np.float64, initial=total)
        else:
            mask = seen.chunk(start, stop)
            total = np.add.reduce(
                part, dtype=np.float64, where=mask, initial=total)
    return float(total / num_seen)


def float32_bound(threshold: float, prune_high: bool) -> np.float32:
    """The float32 that float32 scores compare with exactly as with the
    float64 ``threshold``: the smallest float32 at or above it for
    ``score < threshold``, the largest at or below it for ``score >
    threshold``.

    Comparing float32 scores with a float64 scalar is not the same under
    every numpy: numpy 1.x casts the scalar to float32 first (rounding to
    nearest), numpy 2 compares in float64. With this bound both compare
    float32 with float32, and give the float64 answer.
    """
    bound = np.float32(threshold)
    # Python floats: compared in float64 under every numpy.
    if float(bound) > threshold if prune_high else float(bound) < threshold:
        bound = np.nextafter(bound,
                             np.float32(-np.inf if prune_high else np.inf))
    return bound


def _below(values: np.ndarray, seen_np: Optional[np.ndarray],
           bound: np.float32, prune_high: bool, all_seen: bool) -> np.ndarray:
    """Candidates of the 'mean' policy among one chunk of scores."""
    # Low scores are well learned (paper); prune_high flips the side. The
    # rule is strict, so a sample exactly at the mean is never a candidate.
    candidates = values > bound if prune_high else values < bound
    if not all_seen:
        candidates &= seen_np
    return candidates


class MeanCandidates:
    """Candidates of the 'mean' and 'random' policies, chunk by chunk.
    Unscored samples are never eligible."""

    def __init__(self, scores: torch.Tensor, seen: SeenMask, ratio: float,
                 policy: str, prune_high: bool) -> None:
        self.values, self.seen = numpy_view(scores), seen
        self.prune_high = prune_high
        self.kind = 'none'
        self.threshold = math.nan
        if ratio == 0:
            return
        if policy == 'random':
            self.kind = 'seen'
            return
        self.threshold = _mean_threshold(self.values, seen)
        if not math.isnan(self.threshold):
            self.kind = 'mean'
        # Not the float64 mean itself: numpy 1.x would round it to the
        # scores' float32, and a score just below the mean would tie.
        self.bound = float32_bound(self.threshold, prune_high)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if self.kind == 'none':
            return np.zeros(stop - start, dtype=np.bool_)
        if self.kind == 'seen':
            return self.seen.chunk(start, stop).copy()
        seen_np = None if self.seen.all else self.seen.chunk(start, stop)
        return _below(self.values[start:stop], seen_np, self.bound,
                      self.prune_high, self.seen.all)


def _candidates(scores: torch.Tensor, seen: torch.Tensor, ratio: float,
                policy: str, prune_high: bool) -> Tuple[torch.Tensor, float]:
    """Samples eligible for pruning under 'mean' or 'random' (bool, N), and
    the threshold. Unscored samples are never eligible."""
    num_samples = scores.numel()
    rule = MeanCandidates(scores, SeenMask(seen, num_samples), ratio, policy,
                          prune_high)
    candidates = np.empty(num_samples, dtype=np.bool_)
    for start, stop in chunks(num_samples):
        candidates[start:stop] = rule.chunk(start, stop)
    return torch.from_numpy(candidates), rule.threshold


def quantile_cuts(
        values: np.ndarray, seen: SeenMask, prune_high: bool,
        buckets: Sequence[Sequence[float]]
) -> Tuple[Optional[np.ndarray], float]:
    """The signed score at each bucket's quantile, and the threshold (the
    last cut, unsigned); ``(None, nan)`` when nothing was scored."""
    num_seen = seen.count
    if num_seen == 0:
        return None, math.nan
    # One float32 copy of the scored samples' (signed) scores, selected in
    # place: np.partition is a selection, not a sort.
    signed = np.empty(values.size, dtype=values.dtype)
    filled = 0
    for start, stop in chunks(values.size):
        part = values[start:stop]
        if not seen.all:
            part = part[seen.chunk(start, stop)]
        signed[filled:filled + part.size] = part
        filled += part.size
    signed = signed[:filled]
    if prune_high:
        np.negative(signed, out=signed)
    # The lowest q of the scored samples, q as written: in floats
    # 0.28 * 25 is 7.000000000000001, one sample too many.
    ks = [
        max(1, min(num_seen, math.ceil(Fraction(str(float(q))) * num_seen))) -
        1 for q, _ in buckets
    ]
    signed.partition(sorted(set(ks)))
    cuts = signed[ks]
    return cuts, float(-cuts[-1] if prune_high else cuts[-1])


def quantile_buckets(values: np.ndarray, seen: SeenMask, start: int, stop: int,
                     cuts: Optional[np.ndarray], num_buckets: int,
                     prune_high: bool) -> np.ndarray:
    """The bucket of each sample of one chunk: the first bucket whose cut
    is at or above its signed score (cuts increase with the bucket), or
    ``num_buckets`` (none) when no cut is or the sample is unscored."""
    if cuts is None:
        return np.full(stop - start, num_buckets, dtype=np.intp)
    part = values[start:stop]
    signed = -part if prune_high else part
    bucket = np.searchsorted(cuts, signed, side='left')
    if not seen.all:
        bucket[~seen.chunk(start, stop)] = cuts.size
    return bucket


def prune_probabilities(
    scores: torch.Tensor,
    seen: torch.Tensor,
    ratio: float,
    policy: str = 'mean',
    prune_high: bool = False,
    buckets: Optional[Sequence[Sequence[float]]] = None
) -> Tuple[torch.Tensor, float]:
    """Per-sample probability of being dropped this pass.

    Samples never scored (``seen`` False) are never pruned and never enter the
    threshold, so the first pass is full and a stale initial value can't bias
    the mean.

    Returns:
        tuple: ``(probability, threshold)`` with probability as float32 (N,).
    """
    if policy != 'quantile':
        candidates, threshold = _candidates(scores, seen, ratio, policy,
                                            prune_high)
        return candidates.float() * ratio, threshold
    num_samples = scores.numel()
    values, seen = numpy_view(scores), SeenMask(seen, num_samples)
    cuts, threshold = quantile_cuts(values, seen, prune_high, buckets)
    probs = bucket_probs(buckets)
    prob = np.empty(num_samples, dtype=np.float32)
    for start, stop in chunks(num_samples):
        bucket = quantile_buckets(values, seen, start, stop, cuts,
                                  len(buckets), prune_high)
        prob[start:stop] = probs[bucket]
    return torch.from_numpy(prob), threshold


def bucket_probs(buckets: Sequence[Sequence[float]]) -> np.ndarray:
    """Each bucket's prune probability as float32, then 0 (no bucket)."""
    return np.array([r for _, r in buckets] + [0.0], dtype=np.float32)
