"""GPU check: the flagship UperNet-R50 at 512x512 on generated data.

Runs stock mmseg training and InfoBatch training side by side, in fp32 and
with AMP, and prints one summary: median iteration time of each, the
InfoBatch/plain ratio, and whether the losses and InfoBatch scores stayed
finite on the device. Fits in about 8 minutes on one modern GPU.

Usage: bash benchmarks/gpu_check.sh            (CUDA machine)
       python benchmarks/gpu_check.py --smoke  (CPU: tiny crop, no AMP)
"""
import argparse
import math
import os.path as osp
import statistics
import sys
import tempfile
import time
import uuid

import torch
from mmengine.config import Config
from mmengine.runner import Runner

import mmseg_infobatch  # noqa: F401
from mmseg_infobatch import InfoBatchHook

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The CPU runtime and the data generator are helpers of tools/, not library.
sys.path.insert(0, osp.join(REPO, 'tools'))
from cpu_runtime import prepare_cpu_config  # noqa: E402
from make_tiny_ade import make_ade_layout  # noqa: E402

STOCK = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
FLAGSHIP = osp.join(REPO, 'configs', 'upernet_r50_ade20k_infobatch.py')


def build_cfg(infobatch, amp, data_root, work_dir, args):
    cfg = Config.fromfile(FLAGSHIP if infobatch else _stock_file(work_dir))
    crop = (args.crop, args.crop)
    cfg.merge_from_dict({
        'model.pretrained': None,
        'model.data_preprocessor.size': crop,
        'train_dataloader.dataset.data_root': data_root,
        'val_dataloader.dataset.data_root': data_root,
        'train_dataloader.batch_size': args.batch,
        'train_dataloader.num_workers': args.workers,
        'train_dataloader.persistent_workers': args.workers > 0,
        'train_dataloader.dataset.pipeline.2.scale': (4 * args.crop,
                                                      args.crop),
        'train_dataloader.dataset.pipeline.3.crop_size': crop,
        'train_cfg.max_iters': args.iters,
        'train_cfg.val_interval': 10**6,
        'param_scheduler.0.end': args.iters,
        'default_hooks.checkpoint.interval': 10**6,
        'default_hooks.logger.interval': 10,
        'env_cfg.cudnn_benchmark': True,
    }, allow_list_keys=True)
    cfg.val_cfg = cfg.test_cfg = cfg.val_dataloader = None
    cfg.test_dataloader = cfg.val_evaluator = cfg.test_evaluator = None
    if amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.work_dir = work_dir
    tag = uuid.uuid4().hex[:8]
    cfg.experiment_name, cfg.visualizer.name = f'gpu_{tag}', f'vis_{tag}'
    cfg.launcher = 'none'
    return prepare_cpu_config(cfg, 'none')


def _stock_file(work_dir):
    path = osp.join(work_dir, 'stock_upernet.py')
    with open(path, 'w') as f:
        f.write(f"_base_ = ['{STOCK}']\n")
    return path


def run_arm(infobatch, amp, data_root, args):
    work_dir = tempfile.mkdtemp(prefix='infobatch_gpu_')
    runner = Runner.from_cfg(build_cfg(infobatch, amp, data_root, work_dir,
                                       args))
    start = time.time()
    runner.train()
    wall = time.time() - start
    hub = runner.message_hub
    times = hub.get_scalar('train/time').data[0][args.warmup:]
    loss = float(hub.get_scalar('train/loss').current())
    result = dict(
        median_ms=statistics.median(times.tolist()) * 1e3,
        iters=runner.iter,
        wall_s=wall,
        loss_finite=math.isfinite(loss),
        loss=loss)
    if infobatch:
        hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
        scores = hook.sampler.scores[hook.sampler.seen]
        result.update(
            scores_finite=bool(torch.isfinite(scores).all()),
            scored=int(hook.sampler.seen.sum()),
            pruned=int(sum(row[3] for row in hook.history)))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--smoke', action='store_true',
                        help='CPU smoke run: 64x64 crop, few iterations')
    parser.add_argument('--crop', type=int, default=512)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--iters', type=int, default=60)
    parser.add_argument('--images', type=int, default=96)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--warmup', type=int, default=10)
    args = parser.parse_args(argv)
    if args.smoke:
        args.crop, args.batch, args.iters = 64, 2, 8
        args.images, args.workers, args.warmup = 8, 0, 2
    cuda = torch.cuda.is_available()
    data_root = make_ade_layout(
        tempfile.mkdtemp(prefix='ade_gen_'), num_train=args.images,
        num_val=1, size=(args.crop, args.crop * 4 // 3))
    arms = [(False, False), (True, False)]
    if cuda:
        arms += [(False, True), (True, True)]
    results = {arm: run_arm(*arm, data_root, args) for arm in arms}
    device = torch.cuda.get_device_name(0) if cuda else 'CPU'
    print('\n' + '=' * 72)
    print(f'InfoBatch GPU check: UperNet-R50, {args.crop}x{args.crop}, '
          f'batch {args.batch}, {args.images} images, {device}, '
          f'torch {torch.__version__}, {time.strftime("%Y-%m-%d")}')
    print('| precision | plain ms/iter | InfoBatch ms/iter | ratio | '
          'iters plain/InfoBatch | loss finite | scores finite |')
    print('|---|---|---|---|---|---|---|')
    ok = True
    for amp in (False, True):
        if (False, amp) not in results:
            continue
        plain, ours = results[(False, amp)], results[(True, amp)]
        ok &= plain['loss_finite'] and ours['loss_finite'] and \
            ours['scores_finite'] and ours['scored'] > 0
        print(f"| {'AMP' if amp else 'fp32'} | {plain['median_ms']:.1f} | "
              f"{ours['median_ms']:.1f} | "
              f"{ours['median_ms'] / plain['median_ms']:.3f} | "
              f"{plain['iters']}/{ours['iters']} | "
              f"{plain['loss_finite'] and ours['loss_finite']} | "
              f"{ours['scores_finite']} ({ours['scored']} scored, "
              f"{ours['pruned']} pruned) |")
    print('RESULT:', 'PASS' if ok else 'FAIL')
    print('=' * 72)
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
