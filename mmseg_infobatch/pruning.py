"""The per-pass pruning decision of InfoBatch, as pure vectorised functions.

Everything here is O(N) vectorised work (torch, and numpy where it is
faster on one thread) with no comparison sort and no Python loop over
samples, and draws randomness only from the generator it is given.

The decision streams over the samples in chunks of ``CHUNK``: the masks it
builds (seen, candidates, survivors) and the index lists are per chunk, so
at any moment it holds little beyond its inputs and its two outputs, the
kept indices (int32 below 2**31 samples) and one weight code (uint8) per
sample. It draws the same random numbers, in the same order, as it would
in one piece.
"""
import math
from fractions import Fraction
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

POLICIES = ('mean', 'quantile', 'random')
# The shuffle deals more than SHUFFLE_DIRECT indices (32 MiB of int64, more
# than a last-level cache holds) into buckets of about SHUFFLE_BUCKET
# (256 KiB, an L2 cache's worth); see _shuffle.
SHUFFLE_DIRECT, SHUFFLE_BUCKET = 2**22, 2**15
# Samples per step of the streamed decision: a multiple of 8 (packed seen
# bits) and of numpy's 8192-element cast buffer, so a float64 sum taken in
# chunks is bitwise the sum taken in one call. DEAL_CHUNK: indices per step
# of the shuffle's deal, whose per-step cost grows with its 65,536 buckets.
CHUNK, DEAL_CHUNK = 2**16, 2**18
# A weight table has at most 256 entries (uint8 codes); code 0 is weight 1.
MAX_WEIGHTS = 256


def index_dtype(num_samples: int) -> torch.dtype:
    """The narrowest integer type that holds every sample index."""
    return torch.int32 if num_samples <= 2**31 else torch.int64


def packed_size(num_samples: int) -> int:
    """Bytes of a bitmask with one bit per sample."""
    return (num_samples + 7) // 8


