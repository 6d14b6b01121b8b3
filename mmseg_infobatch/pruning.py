"""The per-pass pruning decision of InfoBatch, as pure vectorised functions.

Everything here is O(N) vectorised work (torch, and numpy where it is
faster on one thread) with no comparison sort and no Python loop over
samples, and draws randomness only from the generator it is given.
"""
import math
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

POLICIES = ('mean', 'quantile', 'random')
# The shuffle deals more than SHUFFLE_DIRECT indices (32 MiB of int64, more
# than a last-level cache holds) into buckets of about SHUFFLE_BUCKET
# (256 KiB, an L2 cache's worth); see _shuffle.
SHUFFLE_DIRECT, SHUFFLE_BUCKET = 2**22, 2**15


class PassDecision:
    """What one pass decided.

    Args:
        indices (torch.Tensor): Kept sample indices in training order (int64).
        weights (torch.Tensor): Loss weight of every sample (float32, N).
            Survivors of soft pruning carry ``1 / (1 - r)``; all others 1.
        threshold (float): The score threshold (NaN when nothing was scored
            or the policy has none).
        num_candidates (int): Samples that were eligible to be pruned.
        num_pruned (int): Samples dropped from this pass.
    """

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor,
                 threshold: float, num_candidates: int,
                 num_pruned: int) -> None:
        self.indices = indices
        self.weights = weights
        self.threshold = threshold
        self.num_candidates = num_candidates
        self.num_pruned = num_pruned


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
    prob = torch.zeros(scores.numel(), dtype=torch.float32)
    num_seen = int(seen.sum())
    if num_seen == 0:
        return prob, math.nan
    signed = -scores if prune_high else scores
    # 'quantile': buckets of increasing cut points, each with its own ratio.
    # kthvalue is a selection, not a sort.
    seen_signed = signed[seen]
    assigned = ~seen
    threshold = math.nan
    for q, r in buckets:
        # The lowest q of the scored samples, q as written: in floats
        # 0.28 * 25 is 7.000000000000001, one sample too many.
        k = max(1, min(num_seen,
                       math.ceil(Fraction(str(float(q))) * num_seen)))
        cut = seen_signed.kthvalue(k).values
        in_bucket = ~assigned & (signed <= cut)
        prob.masked_fill_(in_bucket, r)
        assigned |= in_bucket
        threshold = float(-cut if prune_high else cut)
    return prob, threshold


