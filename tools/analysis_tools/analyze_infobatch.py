"""Plot what InfoBatch did in a run, and how runs compare.

    python tools/analysis_tools/analyze_infobatch.py WORK_DIR
        [--compare OTHER_DIR ...] [--results STUDY/results.json] [--out DIR]

WORK_DIR is a work dir of tools/train.py with InfoBatch on. It writes PNGs:

- ``pruning.png``: pruned samples per pass and cumulative iterations saved
  (the run's pass history, from the last checkpoint or else the scalars),
  and below it each pass's prune ratio r_t next to the share of the budget
  saved so far (with the run's ``target_saving``, if it had one);
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
import inspect
import json
import os
import os.path as osp
import re
from dataclasses import fields

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mmseg_infobatch.engine.checkpoint_types import \
    load_trusted_checkpoint  # noqa: E402
from mmseg_infobatch.sampler.decision import decide_pass  # noqa: E402
from mmseg_infobatch.sampler.history import PassRecord  # noqa: E402
from mmseg_infobatch.sampler.history import history_from_state  # noqa: E402
from mmseg_infobatch.sampler.infobatch_sampler import \
    DEFAULT_RATIO  # noqa: E402
from mmseg_infobatch.sampler.infobatch_sampler import \
    InfoBatchSampler  # noqa: E402
from mmseg_infobatch.sampler.run_plan import PassPosition  # noqa: E402
from mmseg_infobatch.sampler.run_plan import RunPlan  # noqa: E402
from mmseg_infobatch.sampler.run_plan import batches_per_pass  # noqa: E402
from mmseg_infobatch.sampler.state import sample_tables  # noqa: E402

FIGSIZE = (5.5, 3.6)
DPI = 90
# mmengine names each run's log folder by its start time, so the names sort
# in time order.
LOG_DIR_PATTERN = re.compile(r'^\d{8}_\d{6}$')


class Run:
    """The pieces of one work dir that the plots need (any may be None).

    ``scalars`` merges every log folder of the run, so a resumed run is
    analysed as a whole. ``history`` is the pass history as a dict of
    equal-length numpy arrays, one per :class:`PassRecord` field (and,
    from the scalars, ``saved_iters``), from the last checkpoint or else
    rebuilt from the per-pass scalars. ``full_pass_batches``,
    ``budget_iters`` and ``offset`` are the run's :class:`RunPlan`
    arguments as far as known (the first two may be None).
    """

    def __init__(self, work_dir: str, label: str = None) -> None:
        self.work_dir = work_dir
        self.label = label or _label(work_dir)
        self.scalars = _load_scalars(work_dir)
        self.state = _load_infobatch_state(work_dir)
        self.config = _load_config(work_dir)
        self.history = (
            _checkpoint_history(self.state) or _scalar_history(self.scalars))
        saved = {} if self.state is None else self.state.get('progress', {})
        self.budget_iters = saved.get('budget_iters')
        self.offset = saved.get('offset', 0)
        self.full_pass_batches = _full_pass_batches(self.state)
        if self.full_pass_batches is None and self.history is not None:
            # Without a checkpoint, an unpruned pass shows the full length.
            full = self.history['iters'][self.history['pruned'] == 0]
            self.full_pass_batches = int(full.max()) if full.size else None

    def series(self, key: str):
        """(steps, values) of a scalar over the whole run, or None."""
        rows = [(r['step'], r[key]) for r in self.scalars or [] if key in r]
        if not rows:
            return None
        rows.sort(key=lambda row: row[0])  # stable: merge order kept
        return np.array(rows, dtype=float).T


def _full_pass_batches(state):
    """A full pass's iterations, from the layout in the sampler's state
    (older checkpoints saved the count itself), or None."""
    if state is None:
        return None
    layout = state.get('sampler', {}).get('layout')
    if layout and layout.get('batch_size'):
        return batches_per_pass(layout['num_samples'], layout['world_size'],
                                layout['batch_size'], layout['drop_last'])
    return state.get('progress', {}).get('full_batches')


def _label(work_dir: str) -> str:
    parts = osp.normpath(work_dir).split(os.sep)
    return '/'.join(parts[-2:]) if len(parts) > 1 else parts[-1]


def log_dirs(work_dir: str) -> list:
    """The run's log folders with scalars, oldest first: one per start,
    so a resumed run has several."""
    return sorted(
        d for d in glob.glob(osp.join(work_dir, '*'))
        if LOG_DIR_PATTERN.match(osp.basename(d))
        and osp.isfile(osp.join(d, 'vis_data', 'scalars.json')))


def merge_scalars(parts: list) -> list:
    """Merge the scalar records of successive log folders of one run.

    A resumed run trains again from its checkpoint's iteration, so what an
    earlier folder logged from the later folder's first step on is stale
    (the crashed tail, or a pass that is logged again): it is replaced.
    At that first step only the keys the later folder logs there are
    replaced, because a validation logged at the checkpoint's iteration is
    not repeated by the resumed run.
    """
    merged = []
    for records in parts:
        if not records:
            continue
        cut = min(r['step'] for r in records)
        relogged = {
            key
            for r in records if r['step'] == cut for key in r if key != 'step'
        }
        kept = []
        for record in merged:
            if record['step'] < cut:
                kept.append(record)
            elif record['step'] == cut:
                rest = {k: v for k, v in record.items() if k not in relogged}
                if len(rest) > 1:
                    kept.append(rest)
        merged = kept + list(records)
    return merged


def _load_scalars(work_dir: str):
    parts = []
    for log_dir in log_dirs(work_dir):
        with open(osp.join(log_dir, 'vis_data', 'scalars.json')) as f:
            parts.append([json.loads(line) for line in f if line.strip()])
    return merge_scalars(parts) if parts else None


def _load_config(work_dir: str):
    dirs = log_dirs(work_dir)
    path = dirs and osp.join(dirs[-1], 'vis_data', 'config.py')
    if not path or not osp.isfile(path):
        return None
    from mmengine.config import Config

    # Only the sampler settings are read: a custom module of the run that
    # is not importable here must not stop the plots.
    return Config.fromfile(path, import_custom_modules=False)


def _last_checkpoint(work_dir: str):
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            ckpt = f.read().strip()
        # The file holds the path the run wrote; a moved or copied work dir
        # still has the checkpoint next to it.
        if ckpt and not osp.isfile(ckpt):
            ckpt = osp.join(work_dir, osp.basename(ckpt))
        return ckpt if ckpt and osp.isfile(ckpt) else None
    ckpts = sorted(
        glob.glob(osp.join(work_dir, 'iter_*.pth')) +
        glob.glob(osp.join(work_dir, 'epoch_*.pth')),
        key=lambda p: int(p.rsplit('_', 1)[1][:-4]))
    return ckpts[-1] if ckpts else None


def _load_infobatch_state(work_dir: str):
    ckpt = _last_checkpoint(work_dir)
    if ckpt is None:
        return None
    # A whole mmengine checkpoint holds a few non-tensor types besides ours.
    return load_trusted_checkpoint(ckpt).get('infobatch')


def as_columns(records: list) -> dict:
    """Dataclass records as a dict of numpy arrays, one per field."""
    return {
        field.name: np.array([getattr(r, field.name) for r in records])
        for field in fields(records[0])
    }


def _checkpoint_history(state):
    """The checkpoint's pass history as numpy arrays, or None."""
    history = None if state is None else state.get('history')
    records = history_from_state(history) if history else []
    return as_columns(records) if records else None


