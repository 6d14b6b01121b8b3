"""Unusual but legal set-ups, each a named regression test, and the
set-ups refused before the first iteration.

The runs train ``tiny_config`` on the first 20 or fewer images of
``ade40_root``; a refusal that the hook makes from the config or the
checkpoint alone is checked on a stand-in runner.
"""
import re
import shutil
from types import SimpleNamespace

import pytest
from helpers.configs import (ETA_MIN, load_record, run_config, tiny_config,
                             train_counting_steps)
from helpers.stand_in import (seg_logits_labels, stand_in_runner, start_hook,
                              train)
from mmengine.config import Config
from mmseg.registry import HOOKS

from mmseg_infobatch import InfoBatchHook


def _log(work_dir):
    return ''.join(p.read_text() for p in work_dir.glob('*/*.log'))


@pytest.mark.parametrize('num_train,ratio', [(17, 0.5), (3, 0.5), (17, 0.0)])
def test_full_passes_never_end_in_a_one_image_batch(num_train, ratio,
                                                    ade40_root, tmp_path):
    # BatchNorm refuses a batch of one image in training.
    cfg = tiny_config(
        tmp_path,
        ade40_root,
        num_train=num_train,
        batch_size=2,
        passes=3,
        sampler=dict(ratio=ratio))
    run_config(cfg)
    record = load_record(tmp_path)
    assert all(len(b) == 2 for b in record['batches'])
    assert set(record['passes'][0]['padded_order'].tolist()) == set(
        range(num_train))


@pytest.mark.parametrize('sampler,setup', [
    (dict(policy='random', ratio=0.99), "(ratio 0.99, policy 'random')"),
    (dict(policy='quantile', buckets=[
        (1.0, 0.99)
    ]), "(buckets (q 1, r 0.99), policy 'quantile')"),
])
def test_a_pass_that_prunes_everything_still_trains(sampler, setup, ade40_root,
                                                    tmp_path):
    cfg = tiny_config(
        tmp_path,
        ade40_root,
        num_train=16,
        batch_size=2,
        passes=4,
        sampler=sampler,
        hook=dict(delta=1.0))
    runner = run_config(cfg)
    record = load_record(tmp_path)
    assert record['final_iter'] == runner.iter
    assert all(p['rank_indices'].numel() >= 2 for p in record['passes'])
    assert record['final_lr'] == pytest.approx(ETA_MIN, rel=1e-6)
    # The start-up line names what decides the passes.
    assert setup in _log(tmp_path)


def _count_steps(cfg):
    runner, steps = train_counting_steps(cfg)
    return runner.iter, steps


def test_accumulation_applies_the_last_partial_group(ade40_root, tmp_path):
    cfg = tiny_config(
        tmp_path / 'infobatch',
        ade40_root,
        seed=0,
        num_train=20,
        batch_size=2,
        passes=4,
        accumulative_counts=8)
    iters, steps = _count_steps(cfg)
    assert iters < 40 and iters % 8  # pruned, and a partial last group
    # A stock run (no InfoBatch) of the same length, as mmengine counts.
    stock = tiny_config(
        tmp_path / 'stock',
        ade40_root,
        num_train=20,
        batch_size=2,
        accumulative_counts=8)
    stock.train_dataloader.sampler = dict(type='DefaultSampler')
    stock.custom_hooks = []
    stock.model.decode_head.loss_decode = dict(type='CrossEntropyLoss')
    stock.train_cfg.max_iters = iters
    stock.param_scheduler[0].end = iters
    assert _count_steps(stock) == (iters, steps)
    assert steps == -(-iters // 8)


def test_resume_refuses_a_batch_size_with_the_same_pass_length():
    # 20 images: batch 5 and batch 6 both make 4 iterations a pass. The
    # checkpoint is of iteration 5, in the second pass.
    data = seg_logits_labels(20, 0)
    first = stand_in_runner(data, n=20, batch=5)
    hook = start_hook(first)
    train(hook, first, until=5)
    checkpoint = dict(meta=dict(iter=first.iter))
    hook.before_save_checkpoint(first, checkpoint)
    resumed = stand_in_runner(data, n=20, batch=6, iteration=5)
    with pytest.raises(
            ValueError,
            match='batch_size=5, but this run has '
            'batch_size=6.*load_from'):
        start_hook(resumed, checkpoint)


def test_a_copy_of_the_data_at_another_root_resumes(ade40_root, tmp_path):
    moved = shutil.copytree(ade40_root, tmp_path / 'moved')
    first = run_config(
        tiny_config(tmp_path / 'a', ade40_root, num_train=20, passes=2))
    resumed = tiny_config(tmp_path / 'b', moved, num_train=20, passes=2)
    resumed.resume, resumed.load_from = True, str(tmp_path / 'a/iter_12.pth')
    runner = run_config(resumed)
    assert 'InfoBatch resumed in pass 1' in _log(tmp_path / 'b')
    assert runner.iter == first.iter


def _runner_before_run(hooks, cfg):
    """What InfoBatchHook.before_run reads of a runner."""
    return SimpleNamespace(hooks=hooks, cfg=Config(cfg))


def test_two_infobatch_hooks_are_refused():
    # As the runner builds custom_hooks: two entries, two hooks.
    hooks = [HOOKS.build(dict(type='InfoBatchHook')) for _ in range(2)]
    runner = _runner_before_run(hooks + [HOOKS.build(dict(type='EMAHook'))],
                                {})
    with pytest.raises(ValueError, match='2 InfoBatchHook entries.*Keep one'):
        hooks[0].before_run(runner)
    hooks[1].before_run(_runner_before_run(hooks[1:], {}))  # one is fine


@pytest.mark.parametrize('key', ['val_dataloader', 'test_dataloader'])
def test_infobatch_sampler_in_val_dataloader_is_refused(key):
    hook = InfoBatchHook()
    runner = _runner_before_run(
        [hook], {key: dict(sampler=dict(type='InfoBatchSampler'))})
    with pytest.raises(
            ValueError,
            match=f"{key} uses InfoBatch"
            "Sampler.*type='DefaultSampler'"):
        hook.before_run(runner)
    hook.before_run(
        _runner_before_run([hook],
                           {key: dict(sampler=dict(type='DefaultSampler'))}))


def test_logs_tell_the_truth_without_schedule_adjustment(ade40_root, tmp_path):
    # A fixed seed: the pruned passes must be shorter than full ones for
    # more than 4 passes to fit, which an unlucky draw can miss.
    cfg = tiny_config(
        tmp_path,
        ade40_root,
        seed=0,
        num_train=12,
        passes=4,
        hook=dict(adjust_schedule=False))
    runner = run_config(cfg)
    text = _log(tmp_path)
    assert runner.iter == 24
    assert set(re.findall(r'ends at (\d+)', text)) == {'24'}
    # More passes than the schedule's 4 fit in; none is shown as "n/4".
    passes = re.findall(r'InfoBatch pass (\d+) \((\d+)(/\d+)?\)', text)
    assert len(passes) > 4 and not any(total for _, _, total in passes)
    assert 'InfoBatch finished: 24 iterations instead of 24 (0 saved' in text


def test_recipe_batch_mismatch_is_named(ade40_root, tmp_path):
    named = tmp_path / 'fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
    tiny_config(tmp_path, ade40_root).dump(str(named))
    run_config(Config.fromfile(str(named)))
    text = _log(tmp_path)
    assert 'total batch 2 (1 x 2)' in text
    assert "the config's name says a total batch of 16" in text
