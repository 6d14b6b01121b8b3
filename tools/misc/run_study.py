"""The lossless study: InfoBatch against full data and its ablations.

Every arm trains a demo config for the same number of full-data passes (56
by default, near the plateau; 28 with ``--quick``), once per seed, through
``tools/train.py`` in its own process (``--jobs`` at a time), into
``WORK_DIR/<arm>/seed<k>/``. A finished run leaves ``result.json`` there and
is skipped next time, so the study resumes where it stopped. The summary goes
to ``WORK_DIR/results.json`` and ``.md`` (``--summary`` renames them).

Arms:
    full        full data (ratio 0: same sampler, same shuffles, no pruning)
    infobatch   InfoBatch defaults (ratio 0.5, delta 0.875)
    random      Random*: drop samples at random with a ratio sized so that
                it saves what the infobatch arm saved, no rescaling
    no_rescale  InfoBatch without rescaling survivors
    no_anneal   InfoBatch pruning in every pass (no annealing)
    ratio_0.6   InfoBatch with ratio 0.6: how far the saving stretches
    target_0.3  InfoBatch with target_saving=0.3: each pass's ratio is
                solved for so that the run saves 30% of its iterations

Examples::

    python tools/misc/run_study.py --quick   # 28 passes, full vs infobatch,
                                             # 2 seeds
    python tools/misc/run_study.py           # 56 passes, all arms, 3 seeds
    python tools/misc/run_study.py --arms full infobatch --seeds 0 1 2 3 4 \\
        --summary results_5seeds     # reuses seeds 0-2 of the study
    python tools/misc/run_study.py --smoke   # both arms for 20 iterations
                                             # on 40 scenes: a rehearsal
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = 'configs/demo/upernet_r18_digit_scenes_infobatch_56passes.py'
QUICK_CONFIG = 'configs/demo/upernet_r18_digit_scenes_infobatch.py'
ARMS = ('full', 'infobatch', 'random', 'no_rescale', 'no_anneal', 'ratio_0.6',
        'target_0.3')
QUICK_ARMS = ('full', 'infobatch')
# --smoke: 40 training scenes in batches of 8, 4 passes of 5 iterations.
SMOKE_DATA = dict(num_train=40, num_val=8)
SMOKE_SCHEDULE = dict(passes=4, iters_per_pass=5, batch=8)
FINISHED = re.compile(r'InfoBatch finished: (\d+) iterations instead of (\d+)')
PASS0 = re.compile(r'InfoBatch pass 0 ')
STAMP = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)')
DESCRIPTIONS = dict(
    full='full data (ratio 0)',
    infobatch='InfoBatch (r 0.5, delta 0.875)',
    random='Random* (r {ratio:.3f}, no rescale)',
    no_rescale='InfoBatch, no rescaling',
    no_anneal='InfoBatch, no annealing',
    **{
        'ratio_0.6': 'InfoBatch (r 0.6, delta 0.875)',
        'target_0.3': 'InfoBatch (target_saving 0.3, delta 0.875)'
    })


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        '--config', help=f'default {CONFIG}; {QUICK_CONFIG} with --quick')
    parser.add_argument(
        '--work-dir',
        help='default work_dirs/study, work_dirs/study_quick with --quick')
    parser.add_argument('--arms', nargs='+', choices=ARMS)
    parser.add_argument('--seeds', nargs='+', type=int)
    parser.add_argument(
        '--quick',
        action='store_true',
        help='28 passes, full vs infobatch, seeds 0 1 (unless --config, '
        '--arms or --seeds say otherwise)')
    parser.add_argument(
        '--smoke',
        action='store_true',
        help='a rehearsal in about a minute: the --quick arms, seed 0, on '
        f"{SMOKE_DATA['num_train']} scenes made in WORK_DIR/data for "
        f"{SMOKE_SCHEDULE['passes']} passes of "
        f"{SMOKE_SCHEDULE['iters_per_pass']} iterations")
    parser.add_argument(
        '--summary',
        default='results',
        help='write the summary to WORK_DIR/SUMMARY.json and .md, so that a '
        'study with more seeds of some arms can share the runs')
    parser.add_argument(
        '--jobs',
        type=int,
        default=2,
        help='runs at a time (each on --threads threads); 2 fills 2 cores')
    parser.add_argument(
        '--val-every',
        type=int,
        default=4,
        help='validate every this many full passes of iterations, for the '
        'mIoU curves (0: only at the end)')
    parser.add_argument(
        '--threads',
        type=int,
        default=1,
        help='OMP/MKL threads per run; 1 is fastest on a busy 2-core CPU')
    parser.add_argument(
        '--nice', type=int, default=10, help='niceness of each run')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for every run')
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f'--jobs must be at least 1, got {args.jobs}')
    quick = args.quick or args.smoke
    args.config = args.config or (QUICK_CONFIG if quick else CONFIG)
    args.work_dir = args.work_dir or (
        'work_dirs/study_smoke' if args.smoke else
        'work_dirs/study_quick' if args.quick else 'work_dirs/study')
    args.arms = args.arms or list(QUICK_ARMS if quick else ARMS)
    args.seeds = args.seeds if args.seeds is not None else (
        [0] if args.smoke else [0, 1] if args.quick else [0, 1, 2])
    args.data_root = None
    if args.smoke:
        args.data_root = osp.join(args.work_dir, 'data')
        args.cfg_options = smoke_options(args.data_root) + args.cfg_options
    return args


def smoke_options(data_root: str) -> list:
    """Overrides that shrink the demo config to the --smoke schedule."""
    passes, per_pass, batch = (
        SMOKE_SCHEDULE[k] for k in ('passes', 'iters_per_pass', 'batch'))
    max_iters = passes * per_pass
    return [
        f'passes={passes}', f'iters_per_pass={per_pass}',
        f'train_dataloader.batch_size={batch}',
        f'train_cfg.max_iters={max_iters}', 'param_scheduler.0.end=2',
        'param_scheduler.1.begin=2', f'param_scheduler.1.end={max_iters}',
        f'default_hooks.checkpoint.interval={max_iters}',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}'
    ]


def load_schedule(config: str, cfg_options: list = ()) -> dict:
    """The config's passes, iterations per pass and delta, after the
    ``--cfg-options`` of every run."""
    from mmengine.config import Config, DictAction
    cfg = Config.fromfile(osp.join(ROOT, config))
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(['--cfg-options', *cfg_options]).cfg_options \
        if cfg_options else None
    if options:
        cfg.merge_from_dict(options)
    hook = next(h for h in cfg.custom_hooks if h['type'] == 'InfoBatchHook')
    return dict(
        passes=cfg.passes,
        iters_per_pass=cfg.iters_per_pass,
        max_iters=cfg.train_cfg.max_iters,
        delta=hook.get('delta', 0.875))


def random_ratio(saved_fraction: float, passes: float, delta: float) -> float:
    """Random* prune ratio that saves ``saved_fraction`` of the budget.

    Random* drops a fraction r of the samples in each pruned pass, and the
    pruned passes are 1 .. ceil(delta * C) - 1 (pass 0 has no scores), so
    it saves r * (ceil(delta * C) - 1) of C passes.
    """
    pruned_passes = math.ceil(delta * passes) - 1
    return min(max(saved_fraction * passes / max(pruned_passes, 1), 0.0), 0.95)


def arm_options(arm: str, seed: int, random_r: float = None) -> list:
    opts = [f'randomness.seed={seed}', f'train_dataloader.sampler.seed={seed}']
    if arm == 'full':
        opts.append('train_dataloader.sampler.ratio=0.0')
    elif arm == 'random':
        opts += [
            "train_dataloader.sampler.policy='random'",
            f'train_dataloader.sampler.ratio={random_r:.6f}',
            'train_dataloader.sampler.rescale=False'
        ]
    elif arm == 'no_rescale':
        opts.append('train_dataloader.sampler.rescale=False')
    elif arm == 'no_anneal':
        opts.append('custom_hooks.0.anneal=False')
    elif arm == 'ratio_0.6':
        opts.append('train_dataloader.sampler.ratio=0.6')
    elif arm == 'target_0.3':
        # The config sets a ratio; target_saving takes its place.
        opts += [
            'train_dataloader.sampler.ratio=None',
            'train_dataloader.sampler.target_saving=0.3'
        ]
    return opts


def parse_run(run_dir: str) -> dict:
    """mIoU curve, iterations, budget and training time of a finished run."""
    stamps = sorted(
        d for d in os.listdir(run_dir)
        if osp.isfile(osp.join(run_dir, d, f'{d}.log')))
    if not stamps:
        raise FileNotFoundError(f'no log in {run_dir}')
    log_dir = osp.join(run_dir, stamps[-1])
    iters = budget = start = end = None
    with open(osp.join(log_dir, f'{stamps[-1]}.log')) as f:
        for line in f:
            stamp = STAMP.match(line)
            if stamp and PASS0.search(line) and start is None:
                start = stamp.group(1)
            found = FINISHED.search(line)
            if found:
                iters, budget = int(found.group(1)), int(found.group(2))
                end = stamp.group(1) if stamp else None
    if iters is None:
        raise RuntimeError(f'{run_dir}: training did not finish')
    curve = []
    with open(osp.join(log_dir, 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            if 'mIoU' in record:
                curve.append([record['step'], record['mIoU']])
    fmt = '%Y/%m/%d %H:%M:%S'
    train_s = (datetime.strptime(end, fmt) -
               datetime.strptime(start, fmt)).total_seconds() \
        if start and end else None
    return dict(
        miou=curve[-1][1] if curve else None,
        curve=curve,
        iters=iters,
        budget=budget,
        saved=(budget - iters) / budget,
        train_s=train_s,
        log_dir=log_dir)


def run_one(args,
            arm: str,
            seed: int,
            schedule: dict,
            random_r: float = None) -> dict:
    run_dir = osp.join(args.work_dir, arm, f'seed{seed}')
    result_file = osp.join(run_dir, 'result.json')
    opts = arm_options(arm, seed, random_r)
    val = schedule['max_iters']
    if args.val_every > 0:
        val = args.val_every * schedule['iters_per_pass']
    opts.append(f'train_cfg.val_interval={val}')
    opts += args.cfg_options
    if osp.isfile(result_file):
        with open(result_file) as f:
            result = json.load(f)
        # A finished run is reused only if it is the run asked for.
        settings = (result.get('config'), result.get('options'))
        if settings != (args.config, opts):
            raise RuntimeError(
                f'{run_dir} holds a run of {settings[0]} with options '
                f'{settings[1]}, not of {args.config} with {opts}; pass '
                'another --work-dir, or delete it to run again.')
        print(f'[skip] {arm} seed {seed}: done (mIoU {result["miou"]:.2f})')
        return result
    cmd = [
        'nice', '-n',
        str(args.nice), sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), args.config, '--work-dir',
        run_dir, '--cfg-options'
    ] + opts
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(args.threads),
        MKL_NUM_THREADS=str(args.threads))
    print(f'[run ] {arm} seed {seed}: {" ".join(opts)}', flush=True)
    os.makedirs(run_dir, exist_ok=True)
    start = time.time()
    with open(osp.join(run_dir, 'stdout.txt'), 'w') as out:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    wall = time.time() - start
    if proc.returncode:
        raise RuntimeError(f'{arm} seed {seed} failed (exit '
                           f'{proc.returncode}); see {run_dir}/stdout.txt')
    result = parse_run(run_dir)
    result.update(
        arm=arm, seed=seed, config=args.config, wall_s=wall, options=opts)
    if random_r is not None:
        result['random_ratio'] = random_r
    with open(result_file, 'w') as f:
        json.dump(result, f, indent=1)
    print(
        f'[done] {arm} seed {seed}: mIoU {result["miou"]:.2f}, '
        f'{result["iters"]}/{result["budget"]} iterations '
        f'({result["saved"]:.1%} saved), {wall:.0f}s',
        flush=True)
    return result


def summarize(runs: list) -> dict:

    def stats(values):
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.mean(values), std

    miou, miou_std = stats([r['miou'] for r in runs])
    iters, _ = stats([r['iters'] for r in runs])
    saved, _ = stats([r['saved'] for r in runs])
    wall, _ = stats([r['wall_s'] for r in runs])
    train, _ = stats([r.get('train_s') for r in runs])
    return dict(
        seeds=[r['seed'] for r in runs],
        miou_mean=miou,
        miou_std=miou_std,
        iters_mean=iters,
        saved_mean=saved,
        wall_s_mean=wall,
        train_s_mean=train,
        budget=runs[0]['budget'])


def markdown(summary: dict, schedule: dict) -> str:
    lines = [
        f'Digit scenes, UperNet-R18, {schedule["passes"]} passes '
        f'({schedule["max_iters"]} iterations of full data); mean ± std '
        'over seeds. Δ: mIoU minus full data\'s mean.', '',
        '| Arm | Seeds | mIoU | Δ | Iterations | Saved | Train time (s) '
        '| Wall time (s) |', '|---|---|---|---|---|---|---|---|'
    ]
    full = summary.get('full', {}).get('miou_mean')
    for arm, s in summary.items():
        name = DESCRIPTIONS[arm].format(ratio=s.get('random_ratio') or 0)
        train = '-' if s['train_s_mean'] is None else \
            f'{s["train_s_mean"]:.0f}'
        delta = '-' if full is None else f'{s["miou_mean"] - full:+.2f}'
        lines.append(
            f'| {name} | {len(s["seeds"])} | {s["miou_mean"]:.2f} ± '
            f'{s["miou_std"]:.2f} | {delta} | {s["iters_mean"]:.0f} / '
            f'{s["budget"]} | {s["saved_mean"]:.1%} | {train} | '
            f'{s["wall_s_mean"]:.0f} |')
    return '\n'.join(lines) + '\n'


def run_arms(args, arms: list, schedule: dict, results: dict) -> None:
    """Run every seed of ``arms``, ``args.jobs`` runs at a time."""
    from concurrent.futures import ThreadPoolExecutor
    random_r = None
    if 'random' in arms:
        saved = statistics.mean(r['saved'] for r in results['infobatch'])
        random_r = random_ratio(saved, schedule['passes'], schedule['delta'])
    jobs = [(arm, seed) for arm in arms for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        done = pool.map(lambda job: run_one(args, *job, schedule, random_r),
                        jobs)
        for (arm, _), result in zip(jobs, done):
            results.setdefault(arm, []).append(result)


def main(argv=None):
    args = parse_args(argv)
    os.chdir(ROOT)
    schedule = load_schedule(args.config, args.cfg_options)
    # The training data must exist before the first run.
    make_data = [
        sys.executable, 'tools/dataset_converters/make_digit_scenes.py'
    ]
    if args.smoke:
        make_data += [args.data_root] + [
            f"--{key.replace('_', '-')}={value}"
            for key, value in SMOKE_DATA.items()
        ]
    subprocess.run(make_data, check=True)
    start = time.time()
    order = [a for a in ARMS if a in args.arms]
    if 'random' in order and 'infobatch' not in order:
        order.insert(order.index('random'), 'infobatch')
    results = {}
    # Random* is sized by InfoBatch's measured saving, so it runs last.
    run_arms(args, [a for a in order if a != 'random'], schedule, results)
    if 'random' in order:
        run_arms(args, ['random'], schedule, results)
    summary = {}
    for arm in order:
        summary[arm] = summarize(results[arm])
        if arm == 'random':
            summary[arm]['random_ratio'] = results[arm][0]['random_ratio']
    table = markdown(summary, schedule)
    with open(osp.join(args.work_dir, f'{args.summary}.json'), 'w') as f:
        json.dump(
            dict(
                config=args.config,
                schedule=schedule,
                summary=summary,
                runs=results),
            f,
            indent=1)
    with open(osp.join(args.work_dir, f'{args.summary}.md'), 'w') as f:
        f.write(table)
    print(table)
    print(f'study finished in {time.time() - start:.0f}s')


if __name__ == '__main__':
    main()
