"""How a pass is laid out: in memory, in chunks and across ranks.

The sampler keeps its per-sample tables narrow: sample indices as int32
below 2**31 samples, the seen mask as one bit per sample. The decision
walks those tables in chunks of ``CHUNK`` samples, and the sampler pads a
pass by repeating its head, then deals it to the ranks interleaved.
"""
import math
from typing import Iterator, Tuple

import numpy as np
import torch

# Samples per step of the streamed decision: a multiple of 8 (packed seen
# bits) and of numpy's 8192-element cast buffer, so a float64 sum taken in
# chunks is bitwise the sum taken in one call.
CHUNK = 2**16


def index_dtype(num_samples: int) -> torch.dtype:
    """The narrowest integer type that holds every sample index."""
    return torch.int32 if num_samples <= 2**31 else torch.int64


def numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor (no copy)."""
    if isinstance(tensor, np.ndarray):
        return tensor
    return tensor.detach().cpu().numpy()


def chunks(num: int, size: int = CHUNK) -> Iterator[Tuple[int, int]]:
    """``(start, stop)`` of each step over ``num`` entries, ``size`` a
    step."""
    for start in range(0, num, size):
        yield start, min(start + size, num)


def packed_size(num_samples: int) -> int:
    """Bytes of a bitmask with one bit per sample."""
    return (num_samples + 7) // 8


def unpack_bits(bits: torch.Tensor, num_samples: int) -> torch.Tensor:
    """A packed bitmask (bit i of byte i // 8, lowest first) as bool."""
    return torch.from_numpy(
        np.unpackbits(numpy_view(bits), count=num_samples,
                      bitorder='little').view(np.bool_))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unpack_bits`."""
    return torch.from_numpy(np.packbits(numpy_view(mask), bitorder='little'))


def set_bits(bits: np.ndarray, index: np.ndarray) -> None:
    """Set the bits of ``index`` (repeats allowed) in a packed bitmask."""
    index = index.astype(np.int64, copy=False)
    np.bitwise_or.at(bits, index >> 3,
                     np.left_shift(1, index & 7).astype(np.uint8))


def cycle_to(indices: torch.Tensor, total: int) -> torch.Tensor:
    """``indices`` repeated from its head and cut to ``total`` entries."""
    if total == indices.numel():
        return indices
    repeats = math.ceil(total / indices.numel())
    return indices.repeat(repeats)[:total]


def rank_share(padded: torch.Tensor, rank: int,
               world_size: int) -> torch.Tensor:
    """The rank's interleaved slice, as in mmengine's DefaultSampler."""
    return padded[rank::world_size]
