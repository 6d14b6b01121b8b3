"""The pruning rule of each policy, from the score table: the one place
that says which samples a pass may drop and with which probability
(:class:`PruneRule`), and what the target solver sees of it
(:class:`Profile`)."""
import math
from fractions import Fraction
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from .layout import chunks, numpy_view

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
                     cuts: np.ndarray, prune_high: bool) -> np.ndarray:
    """The bucket of each sample of one chunk: the first bucket whose cut
    is at or above its signed score (cuts increase with the bucket), or
    ``cuts.size`` (none) when no cut is or the sample is unscored."""
    part = values[start:stop]
    signed = -part if prune_high else part
    bucket = np.searchsorted(cuts, signed, side='left')
    if not seen.all:
        bucket[~seen.chunk(start, stop)] = cuts.size
    return bucket


class Profile(NamedTuple):
    """A pass's candidates in units of its ratio r_t: sample i is dropped
    with probability ``r_t * u_i`` (u_i = 1 for a candidate of 'mean' and
    'random', a bucket's ratio over the largest for 'quantile', 0 for any
    other sample). The target solver and the pre-flight estimate see a
    pass through it.

    Args:
        candidates (int): Samples with u_i > 0.
        first (float): Sum of u_i: the expected pruned samples at r_t = 1.
        second (float): Sum of u_i ** 2, for the variance of the count.
    """
    candidates: int
    first: float
    second: float


def max_bucket_ratio(buckets: Sequence[Sequence[float]]) -> float:
    """The largest ratio of quantile buckets: r_t of a 'quantile' pass."""
    return max(float(r) for _, r in buckets)


def scale_buckets(buckets: Sequence[Sequence[float]], ratio: float) -> list:
    """Quantile buckets with every ratio scaled so the largest is
    ``ratio``; their proportions, and so what the policy prefers to
    prune, stay as written."""
    top = max_bucket_ratio(buckets)
    return [(q, float(r) * ratio / top) for q, r in buckets]


def bucket_probs(buckets: Sequence[Sequence[float]]) -> np.ndarray:
    """The prune probability of each code of 'quantile': 0 for code 0,
    bucket b's ratio for code b + 1 (float32, as the decision draws it)."""
    return np.array([0.0] + [r for _, r in buckets], dtype=np.float32)


def code_probs(policy: str, ratio: float,
               buckets: Optional[Sequence[Sequence[float]]]) -> np.ndarray:
    """The prune probability of each candidate code: code 0 is never
    dropped; under 'mean' and 'random' code 1 is dropped with ``ratio``
    (a float64 pair); under 'quantile' see :func:`bucket_probs` (``ratio``
    unused)."""
    if policy == 'quantile':
        return bucket_probs(buckets)
    return np.array([0.0, ratio])


