"""What extends or repairs mmengine for InfoBatch runs: the no-pause loop,
the resumable FSDP strategy, the safe checkpoint types and the version
shims (``compat``). Nothing here knows InfoBatch's sampler, loss or hook."""
# Registers ResumableFSDPStrategy, where torch has FSDP.
from . import resumable_fsdp_strategy  # noqa: F401
from .no_pause_loop import NoPauseIterBasedTrainLoop

__all__ = ['NoPauseIterBasedTrainLoop']
