"""GPU check: what only a GPU can show about InfoBatch, in one command.

The flagship UperNet-R50 at 512x512, batch 8, on generated data in ADE20K's
layout. For each precision (fp32, AMP fp16, AMP bf16) stock mmseg and
InfoBatch train side by side for the same number of passes over the data,
and one markdown table reports:

- the median ms per iteration of each arm, and their ratio;
- the hook's and the loss wrapper's own time per iteration, timed directly
  with CUDA synchronisation, as a share of an iteration (target <= 0.5%);
- the peak GPU memory of each arm, and their ratio (target <= 1.02);
- whether every loss and every InfoBatch score stayed finite;
- the seconds InfoBatch saved against the iterations it saved (target:
  their ratio >= 0.95);
- then, in fp32, each loss the wrapper serves in its 'weight' mode, plain
  against wrapped, forward and backward, at the run's batch and crop with
  150 classes (benchmarks/benchmark_overhead.py's table, timed on CUDA;
  target for cross-entropy: wrapped/plain <= 1.03).

About 3 minutes on one modern GPU. ``--smoke`` runs the same code on CPU
(64x64, fp32 only: mmengine's AmpOptimWrapper needs CUDA) in under a
minute, as a rehearsal; the test suite runs it.

Usage: bash benchmarks/gpu_check.sh [--precisions fp32 fp16 bf16]
       python benchmarks/gpu_check.py --smoke
"""
import argparse
import contextlib
import gc
import math
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import HOOKS, MODELS

import mmseg_infobatch  # noqa: F401
from mmseg_infobatch import InfoBatchHook
from mmseg_infobatch.engine.cpu_runtime import prepare_cpu_config

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The data generator is a script of tools/, run by its path.
MAKE_TINY_ADE = osp.join(REPO, 'tools', 'dataset_converters',
                         'make_tiny_ade.py')
sys.path.insert(0, osp.join(REPO, 'benchmarks'))
import benchmark_overhead as overhead  # noqa: E402

STOCK = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
FLAGSHIP = osp.join(REPO, 'configs', 'upernet_r50_ade20k_infobatch.py')
PRECISIONS = {'fp32': None, 'fp16': 'float16', 'bf16': 'bfloat16'}
NUM_CLASSES = 150
TARGETS = dict(share=0.005, memory=1.02, saving=0.95)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@HOOKS.register_module()
class SyncTimedInfoBatchHook(InfoBatchHook):
    """InfoBatchHook that adds up its own per-iteration time. The runner
    has already waited for the GPU (it reads the loss values) when these
    methods run, so the synchronisation costs the run nothing."""

    spent = 0.0

    def _timed(self, method, *args, **kwargs):
        _sync()
        start = time.perf_counter()
        method(*args, **kwargs)
        _sync()
        SyncTimedInfoBatchHook.spent += time.perf_counter() - start

    def before_train_iter(self, *args, **kwargs):
        self._timed(super().before_train_iter, *args, **kwargs)

    def after_train_iter(self, *args, **kwargs):
        self._timed(super().after_train_iter, *args, **kwargs)


def build_cfg(infobatch, precision, data_root, work_dir, args):
    cfg = Config.fromfile(FLAGSHIP if infobatch else _stock_file(work_dir))
    crop = (args.crop, args.crop)
    max_iters = args.passes * math.ceil(args.images / args.batch)
    cfg.merge_from_dict(
        {
            'model.pretrained': None,
            'model.data_preprocessor.size': crop,
            'train_dataloader.dataset.data_root': data_root,
            'train_dataloader.batch_size': args.batch,
            'train_dataloader.num_workers': args.workers,
            'train_dataloader.persistent_workers': args.workers > 0,
            'train_dataloader.dataset.pipeline.2.scale':
            (4 * args.crop, args.crop),
            'train_dataloader.dataset.pipeline.3.crop_size': crop,
            'train_cfg.max_iters': max_iters,
            'train_cfg.val_interval': 10**6,
            'param_scheduler.0.end': max_iters,
            'default_hooks.checkpoint.interval': 10**6,
            'default_hooks.logger.interval': 10,
            'env_cfg.cudnn_benchmark': torch.cuda.is_available(),
        },
        allow_list_keys=True)
    if infobatch:
        cfg.custom_hooks = [dict(type='SyncTimedInfoBatchHook', delta=0.875)]
    cfg.val_cfg = cfg.test_cfg = cfg.val_dataloader = None
    cfg.test_dataloader = cfg.val_evaluator = cfg.test_evaluator = None
    if PRECISIONS[precision] is not None:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.dtype = PRECISIONS[precision]
        cfg.optim_wrapper.loss_scale = 'dynamic'
    # One seed for both arms: the same initial weights and data order, and
    # the same pruning decisions run to run.
    cfg.randomness = dict(seed=args.seed)
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


