"""The padding of a pass to a whole multiple, for the tests to state it.

The sampler pads by the batches of a pass (``batches_per_pass``); the
tests check the simpler rule below, which it meets on one batch.
"""
import math

import torch

from mmseg_infobatch.sampler.layout import cycle_to


def pad_to_multiple(indices: torch.Tensor, multiple: int) -> torch.Tensor:
    """Repeat the head of ``indices`` up to a multiple of ``multiple``: the
    world size, so every rank gets an equal share, or world size x batch
    size, so every batch is full."""
    total = math.ceil(indices.numel() / multiple) * multiple
    return cycle_to(indices, total)
