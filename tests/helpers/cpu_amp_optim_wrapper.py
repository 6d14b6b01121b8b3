"""Test-only: mixed precision on CPU (bfloat16 autocast), which mmengine's
AmpOptimWrapper refuses outside GPUs."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(OptimWrapper):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_calls = 0

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16):
            self.autocast_calls += 1
            yield