def _release_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def run_arm(infobatch, precision, data_root, args):
    """Train one arm; its times, memory, iterations and finiteness."""
    _release_memory()
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() \
        else 0
    SyncTimedInfoBatchHook.spent = 0.0
    work_dir = tempfile.mkdtemp(prefix='infobatch_gpu_')
    runner = Runner.from_cfg(
        build_cfg(infobatch, precision, data_root, work_dir, args))
    runner.train()
    hub = runner.message_hub
    times = hub.get_scalar('train/time').data[0].tolist()
    waits = hub.get_scalar('train/data_time').data[0].tolist()
    losses = torch.as_tensor(hub.get_scalar('train/loss').data[0])
    result = dict(
        iters=runner.iter,
        median_ms=statistics.median(times[args.warmup:]) * 1e3,
        raw_wall_s=sum(times),
        wall_s=_steady_wall(times, waits, args.warmup),
        loss_finite=bool(torch.isfinite(losses).all()),
        peak_gib=(torch.cuda.max_memory_allocated() - before) /
        2**30 if torch.cuda.is_available() else math.nan)
    if infobatch:
        hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
        sampler = hook.sampler
        result.update(
            scores_finite=bool(
                torch.isfinite(sampler.scores[sampler.seen]).all()),
            scored=int(sampler.seen.sum()),
            pruned=sum(record.pruned for record in hook.history),
            hook_ms=SyncTimedInfoBatchHook.spent / runner.iter * 1e3)
    return result


def _steady_wall(times, waits, warmup):
    """Seconds of a run with its warm-up iterations and its data waits at
    their medians: a short run crosses a pass boundary every few
    iterations, each with mmengine's 2 s pause and a worker restart, where
    an ADE20K pass of 1,263 iterations crosses one in minutes."""
    compute = [t - w for t, w in zip(times, waits)]
    steady = compute[warmup:] or compute
    return (sum(steady) +
            (len(compute) - len(steady)) * statistics.median(steady) +
            len(waits) * statistics.median(waits))


def wrapper_cost(precision, args, repeats):
    """The wrapper's own time and memory per iteration: the decode and
    auxiliary heads' cross-entropy on logits of the label's size, forward
    and backward, plain and wrapped, interleaved and synchronised."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    dtype = {
        'fp16': torch.float16,
        'bf16': torch.bfloat16
    }.get(precision, torch.float32)
    shape = (args.batch, NUM_CLASSES, args.crop, args.crop)
    logits = torch.randn(shape, device=device, dtype=dtype)
    label = torch.randint(
        0, NUM_CLASSES, (args.batch, args.crop, args.crop), device=device)
    label[:, :args.crop // 8] = 255
    inner = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
    plain = MODELS.build(inner).to(device)
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=inner)).to(device)
    weights = torch.full((args.batch, ), 2.0)

    def step(loss_fn, wrap):
        pred = logits.detach().requires_grad_()
        if wrap:
            loss_fn.set_batch_weights(weights)
        # No autocast at all for fp32: torch < 2.2 refuses a CPU autocast
        # of float32 even when it is disabled.
        amp = contextlib.nullcontext() if dtype == torch.float32 else \
            torch.autocast(device, dtype=dtype)
        with amp:
            loss = loss_fn(pred, label, ignore_index=255)
        loss.backward()
        if wrap:
            loss_fn.set_batch_weights(None)
            loss_fn.pop_scores()

    def timed(loss_fn, wrap):
        _release_memory()
        base = torch.cuda.memory_allocated() if device == 'cuda' else 0
        _sync()
        start = time.perf_counter()
        step(loss_fn, wrap)
        _sync()
        peak = torch.cuda.max_memory_allocated() - base \
            if device == 'cuda' else 0
        return time.perf_counter() - start, peak

    # Warm-up: the first call of each pays for kernel selection.
    step(plain, False)
    step(wrapped, True)
    runs = {False: [], True: []}
    for _ in range(repeats):
        for wrap, loss_fn in ((False, plain), (True, wrapped)):
            runs[wrap].append(timed(loss_fn, wrap))
    plain_s = statistics.median(t for t, _ in runs[False])
    wrapped_s = statistics.median(t for t, _ in runs[True])
    # Two heads (decode and auxiliary) call the wrapper each iteration.
    return dict(
        extra_ms=2 * max(wrapped_s - plain_s, 0.0) * 1e3,
        extra_mib=(max(p
                       for _, p in runs[True]) - max(p
                                                     for _, p in runs[False]))
        / 2**20)


def loss_split(args):
    """Each served loss, plain against wrapped, forward and backward, on
    this machine's device (fp32); a loss that fails here names why."""
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    rows = []
    for name, inner, pred, target, kwargs in overhead.served_losses(
            args.batch, NUM_CLASSES, args.crop, device):
        try:
            rows.append((name,
                         overhead.time_loss(inner, pred, target, kwargs,
                                            args.repeats, device)))
        except Exception as e:  # e.g. mmcv built without its CUDA ops
            print(f'{name}: not timed here ({type(e).__name__}: {e})')
    overhead.print_loss_table(
        rows, f'Loss wrapper, forward + backward ({device}, fp32, '
        f'{args.batch} x {NUM_CLASSES} x {args.crop} x {args.crop}, median '
        f'of {args.repeats} in turns)')
    return rows


