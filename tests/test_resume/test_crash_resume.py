"""SIGKILL mid-pass after a checkpoint, --resume, compare with no crash."""
import copy
import signal

import pytest
import torch
from helpers.configs import demo_config, load_record, train_subprocess

KILL_AT = 16  # checkpoints every 7 iterations: the last one is at 14


def _configs(tmp_path, digit_root, name, **options):
    cfg = demo_config(
        tmp_path / name, digit_root, passes=4, delta=0.7, **options)
    cfg.default_hooks.checkpoint.interval = 7
    killer = copy.deepcopy(cfg)
    killer.custom_imports.imports.append('helpers.killer_hook')
    killer.custom_hooks.append(dict(type='SigkillAtIterHook', at_iter=KILL_AT))
    return cfg, killer


def _crash_and_resume(tmp_path, digit_root, **options):
    reference, _ = _configs(tmp_path, digit_root, 'reference', **options)
    train_subprocess(reference, tmp_path / 'reference.py')
    resumed, killer = _configs(tmp_path, digit_root, 'crashed', **options)
    train_subprocess(killer, tmp_path / 'killer.py', expect_rc=-signal.SIGKILL)
    assert not (tmp_path / 'crashed' / 'record_rank0.pth').exists()
    log = train_subprocess(resumed, tmp_path / 'resume.py', '--resume')
    assert 'resumed epoch: 0, iter: 14' in log.stdout + log.stderr
    return (load_record(tmp_path / 'reference'),
            load_record(tmp_path / 'crashed'))


def _assert_lands_on_saved_pass(ref, res):
    landed = res['passes'][0]
    assert landed['start_iter'] == 14  # first iteration after the resume
    ref_pass = next(p for p in ref['passes']
                    if p['pass_idx'] == landed['pass_idx'])
    ref_row = next(r for r in ref['iters'] if r[0] == 14)
    assert landed['pass_idx'] == ref_row[3] and landed['prunes']
    assert landed['position'] == ref_row[4] > 0  # mid-pass offset
    assert torch.equal(landed['padded_order'], ref_pass['padded_order'])
    assert torch.equal(landed['rank_indices'], ref_pass['rank_indices'])
    assert torch.equal(landed['weights'], ref_pass['weights'])
    # The very next batch is the one the uninterrupted run trained.
    ref_at = {
        row[0]: batch
        for row, batch in zip(ref['iters'], ref['batches'])
    }
    assert res['batches'][0] == ref_at[14]


def test_deterministic_resume_is_exact(tmp_path, digit_root):
    ref, res = _crash_and_resume(tmp_path, digit_root)
    _assert_lands_on_saved_pass(ref, res)
    later = {p['pass_idx']: p for p in ref['passes']}
    for p in res['passes']:
        assert torch.equal(p['padded_order'],
                           later[p['pass_idx']]['padded_order'])
        assert torch.equal(p['weights'], later[p['pass_idx']]['weights'])
    assert len(res['passes']) > 1  # a later pass was decided after resume
    assert res['final_iter'] == ref['final_iter'] < 40
    ref_at = {
        row[0]: batch
        for row, batch in zip(ref['iters'], ref['batches'])
    }
    for row, batch in zip(res['iters'], res['batches']):
        assert batch == ref_at[row[0]]
    assert torch.equal(res['final_scores'], ref['final_scores'])
    assert res['final_lr'] == pytest.approx(ref['final_lr'], rel=1e-9)


def test_resume_with_augmentation_and_workers_lands_exactly(
        tmp_path, digit_root):
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackSegInputs')
    ]
    ref, res = _crash_and_resume(
        tmp_path,
        digit_root,
        train_dataloader=dict(
            num_workers=2,
            persistent_workers=True,
            dataset=dict(pipeline=pipeline)))
    _assert_lands_on_saved_pass(ref, res)
