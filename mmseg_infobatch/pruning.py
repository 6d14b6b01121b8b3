"""The per-pass pruning decision of InfoBatch, as pure vectorised functions.

Everything here is O(N) tensor work with no sort and no Python loop over
samples, and draws randomness only from the generator it is given.
"""
import math
from typing import Optional, Sequence, Tuple

import torch

POLICIES = ('mean', 'quantile', 'random')


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
        k = max(1, min(num_seen, math.ceil(q * num_seen)))
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
    num_seen = int(seen.sum())
    if num_seen == 0:
        return seen.clone(), math.nan
    # float64 sum: a float32 sum of 10M values loses the low digits.
    total = scores.sum(dtype=torch.float64) if num_seen == seen.numel() \
        else scores.double().masked_fill(~seen, 0).sum()
    threshold = float(total / num_seen)
    # Low scores are well learned (paper); prune_high flips the side.
    candidates = scores > threshold if prune_high else scores < threshold
    candidates &= seen
    return candidates, threshold


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
    and every weight is 1.
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
        keep = torch.rand(num_samples, generator=generator) >= prob
        weights = torch.ones(num_samples, dtype=torch.float32)
        if rescale:
            survivors = candidates & keep
            weights[survivors] = 1.0 / (1.0 - prob[survivors])
    else:
        # One drop probability for every candidate: boolean masks and one
        # torch.where, the cheapest path at ImageNet scale.
        candidates, threshold = _candidates(scores, seen, ratio, policy,
                                            prune_high)
        keep = ~(candidates & (torch.rand(num_samples, generator=generator)
                               < ratio))
        scale = 1.0 / (1.0 - ratio) if rescale else 1.0
        weights = torch.where(candidates & keep, scale, 1.0)
    if prune:
        num_candidates = int(candidates.sum())
        indices = keep.nonzero().squeeze(1)
        num_pruned = num_samples - indices.numel()
    if shuffle:
        indices = indices[torch.randperm(indices.numel(),
                                         generator=generator)]
    return PassDecision(indices, weights, threshold, num_candidates,
                        num_pruned)


def pad_to_multiple(indices: torch.Tensor, multiple: int) -> torch.Tensor:
    """Repeat the head of ``indices`` up to a multiple of ``multiple``: the
    world size, so every rank gets an equal share, or world size x batch
    size, so every batch is full."""
    total = math.ceil(indices.numel() / multiple) * multiple
    if total == indices.numel():
        return indices
    repeats = math.ceil(total / indices.numel())
    return indices.repeat(repeats)[:total]


def rank_share(padded: torch.Tensor, rank: int,
               world_size: int) -> torch.Tensor:
    """The rank's interleaved slice, as in mmengine's DefaultSampler."""
    return padded[rank::world_size]