def _scalar_history(scalars):
    """The pass history rebuilt from the per-pass scalars, or None.

    Each pass logs its scalars at its first iteration, in one record. A
    pass that appears twice (logged again after a resume) keeps its first
    start, where it really began.
    """
    firsts = {}
    for record in sorted(scalars or [], key=lambda r: r['step']):
        if 'infobatch/pass' in record:
            firsts.setdefault(int(record['infobatch/pass']), record)
    if not firsts:
        return None
    logged = [firsts[p] for p in sorted(firsts)]
    # What the scalars leave out (candidates; NaN values) reads as NaN.
    history = as_columns([
        PassRecord(
            pass_idx=int(r['infobatch/pass']),
            start_iter=int(r['step']),
            kept=int(r['infobatch/kept']),
            pruned=int(r['infobatch/pruned']),
            candidates=np.nan,
            iters=int(r['infobatch/pass_iters']),
            threshold=r.get('infobatch/threshold', np.nan),
            may_prune=r['infobatch/pruned'] > 0,
            ratio=r.get('infobatch/ratio', np.nan)) for r in logged
    ])
    history['saved_iters'] = np.array(
        [r.get('infobatch/saved_iters', np.nan) for r in logged], dtype=float)
    return history


def pass_spans(run: Run) -> np.ndarray:
    """Virtual (full-data) iterations at which each pass of the history
    starts and ends, as rows ``(starts, ends)``: the tool's one use of
    :class:`RunPlan`, which the hook counts progress with (a plan of
    ``full_pass_batches`` one-sample iterations has the run's pass
    length)."""
    progress = RunPlan(
        run.full_pass_batches, 1, run.budget_iters or 0, offset=run.offset)
    # Each pass's start (no batch trained yet) and end (all trained).
    positions = [(p, trained, n)
                 for p, n in zip(run.history['pass_idx'].tolist(),
                                 np.maximum(run.history['iters'], 1).tolist())
                 for trained in (0, n)]
    virtual = [
        progress.virtual_iter(PassPosition(*position))
        for position in positions
    ]
    return np.array(virtual, dtype=float).reshape(-1, 2).T


