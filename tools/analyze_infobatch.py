"""Plot what InfoBatch did in a run, and how runs compare.

    python tools/analyze_infobatch.py WORK_DIR [--compare OTHER_DIR ...]
        [--results STUDY/results.json] [--out DIR]

WORK_DIR is a work dir of tools/train.py with InfoBatch on. It writes PNGs:

- ``pruning.png``: pruned samples per pass and cumulative iterations saved
  (the run's pass history, from the last checkpoint or else the scalars);
- ``scores.png``: score histograms before pruning (all scored samples),
  after pruning (kept samples) and after rescaling (kept samples weighted by
  their loss weight), from the last checkpoint's sampler state;
- ``lr_progress.png``: learning rate against epoch progress for WORK_DIR and
  every ``--compare`` run, to show the schedules align;
- ``miou_iters.png``: validation mIoU against iterations for all runs;
- ``study.png``: with ``--results``, mIoU per arm (each seed, mean ± std,
  and full data's seed band) against the iterations it trained.

A plot whose inputs are missing is skipped with a message.
"""
import argparse
import glob
import json
import os
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import mmseg_infobatch  # noqa: E402,F401  allow-lists checkpoint types
from mmseg_infobatch.pruning import decide_pass  # noqa: E402

# Columns of the hook's history rows (see InfoBatchHook._begin_pass).
PASS, START, KEPT, PRUNED, CANDIDATES, BATCHES, THRESHOLD, PRUNES = range(8)
FIGSIZE = (5.5, 3.6)
DPI = 90


class Run:
    """The pieces of one work dir that the plots need (any may be None)."""

    def __init__(self, work_dir: str, label: str = None) -> None:
        self.work_dir = work_dir
        self.label = label or _label(work_dir)
        self.scalars = _load_scalars(work_dir)
        self.state = _load_infobatch_state(work_dir)
        self.config = _load_config(work_dir)

    @property
    def history(self):
        if self.state is None:
            return None
        history = self.state['hook']['history']
        return history.numpy() if len(history) else None

    @property
    def full_batches(self):
        return None if self.state is None else int(
            self.state['hook']['full_batches'])

    def series(self, key: str):
        """(steps, values) of a scalar, or None."""
        rows = [(r['step'], r[key]) for r in self.scalars or [] if key in r]
        return np.array(rows, dtype=float).T if rows else None


def _label(work_dir: str) -> str:
    parts = osp.normpath(work_dir).split(os.sep)
    return '/'.join(parts[-2:]) if len(parts) > 1 else parts[-1]


def _latest_log_dir(work_dir: str):
    dirs = sorted(
        d for d in glob.glob(osp.join(work_dir, '*'))
        if osp.isfile(osp.join(d, 'vis_data', 'scalars.json')))
    return dirs[-1] if dirs else None


