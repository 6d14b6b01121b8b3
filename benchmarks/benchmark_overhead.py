"""InfoBatch overhead, measured side by side in one run.

1. The pass decision (pruning + padding + rank slicing) at N = 20,210
   (ADE20K), 1,281,167 (ImageNet) and 10,000,000, against three references
   on the same scores: the authors' ``prune()`` step by step, with its
   Python list of kept indices; the same algorithm vectorised in numpy
   (``random.choice`` over the well-learned indices, no lists); and a naive
   one that sorts the scores.
2. The per-iteration cost of hook + loss wrapper on the demo model: plain
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

from mmseg_infobatch.pass_layout import cycle_to, rank_share
from mmseg_infobatch.pruning import decide_pass

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
WORLD, BATCH = 8, 16


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
    from mmseg.registry import MODELS

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
    # the wrapper, timed side by side.
    crop = runner.cfg.crop_size
    batch = runner.cfg.train_dataloader.batch_size
    logits = torch.randn(batch, 11, *crop)
    label = torch.randint(0, 11, (batch, *crop))
    plain_ce = MODELS.build(dict(type='CrossEntropyLoss'))
    wrapped = MODELS.build(
        dict(type='InfoBatchLoss', loss=dict(type='CrossEntropyLoss')))

    def run_plain(_):
        plain_ce(logits, label, ignore_index=255)

    def run_wrapped(_):
        wrapped.set_batch_weights(torch.ones(batch))
        wrapped(logits, label, ignore_index=255)
        wrapped.pop_scores()

    extra = []
    for _ in range(5):
        extra.append(time_median(run_wrapped, 30) - time_median(run_plain, 30))
    wrapper_ms = max(statistics.median(extra), 0.0) * 1e3 * 2  # two heads
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
    if not args.skip_iterations:
        bench_iterations(
            args.data_root,
            blocks=1 if args.quick else 3,
            iters=20 if args.quick else 60)


if __name__ == '__main__':
    main()
