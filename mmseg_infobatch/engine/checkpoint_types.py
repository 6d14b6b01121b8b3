"""Let torch >= 2.6's safe ``torch.load`` read mmengine checkpoints.

torch 2.6 made ``weights_only=True`` the default of ``torch.load``, which
mmengine 0.10.x calls without the argument. Its checkpoints hold a few
non-tensor types (the message hub's HistoryBuffer, numpy arrays and scalars
in logged values), so ``--resume`` fails. Rather than switch safe loading off
for the whole process, we allow-list exactly those types; anything else in a
checkpoint is still refused. InfoBatch's own state is plain tensors and ints.

HistoryBuffer pickles its bound statistics methods as ``getattr(buffer,
'mean')``, so ``getattr`` is allowed too. That stays safe: the weights-only
unpickler still refuses to call anything that is not allow-listed, so getattr
can only fetch attributes of objects it was already allowed to build.

FlexibleRunner's FSDPStrategy saves one checkpoint per rank, whose model
and optimizer state are ``ShardedTensor`` objects: the shard's tensor and
plain metadata (offsets, sizes, placement, sharding spec). Those classes
are allowed as well; they rebuild only data, and a ShardedTensor refuses to
load into a process group of another rank or size.

torch < 2.4 has no allow-list, so there a whole mmengine checkpoint cannot
be read with ``weights_only=True``; mmengine itself loads with torch's
default (``weights_only=False``) on those versions.
``load_trusted_checkpoint`` does the same there, for checkpoints the user
wrote, and loads safely where torch can.
"""
import builtins

import torch


def _mmengine_checkpoint_types() -> list:
    import numpy as np
    from mmengine.logging import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtype_classes = [
        type(np.dtype(t)) for t in ('bool', 'int8', 'int16', 'int32', 'int64',
                                    'uint8', 'float16', 'float32', 'float64')
    ]
    return [
        HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar,
        builtins.getattr
    ] + dtype_classes


def _fsdp_checkpoint_types() -> list:
    """The types of a ShardedTensor, as FSDP's per-rank checkpoints hold
    them; none where torch has no distributed package."""
    try:
        from torch.distributed._shard.metadata import ShardMetadata
        from torch.distributed._shard.sharded_tensor.api import ShardedTensor
        from torch.distributed._shard.sharded_tensor.metadata import (
            MEM_FORMAT_ENCODING, ShardedTensorMetadata, TensorProperties)
        from torch.distributed._shard.sharded_tensor.shard import Shard
        from torch.distributed._shard.sharding_spec import ChunkShardingSpec
        from torch.distributed.remote_device import _remote_device
    except ImportError:
        return []
    return [
        ShardedTensor, ShardedTensor.ProcessGroupState, Shard, ShardMetadata,
        ShardedTensorMetadata, TensorProperties, MEM_FORMAT_ENCODING,
        ChunkShardingSpec, _remote_device
    ]


def allow_mmengine_checkpoint_types() -> None:
    """Add the types of mmengine's checkpoints (those of FlexibleRunner's
    FSDPStrategy included) to torch's safe-load allow-list."""
    if can_load_mmengine_checkpoints_safely():
        torch.serialization.add_safe_globals(_mmengine_checkpoint_types() +
                                             _fsdp_checkpoint_types())


def can_load_mmengine_checkpoints_safely() -> bool:
    """Whether this torch can allow-list mmengine's types (torch >= 2.4)."""
    return hasattr(torch.serialization, 'add_safe_globals')


def load_trusted_checkpoint(path: str, map_location='cpu') -> dict:
    """A whole mmengine checkpoint, from a file the user trusts (their
    own work_dir): safely where torch has the allow-list, else as mmengine
    loads it on that torch."""
    if not can_load_mmengine_checkpoints_safely():
        return torch.load(path, map_location=map_location)
    allow_mmengine_checkpoint_types()
    return torch.load(path, map_location=map_location, weights_only=True)