class PruneRule:
    """The rule of one pass, from the score table: which samples may be
    dropped, and with which probability.

    It reads the table once and gives every sample a candidate code
    (uint8): 0 for a sample that is never dropped, else the code whose
    probability :func:`code_probs` gives. 'mean': code 1 for a scored
    sample strictly below the mean score (above it with ``prune_high``);
    'random': code 1 for every scored sample; 'quantile': code b + 1 for a
    scored sample in bucket b. Samples never scored are never candidates,
    so the first pass is full and a stale initial value can't bias the
    threshold. O(N) vectorised numpy work in chunks of
    ``layout.CHUNK`` (faster than torch on one thread), with no
    comparison sort: the codes and one float32 copy for 'quantile' are
    all it holds per sample.

    The decision (:func:`.decision.decide_pass`) draws from these codes,
    the target solver and the estimate read :meth:`profile`, and
    :meth:`probabilities` gives every sample's probability.

    Args:
        scores (torch.Tensor): Every sample's score (float32, N).
        seen (torch.Tensor): Which samples were scored: bool (N), or a
            packed bitmask (uint8, bit i of byte i // 8, lowest first).
        policy (str): 'mean', 'quantile' or 'random'.
        prune_high (bool): Prune high scores instead of low ones.
        buckets (Sequence[tuple], optional): The quantile buckets.
    """

    def __init__(self,
                 scores: torch.Tensor,
                 seen: torch.Tensor,
                 policy: str = 'mean',
                 prune_high: bool = False,
                 buckets: Optional[Sequence[Sequence[float]]] = None) -> None:
        self.policy, self.buckets = policy, buckets
        num_samples = scores.numel()
        values, seen = numpy_view(scores), SeenMask(seen, num_samples)
        self.codes = np.zeros(num_samples, dtype=np.uint8)
        num_codes = len(buckets) + 1 if policy == 'quantile' else 2
        # Samples per code, counted chunk by chunk: np.bincount makes an
        # int64 copy of its input.
        self.counts = np.zeros(num_codes, dtype=np.int64)
        self.threshold = math.nan
        if policy == 'quantile':
            cuts, self.threshold = quantile_cuts(values, seen, prune_high,
                                                 buckets)
        elif policy == 'mean':
            self.threshold = _mean_threshold(values, seen)
            # Not the float64 mean itself: numpy 1.x would round it to the
            # scores' float32, and a score just below the mean would tie.
            bound = float32_bound(self.threshold, prune_high)
        if math.isnan(self.threshold) and policy != 'random':
            return  # nothing scored: no candidates
        for start, stop in chunks(num_samples):
            if policy == 'quantile':
                # Bucket len(buckets) (none, or unscored) is code 0.
                bucket = quantile_buckets(values, seen, start, stop, cuts,
                                          prune_high)
                code = np.where(bucket < len(buckets), bucket + 1, 0)
            elif policy == 'random':
                code = seen.chunk(start, stop)
            else:
                seen_np = None if seen.all else seen.chunk(start, stop)
                code = _below(values[start:stop], seen_np, bound, prune_high,
                              seen.all)
            self.codes[start:stop] = code
            self.counts += np.bincount(
                self.codes[start:stop], minlength=num_codes)

    def threshold_at(self, ratio: float) -> float:
        """The pass's threshold: NaN for 'mean' and 'random' at ratio 0,
        where no sample is a candidate."""
        if self.policy != 'quantile' and ratio == 0:
            return math.nan
        return self.threshold

    def profile(self) -> Profile:
        """The :class:`Profile` of a pass decided with this rule, from the
        counts of each code (no second look at the table)."""
        counts = self.counts[1:]
        if self.policy != 'quantile':
            # At r_t = 1 each candidate's probability is exactly 1.
            count = int(counts.sum())
            return Profile(count, float(count), float(count))
        top = max_bucket_ratio(self.buckets)
        if top <= 0:
            return Profile(0, 0.0, 0.0)
        probs = bucket_probs(self.buckets)[1:]
        # int64 counts and float32 ratios: numpy sums in float64.
        first = float(np.dot(counts, probs)) / top
        second = float(np.dot(counts, probs * probs)) / top**2
        return Profile(int(counts[probs > 0].sum()), first, second)

    def probabilities(
            self,
            ratio: float,
            buckets: Optional[Sequence[Sequence[float]]] = None
    ) -> torch.Tensor:
        """Every sample's probability of being dropped (float32, N) at
        ``ratio`` ('mean', 'random') or with ``buckets`` ('quantile'; the
        rule's own where None)."""
        probs = code_probs(self.policy, ratio, buckets or self.buckets)
        return torch.from_numpy(probs.astype(np.float32)[self.codes])


def prune_probabilities(
    scores: torch.Tensor,
    seen: torch.Tensor,
    ratio: float,
    policy: str = 'mean',
    prune_high: bool = False,
    buckets: Optional[Sequence[Sequence[float]]] = None
) -> Tuple[torch.Tensor, float]:
    """Per-sample probability of being dropped this pass, with the
    threshold: :class:`PruneRule` in one call.

    Returns:
        tuple: ``(probability, threshold)`` with probability as float32 (N,).
    """
    rule = PruneRule(scores, seen, policy, prune_high, buckets)
    return rule.probabilities(ratio), rule.threshold_at(ratio)
