"""The random draws of a pass: Bernoulli drops and a uniform shuffle.

Each draws only from the generator it is given, so a pass is a pure
function of its inputs and the generator's state.
"""
import numpy as np
import torch

from .layout import chunks, numpy_view

# The shuffle deals more than SHUFFLE_DIRECT indices (32 MiB of int64, more
# than a last-level cache holds) into buckets of about SHUFFLE_BUCKET
# (256 KiB, an L2 cache's worth); see shuffled.
SHUFFLE_DIRECT, SHUFFLE_BUCKET = 2**22, 2**15
# Indices per step of the shuffle's deal, whose per-step cost grows with
# its 65,536 buckets.
DEAL_CHUNK = 2**18


def _random_bits(num: int, dtype: type,
                 generator: torch.Generator) -> np.ndarray:
    """``num`` uniform integers of the unsigned ``dtype``, cut from
    full-range 64-bit draws: one draw holds two 32-bit or four 16-bit
    values, where a float of ``torch.rand`` holds one."""
    per_word = 8 // np.dtype(dtype).itemsize
    words = torch.empty(
        (num + per_word - 1) // per_word, dtype=torch.int64).random_(
            -2**63, None, generator=generator)
    return words.numpy().view(dtype)[:num]


def bernoulli(num: int, p: float, generator: torch.Generator) -> np.ndarray:
    """``num`` independent draws that are True with probability ``p``
    (to within 2**-33, finer than a float32 uniform's 2**-24)."""
    cut = min(round(p * 2**32), 2**32 - 1)
    return _random_bits(num, np.uint32, generator) < np.uint32(cut)


def shuffled(indices: torch.Tensor,
             generator: torch.Generator,
             spare: int = 0) -> torch.Tensor:
    """``indices`` in a uniformly random order, in a new tensor with
    ``spare`` free entries after them.

    Fisher-Yates over millions of indices misses the cache at nearly every
    swap. Dealing the indices into buckets at random and then shuffling
    each bucket on its own (Rao and Sandelius) is still exactly uniform,
    and each bucket fits the L2 cache. The deal is a stable counting sort
    of 16-bit keys, O(n) like the rest of the pass. The gathers are
    numpy's, which are faster than torch's indexing on one thread.
    """
    num = indices.numel()
    src = numpy_view(indices)
    buffer = torch.empty(num + spare, dtype=indices.dtype)
    out = buffer[:num].numpy()
    if num <= SHUFFLE_DIRECT:
        # The permutation is drawn into the output, then replaced by the
        # indices it points at, chunk by chunk (in place: each chunk is
        # read whole before it is written).
        torch.randperm(
            num, generator=generator, dtype=indices.dtype, out=buffer[:num])
        for start, stop in chunks(num):
            out[start:stop] = src[out[start:stop]]
        return buffer
    num_buckets = 1 << min(16, (num // SHUFFLE_BUCKET).bit_length())
    keys = _random_bits(num, np.uint16, generator)
    keys &= np.uint16(num_buckets - 1)
    # Counted in chunks: np.bincount makes an int64 copy of its input.
    counts = np.zeros(num_buckets, dtype=np.int64)
    for begin, end in chunks(num, DEAL_CHUNK):
        counts += np.bincount(keys[begin:end], minlength=num_buckets)
    ends = np.cumsum(counts)
    _deal(src, keys, ends - counts, out)
    del keys
    start = 0
    for end in ends.tolist():
        if end - start > 1:
            bucket = out[start:end]
            bucket[:] = bucket[torch.randperm(
                end - start, generator=generator).numpy()]
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
    for begin, end in chunks(keys.size, DEAL_CHUNK):
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
