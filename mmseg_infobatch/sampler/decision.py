"""The per-pass pruning decision of InfoBatch, as a pure function.

The decision draws from the pass's :class:`.prune_rule.PruneRule` with the
draws of :mod:`.random_draws`, streaming over the samples in chunks of
``layout.CHUNK``: the masks it builds (candidates, survivors) and the index
lists are per chunk, so at any moment it holds little beyond its inputs and
its two outputs, the kept indices (int32 below 2**31 samples) and one weight
code (uint8) per sample, which it writes over the rule's candidate codes.
It draws the same random numbers, in the same order, as it would in one
piece, and only from the generator it is given.
"""
import math
from typing import Optional, Sequence

import numpy as np
import torch

from .layout import chunks, index_dtype, numpy_view
from .prune_rule import PruneRule, code_probs
from .random_draws import bernoulli, shuffled


class PassDecision:
    """What one pass decided, in the sampler's memory layout.

    Args:
        buffer (torch.Tensor): The kept sample indices in training order
            (int32 below 2**31 samples, else int64) in its first
            ``num_kept`` entries, followed by free room for the pass's
            padding, so that the padded pass needs no second copy.
        num_kept (int): Samples kept.
        codes (torch.Tensor): One weight code per sample (uint8, N).
        table (torch.Tensor): The weight of each code (float32); code 0 is
            weight 1. Survivors of soft pruning carry ``1 / (1 - p)``.
        threshold (float): The score threshold (NaN when nothing was scored
            or the policy has none).
        num_candidates (int): Samples that were eligible to be pruned.
        num_pruned (int): Samples dropped from this pass.
    """

    def __init__(self, buffer: torch.Tensor, num_kept: int,
                 codes: torch.Tensor, table: torch.Tensor, threshold: float,
                 num_candidates: int, num_pruned: int) -> None:
        self.buffer = buffer
        self.num_kept = num_kept
        self.codes = codes
        self.table = table
        self.threshold = threshold
        self.num_candidates = num_candidates
        self.num_pruned = num_pruned

    @property
    def order(self) -> torch.Tensor:
        """The kept indices in training order (a view of ``buffer``)."""
        return self.buffer[:self.num_kept]

    @property
    def indices(self) -> torch.Tensor:
        """The kept indices in training order, as int64 (a copy)."""
        return self.order.long()

    @property
    def weights(self) -> torch.Tensor:
        """Every sample's weight (float32, N), made from the codes."""
        table = numpy_view(self.table)
        return torch.from_numpy(table[numpy_view(self.codes)])


def decide_pass(scores: torch.Tensor,
                seen: torch.Tensor,
                ratio: float,
                generator: torch.Generator,
                prune: bool = True,
                policy: str = 'mean',
                prune_high: bool = False,
                buckets: Optional[Sequence[Sequence[float]]] = None,
                rescale: bool = True,
                shuffle: bool = True,
                spare: int = 0,
                rule: Optional[PruneRule] = None) -> PassDecision:
    """Decide one pass: which samples train, in which order, with which weight.

    Each candidate is dropped with its probability p; a survivor gets weight
    ``1 / (1 - p)`` when ``rescale``, so ``E[kept * weight] = 1`` per sample.
    With ``prune=False`` (first pass, annealing) the pass is the full data
    and every weight is 1. The result is a pure function of the inputs and
    the generator's state, which it draws all its randomness from.

    Args:
        scores (torch.Tensor): Every sample's score (float32, N).
        seen (torch.Tensor): Which samples were scored: bool (N), or a
            packed bitmask (uint8, bit i of byte i // 8, lowest first).
        ratio (float): The prune probability of 'mean' and 'random'.
        buckets (Sequence[tuple], optional): The quantile buckets, whose
            ratios are the probabilities of 'quantile' (``ratio`` unused).
        spare (int): Free entries to leave after the kept indices in the
            result's buffer, for the pass's padding. Defaults to 0.
        rule (PruneRule, optional): The rule already made from ``scores``
            and ``seen`` (with the same quantiles), which the decision
            then consumes: its codes become the weight codes. Made here if
            None.

    Returns:
        PassDecision: The decision in the sampler's memory layout.
    """
    num_samples = scores.numel()
    dtype = index_dtype(num_samples)
    kept = torch.empty(num_samples + spare, dtype=dtype)
    kept_np = kept.numpy()
    threshold, num_candidates, num_kept = math.nan, 0, 0
    if not prune:
        codes = np.zeros(num_samples, dtype=np.uint8)
        table = np.ones(1, dtype=np.float32)
        kept_np[:num_samples] = np.arange(num_samples, dtype=kept_np.dtype)
        num_kept = num_samples
    else:
        if rule is None:
            rule = PruneRule(scores, seen, policy, prune_high, buckets)
        codes, threshold = rule.codes, rule.threshold_at(ratio)
        probs = code_probs(policy, ratio, buckets)
        if policy == 'quantile':
            table = np.ones(probs.size, dtype=np.float32)
            if rescale:
                # float32 arithmetic, as torch's on a float32 tensor.
                table[1:] = (1.0 / (1.0 - torch.from_numpy(probs[1:]))).numpy()
        else:
            scale = 1.0 / (1.0 - ratio) if rescale else 1.0
            table = np.array([1.0, scale], dtype=np.float32)
        for start, stop in chunks(num_samples):
            code = codes[start:stop]
            if policy == 'quantile':
                prob = probs[code]
                candidates = prob > 0
                keep = torch.rand(stop - start, generator=generator).numpy() \
                    >= prob
            else:
                # Codes 0 and 1, and one drop probability for code 1: the
                # codes are the candidate mask (none at probability 0).
                candidates = code.view(np.bool_) if probs[1] > 0 else \
                    np.zeros(stop - start, dtype=np.bool_)
                keep = ~bernoulli(stop - start, probs[1], generator)
            num_candidates += int(np.count_nonzero(candidates))
            survivors = candidates & keep
            keep |= ~candidates
            code[~survivors] = 0
            num_kept = _append(kept_np, num_kept, keep, start)
    num_pruned = num_samples - num_kept if prune else 0
    buffer = kept
    if shuffle:
        buffer = shuffled(kept[:num_kept], generator, spare)
    return PassDecision(buffer, num_kept, torch.from_numpy(codes),
                        torch.from_numpy(table), threshold, num_candidates,
                        num_pruned)


def _append(kept: np.ndarray, num_kept: int, keep: np.ndarray,
            start: int) -> int:
    """Append the indices of ``keep`` (a chunk from ``start``) to
    ``kept[:num_kept]``; returns the new count."""
    found = np.flatnonzero(keep)
    found += start
    kept[num_kept:num_kept + found.size] = found
    return num_kept + found.size
