"""tools/analysis_tools/analyze_infobatch.py on a resumed work dir, without
training.

The fake run: 8 iterations a full pass, a budget of 4 passes (32
iterations). Pass 0 is full (iterations 0-8), pass 1 pruned to 6 (8-14),
pass 2 pruned to 5 (14-19), pass 3 anneals (19-27). The first start
checkpointed at iteration 8, validated there and crashed at iteration 12;
the resume trained again from 8 to the end.
"""
import json
import math
import sys

import numpy as np
import pytest
import torch
from helpers import REPO

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
import analyze_infobatch  # noqa: E402

FULL, BUDGET = 8, 32
PASSES = [  # pass, start_iter, iters, pruned
    (0, 0, 8, 0),
    (1, 8, 6, 4),
    (2, 14, 5, 6),
    (3, 19, 8, 0),
]
END = 27
FIRST_LR, RESUMED_LR = 1.0, 2.0  # tells the two starts apart


def _pass_record(pass_idx, start, iters, pruned):
    return {
        'step': start,
        'infobatch/pass': pass_idx,
        'infobatch/kept': 16 - pruned,
        'infobatch/pruned': pruned,
        'infobatch/pass_iters': iters,
        'infobatch/saved_iters': 0,
        'infobatch/saved_ratio': 0.0,
    }


def _write_log(work_dir, stamp, records):
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    with open(vis / 'scalars.json', 'w') as f:
        for record in records:
            f.write(json.dumps(record) + '\n')


def _fake_run(work_dir, checkpoint=True):
    first = [_pass_record(*PASSES[0][:2], *PASSES[0][2:])]
    first += [{'step': s, 'lr': FIRST_LR, 'loss': 1.0} for s in range(1, 13)]
    first.append({'step': 8, 'mIoU': 40.0})
    first.insert(9, _pass_record(1, 8, 6, 4))  # logged before iteration 9
    # The resume logs the pass it lands in again, at the checkpoint's step.
    resumed = [_pass_record(1, 8, 6, 4)]
    for pass_idx, start, iters, pruned in PASSES[2:]:
        resumed.append(_pass_record(pass_idx, start, iters, pruned))
    resumed += [{
        'step': s,
        'lr': RESUMED_LR,
        'loss': 0.5
    } for s in range(9, END + 1)]
    resumed.sort(key=lambda r: r['step'])
    resumed.append({'step': END, 'mIoU': 45.0})
    _write_log(work_dir, '20260101_120000', first)
    _write_log(work_dir, '20260101_130500', resumed)
    # An unrelated folder must not be read as a log folder.
    (work_dir / 'plots' / 'vis_data').mkdir(parents=True)
    (work_dir / 'plots' / 'vis_data' /
     'scalars.json').write_text(json.dumps({
         'step': 1,
         'lr': -1.0
     }) + '\n')
    if not checkpoint:
        return
    g = torch.Generator().manual_seed(0)
    history = {
        'pass':
        torch.tensor([p[0] for p in PASSES]),
        'start_iter':
        torch.tensor([p[1] for p in PASSES]),
        'kept':
        torch.tensor([16 - p[3] for p in PASSES]),
        'pruned':
        torch.tensor([p[3] for p in PASSES]),
        'candidates':
        torch.tensor([0, 8, 10, 0]),
        'iters':
        torch.tensor([p[2] for p in PASSES]),
        'threshold':
        torch.tensor([math.nan, 0.4, 0.3, math.nan], dtype=torch.float64),
        'pruning':
        torch.tensor([False, True, True, False]),
    }
    ckpt = dict(
        meta=dict(iter=END),
        infobatch=dict(
            history=history,
            progress=dict(full_batches=FULL, budget_iters=BUDGET, offset=0),
            sampler=dict(
                scores=torch.rand(16, generator=g),
                seen=torch.ones(16, dtype=torch.bool))))
    torch.save(ckpt, work_dir / f'iter_{END}.pth')
    # last_checkpoint holds the path the run wrote, elsewhere after a copy.
    (work_dir /
     'last_checkpoint').write_text(f'/elsewhere/work_dir/iter_{END}.pth')


def test_scalars_of_every_start_are_merged(tmp_path):
    _fake_run(tmp_path)
    run = analyze_infobatch.Run(str(tmp_path))
    steps, lr = run.series('lr')
    # Both parts, each iteration once: the crashed tail (9-12) is replaced.
    assert steps.tolist() == list(range(1, END + 1))
    assert (lr[:8] == FIRST_LR).all() and (lr[8:] == RESUMED_LR).all()
    # A validation at the checkpoint's step is not repeated by the resume.
    steps, miou = run.series('mIoU')
    assert steps.tolist() == [8, END] and miou.tolist() == [40.0, 45.0]
    steps, passes = run.series('infobatch/pass')
    assert steps.tolist() == [0, 8, 14, 19] and passes.tolist() == [0, 1, 2, 3]


