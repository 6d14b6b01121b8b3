"""Evaluate a checkpoint on a config's test set (mmseg's tools/test.py)."""
import argparse
import os
import os.path as osp

from mmengine.config import DictAction
from mmengine.runner import Runner
from train import load_config  # tools/ is on sys.path when run as a script

import mmseg_infobatch  # noqa: F401  registers components, safe loading
from mmseg_infobatch.cpu_runtime import prepare_cpu_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value')
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


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    prepare_cpu_config(cfg, args.launcher)
    runner = Runner.from_cfg(cfg)
    return runner.test()


if __name__ == '__main__':
    main()
