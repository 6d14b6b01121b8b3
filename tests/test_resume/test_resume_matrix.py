"""Resume from every checkpoint of a run and compare with the run itself.

A tiny deterministic segmentor (no dropout, no augmentation) trains about
four passes over 12 images, batch 2: a full first pass, pruned passes of
varying length and an annealing pass, with a checkpoint after every
iteration. Each checkpoint is resumed and must reproduce the uninterrupted
run exactly: batches, the weights each loss received, LR, progress, score
table, model weights and the final iteration. Sweeps rather than samples:
every iteration, with and without a fixed seed, with and without worker
processes, iteration- and epoch-based, one and two ranks, and through
mmseg's own tools/train.py.
"""
import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, free_port
from helpers.configs import (BATCH, FULL_PASS_BATCHES, PASSES,
                             assert_continues, load_record, run_config,
                             subprocess_env, tiny_config, train_subprocess)


def _has_matrix_shape(ref):
    """The run has what the matrix needs: an annealing last pass, and pruned
    passes shorter than a full one (so pass boundaries fall on and off the
    full-pass grid)."""
    passes = ref['passes']
    lengths = [p['rank_indices'].numel() // BATCH for p in passes]
    pruned = [
        n for n, p in zip(lengths, passes) if p['prunes'] and p['pass_idx'] > 0
    ]
    return not passes[-1]['prunes'] and bool(pruned) and all(
        n < FULL_PASS_BATCHES for n in pruned)


def reference_run(work_dir, data_root, **options):
    """Train the run to resume from. Without a fixed seed each run draws its
    own, and a draw may prune a pass so little that padding restores its
    full length; such a run is drawn again (at most 5 times)."""
    for attempt in range(5):
        ref_dir = work_dir / f'ref{attempt}'
        run_config(tiny_config(ref_dir, data_root, **options))
        ref = load_record(ref_dir)
        if _has_matrix_shape(ref):
            break
    assert _has_matrix_shape(ref)
    return ref_dir, ref


# target_saving: each pruning pass solves its ratio from the scores and the
# iterations the passes before it saved, which a resume must carry over.
TARGET = dict(ratio=None, target_saving=0.15)


@pytest.mark.parametrize(
    'seed,workers,loop,sampler',
    [(None, 0, 'NoPauseIterBasedTrainLoop', None),
     (0, 2, 'IterBasedTrainLoop', None),
     (None, 0, 'NoPauseIterBasedTrainLoop', TARGET)],
    ids=['no-seed-no-workers', 'seed-2-workers-stock-loop', 'target-saving'])
def test_resume_from_every_iteration(seed, workers, loop, sampler, ade_root,
                                     tmp_path, no_pass_pause):
    ref_dir, ref = reference_run(
        tmp_path,
        ade_root,
        seed=seed,
        workers=workers,
        loop=loop,
        sampler=sampler)
    final = ref['final_iter']
    assert final < PASSES * FULL_PASS_BATCHES
    if sampler is not None:
        # The passes pruned at solved ratios, not at the default 0.5.
        weights = {w for p in ref['passes'] for w in p['weights'].tolist()}
        assert weights - {1.0, 2.0}, weights
    for k in range(1, final):
        res_dir = tmp_path / f'resume_{k}'
        cfg = tiny_config(
            res_dir,
            ade_root,
            seed=seed,
            workers=workers,
            loop=loop,
            sampler=sampler)
        cfg.default_hooks.checkpoint.interval = 10**6  # only the last
        run_config(cfg, resume_from=ref_dir / f'iter_{k}.pth')
        assert_continues(ref, load_record(res_dir), k)
        text = ''.join(p.read_text() for p in res_dir.glob('*/*.log'))
        # The checkpoint's seed wins; a seed the user never fixed is
        # not worth a warning.
        assert 'differs from' not in text
        assert re.search(r'InfoBatch resumed in pass \d+ at batch', text)


def test_resume_at_every_epoch_boundary(ade_root, tmp_path):
    ref_dir, ref = reference_run(tmp_path, ade_root, by_epoch=True)
    for epoch in range(1, PASSES):
        res_dir = tmp_path / f'resume_{epoch}'
        cfg = tiny_config(res_dir, ade_root, by_epoch=True)
        runner = run_config(cfg, resume_from=ref_dir / f'epoch_{epoch}.pth')
        start = ref['passes'][epoch]['start_iter']
        assert_continues(ref, load_record(res_dir), start)
        assert runner.epoch == PASSES


@pytest.mark.parametrize('accumulative_counts', [1, 2])
def test_epoch_based_resume_from_every_iteration_checkpoint(
        accumulative_counts, ade_root, tmp_path):
    """An epoch-based loop with iteration checkpoints: mmengine runs the
    saved epoch again from its start. Resumed mid-epoch or after an
    epoch's last batch, the run ends at the same iteration with the same
    weights and scores. With accumulation, from every group boundary
    (mmengine does not save a group in progress)."""
    options = dict(
        by_epoch=True,
        checkpoint_by_epoch=False,
        accumulative_counts=accumulative_counts)
    ref_dir, ref = reference_run(tmp_path, ade_root, **options)
    ends = {p['start_iter'] for p in ref['passes'][1:]}
    positions = [
        k for k in range(1, ref['final_iter']) if k % accumulative_counts == 0
    ]
    assert ends & set(positions) and set(positions) - ends
    for k in positions:
        res_dir = tmp_path / f'resume_{k}'
        cfg = tiny_config(res_dir, ade_root, **options)
        runner = run_config(cfg, resume_from=ref_dir / f'iter_{k}.pth')
        assert_continues(ref, load_record(res_dir), k)
        assert runner.epoch == PASSES
        text = ''.join(p.read_text() for p in res_dir.glob('*/*.log'))
        assert 'again from its start' in text


@pytest.mark.parametrize('train_tool', ['project', 'mmseg'])
def test_epoch_based_resume_through_both_train_tools(train_tool, ade_root,
                                                     tmp_path):
    """Mid-epoch and at an epoch's last batch, with accumulation, through
    this project's and mmseg's own tools/train.py."""
    import mmseg
    train_py = REPO / 'tools' / 'train.py'
    if train_tool == 'mmseg':
        train_py = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
        if not train_py.exists():
            pytest.skip(f'mmseg ships no tools/train.py at {train_py}')
    options = dict(
        seed=0,
        by_epoch=True,
        checkpoint_by_epoch=False,
        accumulative_counts=2)
    ref_dir = tmp_path / 'ref'
    cfg = tiny_config(ref_dir, ade_root, **options)
    _train(train_py, cfg_file(cfg, tmp_path / 'ref.py'), '--work-dir',
           str(ref_dir))
    ref = load_record(ref_dir)
    for k in (2, FULL_PASS_BATCHES):  # mid-epoch, end of the first epoch
        res_dir = tmp_path / f'resume_{k}'
        cfg = tiny_config(res_dir, ade_root, **options)
        cfg.load_from = str(ref_dir / f'iter_{k}.pth')
        log = _train(train_py, cfg_file(cfg, tmp_path / f'resume_{k}.py'),
                     '--resume', '--work-dir', str(res_dir))
        assert f'resumed epoch: 0, iter: {k}' in log
        assert_continues(ref, load_record(res_dir), k)


def test_epoch_based_two_rank_resume_through_dist_train(ade_root, tmp_path):
    """tools/dist_train.sh, 2 ranks, accumulation 2: resumed mid-epoch
    and after an epoch's last batch (one that ends a group), every rank
    continues as the uninterrupted run did."""
    options = dict(
        seed=0,
        world_size=2,
        by_epoch=True,
        checkpoint_by_epoch=False,
        accumulative_counts=2)
    ref_dir = tmp_path / 'ref'
    cfg = tiny_config(ref_dir, ade_root, **options)
    _dist_train(cfg_file(cfg, tmp_path / 'ref.py'), ref_dir)
    refs = [load_record(ref_dir, rank) for rank in (0, 1)]
    epoch_ends = [p['start_iter'] for p in refs[0]['passes'][1:]]
    positions = [2] + [k for k in epoch_ends if k % 2 == 0][:1]
    assert len(positions) == 2, epoch_ends
    for k in positions:
        res_dir = tmp_path / f'resume_{k}'
        cfg = tiny_config(res_dir, ade_root, **options)
        cfg.load_from = str(ref_dir / f'iter_{k}.pth')
        log = _dist_train(
            cfg_file(cfg, tmp_path / f'resume_{k}.py'), res_dir, '--resume')
        assert 'resumed epoch: ' in log and f'iter: {k}' in log
        for rank in (0, 1):
            assert_continues(refs[rank], load_record(res_dir, rank), k)


def _dist_train(config_file, work_dir, *args):
    env = subprocess_env(
        PORT=str(free_port()),
        PATH=os.pathsep.join(
            [os.path.dirname(sys.executable), os.environ['PATH']]))
    result = subprocess.run([
        'bash',
        str(REPO / 'tools' / 'dist_train.sh'),
        str(config_file), '2', '--work-dir',
        str(work_dir), *args
    ],
                            capture_output=True,
                            text=True,
                            cwd=REPO,
                            env=env,
                            timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    return log


def cfg_file(cfg, path):
    cfg.dump(str(path))
    return path


def test_changed_fixed_seed_warns_and_the_checkpoint_wins(ade_root, tmp_path):
    ref_dir = tmp_path / 'ref'
    run_config(tiny_config(ref_dir, ade_root, seed=1))
    res_dir = tmp_path / 'resumed'
    run_config(
        tiny_config(res_dir, ade_root, seed=2),
        resume_from=ref_dir / 'iter_8.pth')
    text = ''.join(p.read_text() for p in res_dir.glob('*/*.log'))
    assert 'differs from the checkpoint' in text
    ref, res = load_record(ref_dir), load_record(res_dir)
    assert res['batches'] == ref['batches'][8:]


def _train(train_py, config_file, *args, nproc=1):
    result = train_subprocess(
        None, config_file, *args, nproc=nproc, train_py=train_py)
    return result.stdout + result.stderr


def test_two_ranks_resume_at_every_kind_of_position(ade_root, tmp_path):
    """torchrun, gloo: mid first pass, end of first pass, mid pruned pass,
    the annealing boundary."""
    train_py = REPO / 'tools' / 'train.py'
    ref_dir = tmp_path / 'ref'
    cfg = tiny_config(ref_dir, ade_root, world_size=2)
    cfg.dump(str(tmp_path / 'ref.py'))
    _train(train_py, tmp_path / 'ref.py', nproc=2)
    refs = [load_record(ref_dir, rank) for rank in (0, 1)]
    assert refs[0]['batches'] != refs[1]['batches']  # shares differ
    full = FULL_PASS_BATCHES // 2  # iterations of a full pass on 2 ranks
    starts = [p['start_iter'] for p in refs[0]['passes']]
    assert starts[1] == full
    anneal = next(p['start_iter'] for p in refs[0]['passes']
                  if not p['prunes'])
    positions = [1, full, starts[1] + 1, anneal]
    assert positions[-1] < refs[0]['final_iter']
    for k in positions:
        res_dir = tmp_path / f'resume_{k}'
        work = copy.deepcopy(cfg)
        work.work_dir = str(res_dir)
        for hook in work.custom_hooks:
            if 'out_file' in hook:
                hook['out_file'] = str(res_dir / 'record_rank{rank}.pth')
        work.load_from = str(ref_dir / f'iter_{k}.pth')
        work.dump(str(tmp_path / f'resume_{k}.py'))
        log = _train(
            train_py, tmp_path / f'resume_{k}.py', '--resume', nproc=2)
        assert f'resumed epoch: 0, iter: {k}' in log
        for rank in (0, 1):
            assert_continues(refs[rank], load_record(res_dir, rank), k)


def test_resume_through_mmsegs_own_train_tool(ade_root, tmp_path):
    import mmseg
    train_py = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    if not train_py.exists():
        pytest.skip(f'mmseg ships no tools/train.py at {train_py}')
    work_dir = tmp_path / 'work'
    cfg = tiny_config(work_dir, ade_root)
    cfg.dump(str(tmp_path / 'cfg.py'))
    _train(train_py, tmp_path / 'cfg.py', '--work-dir', str(work_dir))
    ref = load_record(work_dir)
    os.rename(work_dir, tmp_path / 'ref')
    ref_dir = tmp_path / 'ref'
    for k in (FULL_PASS_BATCHES // 2,
              FULL_PASS_BATCHES):  # mid and end of pass 0
        res_dir = tmp_path / f'resume_{k}'
        res_dir.mkdir()
        (res_dir / 'last_checkpoint').write_text(
            str(ref_dir / f'iter_{k}.pth'))
        cfg = tiny_config(res_dir, ade_root)
        cfg.dump(str(tmp_path / f'resume_{k}.py'))
        log = _train(train_py, tmp_path / f'resume_{k}.py', '--resume',
                     '--work-dir', str(res_dir))
        assert f'resumed epoch: 0, iter: {k}' in log
        assert_continues(ref, load_record(res_dir), k)