def test_merge_replaces_later_steps_and_relogged_keys_only():
    first = [{
        'step': 1,
        'a': 1
    }, {
        'step': 2,
        'a': 1,
        'b': 1
    }, {
        'step': 3,
        'a': 1
    }]
    second = [{'step': 2, 'a': 2}, {'step': 4, 'a': 2}]
    merged = analyze_infobatch.merge_scalars([first, second])
    assert merged == [{
        'step': 1,
        'a': 1
    }, {
        'step': 2,
        'b': 1
    }, {
        'step': 2,
        'a': 2
    }, {
        'step': 4,
        'a': 2
    }]
    assert analyze_infobatch.merge_scalars([first, []]) == first


def test_history_and_progress_come_from_the_last_checkpoint(tmp_path):
    _fake_run(tmp_path)
    run = analyze_infobatch.Run(str(tmp_path))
    assert run.history['pass_idx'].tolist() == [0, 1, 2, 3]
    assert run.history['candidates'].tolist() == [0, 8, 10, 0]
    assert run.full_pass_batches == FULL
    # Progress is whole passes at each pass start, and the budget at the end.
    done = np.array([0, 1, 8, 9, 14, 15, 19, 20, END], dtype=float)
    progress = analyze_infobatch.epoch_progress(run, done)
    assert progress == pytest.approx(
        [0, 1 / 8, 1, 1 + 1 / 6, 2, 2 + 1 / 5, 3, 3 + 1 / 8, 4])
    # 2 iterations saved in pass 1, 3 more in pass 2, none after.
    assert analyze_infobatch.saved_iters(run).tolist() == [0, 2, 5, 5]


def test_history_falls_back_to_the_merged_scalars(tmp_path):
    _fake_run(tmp_path, checkpoint=False)
    run = analyze_infobatch.Run(str(tmp_path))
    assert run.state is None
    history = run.history
    assert history['pass_idx'].tolist() == [0, 1, 2, 3]
    assert history['start_iter'].tolist() == [0, 8, 14, 19]
    assert history['iters'].tolist() == [8, 6, 5, 8]
    assert history['may_prune'].tolist() == [False, True, True, False]
    assert np.isnan(history['threshold']).all()
    assert run.full_pass_batches == FULL  # from the unpruned passes
    progress = analyze_infobatch.epoch_progress(run, np.array([END * 1.0]))
    assert progress == pytest.approx([4])


def test_plots_of_a_resumed_run_are_written(tmp_path, capsys):
    work_dir, out = tmp_path / 'run', tmp_path / 'out'
    work_dir.mkdir()
    _fake_run(work_dir)
    analyze_infobatch.main([str(work_dir), '--out', str(out)])
    made = {p.name for p in out.glob('*.png')}
    assert made == {
        'pruning.png', 'scores.png', 'lr_progress.png', 'miou_iters.png'
    }
    assert all(p.stat().st_size > 5000 for p in out.glob('*.png'))
    assert 'skip study.png' in capsys.readouterr().out


def test_scores_plot_draws_a_saved_pruned_pass_as_is(tmp_path, monkeypatch):
    _fake_run(tmp_path)
    ckpt_path = tmp_path / f'iter_{END}.pth'
    ckpt = torch.load(ckpt_path, weights_only=True)
    sampler = ckpt['infobatch']['sampler']
    sampler.update(
        pass_idx=2,
        order=torch.tensor([5, 0, 9, 3, 12]),
        weights=torch.where(torch.arange(16) < 8, 2.0, 1.0))
    torch.save(ckpt, ckpt_path)

    def no_replay(*args, **kwargs):
        raise AssertionError('a saved pruned pass must not be replayed')

    monkeypatch.setattr(analyze_infobatch, 'decide_pass', no_replay)
    run = analyze_infobatch.Run(str(tmp_path))
    out = analyze_infobatch.plot_scores(run, str(tmp_path))
    assert out is not None and (tmp_path / 'scores.png').stat().st_size > 5000


def test_ratio_per_pass_is_plotted_next_to_the_target(tmp_path):
    _fake_run(tmp_path)
    ckpt_path = tmp_path / f'iter_{END}.pth'
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt['infobatch']['history']['ratio'] = torch.tensor([0.0, 0.4, 0.6, 0.0],
                                                         dtype=torch.float64)
    torch.save(ckpt, ckpt_path)
    (tmp_path / '20260101_130500' / 'vis_data' / 'config.py').write_text(
        "train_dataloader = dict(sampler=dict(type='InfoBatchSampler', "
        'ratio=None, target_saving=0.3))\n')
    run = analyze_infobatch.Run(str(tmp_path))
    assert run.history['ratio'].tolist() == [0.0, 0.4, 0.6, 0.0]
    settings = analyze_infobatch._pruning_settings(run)
    # The passes that pruned stand for the run's ratio in a replay.
    assert settings['ratio'] == pytest.approx(0.5)
    assert settings['target_saving'] == 0.3
    path = analyze_infobatch.plot_pruning(run, str(tmp_path))
    assert path.endswith('pruning.png')


def test_ratio_per_pass_from_the_scalars(tmp_path):
    records = [
        dict(_pass_record(p, start, iters, pruned), **{'infobatch/ratio': r})
        for (p, start, iters, pruned), r in zip(PASSES, [0, .4, .6, 0])
    ]
    _write_log(tmp_path, '20260101_120000', records)
    run = analyze_infobatch.Run(str(tmp_path))
    assert run.state is None
    assert run.history['ratio'].tolist() == [0, .4, .6, 0]
