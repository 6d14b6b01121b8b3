"""The embedded demo: digit scenes, UperNet, InfoBatch, on CPU in minutes.

Generates the data (once), trains the demo config with InfoBatch, evaluates
mIoU, and prints what InfoBatch saved against a full-data run of the same
number of passes.
"""
import argparse
import json
import os.path as osp
import time

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

import mmseg_infobatch  # noqa: F401
from mmseg_infobatch import InfoBatchHook
from mmseg_infobatch.demo import ensure_digit_scenes

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs', 'demo',
                  'upernet_r18_digit_scenes_infobatch.py')


def last_miou(log_dir: str) -> float:
    """The last validation mIoU in the run's local scalars log."""
    miou = float('nan')
    with open(osp.join(log_dir, 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            miou = record.get('mIoU', miou)
    return miou


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument('--data-root', default=osp.join(REPO, 'data',
                                                        'digit_scenes'))
    parser.add_argument('--work-dir',
                        default=osp.join(REPO, 'work_dirs', 'demo'))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)

    start = time.time()
    meta = ensure_digit_scenes(args.data_root)
    cfg = Config.fromfile(args.config)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = args.data_root
    cfg.work_dir = args.work_dir
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    runner = Runner.from_cfg(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
    iters, budget = runner.iter, hook.budget_iters
    pruned = sum(int(row[3]) for row in hook.history)
    seen = sum(int(row[2]) + int(row[3]) for row in hook.history)
    summary = [
        '', '=' * 64, 'InfoBatch demo summary (digit scenes, UperNet, CPU)',
        f'  data           : {meta["num_train"]} train / {meta["num_val"]} '
        f'val scenes, {meta["size"]}x{meta["size"]}, {args.data_root}',
        f'  passes         : {len(hook.history)} '
        f'(schedule of {hook.num_passes:.2f} full-data passes)',
        f'  iterations     : {iters} with InfoBatch vs {budget} for '
        'full data, same passes',
        f'  saved          : {budget - iters} iterations '
        f'({(budget - iters) / budget:.1%}); {pruned} of {seen} sample '
        'visits pruned',
        f'  mIoU (val)     : {last_miou(runner.log_dir):.2f}',
        f'  wall time      : {time.time() - start:.0f} s',
        f'  logs           : {runner.log_dir}', '=' * 64
    ]
    print('\n'.join(summary))


if __name__ == '__main__':
    main()
