"""InfoBatch overhead, measured side by side in one run.

1. The pass decision (pruning + padding + rank slicing) at N = 20,210
   (ADE20K), 1,281,167 (ImageNet) and 10,000,000, against three references
   on the same scores: the authors' ``prune()`` step by step, with its
   Python list of kept indices; the same algorithm vectorised in numpy
   (``random.choice`` over the well-learned indices, no lists); and a naive
   one that sorts the scores.
2. The loss wrapper against its inner loss, forward and backward, timed
   in turns (one thread): cross-entropy at ADE20K's 150 classes
   (2 x 150 x 128 x 128, label 255 on an eighth of the pixels) and each
   other loss that the wrapper serves in its 'weight' mode, with the number
   of inner-loss evaluations per wrapped call; then the peak memory of
   the cross-entropy step at 8 x 150 x 192 x 192, plain and wrapped (the
   growth of the process's peak RSS during the step).
3. The per-iteration cost of hook + loss wrapper on the demo model: plain
   mmseg training and InfoBatch training (ratio 0, so both see every
   sample) alternate in blocks, and the hook's and wrapper's own time is
   measured directly.

Usage: python benchmarks/benchmark_overhead.py [--quick] [--data-root DIR]
"""
import argparse
import math
import os.path as osp
import statistics
import tempfile
import time
import uuid

import numpy as np
import torch
import torch.nn.functional as F
from peak_rss import reset_peak_rss, status_kib

from mmseg_infobatch.sampler.decision import decide_pass
from mmseg_infobatch.sampler.layout import cycle_to, rank_share

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
WORLD, BATCH = 8, 16
IGNORE = 255
TARGETS = dict(ce_ratio=1.03, share=0.005, memory=1.02)


def padded_share(indices):
    """Rank 0's share of ``indices`` padded by repeating their head to
    whole global batches, as the sampler pads a pass."""
    total = math.ceil(indices.numel() / (WORLD * BATCH)) * WORLD * BATCH
    return rank_share(cycle_to(indices, total), 0, WORLD)


def infobatch_decision(scores, seen, seed):
    g = torch.Generator().manual_seed(seed)
    d = decide_pass(scores, seen, 0.5, g)
    return padded_share(d.indices)


def sort_reference(scores, seen, seed):
    """Sort, cut at the mean, drop half of the head, shuffle, slice."""
    g = torch.Generator().manual_seed(seed)
    order = torch.argsort(scores)
    num_below = int((scores < scores.double().mean()).sum())
    head = order[:num_below]
    keep_head = head[torch.randperm(num_below, generator=g)[:num_below // 2]]
    kept = torch.cat([keep_head, order[num_below:]])
    kept = kept[torch.randperm(kept.numel(), generator=g)]
    return padded_share(kept)


def authors_reference(scores, seen, seed):
    """The authors' ``prune()`` step by step, in its own data types: a torch
    mean, numpy masks, the kept indices as a Python list, numpy's
    ``random.choice`` without replacement for the survivors below the mean,
    the weight table reset and rescaled, and numpy's shuffle of the list.
    The rank's share is then cut from the list by padding and slicing, the
    cheapest way (their distributed wrapper permutes the list once more,
    which is left out here)."""
    rng = np.random.RandomState(seed)  # theirs seeds numpy's global one
    well = (scores < scores.mean()).numpy()
    well_idx = np.where(well)[0]
    kept = np.where(~well)[0].tolist()
    chosen = rng.choice(well_idx, int(0.5 * len(well_idx)), replace=False)
    weights = torch.ones(scores.numel())
    weights[chosen] = 2.0
    kept.extend(chosen)
    rng.shuffle(kept)
    total = math.ceil(len(kept) / (WORLD * BATCH)) * WORLD * BATCH
    kept += kept[:total - len(kept)]
    return kept[0:total:WORLD]


def numpy_reference(scores, seen, seed):
    """The authors' algorithm vectorised in numpy, with no Python lists:
    choose the survivors among the well-learned indices with
    ``random.choice``, then permute all kept indices."""
    rng = np.random.RandomState(seed)
    values = scores.numpy()
    well = values < values.mean()
    well_idx = np.where(well)[0]
    keep = rng.choice(well_idx, int(0.5 * len(well_idx)), replace=False)
    kept = np.concatenate([np.where(~well)[0], keep])
    kept = kept[rng.permutation(len(kept))]
    return padded_share(torch.from_numpy(kept))


def time_median(fn, repeats, *args):
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        fn(*args, r)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_interleaved(fns, repeats, *args):
    """Median milliseconds of each function, timed in turns so that a
    change in the machine's load hits them all alike."""
    times = [[] for _ in fns]
    for r in range(repeats):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn(*args, r)
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) * 1e3 for spent in times]