def check_precision(precision, data_root, args):
    plain = run_arm(False, precision, data_root, args)
    ours = run_arm(True, precision, data_root, args)
    ours.update(wrapper_cost(precision, args, repeats=args.repeats))
    return plain, ours


def row(precision, plain, ours):
    """One table row and whether its correctness checks passed."""
    share = (ours['hook_ms'] + ours['extra_ms']) / ours['median_ms']
    iters_saved = 1 - ours['iters'] / plain['iters']
    secs_saved = 1 - ours['wall_s'] / plain['wall_s']
    secs_per_iter = secs_saved / iters_saved if iters_saved > 0 else math.nan
    memory = ours['peak_gib'] / plain['peak_gib']
    finite = plain['loss_finite'] and ours['loss_finite'] and \
        ours['scores_finite'] and ours['scored'] > 0
    cells = [
        precision, f"{plain['median_ms']:.1f}", f"{ours['median_ms']:.1f}",
        f"{ours['median_ms'] / plain['median_ms']:.3f}",
        f"{ours['hook_ms']:.2f}", f"{ours['extra_ms']:.2f}", f'{share:.2%}',
        f"{plain['peak_gib']:.2f}", f"{ours['peak_gib']:.2f}", f'{memory:.3f}',
        f"{ours['extra_mib']:.0f}", f"{plain['iters']}/{ours['iters']}",
        f'{iters_saved:.1%}', f"{plain['wall_s']:.1f}/{ours['wall_s']:.1f}",
        f'{secs_saved:.1%}', f'{secs_per_iter:.3f}',
        f"{finite} ({ours['scored']} scored, {ours['pruned']} pruned)"
    ]
    targets = dict(
        share=share <= TARGETS['share'],
        memory=not memory > TARGETS['memory'],
        saving=secs_per_iter >= TARGETS['saving'])
    return '| ' + ' | '.join(cells) + ' |', finite, targets


HEADER = ('| precision | plain ms/iter | InfoBatch ms/iter | ratio | hook '
          'ms/iter | wrapper ms/iter | hook+wrapper share | plain peak GiB | '
          'InfoBatch peak GiB | memory ratio | wrapper extra MiB | iters '
          'plain/InfoBatch | iters saved | seconds plain/InfoBatch | seconds '
          'saved | seconds/iters saved | finite |')


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        '--smoke',
        action='store_true',
        help='CPU rehearsal: 64x64, batch 2, fp32, seconds')
    parser.add_argument(
        '--precisions',
        nargs='+',
        choices=PRECISIONS,
        default=list(PRECISIONS))
    parser.add_argument('--crop', type=int, default=512)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--images', type=int, default=96)
    parser.add_argument('--passes', type=int, default=6)
    parser.add_argument('--workers', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--repeats',
        type=int,
        default=10,
        help='interleaved repeats of the wrapper timing')
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    if args.smoke:
        args.crop, args.batch, args.images, args.passes = 64, 2, 8, 3
        args.workers, args.warmup, args.repeats = 0, 2, 3
    skipped = [] if cuda else [p for p in args.precisions if p != 'fp32']
    precisions = [p for p in args.precisions if p not in skipped]
    data_root = tempfile.mkdtemp(prefix='ade_gen_')
    generate = [
        sys.executable, MAKE_TINY_ADE, data_root, '--num-train',
        str(args.images), '--num-val', '1', '--num-classes',
        str(NUM_CLASSES), '--size'
    ] + [str(args.crop), str(args.crop * 4 // 3)]
    subprocess.run(generate, check=True)
    start = time.time()
    rows = [row(p, *check_precision(p, data_root, args)) for p in precisions]
    device = torch.cuda.get_device_name(0) if cuda else 'CPU (smoke)'
    print('\n' + '=' * 72)
    print(f'InfoBatch GPU check, {time.strftime("%Y-%m-%d")}: UperNet-R50, '
          f'{args.crop}x{args.crop}, batch {args.batch}, {args.images} '
          f'images x {args.passes} passes, {device}, torch '
          f'{torch.__version__}, CUDA {torch.version.cuda}, '
          f'{time.time() - start:.0f} s\n')
    print(HEADER)
    print('|' + '---|' * HEADER.count(' | ') + '---|')
    for line, _, _ in rows:
        print(line)
    for precision in skipped:
        print(f'{precision}: skipped, AMP needs CUDA')
    for name, target in TARGETS.items():
        met = [p for p, (_, _, t) in zip(precisions, rows) if t[name]]
        print(f'target {name} ({target}): met in {len(met)}/{len(rows)} '
              f"({', '.join(met) or 'none'})")
    split = loss_split(args)
    ce = dict(split).get('CrossEntropyLoss')
    if ce is not None:
        print(f"target CE wrapped/plain (1.03): {ce['ratio']:.3f}")
    ok = bool(rows) and all(finite for _, finite, _ in rows)
    print('RESULT:', 'PASS' if ok else 'FAIL',
          '(losses and scores finite in every arm)')
    print('=' * 72)
    return 0 if ok else 1


if __name__ == '__main__':
    raise SystemExit(main())
