"""An FSDPStrategy for FlexibleRunner that can resume.

mmengine 0.10.x's ``FSDPStrategy.load_optim_state_dict`` calls
``FSDP.optim_state_dict_to_load(state_dict, model, optimizer)``, the
argument order of torch 2.0; torch >= 2.1 takes ``(model, optim,
optim_state_dict)``, so every ``--resume`` under FSDP fails with "unhashable
type: 'dict'", with or without InfoBatch. ``ResumableFSDPStrategy`` is
mmengine's strategy with that one call made by keyword, which both orders
accept. Use it by config::

    runner_type = 'FlexibleRunner'
    strategy = dict(type='ResumableFSDPStrategy')
"""
from mmengine.registry import STRATEGIES

from .compat import fsdp_strategy_class

# None where torch has no FSDP (no distributed support, or torch < 2.0):
# mmengine registers its FSDPStrategy only where FSDP imports.
FSDPStrategy = fsdp_strategy_class()

if FSDPStrategy is not None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    @STRATEGIES.register_module()
    class ResumableFSDPStrategy(FSDPStrategy):
        """mmengine's ``FSDPStrategy`` (same arguments) whose optimizer
        state loads on resume with torch >= 2.1."""

        def load_optim_state_dict(self, state_dict: dict) -> None:
            """Load the optimizer state saved by :meth:`optim_state_dict`.

            Args:
                state_dict (dict): The optimizer state dict of a checkpoint.
            """
            # By keyword: torch 2.0 and torch >= 2.1 order them differently.
            optim_state_dict = \
                FullyShardedDataParallel.optim_state_dict_to_load(
                    model=self.model,
                    optim=self.optim_wrapper.optimizer,
                    optim_state_dict=state_dict)
            self.optim_wrapper.load_state_dict(optim_state_dict)