def bench_decisions(sizes, repeats):
    # One thread: the setting under torchrun (OMP_NUM_THREADS=1), and the
    # only stable one on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    print(f'\n## Pass decision (world {WORLD}, batch {BATCH}, median of '
          f'{repeats}, {torch.get_num_threads()} threads)\n')
    print("| N | InfoBatch (ours) | authors' prune() | vectorised numpy | "
          "sort reference | speed-up vs authors' | vs numpy | vs sort |")
    print('|---|---|---|---|---|---|---|---|')
    rows = []
    for n in sizes:
        g = torch.Generator().manual_seed(0)
        scores = torch.rand(n, generator=g)**2
        seen = torch.ones(n, dtype=torch.bool)
        ours, *refs = time_interleaved((infobatch_decision, authors_reference,
                                        numpy_reference, sort_reference),
                                       repeats, scores, seen)
        rows.append(
            dict(n=n, ours=ours, authors=refs[0], numpy=refs[1], sort=refs[2]))
        cells = ' | '.join(f'{ms:.1f} ms' for ms in (ours, *refs))
        ratios = ' | '.join(f'{ms / ours:.1f}x' for ms in refs)
        print(f'| {n:,} | {cells} | {ratios} |')
    torch.set_num_threads(threads)
    return rows


def served_losses(num_images, num_classes, size, device='cpu'):
    """(name, inner loss config, pred, target, call keywords) for each loss
    the wrapper serves in its 'weight' mode, on logits of the given size
    with label 255 on an eighth of the pixels."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(num_images, num_classes, size, size, generator=g)
    label = torch.randint(
        0, num_classes, (num_images, size, size), generator=g)
    label[:, :size // 8] = IGNORE
    # FocalLoss takes class labels only on CUDA, one-hot targets elsewhere.
    onehot = F.one_hot(label.clamp(max=num_classes - 1), num_classes)
    focal_target = label if device == 'cuda' else \
        onehot.permute(0, 3, 1, 2).float()
    depth = torch.rand(num_images, 1, size, size, generator=g) * 5
    depth_pred = torch.rand(num_images, 1, size, size, generator=g) + 0.1
    seg = dict(ignore_index=IGNORE)
    cases = [
        ('CrossEntropyLoss', dict(type='CrossEntropyLoss'), logits, label,
         seg),
        ('CrossEntropyLoss(avg_non_ignore)',
         dict(type='CrossEntropyLoss',
              avg_non_ignore=True), logits, label, seg),
        ('CrossEntropyLoss(sigmoid)',
         dict(type='CrossEntropyLoss', use_sigmoid=True), logits, label, seg),
        ('FocalLoss', dict(type='FocalLoss'), logits, focal_target, seg),
        ('DiceLoss', dict(type='DiceLoss'), logits, label, seg),
        ('SiLogLoss', dict(type='SiLogLoss'), depth_pred, depth, {}),
    ]
    return [(name, inner, pred.to(device), target.to(device), kwargs)
            for name, inner, pred, target, kwargs in cases]


def loss_step(loss, pred, target, kwargs, weights=None):
    """One forward and backward of ``loss``; with ``weights``, as the hook
    drives the wrapper (weights in, scores out)."""
    pred = pred.detach().requires_grad_()
    if weights is not None:
        loss.set_batch_weights(weights)
    loss(pred, target, **kwargs).backward()
    if weights is not None:
        loss.set_batch_weights(None)
        loss.pop_scores()


def inner_calls(wrapped, pred, target, kwargs, weights):
    """How many times one wrapped call evaluates an mmseg loss module."""
    calls = []
    handles = [
        m.register_forward_pre_hook(lambda *_: calls.append(1))
        for m in (wrapped.loss, getattr(wrapped, '_unit_loss', None))
        if m is not None
    ]
    loss_step(wrapped, pred, target, kwargs, weights)
    for handle in handles:
        handle.remove()
    return len(calls)


def time_loss(inner,
              pred,
              target,
              kwargs,
              repeats,
              device='cpu',
              control=False):
    """Plain and wrapped forward + backward, timed in turns after a warm-up
    call: medians in ms and the median of the per-turn ratios, and the
    wrapped call's inner-loss evaluations. On CPU the time is the thread's
    CPU time (one thread does all the work), which other processes on a
    shared machine disturb less than wall time; on CUDA it is synchronised
    wall time. With ``control`` the plain loss runs in both arms, to show
    the harness's own spread."""
    from mmseg.registry import MODELS
    plain = MODELS.build(dict(inner)).to(device)
    wrapped = MODELS.build(dict(type='InfoBatchLoss',
                                loss=dict(inner))).to(device)
    weights = torch.ones(pred.shape[0])
    weights[0] = 2.0  # a kept low-score image (r = 0.5)

    def clock():
        if device == 'cuda':
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.thread_time()

    def run_plain():
        loss_step(plain, pred, target, kwargs)

    def run_wrapped():
        if control:
            return run_plain()
        loss_step(wrapped, pred, target, kwargs, weights)

    calls = 0 if control else inner_calls(wrapped, pred, target, kwargs,
                                          weights)
    run_plain()
    run_wrapped()
    # Back to back in alternating order; the ratio of each pair is what a
    # drifting load disturbs least.
    times = {run_plain: [], run_wrapped: []}
    ratios = []
    for r in range(repeats):
        for fn in (run_plain, run_wrapped) if r % 2 else (run_wrapped,
                                                          run_plain):
            start = clock()
            fn()
            times[fn].append(clock() - start)
        ratios.append(times[run_wrapped][-1] / times[run_plain][-1])
    return dict(
        plain=statistics.median(times[run_plain]) * 1e3,
        wrapped=statistics.median(times[run_wrapped]) * 1e3,
        ratio=statistics.median(ratios),
        calls=calls)


