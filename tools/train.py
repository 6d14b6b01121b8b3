"""Train a segmentor (mmseg's tools/train.py, plus CPU and resume support,
and ``--infobatch`` to train any config with InfoBatch).

Runs from any folder.
"""
import argparse
import logging
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from mmseg_infobatch import add_infobatch  # registers the components too
from mmseg_infobatch.engine.checkpoint_types import \
    allow_mmengine_checkpoint_types
from mmseg_infobatch.engine.cpu_runtime import prepare_cpu_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const=True,
        default=False,
        metavar='PATH',
        help='resume from the checkpoint PATH or, without PATH, from the '
        'latest checkpoint in the work_dir. On several nodes without a '
        'shared work_dir, give every node the same PATH')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training (a GPU flag: '
        "mmengine's AmpOptimWrapper refuses a CPU-only machine)")
    parser.add_argument(
        '--infobatch',
        action='store_true',
        default=False,
        help='train the config with InfoBatch (mmseg_infobatch.'
        'add_infobatch): InfoBatchSampler, InfoBatchHook and every head '
        'loss wrapped. The work_dir (default ./work_dirs/CONFIG_infobatch) '
        'gets the config as trained; give the flag again with --resume')
    parser.add_argument(
        '--infobatch-options',
        nargs='+',
        action=DictAction,
        metavar='KEY=VALUE',
        help='knobs for --infobatch, arguments of InfoBatchSampler and '
        'InfoBatchHook; e.g. ratio=0.3 delta=0.9')
    args = parse_common_args(parser, argv)
    if args.infobatch_options and not args.infobatch:
        parser.error('--infobatch-options sets the knobs of --infobatch; '
                     'add --infobatch')
    return args


def parse_common_args(parser, argv=None):
    """Add the options train.py and test.py share, then parse."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value; e.g. '
        'train_dataloader.sampler.ratio=0.3')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(config: str,
                cfg_options,
                work_dir,
                launcher,
                work_dir_suffix: str = '') -> Config:
    """Read a config and apply the command line, as mmseg's tools do; the
    default work_dir is ``./work_dirs/`` + the config's name +
    ``work_dir_suffix``."""
    if not osp.isfile(config):
        raise FileNotFoundError(f'Config file not found: {config}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        name = osp.splitext(osp.basename(config))[0] + work_dir_suffix
        cfg.work_dir = osp.join('./work_dirs', name)
    return cfg


def build_config(args) -> Config:
    # --infobatch runs get a work_dir of their own: the plain run's
    # checkpoints and dumped config stay apart, and --resume finds its own.
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher, '_infobatch' if args.infobatch else '')
    if args.infobatch:
        cfg = add_infobatch(cfg, **(args.infobatch_options or {}))
    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type '
                f'is `OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.resume = bool(args.resume)
    if isinstance(args.resume, str):
        if '://' not in args.resume and not osp.exists(args.resume):
            raise FileNotFoundError(
                f'--resume {args.resume}: no such checkpoint on this node. '
                'Give a checkpoint file (or, for FSDP, a checkpoint folder) '
                'that every node can read, e.g. --resume '
                'work_dirs/NAME/iter_8000.pth')
        # Runner and FlexibleRunner both resume from load_from when resume
        # is True.
        cfg.load_from = args.resume
    return prepare_cpu_config(cfg, args.launcher)


def build_runner(cfg: Config) -> Runner:
    """Build the runner as mmseg's tools do: ``Runner`` unless the config
    names a ``runner_type``, then from the ``RUNNERS`` registry."""
    # InfoBatchHook installs the safe-load allow-list itself, but a resume
    # of a run without the hook, or test.py's load_from, reads an mmengine
    # checkpoint too, which torch >= 2.6 refuses without it.
    allow_mmengine_checkpoint_types()
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def main(argv=None):
    cfg = build_config(parse_args(argv))
    runner = build_runner(cfg)
    runner.train()
    finish_distributed()
    return runner


def finish_distributed() -> None:
    """Tear the process group down before interpreter exit: left to exit
    handlers, gloo's threads can abort a process after a good run
    ("terminate called without an active exception", pytorch#190489)."""
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