def saved_iters(run: Run):
    """Iterations saved up to the end of each pass: full-data progress made
    so far minus the iterations it took. None without a history."""
    history = run.history
    if history is None:
        return None
    if 'saved_iters' in history:  # logged by the hook itself
        return history['saved_iters']
    start, end = pass_spans(run)
    # The last pass of a fractional schedule is cut short by the budget.
    budget = run.budget_iters or np.inf
    share = np.clip((budget - start) / (end - start), 0, 1)
    return np.minimum(end, budget) - (
        history['start_iter'] + history['iters'] * share)


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
    saved = saved_iters(run) if run.full_pass_batches else None
    if history is None or saved is None:
        print(f'skip pruning.png: no pass history in {run.work_dir}')
        return None
    passes = history['pass_idx']
    fig, (ax, low) = plt.subplots(
        2,
        1,
        sharex=True,
        figsize=(FIGSIZE[0], FIGSIZE[1] * 1.6),
        gridspec_kw=dict(height_ratios=[3, 2]))
    ax.bar(passes, history['pruned'], color='tab:blue', alpha=0.7)
    ax.set_ylabel('samples pruned in the pass', color='tab:blue')
    twin = ax.twinx()
    twin.plot(passes, saved, 'o-', color='tab:red', ms=3)
    twin.set_ylabel('iterations saved (cumulative)', color='tab:red')
    ax.set_title(f'InfoBatch pruning per pass: {run.label}', fontsize=9)
    _plot_ratio(run, low, passes, saved)
    low.set_xlabel('pass')
    return _save(fig, out_dir, 'pruning.png')


def _plot_ratio(run: Run, ax, passes, saved) -> None:
    """Each pass's prune ratio r_t, and the share of the budget saved up
    to the end of each pass (against the run's target, if any)."""
    ratio = run.history['ratio']
    if not np.isnan(ratio).all():
        ax.step(passes, ratio, where='mid', color='tab:green')
        ax.plot(passes, ratio, 'o', color='tab:green', ms=3)
    else:
        ax.text(
            0.5,
            0.5,
            'r_t not recorded (older run)',
            ha='center',
            transform=ax.transAxes,
            fontsize=8)
    ax.set_ylabel('prune ratio r_t', color='tab:green')
    ax.set_ylim(bottom=0)
    budget = run.budget_iters
    if not budget:
        return
    twin = ax.twinx()
    twin.plot(
        passes, 100 * np.asarray(saved) / budget, '-', color='tab:red', lw=1)
    target = _pruning_settings(run)['target_saving']
    if target:
        twin.axhline(
            100 * target,
            color='tab:red',
            ls='--',
            lw=1,
            label=f'target_saving {target:.0%}')
        twin.legend(fontsize=7, loc='lower right')
    twin.set_ylabel('saved, % of the budget', color='tab:red')


def _pruning_settings(run: Run) -> dict:
    sampler = {} if run.config is None else dict(
        run.config.train_dataloader.sampler)
    # What the config leaves out is the sampler's default.
    defaults = inspect.signature(InfoBatchSampler).parameters
    settings = {
        key: sampler.get(key, defaults[key].default)
        for key in ('ratio', 'policy', 'prune_high', 'buckets', 'rescale',
                    'target_saving')
    }
    if settings['ratio'] is None:
        # ratio None is the sampler's default, or with target_saving a
        # ratio per pass: the mean r_t of the passes that pruned stands for
        # them.
        settings['ratio'] = DEFAULT_RATIO
        if settings['target_saving'] and run.history:
            ratios = run.history['ratio']
            pruned = ratios[(run.history['pruned'] > 0) & ~np.isnan(ratios)]
            if pruned.size:
                settings['ratio'] = float(pruned.mean())
    return settings


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
    sampler = run.state.get('sampler', {})
    tables = sample_tables(sampler) if 'scores' in sampler else {}
    scores, seen = tables.get('scores'), tables.get('seen')
    if scores is None or seen is None or not bool(seen.any()):
        print('skip scores.png: no sample was scored')
        return None
    # The sampler keeps its pass's order (the kept indices) and weights; if
    # not, or if that pass is full, the decision is replayed below.
    kept = tables['order']
    weights = tables['weights']
    note = f'pass {sampler.get("pass_idx", "?")} (saved)'
    if kept is not None:
        kept = torch.unique(kept)
    if kept is None or weights is None or kept.numel() == scores.numel():
        settings = _pruning_settings(run)
        settings.pop('target_saving')
        if settings['ratio'] == 0 and settings['policy'] != 'quantile':
            settings['ratio'] = DEFAULT_RATIO
        generator = torch.Generator().manual_seed(0)
        decision = decide_pass(scores, seen, generator=generator, **settings)
        kept, weights = decision.indices, decision.weights
        note = (f'a pruning pass replayed on the final scores '
                f'(r={settings["ratio"]}, {settings["policy"]})')
    all_scores = scores[seen].numpy()
    kept = kept[seen[kept]]
    kept_scores = scores[kept].numpy()
    kept_weights = weights[kept].numpy()
    bins = np.linspace(0, np.quantile(all_scores, 0.99), 40)
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ax.hist(
        all_scores,
        bins,
        histtype='step',
        lw=1.5,
        label=f'before pruning ({all_scores.size})')
    ax.hist(
        kept_scores,
        bins,
        histtype='step',
        lw=1.5,
        label=f'after pruning ({kept_scores.size} kept)')
    ax.hist(
        kept_scores,
        bins,
        weights=kept_weights,
        histtype='step',
        lw=1.5,
        ls='--',
        label='after rescaling (weighted)')
    if not np.isnan(mean := float(all_scores.mean())):
        ax.axvline(mean, color='gray', ls=':', lw=1, label='mean (threshold)')
    ax.set_xlabel('score (per-image loss)')
    ax.set_ylabel('samples')
    ax.set_title(f'{run.label}: {note}', fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, 'scores.png')


