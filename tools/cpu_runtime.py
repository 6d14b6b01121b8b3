"""Run mmseg configs on machines without CUDA, DDP included (gloo).

mmengine 0.10.x assumes CUDA for distributed training: ``init_dist`` calls
``torch.cuda.set_device`` and the runner gives DDP ``device_ids``. Without
CUDA we start the gloo process group ourselves (mmengine then skips its own)
and let DDP place the CPU module. SyncBN needs a GPU, so it becomes BN.
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
        cfg.model_wrapper_cfg = dict(
            type='MMDistributedDataParallel', device_ids=None)
        print_log('No CUDA: distributed training on CPU with gloo; SyncBN '
                  'runs as BN.', logger='current')
    return cfg
