"""Evaluate a checkpoint on a config's test set (mmseg's tools/test.py)."""
import argparse
import os.path as osp

from cpu_runtime import prepare_cpu_config  # tools/ is on sys.path
from mmengine.runner import Runner
from train import build_runner, finish_distributed, load_config, parse_common_args

import mmseg_infobatch  # noqa: F401  registers the InfoBatch components


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the metrics')
    return parse_common_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    prepare_cpu_config(cfg, args.launcher)
    runner = build_runner(cfg)
    metrics = runner.test()
    finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
