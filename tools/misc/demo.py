"""The embedded demo: digit scenes, UperNet, InfoBatch, on CPU in minutes.

Generates the data (once), trains the demo config with InfoBatch, evaluates
mIoU, and prints what InfoBatch saved against a full-data run of the same
number of passes.
"""
import argparse
import json
import math
import os.path as osp
import time

from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from mmseg_infobatch.demo import ensure_digit_scenes

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'demo',
                  'upernet_r18_digit_scenes_infobatch.py')


def read_scalars(log_dir: str) -> dict:
    """What the run logged to its local vis backend: the InfoBatch pass
    scalars (``infobatch/*``, one entry a pass) and the last mIoU."""
    passes, miou = [], float('nan')
    with open(osp.join(log_dir, 'vis_data', 'scalars.json')) as f:
        for record in map(json.loads, f):
            miou = record.get('mIoU', miou)
            if 'infobatch/pass' in record:
                passes.append(record)
    return dict(passes=passes, miou=miou)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=CONFIG)
    parser.add_argument(
        '--data-root', default=osp.join(REPO, 'data', 'digit_scenes'))
    parser.add_argument(
        '--work-dir', default=osp.join(REPO, 'work_dirs', 'demo'))
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
    logged = read_scalars(runner.log_dir)
    passes = logged['passes']
    # Logged at each pass start: the saving the run ends with is the last.
    saved = int(passes[-1]['infobatch/saved_iters'])
    iters = runner.iter
    budget = iters + saved
    full_pass = math.ceil(meta['num_train'] / cfg.train_dataloader.batch_size)
    pruned = sum(int(p['infobatch/pruned']) for p in passes)
    seen = sum(
        int(p['infobatch/kept'] + p['infobatch/pruned']) for p in passes)
    summary = [
        '', '=' * 64, 'InfoBatch demo summary (digit scenes, UperNet, CPU)',
        f'  data           : {meta["num_train"]} train / {meta["num_val"]} '
        f'val scenes, {meta["size"]}x{meta["size"]}, '
        f'{osp.relpath(args.data_root)}', f'  passes         : {len(passes)} '
        f'(schedule of {budget / full_pass:.2f} full-data passes)',
        f'  iterations     : {iters} with InfoBatch vs {budget} for '
        'full data, same passes',
        f'  saved          : {saved} iterations ({saved / budget:.1%}); '
        f'{pruned} of {seen} sample visits pruned',
        f'  mIoU (val)     : {logged["miou"]:.2f}',
        f'  wall time      : {time.time() - start:.0f} s',
        f'  logs           : {osp.relpath(runner.log_dir)}', '=' * 64
    ]
    print('\n'.join(summary))
    return summary


if __name__ == '__main__':
    main()
