"""Unusual but legal set-ups, each a named regression test."""
import copy
import re
import shutil

import pytest
from conftest import load_record
from make_tiny_ade import make_ade_layout
from tiny_config import ETA_MIN, tiny_config
from tiny_config import train as _train
from tiny_config import train_counting_steps


@pytest.fixture(scope='module')
def ade20_root(tmp_path_factory):
    return make_ade_layout(
        tmp_path_factory.mktemp('ade20'),
        num_train=20,
        num_val=2,
        size=(32, 32))


def _log(work_dir):
    return ''.join(p.read_text() for p in work_dir.glob('*/*.log'))


@pytest.mark.parametrize('num_train,ratio', [(17, 0.5), (3, 0.5), (17, 0.0)])
def test_full_passes_never_end_in_a_one_image_batch(num_train, ratio,
                                                    ade20_root, tmp_path):
    # BatchNorm refuses a batch of one image in training.
    cfg = tiny_config(
        tmp_path,
        ade20_root,
        num_train=num_train,
        batch_size=2,
        passes=3,
        sampler=dict(ratio=ratio))
    _train(cfg)
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
def test_a_pass_that_prunes_everything_still_trains(sampler, setup, ade20_root,
                                                    tmp_path):
    cfg = tiny_config(
        tmp_path,
        ade20_root,
        num_train=16,
        batch_size=2,
        passes=4,
        sampler=sampler,
        hook=dict(delta=1.0))
    runner = _train(cfg)
    record = load_record(tmp_path)
    assert record['final_iter'] == runner.iter
    assert all(p['rank_indices'].numel() >= 2 for p in record['passes'])
    assert record['final_lr'] == pytest.approx(ETA_MIN, rel=1e-6)
    # The start-up line names what decides the passes.
    assert setup in _log(tmp_path)


def _count_steps(cfg):
    runner, steps = train_counting_steps(cfg)
    return runner.iter, steps


def test_accumulation_applies_the_last_partial_group(ade20_root, tmp_path):
    cfg = tiny_config(
        tmp_path / 'infobatch',
        ade20_root,
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
        ade20_root,
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


def test_resume_refuses_a_batch_size_with_the_same_pass_length(
        ade20_root, tmp_path):
    # 20 images: batch 5 and batch 6 both make 4 iterations a pass.
    cfg = tiny_config(
        tmp_path / 'b5', ade20_root, num_train=20, batch_size=5, passes=2)
    _train(cfg)
    resumed = tiny_config(
        tmp_path / 'b6', ade20_root, num_train=20, batch_size=6, passes=2)
    resumed.resume, resumed.load_from = True, str(tmp_path / 'b5/iter_5.pth')
    with pytest.raises(
            ValueError,
            match='batch_size=5, but this run has '
            'batch_size=6.*load_from'):
        _train(resumed)


def test_resume_refuses_other_images_of_the_same_count(ade20_root, tmp_path):
    # The same files plus one: the resumed run trains on images 1 to 20.
    other = make_ade_layout(
        tmp_path / 'other', num_train=21, num_val=2, size=(32, 32), seed=0)
    _train(tiny_config(tmp_path / 'a', ade20_root, num_train=20, passes=2))
    resumed = tiny_config(tmp_path / 'b', other, num_train=20, passes=2)
    resumed.train_dataloader.dataset.indices = list(range(1, 21))
    resumed.resume, resumed.load_from = True, str(tmp_path / 'a/iter_12.pth')
    with pytest.raises(ValueError, match='fingerprint.*same data'):
        _train(resumed)


def test_a_copy_of_the_data_at_another_root_resumes(ade20_root, tmp_path):
    moved = shutil.copytree(ade20_root, tmp_path / 'moved')
    first = _train(
        tiny_config(tmp_path / 'a', ade20_root, num_train=20, passes=2))
    resumed = tiny_config(tmp_path / 'b', moved, num_train=20, passes=2)
    resumed.resume, resumed.load_from = True, str(tmp_path / 'a/iter_12.pth')
    runner = _train(resumed)
    assert 'InfoBatch resumed in pass 1' in _log(tmp_path / 'b')
    assert runner.iter == first.iter


def test_two_infobatch_hooks_are_refused(ade20_root, tmp_path):
    cfg = tiny_config(tmp_path, ade20_root)
    cfg.custom_hooks.append(copy.deepcopy(cfg.custom_hooks[0]))
    with pytest.raises(ValueError, match='2 InfoBatchHook entries.*Keep one'):
        _train(cfg)


def test_infobatch_sampler_in_val_dataloader_is_refused(ade20_root, tmp_path):
    cfg = tiny_config(tmp_path, ade20_root, val_interval=3)
    cfg.val_dataloader.sampler = dict(type='InfoBatchSampler')
    with pytest.raises(
            ValueError,
            match="val_dataloader uses InfoBatch"
            "Sampler.*type='DefaultSampler'"):
        _train(cfg)


def test_logs_tell_the_truth_without_schedule_adjustment(ade20_root, tmp_path):
    # A fixed seed: the pruned passes must be shorter than full ones for
    # more than 4 passes to fit, which an unlucky draw can miss.
    cfg = tiny_config(
        tmp_path,
        ade20_root,
        seed=0,
        num_train=12,
        passes=4,
        hook=dict(adjust_schedule=False))
    runner = _train(cfg)
    text = _log(tmp_path)
    assert runner.iter == 24
    assert set(re.findall(r'ends at (\d+)', text)) == {'24'}
    # More passes than the schedule's 4 fit in; none is shown as "n/4".
    passes = re.findall(r'InfoBatch pass (\d+) \((\d+)(/\d+)?\)', text)
    assert len(passes) > 4 and not any(total for _, _, total in passes)
    assert 'InfoBatch finished: 24 iterations instead of 24 (0 saved' in text


def test_recipe_batch_mismatch_is_named(ade20_root, tmp_path):
    from mmengine.config import Config
    named = tmp_path / 'fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
    tiny_config(tmp_path, ade20_root).dump(str(named))
    _train(Config.fromfile(str(named)))
    text = _log(tmp_path)
    assert 'total batch 2 (1 x 2)' in text
    assert "the config's name says a total batch of 16" in text
