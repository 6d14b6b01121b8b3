"""Run mmseg configs on machines without CUDA, DDP and FSDP included (gloo).

mmengine 0.10.x assumes CUDA for distributed training: ``init_dist`` calls
``torch.cuda.set_device``, the runner gives DDP ``device_ids`` and
FlexibleRunner's strategies give DDP ``device_ids`` and FSDP a ``device_id``
of the local GPU. Without CUDA we start the gloo process group ourselves
(mmengine then skips its own) and let DDP and FSDP place the CPU module:
``model_wrapper_cfg`` for the runner, the strategy's ``model_wrapper`` for
FlexibleRunner. SyncBN needs a GPU, so it becomes BN.
"""
import os

import torch
from mmengine.config import Config
from mmengine.logging import print_log


def sync_bn_to_bn(node):
    """Replace every ``type='SyncBN'`` in a config tree by ``'BN'``."""
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
        for value in node.values():
            sync_bn_to_bn(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            sync_bn_to_bn(value)
    return node


def prepare_cpu_config(cfg: Config, launcher: str) -> Config:
    """Adapt ``cfg`` in place for a CUDA-less machine; a no-op with CUDA."""
    if torch.cuda.is_available():
        return cfg
    sync_bn_to_bn(cfg._cfg_dict)
    if launcher == 'pytorch':
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group(
                backend='gloo',
                rank=int(os.environ['RANK']),
                world_size=int(os.environ['WORLD_SIZE']))
        if is_flexible_runner(cfg):
            place_strategy_on_cpu(cfg)
        else:
            cfg.model_wrapper_cfg = dict(
                type='MMDistributedDataParallel', device_ids=None)
        print_log(
            'No CUDA: distributed training on CPU with gloo; SyncBN '
            'runs as BN.',
            logger='current')
    return cfg


def is_flexible_runner(cfg: Config) -> bool:
    """Whether the config's ``runner_type`` is FlexibleRunner (or a
    subclass), which takes a ``strategy`` and ignores
    ``model_wrapper_cfg``."""
    from mmengine.runner import FlexibleRunner
    from mmseg.registry import RUNNERS
    runner_type = cfg.get('runner_type')
    if runner_type is None:
        return False
    if isinstance(runner_type, str):
        runner_type = RUNNERS.get(runner_type)
    return isinstance(runner_type, type) and issubclass(
        runner_type, FlexibleRunner)


def cpu_fsdp_supported() -> bool:
    """Whether FSDP can set up on the CPU: it creates
    ``torch.cpu.Stream(priority=...)``, a stub that takes no arguments
    before torch 2.2."""
    try:
        torch.cpu.Stream(priority=0)
    except TypeError:
        return False
    return True


def place_strategy_on_cpu(cfg: Config) -> None:
    """Point a FlexibleRunner strategy's model wrapper at the CPU: DDP
    without ``device_ids``, FSDP with ``device_id='cpu'``. Keys the config
    sets itself are kept."""
    from mmengine._strategy import DDPStrategy, FSDPStrategy
    from mmengine.registry import STRATEGIES
    strategy = cfg.get('strategy') or dict(type='DDPStrategy')
    kind = strategy.get('type')
    if isinstance(kind, str):
        kind = STRATEGIES.get(kind)
    if not isinstance(kind, type):
        return
    wrapper = dict(strategy.get('model_wrapper') or {})
    if issubclass(kind, FSDPStrategy):
        if not cpu_fsdp_supported():
            raise RuntimeError(
                f'FSDP on the CPU needs torch >= 2.2; this is torch '
                f'{torch.__version__}, whose torch.cpu.Stream takes no '
                'priority, which FSDP passes at set-up. Use '
                "strategy=dict(type='DDPStrategy') on the CPU, run FSDP on "
                'GPUs, or install torch >= 2.2.')
        wrapper.setdefault('type', 'MMFullyShardedDataParallel')
        wrapper.setdefault('device_id', 'cpu')
    elif issubclass(kind, DDPStrategy):
        # DDPStrategy's own default, plus the CPU placement.
        wrapper.setdefault('type', 'MMDistributedDataParallel')
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('device_ids', None)
    else:
        return
    strategy['model_wrapper'] = wrapper
    cfg.strategy = strategy