def unpack_bits(bits: torch.Tensor, num_samples: int) -> torch.Tensor:
    """A packed bitmask (bit i of byte i // 8, lowest first) as bool."""
    return torch.from_numpy(
        np.unpackbits(_numpy(bits), count=num_samples,
                      bitorder='little').view(np.bool_))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unpack_bits`."""
    return torch.from_numpy(np.packbits(_numpy(mask), bitorder='little'))


def set_bits(bits: np.ndarray, index: np.ndarray) -> None:
    """Set the bits of ``index`` (repeats allowed) in a packed bitmask."""
    index = index.astype(np.int64, copy=False)
    np.bitwise_or.at(bits, index >> 3,
                     np.left_shift(1, index & 7).astype(np.uint8))


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


class CompactDecision:
    """What one pass decided, in the sampler's memory layout.

    Args:
        buffer (torch.Tensor): The kept sample indices in training order
            (int32 below 2**31 samples, else int64) in its first
            ``num_kept`` entries, followed by free room for the pass's
            padding, so that the padded pass needs no second copy.
        num_kept (int): Samples kept.
        codes (torch.Tensor): One weight code per sample (uint8, N).
        table (torch.Tensor): The weight of each code (float32); code 0 is
            weight 1.
        threshold (float): As :class:`PassDecision`.
        num_candidates (int): As :class:`PassDecision`.
        num_pruned (int): As :class:`PassDecision`.
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

    def weights(self) -> torch.Tensor:
        """Every sample's weight (float32, N), made from the codes."""
        return torch.from_numpy(_numpy(self.table)[_numpy(self.codes)])


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


class _Seen:
    """The seen mask, a bool tensor (N) or a packed bitmask (uint8), read
    in chunks so that a packed one is never unpacked whole."""

    def __init__(self, seen: torch.Tensor, num_samples: int) -> None:
        self.mask = _numpy(seen)
        self.packed = self.mask.dtype != np.bool_
        self.num_samples = num_samples
        counts = [
            int(np.count_nonzero(self.chunk(start, stop)))
            for start, stop in _chunks(num_samples)
        ]
        self.count = sum(counts)
        self.all = self.count == num_samples

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if not self.packed:
            return self.mask[start:stop]
        return np.unpackbits(
            self.mask[start >> 3:(stop + 7) >> 3], count=stop - start,
            bitorder='little').view(np.bool_)


def _chunks(num: int, size: int = CHUNK) -> Iterator[Tuple[int, int]]:
    for start in range(0, num, size):
        yield start, min(start + size, num)


def _mean_threshold(values: np.ndarray, seen: _Seen) -> float:
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
    for start, stop in _chunks(values.size):
        part = values[start:stop]
        if all_seen:
            total = np.add.reduce(part, dtype=np.float64, initial=total)
        else:
            mask = seen.chunk(start, stop)
            total = np.add.reduce(
                part, dtype=np.float64, where=mask, initial=total)
    return float(total / num_seen)


def _below(values: np.ndarray, seen_np: Optional[np.ndarray],
           exact: np.float64,
           prune_high: bool, all_seen: bool) -> np.ndarray:
    """Candidates of the 'mean' policy among one chunk of scores."""
    # Low scores are well learned (paper); prune_high flips the side. The
    # rule is strict, so a sample exactly at the mean is never a candidate.
    candidates = values > exact if prune_high else values < exact
    if not all_seen:
        candidates &= seen_np
    return candidates


class _MeanCandidates:
    """Candidates of the 'mean' and 'random' policies, chunk by chunk.
    Unscored samples are never eligible."""

    def __init__(self, scores: torch.Tensor, seen: _Seen, ratio: float,
                 policy: str, prune_high: bool) -> None:
        self.values, self.seen = _numpy(scores), seen
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
        # A float64 scalar: numpy 2 would round a Python float to the
        # scores' float32 first, and a score just below the mean would
        # count as a tie.
        self.exact = np.float64(self.threshold)

    def chunk(self, start: int, stop: int) -> np.ndarray:
        if self.kind == 'none':
            return np.zeros(stop - start, dtype=np.bool_)
        if self.kind == 'seen':
            return self.seen.chunk(start, stop).copy()
        seen_np = None if self.seen.all else self.seen.chunk(start, stop)
        return _below(self.values[start:stop], seen_np, self.exact,
                      self.prune_high, self.seen.all)


def _candidates(scores: torch.Tensor, seen: torch.Tensor, ratio: float,
                policy: str, prune_high: bool) -> Tuple[torch.Tensor, float]:
    """Samples eligible for pruning under 'mean' or 'random' (bool, N), and
    the threshold. Unscored samples are never eligible."""
    num_samples = scores.numel()
    rule = _MeanCandidates(scores, _Seen(seen, num_samples), ratio, policy,
                           prune_high)
    candidates = np.empty(num_samples, dtype=np.bool_)
    for start, stop in _chunks(num_samples):
        candidates[start:stop] = rule.chunk(start, stop)
    return torch.from_numpy(candidates), rule.threshold


def _quantile_cuts(values: np.ndarray, seen: _Seen, prune_high: bool,
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
    for start, stop in _chunks(values.size):
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
        max(1, min(num_seen,
                   math.ceil(Fraction(str(float(q))) * num_seen))) - 1
        for q, _ in buckets
    ]
    signed.partition(sorted(set(ks)))
    cuts = signed[ks]
    return cuts, float(-cuts[-1] if prune_high else cuts[-1])


def _quantile_buckets(values: np.ndarray, seen: _Seen, start: int,
                      stop: int, cuts: Optional[np.ndarray],
                      num_buckets: int, prune_high: bool) -> np.ndarray:
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
    values, seen = _numpy(scores), _Seen(seen, num_samples)
    cuts, threshold = _quantile_cuts(values, seen, prune_high, buckets)
    probs = _bucket_probs(buckets)
    prob = np.empty(num_samples, dtype=np.float32)
    for start, stop in _chunks(num_samples):
        bucket = _quantile_buckets(values, seen, start, stop, cuts,
                                   len(buckets), prune_high)
        prob[start:stop] = probs[bucket]
    return torch.from_numpy(prob), threshold


def _bucket_probs(buckets: Sequence[Sequence[float]]) -> np.ndarray:
    """Each bucket's prune probability as float32, then 0 (no bucket)."""
    return np.array([r for _, r in buckets] + [0.0], dtype=np.float32)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (no copy)."""
    if isinstance(tensor, np.ndarray):
        return tensor
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
             generator: torch.Generator,
             spare: int = 0) -> torch.Tensor:
    """``indices`` in a uniformly random order, in a new tensor with
    ``spare`` free entries after them.

    Fisher-Yates over millions of indices misses the cache at nearly every
    swap, which made the shuffle the largest cost of a pass. Dealing the
    indices into buckets at random and then shuffling each bucket on its
    own (Rao and Sandelius) is still exactly uniform, and each bucket fits
    the L2 cache. The deal is a stable counting sort of 16-bit keys, O(n)
    like the rest of the pass. The gathers are numpy's: torch's indexing
    takes three times as long on one thread.
    """
    num = indices.numel()
    src = _numpy(indices)
    buffer = torch.empty(num + spare, dtype=indices.dtype)
    out = buffer[:num].numpy()
    if num <= SHUFFLE_DIRECT:
        # The permutation is drawn into the output, then replaced by the
        # indices it points at, chunk by chunk (in place: each chunk is
        # read whole before it is written).
        torch.randperm(num, generator=generator, dtype=indices.dtype,
                       out=buffer[:num])
        for start, stop in _chunks(num):
            out[start:stop] = src[out[start:stop]]
        return buffer
    num_buckets = 1 << min(16, (num // SHUFFLE_BUCKET).bit_length())
    keys = _random_bits(num, np.uint16, generator)
    keys &= np.uint16(num_buckets - 1)
    # Counted in chunks: np.bincount makes an int64 copy of its input.
    counts = np.zeros(num_buckets, dtype=np.int64)
    for begin, end in _chunks(num, DEAL_CHUNK):
        counts += np.bincount(keys[begin:end], minlength=num_buckets)
    ends = np.cumsum(counts)
    _deal(src, keys, ends - counts, out)
    del keys
    start = 0
    for end in ends.tolist():
        if end - start > 1:
            bucket = out[start:end]
            bucket[:] = bucket[torch.randperm(end - start,
                                              generator=generator).numpy()]
        start = end
    return buffer


def _deal(src: np.ndarray, keys: np.ndarray, starts: np.ndarray,
          out: np.ndarray) -> None:
    """Write ``src`` into ``out`` grouped by key, each group from
    ``starts[key]`` on and in ``src`` order: the result of
    ``src[np.argsort(keys, kind='stable')]``, without its 8 bytes of
    int64 order per index. A stable sort of each chunk, placed after what
    earlier chunks put into each group."""
    cursor = starts.astype(np.int64)
    for begin, end in _chunks(keys.size, DEAL_CHUNK):
        part = keys[begin:end]
        order = np.argsort(part, kind='stable')
        sorted_keys = part[order]
        counts = np.bincount(part, minlength=cursor.size)
        first = np.cumsum(counts) - counts
        dest = np.arange(part.size, dtype=np.int64)
        dest -= first[sorted_keys]
        dest += cursor[sorted_keys]
        out[dest] = src[begin:end][order]
        cursor += counts


def decide_compact(scores: torch.Tensor,
                   seen: torch.Tensor,
                   ratio: float,
                   generator: torch.Generator,
                   prune: bool = True,
                   policy: str = 'mean',
                   prune_high: bool = False,
                   buckets: Optional[Sequence[Sequence[float]]] = None,
                   rescale: bool = True,
                   shuffle: bool = True,
                   spare: int = 0) -> CompactDecision:
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
        spare (int): Free entries to leave after the kept indices in the
            result's buffer, for the pass's padding. Defaults to 0.

    Returns:
        CompactDecision: The decision in the sampler's memory layout.
    """
    num_samples = scores.numel()
    seen = _Seen(seen, num_samples)
    values = _numpy(scores)
    dtype = index_dtype(num_samples)
    kept = torch.empty(num_samples + spare, dtype=dtype)
    kept_np = kept.numpy()
    codes = np.zeros(num_samples, dtype=np.uint8)
    threshold, num_candidates, num_kept = math.nan, 0, 0
    if not prune:
        table = np.ones(1, dtype=np.float32)
        kept_np[:num_samples] = np.arange(num_samples, dtype=kept_np.dtype)
        num_kept = num_samples
    elif policy == 'quantile':
        cuts, threshold = _quantile_cuts(values, seen, prune_high, buckets)
        probs = _bucket_probs(buckets)
        table = np.ones(len(buckets) + 1, dtype=np.float32)
        if rescale:
            # float32 arithmetic, as torch's on a float32 tensor.
            table[1:] = (1.0 / (1.0 - torch.from_numpy(probs[:-1]))).numpy()
        for start, stop in _chunks(num_samples):
            bucket = _quantile_buckets(values, seen, start, stop, cuts,
                                       len(buckets), prune_high)
            prob = probs[bucket]
            candidates = prob > 0
            num_candidates += int(np.count_nonzero(candidates))
            keep = torch.rand(stop - start, generator=generator).numpy() \
                >= prob
            survivors = candidates & keep
            codes[start:stop] = np.where(survivors, bucket + 1, 0)
            num_kept = _append(kept_np, num_kept, keep, start)
    else:
        # One drop probability for every candidate: elementwise numpy on
        # masks, and np.flatnonzero, which takes a tenth of the time of
        # torch.nonzero.
        rule = _MeanCandidates(scores, seen, ratio, policy, prune_high)
        threshold = rule.threshold
        scale = 1.0 / (1.0 - ratio) if rescale else 1.0
        table = np.array([1.0, scale], dtype=np.float32)
        for start, stop in _chunks(num_samples):
            candidates = rule.chunk(start, stop)
            num_candidates += int(np.count_nonzero(candidates))
            survivors = candidates & ~_bernoulli(stop - start, ratio,
                                                 generator)
            keep = survivors | ~candidates
            codes[start:stop] = survivors.view(np.uint8)
            num_kept = _append(kept_np, num_kept, keep, start)
    num_pruned = num_samples - num_kept if prune else 0
    buffer = kept
    if shuffle:
        buffer = _shuffle(kept[:num_kept], generator, spare)
    return CompactDecision(buffer, num_kept, torch.from_numpy(codes),
                           torch.from_numpy(table), threshold,
                           num_candidates, num_pruned)


def _append(kept: np.ndarray, num_kept: int, keep: np.ndarray,
            start: int) -> int:
    """Append the indices of ``keep`` (a chunk from ``start``) to
    ``kept[:num_kept]``; returns the new count."""
    found = np.flatnonzero(keep)
    found += start
    kept[num_kept:num_kept + found.size] = found
    return num_kept + found.size


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
    """:func:`decide_compact` with its result as plain tables: the kept
    indices as int64 and every sample's weight as float32.

    Each candidate is dropped with its probability p; a survivor gets weight
    ``1 / (1 - p)`` when ``rescale``, so ``E[kept * weight] = 1`` per sample.
    With ``prune=False`` (first pass, annealing) the pass is the full data
    and every weight is 1. The result is a pure function of the inputs and
    the generator's state, which it draws all its randomness from.
    """
    compact = decide_compact(scores, seen, ratio, generator, prune, policy,
                             prune_high, buckets, rescale, shuffle)
    return PassDecision(compact.order.long(), compact.weights(),
                        compact.threshold, compact.num_candidates,
                        compact.num_pruned)


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
