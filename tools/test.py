"""Test (and evaluate) a segmentor: mmseg 1.2's tools/test.py, plus CPU.

The options are mmseg's: ``--out`` keeps the predicted label maps,
``--show`` / ``--show-dir`` draw predictions, ``--tta`` tests with the
config's test-time augmentation.
"""
import argparse
import os.path as osp

from mmengine.config import Config
# train.py is this script's neighbour in tools/, the folder Python puts
# first on sys.path when it runs a script.
from train import (build_runner, finish_distributed, load_config,
                   parse_common_args)

import mmseg_infobatch  # noqa: F401  registers the InfoBatch components
from mmseg_infobatch.engine.cpu_runtime import prepare_cpu_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir', help='the dir to save the evaluation metrics and logs')
    parser.add_argument(
        '--out',
        type=str,
        help='the dir to save the predicted label maps (.png) in, for '
        'offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='the dir to save images with the predictions painted on')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='test time augmentation')
    return parse_common_args(parser, argv)


def trigger_visualization_hook(cfg: Config, args) -> Config:
    """Switch on drawing in the visualization hook, as mmseg's test.py."""
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            '--show and --show-dir need a visualization hook in '
            'default_hooks, e.g. '
            "visualization=dict(type='SegVisualizationHook')")
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        cfg.visualizer['save_dir'] = args.show_dir
    return cfg


def use_tta(cfg: Config) -> Config:
    """Wrap the model in the config's ``tta_model`` and test with its
    ``tta_pipeline``, as mmseg's test.py does for ``--tta``."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
    if missing:
        raise ValueError(
            f'--tta needs {" and ".join(missing)} in the config; stock mmseg '
            'configs inherit them from _base_/default_runtime.py and the '
            'dataset bases')
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    return cfg


def build_config(args) -> Config:
    """The test config with the command line applied."""
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'Checkpoint not found: {args.checkpoint}')
    cfg = load_config(args.config, args.cfg_options, args.work_dir,
                      args.launcher)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)
    if args.tta:
        cfg = use_tta(cfg)
    if args.out is not None:
        # IoUMetric writes each prediction as <image name>.png there.
        # (mmseg's script also sets keep_results, which IoUMetric ignores.)
        evaluators = cfg.test_evaluator
        if not isinstance(evaluators, (list, tuple)):
            evaluators = [evaluators]
        for evaluator in evaluators:
            evaluator['output_dir'] = args.out
    return prepare_cpu_config(cfg, args.launcher)


def main(argv=None):
    cfg = build_config(parse_args(argv))
    runner = build_runner(cfg)
    metrics = runner.test()
    finish_distributed()
    return metrics


if __name__ == '__main__':
    main()