def epoch_progress(run: Run, done: np.ndarray) -> np.ndarray:
    """Passes of data progress after ``done`` iterations."""
    history, full = run.history, run.full_pass_batches
    if history is None:
        return done / full
    starts, iters = history['start_iter'], history['iters']
    row = np.clip(np.searchsorted(starts, done, side='right') - 1, 0, None)
    within = (done - starts[row]) / np.maximum(iters[row], 1)
    # A pass's own iterations spread its full pass of progress evenly.
    start, end = pass_spans(run)
    inside = (start[row] + within * (end[row] - start[row])) / full
    # Iterations before the first pass with InfoBatch state (a resume from
    # a checkpoint without it) were full-data iterations.
    return np.where(done < starts[0], done / full, inside)


def _overlay(runs: list, out_dir: str, name: str, draw, missing: str,
             labels: tuple, **legend):
    """One plot of all runs: ``draw(ax, index, run)`` draws a run and says
    whether it had anything; ``labels`` are the axes' labels and title."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    if not any([draw(ax, i, run) for i, run in enumerate(runs)]):
        plt.close(fig)
        print(f'skip {name}: {missing}')
        return None
    ax.set(xlabel=labels[0], ylabel=labels[1])
    ax.set_title(labels[2], fontsize=9)
    ax.legend(**legend)
    return _save(fig, out_dir, name)


def plot_lr(runs: list, out_dir: str):
    """Learning rate against epoch progress, all runs overlaid."""

    def draw(ax, i, run):
        lr = run.series('lr')
        if lr is None or run.full_pass_batches is None:
            print(f'skip {run.label} in lr_progress.png: no lr scalars or '
                  'InfoBatch state')
            return False
        # The lr logged at step s is the one iteration s ran with, set by
        # the scheduler after s - 1 iterations.
        ax.plot(
            epoch_progress(run, lr[0] - 1),
            lr[1],
            lw=2.5 - 1.2 * (i > 0),
            ls='-' if i == 0 else '--',
            label=run.label)
        return True

    return _overlay(
        runs,
        out_dir,
        'lr_progress.png',
        draw,
        'no run has lr scalars',
        ('epoch progress (passes of data)', 'learning rate',
         'LR schedule against data progress'),
        fontsize=7)


def plot_miou(runs: list, out_dir: str):
    """Validation mIoU against training iterations for every run."""

    def draw(ax, i, run):
        miou = run.series('mIoU')
        if miou is not None:
            ax.plot(miou[0], miou[1], 'o-', ms=3, lw=1, label=run.label)
        return miou is not None

    return _overlay(
        runs,
        out_dir,
        'miou_iters.png',
        draw,
        'no run has validation mIoU',
        ('iteration', 'val mIoU', 'Validation mIoU during training'),
        fontsize=6,
        ncol=2)


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
        ax.axhspan(
            full['miou_mean'] - full['miou_std'],
            full['miou_mean'] + full['miou_std'],
            color='gray',
            alpha=0.15,
            lw=0,
            label='full data mean ± std')
    for arm, s in summary.items():
        line = ax.errorbar(
            s['iters_mean'],
            s['miou_mean'],
            yerr=s['miou_std'],
            fmt='o',
            capsize=4,
            label=f'{arm} (n={len(s["seeds"])})')
        seeds = runs.get(arm, [])
        ax.scatter([r['iters'] for r in seeds], [r['miou'] for r in seeds],
                   s=10,
                   alpha=0.5,
                   color=line[0].get_color())
    ax.set_xlabel('training iterations')
    ax.set_ylabel('final val mIoU')
    ax.set_title('Lossless study: mIoU against cost (dots: seeds)', fontsize=9)
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