def print_loss_table(rows, title):
    print(f'\n## {title}\n')
    print('| loss | plain ms | wrapped ms | wrapped/plain (median of '
          'turns) | inner-loss evaluations per call |')
    print('|---|---|---|---|---|')
    for name, r in rows:
        print(f"| {name} | {r['plain']:.2f} | {r['wrapped']:.2f} | "
              f"{r['ratio']:.3f} | {r['calls']} |")


def peak_growth_mib(step) -> float:
    """Growth of the process's peak RSS while ``step`` runs (Linux)."""
    import gc
    gc.collect()
    before = status_kib('VmRSS')
    reset_peak_rss()
    step()
    return (status_kib('VmHWM') - before) / 1024


def bench_losses(quick):
    """Section 2: each served loss plain vs wrapped, then CE's peak."""
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    import mmseg_infobatch  # noqa: F401
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    repeats = 5 if quick else 61
    size = 64 if quick else 128
    cases = served_losses(2, 150, size)
    rows = [(name, time_loss(inner, pred, target, kwargs, repeats))
            for name, inner, pred, target, kwargs in cases]
    _, inner, pred, target, kwargs = cases[0]
    rows.append(('control: CrossEntropyLoss plain in both arms',
                 time_loss(inner, pred, target, kwargs, repeats,
                           control=True)))
    print_loss_table(
        rows, f'Loss wrapper, forward + backward (CPU time, 1 thread, '
        f'2 x 150 x {size} x {size}, median of {repeats} in turns)')
    ce = rows[0][1]
    print(f"\nCE wrapped/plain: {ce['ratio']:.3f} "
          f"(target <= {TARGETS['ce_ratio']})")
    memory = None
    if osp.exists('/proc/self/clear_refs'):
        memory = bench_peak_memory(4 if quick else 8, 96 if quick else 192)
    torch.set_num_threads(threads)
    return dict(losses=dict(rows), memory=memory)


