#!/usr/bin/env python
"""Per-rank memory and pass-start time of InfoBatchSampler at scale.

Every rank holds the whole score table and decides every pass itself, so
what one process holds is what each rank of a job holds. For each dataset
size N, a fresh process (one thread) builds the sampler, trains a full
first pass (every batch counted, every sample scored) and decides a pruning
pass, and reports per sample:

- resident: bytes of the tensors the sampler holds after the decision (a
  buffer shared by views counted once);
- peak: the most it held while deciding, counted as resident before the
  decision plus the growth of the process's peak RSS during it (Linux's
  VmHWM, reset just before). glibc's malloc is told to map every block
  over 64 KiB on its own and unmap it when freed, so RSS follows what is
  live rather than what the allocator keeps for later;
- checkpoint: bytes of ``torch.save(sampler.state_dict())``;
- pass start: seconds to decide the pruning pass (``iter(sampler)``),
  timed in another process with malloc's default settings.

Example::

    python benchmarks/benchmark_scale.py            # N = 1.28M, 10M, 50M
    python benchmarks/benchmark_scale.py --quick    # N = 100k, seconds
"""
import argparse
import io
import json
import os
import subprocess
import sys
import time

from peak_rss import reset_peak_rss, status_kib

SIZES = [1_280_000, 10_000_000, 50_000_000]
QUICK_SIZES = [100_000]
BATCH_SIZE = 16


class _Sized:
    """A dataset of ``n`` samples without the samples."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def _held_bytes(sampler) -> int:
    """Bytes of the tensors the sampler holds, itself and in the pass it
    serves, each storage once."""
    import torch
    storages = {}
    held = list(vars(sampler).values()) + list(vars(sampler.served).values())
    for value in held:
        if torch.is_tensor(value):
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def measure(num_samples: int) -> dict:
    """Build, score and decide at ``num_samples`` (one process each)."""
    import torch
    torch.set_num_threads(1)
    from mmseg_infobatch import InfoBatchSampler
    sampler = InfoBatchSampler(_Sized(num_samples), seed=0, ratio=0.5)
    sampler.configure(BATCH_SIZE)
    iter(sampler)  # the first pass: full, nothing scored yet
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    generator = torch.Generator().manual_seed(0)
    sampler.update_scores(
        torch.arange(num_samples),
        torch.rand(num_samples, generator=generator))
    held_before = _held_bytes(sampler)
    rss_before = status_kib('VmRSS')
    reset_peak_rss()
    start = time.perf_counter()
    share = iter(sampler)  # decides the pruning pass
    seconds = time.perf_counter() - start
    growth = max(status_kib('VmHWM') - rss_before, 0) * 1024
    resident = _held_bytes(sampler)
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    del share
    return dict(
        num_samples=num_samples,
        kept=sampler.num_samples - sampler.decision.pruned,
        resident=resident / num_samples,
        peak=(held_before + growth) / num_samples,
        checkpoint=buffer.tell() / num_samples,
        seconds=seconds)


def _child(args, env):
    out = subprocess.run(
        [sys.executable, __file__] + args,
        env=env,
        capture_output=True,
        text=True)
    if out.returncode != 0:
        raise RuntimeError(f'{" ".join(args)} failed:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows) -> str:
    lines = [
        '| N | kept | resident (B/sample) | peak (B/sample) | peak / '
        'resident | checkpoint (B/sample) | pass start (s) |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f"| {r['num_samples']:,} | {r['kept']:,} | {r['resident']:.2f} "
            f"| {r['peak']:.2f} | {r['peak'] / r['resident']:.2f} | "
            f"{r['checkpoint']:.2f} | {r['seconds']:.3f} |")
    return '\n'.join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Per-sample memory and pass-start time of '
        'InfoBatchSampler at N = 1.28M, 10M and 50M samples.')
    parser.add_argument(
        '--quick',
        action='store_true',
        help=f'N = {QUICK_SIZES[0]:,} only (seconds)')
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        help='dataset sizes to measure instead')
    parser.add_argument('--child', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--child-time', type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else SIZES)
    bad = [n for n in sizes if n < BATCH_SIZE]
    if bad:
        parser.error(f'--sizes must be at least the batch size '
                     f'{BATCH_SIZE}, but got {bad}')
    args.sizes = sizes
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child)))
        return 0
    if args.child_time is not None:
        print(json.dumps(measure(args.child_time)['seconds']))
        return 0
    if not os.path.exists('/proc/self/clear_refs'):
        print('benchmark_scale.py measures peak memory with Linux '
              '/proc/self/clear_refs, which this system lacks')
        return 2
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    # Fixed thresholds also stop glibc from raising them as blocks are
    # freed (its default), which would keep freed tables in the heap.
    memory_env = dict(
        env, MALLOC_MMAP_THRESHOLD_='65536', MALLOC_TRIM_THRESHOLD_='65536')
    for num_samples in args.sizes:
        # Fresh processes per size: nothing of the last one is resident.
        row = _child(['--child', str(num_samples)], memory_env)
        row['seconds'] = _child(['--child-time', str(num_samples)], env)
        rows.append(row)
        print(f'measured N={num_samples:,}', flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == '__main__':
    sys.exit(main())