def _load_scalars(work_dir: str):
    log_dir = _latest_log_dir(work_dir)
    if log_dir is None:
        return None
    with open(osp.join(log_dir, 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_config(work_dir: str):
    log_dir = _latest_log_dir(work_dir)
    path = log_dir and osp.join(log_dir, 'vis_data', 'config.py')
    if not path or not osp.isfile(path):
        return None
    from mmengine.config import Config
    return Config.fromfile(path)


def _load_infobatch_state(work_dir: str):
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            ckpt = f.read().strip()
    else:
        ckpts = sorted(
            glob.glob(osp.join(work_dir, 'iter_*.pth')),
            key=lambda p: int(p.rsplit('_', 1)[1][:-4]))
        ckpt = ckpts[-1] if ckpts else None
    if not ckpt or not osp.isfile(ckpt):
        return None
    return torch.load(ckpt, map_location='cpu',
                      weights_only=True).get('infobatch')


def _save(fig, out_dir: str, name: str) -> str:
    path = osp.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    print(f'wrote {path} ({osp.getsize(path) // 1024} KB)')
    return path


def plot_pruning(run: Run, out_dir: str):
    """Pruned samples per pass and cumulative iterations saved (Fig. 4d)."""
    history = run.history
    if history is not None:
        passes = history[:, PASS]
        pruned = history[:, PRUNED]
        saved = np.cumsum(run.full_batches - history[:, BATCHES])
    else:
        pruned_s, saved_s = run.series('infobatch/pruned'), run.series(
            'infobatch/saved_iters')
        if pruned_s is None or saved_s is None:
            print(f'skip pruning.png: no pass history in {run.work_dir}')
            return None
        passes = np.arange(pruned_s.shape[1])
        pruned, saved = pruned_s[1], saved_s[1]
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.bar(passes, pruned, color='tab:blue', alpha=0.7)
    ax.set_xlabel('pass')
    ax.set_ylabel('samples pruned in the pass', color='tab:blue')
    twin = ax.twinx()
    twin.plot(passes, saved, 'o-', color='tab:red', ms=3)
    twin.set_ylabel('iterations saved (cumulative)', color='tab:red')
    ax.set_title(f'InfoBatch pruning per pass: {run.label}', fontsize=9)
    return _save(fig, out_dir, 'pruning.png')


def _pruning_settings(run: Run) -> dict:
    sampler = {} if run.config is None else dict(
        run.config.train_dataloader.sampler)
    return dict(
        ratio=sampler.get('ratio', 0.5),
        policy=sampler.get('policy', 'mean'),
        prune_high=sampler.get('prune_high', False),
        buckets=sampler.get('buckets'),
        rescale=sampler.get('rescale', True))


def plot_scores(run: Run, out_dir: str):
    """Score histograms before pruning, after pruning, after rescaling.

    The last checkpoint is usually in an annealing (full) pass, so its kept
    set is everything. In that case the pruning step is applied to the
    saved scores once more, with the run's own settings, to show what a
    pruning pass does with them.
    """
    if run.state is None:
        print(f'skip scores.png: no checkpoint with InfoBatch state in '
              f'{run.work_dir}')
        return None
    sampler = run.state['sampler']
    scores, seen = sampler['scores'], sampler['seen']
    if not bool(seen.any()):
        print('skip scores.png: no sample was scored')
        return None
    kept = torch.unique(sampler['pass_indices'])
    weights = sampler['weights']
    note = f'pass {sampler["pass_idx"]} (saved)'
    if kept.numel() == scores.numel():
        settings = _pruning_settings(run)
        if settings['ratio'] == 0 and settings['policy'] != 'quantile':
            settings['ratio'] = 0.5
        generator = torch.Generator().manual_seed(0)
        decision = decide_pass(scores, seen, generator=generator,
                               **settings)
        kept, weights = decision.indices, decision.weights
        note = (f'a pruning pass replayed on the final scores '
                f'(r={settings["ratio"]}, {settings["policy"]})')
    all_scores = scores[seen].numpy()
    kept = kept[seen[kept]]
    kept_scores = scores[kept].numpy()
    kept_weights = weights[kept].numpy()
    bins = np.linspace(0, np.quantile(all_scores, 0.99), 40)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.hist(all_scores, bins, histtype='step', lw=1.5,
            label=f'before pruning ({all_scores.size})')
    ax.hist(kept_scores, bins, histtype='step', lw=1.5,
            label=f'after pruning ({kept_scores.size} kept)')
    ax.hist(kept_scores, bins, weights=kept_weights, histtype='step',
            lw=1.5, ls='--', label='after rescaling (weighted)')
    if not np.isnan(mean := float(all_scores.mean())):
        ax.axvline(mean, color='gray', ls=':', lw=1, label='mean (threshold)')
    ax.set_xlabel('score (per-image loss)')
    ax.set_ylabel('samples')
    ax.set_title(f'{run.label}: {note}', fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, 'scores.png')


def epoch_progress(run: Run, steps: np.ndarray) -> np.ndarray:
    """Passes of data progress at each logged iteration (1-based steps)."""
    history = run.history
    if history is None:
        return steps / run.full_batches
    starts, batches = history[:, START], history[:, BATCHES]
    done = steps - 1  # iterations finished before the logged one
    row = np.clip(np.searchsorted(starts, done, side='right') - 1, 0, None)
    return history[row, PASS] + (steps - starts[row]) / batches[row]


def plot_lr(runs: list, out_dir: str):
    """Learning rate against epoch progress, all runs overlaid."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    drawn = 0
    for i, run in enumerate(runs):
        lr = run.series('lr')
        if lr is None or run.full_batches is None:
            print(f'skip {run.label} in lr_progress.png: no lr scalars or '
                  'InfoBatch state')
            continue
        ax.plot(epoch_progress(run, lr[0]), lr[1], lw=2.5 - 1.2 * (i > 0),
                ls='-' if i == 0 else '--', label=run.label)
        drawn += 1
    if not drawn:
        plt.close(fig)
        print('skip lr_progress.png: no run has lr scalars')
        return None
    ax.set_xlabel('epoch progress (passes of data)')
    ax.set_ylabel('learning rate')
    ax.set_title('LR schedule against data progress', fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, 'lr_progress.png')


def plot_miou(runs: list, out_dir: str):
    """Validation mIoU against training iterations for every run."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    drawn = 0
    for run in runs:
        miou = run.series('mIoU')
        if miou is None:
            continue
        ax.plot(miou[0], miou[1], 'o-', ms=3, lw=1, label=run.label)
        drawn += 1
    if not drawn:
        plt.close(fig)
        print('skip miou_iters.png: no run has validation mIoU')
        return None
    ax.set_xlabel('iteration')
    ax.set_ylabel('val mIoU')
    ax.set_title('Validation mIoU during training', fontsize=9)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out_dir, 'miou_iters.png')


def plot_study(results_file: str, out_dir: str):
    """mIoU per arm against iterations trained: each seed, the mean ± std,
    and full data's mean ± std as a band (its seed noise)."""
    if not results_file or not osp.isfile(results_file):
        print(f'skip study.png: no results file {results_file}')
        return None
    with open(results_file) as f:
        study = json.load(f)
    summary, runs = study['summary'], study.get('runs', {})
    fig, ax = plt.subplots(figsize=FIGSIZE)
    full = summary.get('full')
    if full:
        ax.axhspan(full['miou_mean'] - full['miou_std'],
                   full['miou_mean'] + full['miou_std'], color='gray',
                   alpha=0.15, lw=0, label='full data mean ± std')
    for arm, s in summary.items():
        line = ax.errorbar(s['iters_mean'], s['miou_mean'],
                           yerr=s['miou_std'], fmt='o', capsize=4,
                           label=f'{arm} (n={len(s["seeds"])})')
        seeds = runs.get(arm, [])
        ax.scatter([r['iters'] for r in seeds], [r['miou'] for r in seeds],
                   s=10, alpha=0.5, color=line[0].get_color())
    ax.set_xlabel('training iterations')
    ax.set_ylabel('final val mIoU')
    ax.set_title('Lossless study: mIoU against cost (dots: seeds)',
                 fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, 'study.png')


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('work_dir', help='an InfoBatch run')
    parser.add_argument(
        '--compare', nargs='+', default=[], help='other runs to overlay')
    parser.add_argument('--results', help="the study's results.json")
    parser.add_argument('--out', help='output folder (default: WORK_DIR)')
    args = parser.parse_args(argv)
    out_dir = args.out or args.work_dir
    os.makedirs(out_dir, exist_ok=True)
    runs = [Run(d) for d in [args.work_dir] + args.compare]
    plot_pruning(runs[0], out_dir)
    plot_scores(runs[0], out_dir)
    plot_lr(runs, out_dir)
    plot_miou(runs, out_dir)
    plot_study(args.results, out_dir)


if __name__ == '__main__':
    main()