def bench_peak_memory(num_images, size):
    from mmseg.registry import MODELS
    name, inner, pred, target, kwargs = served_losses(num_images, 150, size)[0]
    plain = MODELS.build(dict(inner))
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=dict(inner)))
    weights = torch.ones(num_images)
    growth = {False: [], True: []}
    for _ in range(3):
        growth[False].append(
            peak_growth_mib(lambda: loss_step(plain, pred, target, kwargs)))
        growth[True].append(
            peak_growth_mib(
                lambda: loss_step(wrapped, pred, target, kwargs, weights)))
    plain_mib, wrapped_mib = max(growth[False]), max(growth[True])
    print(f'\nPeak memory of a {name} step at {num_images} x 150 x {size} '
          f'x {size} (peak RSS growth, max of 3): plain {plain_mib:.1f} MiB, '
          f'wrapped {wrapped_mib:.1f} MiB, wrapped/plain '
          f"{wrapped_mib / plain_mib:.3f} (target <= {TARGETS['memory']})")
    return dict(plain=plain_mib, wrapped=wrapped_mib)


def _demo_cfg(data_root, work_dir, infobatch, iters):
    from mmengine.config import Config
    cfg = Config.fromfile(
        osp.join(REPO, 'configs', 'demo',
                 'upernet_r18_digit_scenes_infobatch.py'))
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = data_root
    if infobatch:
        cfg.train_dataloader.sampler.ratio = 0.0
        cfg.custom_hooks = [dict(type='TimedInfoBatchHook')]
        for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
            head.loss_decode.type = 'TimedInfoBatchLoss'
    else:
        cfg.custom_hooks = []
        cfg.train_dataloader.sampler = dict(
            type='DefaultSampler', shuffle=True)
        for head in (cfg.model.decode_head, cfg.model.auxiliary_head):
            head.loss_decode = head.loss_decode.loss
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=10**6)
    cfg.param_scheduler = []
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10**6)
    cfg.default_hooks.logger.interval = 10**6
    cfg.log_level = 'WARNING'
    cfg.work_dir = work_dir
    tag = uuid.uuid4().hex[:8]
    cfg.experiment_name, cfg.visualizer.name = f'bench_{tag}', f'vis_{tag}'
    return cfg


def _register_timed():
    from mmseg.registry import HOOKS, MODELS

    from mmseg_infobatch import InfoBatchHook, InfoBatchLoss

    class TimedInfoBatchHook(InfoBatchHook):
        spent = 0.0

        def before_train_iter(self, *args, **kwargs):
            start = time.perf_counter()
            super().before_train_iter(*args, **kwargs)
            TimedInfoBatchHook.spent += time.perf_counter() - start

        def after_train_iter(self, *args, **kwargs):
            start = time.perf_counter()
            super().after_train_iter(*args, **kwargs)
            TimedInfoBatchHook.spent += time.perf_counter() - start

    class TimedInfoBatchLoss(InfoBatchLoss):
        spent = 0.0

        def forward(self, *args, **kwargs):
            start = time.perf_counter()
            out = super().forward(*args, **kwargs)
            TimedInfoBatchLoss.spent += time.perf_counter() - start
            return out

    HOOKS.register_module(module=TimedInfoBatchHook, force=True)
    MODELS.register_module(module=TimedInfoBatchLoss, force=True)
    return TimedInfoBatchHook, TimedInfoBatchLoss