def _candidates(scores: torch.Tensor, seen: torch.Tensor, ratio: float,
                policy: str, prune_high: bool) -> Tuple[torch.Tensor, float]:
    """Samples eligible for pruning under 'mean' or 'random', and the
    threshold. Unscored samples are never eligible."""
    if ratio == 0:
        return torch.zeros_like(seen), math.nan
    if policy == 'random':
        return seen.clone(), math.nan
    values, seen_np = _numpy(scores), _numpy(seen)
    all_seen = bool(seen_np.all())
    num_seen = seen_np.size if all_seen else int(np.count_nonzero(seen_np))
    if num_seen == 0:
        return seen.clone(), math.nan
    # A float64 sum: a float32 one of 10M values loses the low digits.
    # numpy's converts as it sums, where torch's makes a float64 copy first.
    total = np.add.reduce(values, dtype=np.float64) if all_seen else \
        np.add.reduce(values, dtype=np.float64, where=seen_np)
    threshold = float(total / num_seen)
    # Low scores are well learned (paper); prune_high flips the side. The
    # rule is strict, so a sample exactly at the mean is never a candidate.
    # A float64 scalar: numpy 2 would round a Python float to the scores'
    # float32 first, and a score just below the mean would count as a tie.
    exact = np.float64(threshold)
    candidates = values > exact if prune_high else values < exact
    if not all_seen:
        candidates &= seen_np
    return torch.from_numpy(candidates), threshold


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (no copy)."""
    return tensor.detach().cpu().numpy()


def _random_bits(num: int, dtype: type,
                 generator: torch.Generator) -> np.ndarray:
    """``num`` uniform integers of the unsigned ``dtype``, cut from
    full-range 64-bit draws: one such draw costs about what one float of
    ``torch.rand`` costs, and holds two 32-bit or four 16-bit values."""
    per_word = 8 // np.dtype(dtype).itemsize
    words = torch.empty((num + per_word - 1) // per_word,
                        dtype=torch.int64).random_(-2**63, None,
                                                   generator=generator)
    return words.numpy().view(dtype)[:num]


def _bernoulli(num: int, p: float, generator: torch.Generator) -> np.ndarray:
    """``num`` independent draws that are True with probability ``p``
    (to within 2**-33, finer than a float32 uniform's 2**-24)."""
    cut = min(round(p * 2**32), 2**32 - 1)
    return _random_bits(num, np.uint32, generator) < np.uint32(cut)


def _shuffle(indices: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
    """``indices`` in a uniformly random order.

    Fisher-Yates over millions of indices misses the cache at nearly every
    swap, which made the shuffle the largest cost of a pass. Dealing the
    indices into buckets at random and then shuffling each bucket on its
    own (Rao and Sandelius) is still exactly uniform, and each bucket fits
    the L2 cache. The deal is a stable radix sort of 16-bit keys (numpy's
    'stable' argsort for such keys), O(n) like the rest of the pass. The
    gathers are numpy's: torch's indexing takes three times as long on one
    thread.
    """
    num = indices.numel()
    if num <= SHUFFLE_DIRECT:
        order = torch.randperm(num, generator=generator).numpy()
        return torch.from_numpy(_numpy(indices)[order])
    num_buckets = 1 << min(16, (num // SHUFFLE_BUCKET).bit_length())
    keys = _random_bits(num, np.uint16, generator)
    keys &= np.uint16(num_buckets - 1)
    dealt = _numpy(indices)[np.argsort(keys, kind='stable')]
    ends = np.cumsum(np.bincount(keys, minlength=num_buckets)).tolist()
    start = 0
    for end in ends:
        if end - start > 1:
            bucket = dealt[start:end]
            bucket[:] = bucket[torch.randperm(end - start,
                                              generator=generator).numpy()]
        start = end
    return torch.from_numpy(dealt)


def decide_pass(scores: torch.Tensor,
                seen: torch.Tensor,
                ratio: float,
                generator: torch.Generator,
                prune: bool = True,
                policy: str = 'mean',
                prune_high: bool = False,
                buckets: Optional[Sequence[Sequence[float]]] = None,
                rescale: bool = True,
                shuffle: bool = True) -> PassDecision:
    """Decide one pass: which samples train, in which order, with which weight.

    Each candidate is dropped with its probability p; a survivor gets weight
    ``1 / (1 - p)`` when ``rescale``, so ``E[kept * weight] = 1`` per sample.
    With ``prune=False`` (first pass, annealing) the pass is the full data
    and every weight is 1. The result is a pure function of the inputs and
    the generator's state, which it draws all its randomness from.
    """
    num_samples = scores.numel()
    threshold, num_candidates, num_pruned = math.nan, 0, 0
    if not prune:
        weights = torch.ones(num_samples, dtype=torch.float32)
        indices = torch.arange(num_samples)
    elif policy == 'quantile':
        prob, threshold = prune_probabilities(scores, seen, ratio, policy,
                                              prune_high, buckets)
        candidates = prob > 0
        num_candidates = int(candidates.sum())
        keep = torch.rand(num_samples, generator=generator) >= prob
        weights = torch.ones(num_samples, dtype=torch.float32)
        if rescale:
            survivors = candidates & keep
            weights[survivors] = 1.0 / (1.0 - prob[survivors])
        indices = torch.from_numpy(np.flatnonzero(_numpy(keep)))
    else:
        # One drop probability for every candidate: elementwise numpy on
        # masks, and np.flatnonzero, which takes a tenth of the time of
        # torch.nonzero.
        candidates, threshold = _candidates(scores, seen, ratio, policy,
                                            prune_high)
        candidates = _numpy(candidates)
        num_candidates = int(np.count_nonzero(candidates))
        survivors = candidates & ~_bernoulli(num_samples, ratio, generator)
        keep = survivors | ~candidates
        scale = 1.0 / (1.0 - ratio) if rescale else 1.0
        # A lookup by the survivor flag beats np.where by half.
        table = np.array([1.0, scale], dtype=np.float32)
        weights = torch.from_numpy(table[survivors.view(np.uint8)])
        indices = torch.from_numpy(np.flatnonzero(keep))
    if prune:
        num_pruned = num_samples - indices.numel()
    if shuffle:
        indices = _shuffle(indices, generator)
    return PassDecision(indices, weights, threshold, num_candidates,
                        num_pruned)


def cycle_to(indices: torch.Tensor, total: int) -> torch.Tensor:
    """``indices`` repeated from its head and cut to ``total`` entries."""
    if total == indices.numel():
        return indices
    repeats = math.ceil(total / indices.numel())
    return indices.repeat(repeats)[:total]


def pad_to_multiple(indices: torch.Tensor, multiple: int) -> torch.Tensor:
    """Repeat the head of ``indices`` up to a multiple of ``multiple``: the
    world size, so every rank gets an equal share, or world size x batch
    size, so every batch is full."""
    total = math.ceil(indices.numel() / multiple) * multiple
    return cycle_to(indices, total)


def rank_share(padded: torch.Tensor, rank: int,
               world_size: int) -> torch.Tensor:
    """The rank's interleaved slice, as in mmengine's DefaultSampler."""
    return padded[rank::world_size]