def bench_iterations(data_root, blocks, iters):
    from mmengine.runner import Runner

    import mmseg_infobatch  # noqa: F401
    from mmseg_infobatch.demo import ensure_digit_scenes
    ensure_digit_scenes(data_root)
    timed_hook, timed_loss = _register_timed()
    times = {False: [], True: []}
    work = tempfile.mkdtemp(prefix='infobatch_bench_')
    skip = 5  # warm-up iterations of each block
    for _ in range(blocks):
        for infobatch in (False, True):
            runner = Runner.from_cfg(
                _demo_cfg(data_root, work, infobatch, iters))
            runner.train()
            history = runner.message_hub.get_scalar('train/time').data[0]
            times[infobatch].extend(history[skip:].tolist())
    plain = statistics.median(times[False])
    ours = statistics.median(times[True])
    num_iters = len(times[True]) + blocks * skip
    hook_ms = timed_hook.spent / num_iters * 1e3
    # The wrapper's own share: the same logits through the plain loss and
    # the wrapper, forward and backward, timed in turns, for each head.
    crop = runner.cfg.crop_size
    batch = runner.cfg.train_dataloader.batch_size
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, 11, *crop, generator=g)
    label = torch.randint(0, 11, (batch, *crop), generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wrapper_ms = 0.0
    for head in (runner.cfg.model.decode_head,
                 runner.cfg.model.auxiliary_head):
        inner = head.loss_decode.loss
        cost = time_loss(
            inner, logits, label, dict(ignore_index=IGNORE), repeats=200)
        wrapper_ms += max(cost['ratio'] - 1, 0.0) * cost['plain']
    torch.set_num_threads(threads)
    print(f'\n## Per-iteration cost, demo model (batch {batch}, '
          f'{crop[0]}x{crop[1]}), '
          f'{blocks} alternating blocks of {iters} iterations\n')
    print('| measure | value |')
    print('|---|---|')
    print(f'| plain mmseg, median iteration | {plain * 1e3:.1f} ms |')
    print(f'| InfoBatch (ratio 0), median iteration | {ours * 1e3:.1f} ms |')
    print(f'| end-to-end ratio (noisy machine) | {ours / plain:.3f} |')
    print(f'| hook time per iteration | {hook_ms:.2f} ms '
          f'({hook_ms / (plain * 1e3):.2%}) |')
    print(f'| wrapper extra time per iteration (2 heads) | '
          f'{wrapper_ms:.2f} ms ({wrapper_ms / (plain * 1e3):.2%}) |')
    print(f'| hook + wrapper share of an iteration | '
          f'{(hook_ms + wrapper_ms) / (plain * 1e3):.2%} |')
    return dict(
        plain=plain, infobatch=ours, hook_ms=hook_ms, wrapper_ms=wrapper_ms)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        '--quick',
        action='store_true',
        help='a rehearsal in about a minute: N up to 1.28M, 3 repeats, one '
        'block of 20 iterations')
    parser.add_argument(
        '--data-root', default=osp.join(REPO, 'data', 'digit_scenes'))
    parser.add_argument('--skip-iterations', action='store_true')
    args = parser.parse_args(argv)
    sizes = [20_210, 1_281_167
             ] if args.quick else [20_210, 1_281_167, 10_000_000]
    bench_decisions(sizes, repeats=3 if args.quick else 11)
    bench_losses(args.quick)
    if not args.skip_iterations:
        bench_iterations(
            args.data_root,
            blocks=1 if args.quick else 3,
            iters=20 if args.quick else 60)


if __name__ == '__main__':
    main()
