"""Every bad input gets a clear error or warning that names the fix."""
import logging
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from helpers import make_sampler
from helpers.configs import demo_config, run_config
from helpers.stand_in import (seg_logits_labels, stand_in_runner, start_hook,
                              train)
from mmseg.registry import DATA_SAMPLERS, HOOKS, MODELS
from torch.utils.data import BatchSampler, DataLoader

from mmseg_infobatch import InfoBatchHook, InfoBatchLoss
from mmseg_infobatch.hook.checks import (check_batch, find_losses,
                                         find_train_sampler)

PLAIN_CE = dict(type='CrossEntropyLoss', loss_weight=1.0)


@pytest.mark.parametrize('delta', [0, -0.5, 1.5, 'x'])
def test_delta_outside_range(delta):
    with pytest.raises(ValueError, match=r'delta .* must be in \(0, 1\]'):
        InfoBatchHook(delta=delta)


class _Model(torch.nn.Module):

    def __init__(self, decode, aux=None):
        super().__init__()
        self.decode_head = torch.nn.Module()
        self.decode_head.loss_decode = decode
        if aux is not None:
            self.auxiliary_head = torch.nn.Module()
            self.auxiliary_head.loss_decode = aux


def _fake_runner(model,
                 sampler=None,
                 dataset_len=20,
                 batch_size=4,
                 batch_sampler=None):
    dataset = list(range(dataset_len))
    if sampler is None:
        sampler = make_sampler(dataset, seed=0)
    if batch_sampler is not None:
        loader = DataLoader(dataset, batch_sampler=batch_sampler)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    return SimpleNamespace(
        train_loop=SimpleNamespace(dataloader=loader),
        model=model,
        logger=logging.getLogger('test_bad_input'),
        optim_wrapper=SimpleNamespace())


def _wrapped():
    return InfoBatchLoss(loss=PLAIN_CE)


def _plain():
    return MODELS.build(PLAIN_CE)


def _check_setup(runner):
    """The hook's set-up checks, on a fake runner."""
    sampler = find_train_sampler(runner.train_loop.dataloader)
    return sampler, find_losses(runner.model, runner.logger)


def _hook_on(runner):
    """A hook connected to a fake runner, as before_train leaves it."""
    hook = InfoBatchHook()
    hook.sampler, hook.losses = _check_setup(runner)
    loader = runner.train_loop.dataloader
    hook.sampler.configure(loader.batch_size, loader.drop_last)
    hook.sampler.set_plan(10 * hook.sampler.full_pass_batches)
    return hook


def test_hook_without_sampler():
    from torch.utils.data import SequentialSampler
    runner = _fake_runner(
        _Model(_wrapped()), sampler=SequentialSampler(range(20)))
    with pytest.raises(
            TypeError,
            match="(?s)uses SequentialSampler.*"
            "sampler=dict\\(type='InfoBatchSampler'"):
        _check_setup(runner)


def test_no_loss_wrapped():
    runner = _fake_runner(_Model(_plain(), _plain()))
    with pytest.raises(
            TypeError, match="(?s)no InfoBatchLoss.*"
            "type='InfoBatchLoss'"):
        _check_setup(runner)


@pytest.mark.parametrize('head', ['Mask2FormerHead', 'SideAdapterCLIPHead'])
def test_query_based_heads_are_refused_before_training(head):
    decode = type(head, (torch.nn.Module, ), {})()
    decode.loss_decode = _wrapped()
    model = torch.nn.Module()
    model.decode_head = decode
    runner = _fake_runner(model)
    with pytest.raises(
            TypeError, match=f'cannot serve {head}.*without '
            'InfoBatch'):
        _check_setup(runner)


def test_only_some_heads_wrapped_warns(caplog):
    runner = _fake_runner(_Model(_wrapped(), _plain()))
    with caplog.at_level(logging.WARNING, logger='test_bad_input'):
        _check_setup(runner)
    assert 'auxiliary_head.loss_decode.loss_ce' in caplog.text or \
        'auxiliary_head.loss_ce' in caplog.text
    assert 'biases the gradient' in caplog.text


def test_custom_batch_sampler_cannot_carry_indices():

    class MyBatchSampler(BatchSampler):
        pass

    dataset = list(range(20))
    sampler = make_sampler(dataset, seed=0)
    runner = _fake_runner(
        _Model(_wrapped()),
        sampler=sampler,
        batch_sampler=MyBatchSampler(sampler, 4, False))
    # The InfoBatch sampler sits behind the custom batch sampler, where
    # the set-up check must look for it.
    assert runner.train_loop.dataloader.batch_sampler.sampler is sampler
    with pytest.raises(
            TypeError,
            match='needs the default torch '
            'BatchSampler.*MyBatchSampler'):
        _check_setup(runner)


def test_dataset_smaller_than_world_times_batch():
    with pytest.raises(
            ValueError,
            match='6 samples, fewer than world '
            'size x batch size = 2 x 4'):
        make_sampler(6, world=2, batch_size=4, seed=0)


def test_batch_mismatch_is_caught():
    runner = _fake_runner(_Model(_wrapped()))
    hook = _hook_on(runner)
    list(iter(hook.sampler))
    runner.iter = 0
    runner.visualizer = mock.MagicMock()
    with pytest.raises(RuntimeError, match='expected 4 images.*has 3'):
        hook.before_train_iter(runner, 0, dict(inputs=[0, 1, 2]))


def test_nonfinite_and_empty_images_never_enter_scores():
    """NaN, inf and no-valid-pixel scores are skipped and counted."""
    loss = _wrapped()
    runner = _fake_runner(_Model(loss), dataset_len=8)
    runner.param_schedulers = None
    runner.iter = 0
    runner.visualizer = mock.MagicMock()
    hook = _hook_on(runner)
    sampler = hook.sampler
    list(iter(sampler))
    hook.before_train_iter(runner, 0, dict(inputs=[0] * 4))
    loss._scores = torch.tensor([1.0, float('nan'), float('inf'), 3.0])
    hook.after_train_iter(runner, 0)
    batch = hook._batch_indices
    assert sampler.seen[batch].tolist() == [True, False, False, True]
    assert torch.isfinite(sampler.scores).all()
    assert hook.num_skipped_scores == 2


def test_sampler_without_hook_fails_at_first_pass_end(tmp_path, digit_root):
    cfg = demo_config(tmp_path, digit_root, passes=2, record=False)
    cfg.custom_hooks = []
    with pytest.raises(
            RuntimeError,
            match="(?s)has no InfoBatchHook.*"
            "custom_hooks = \\[dict\\(type='InfoBatchHook'\\)\\]"):
        run_config(cfg)


def test_cfg_option_typos_are_named():
    """A misspelt key that ``--cfg-options`` puts into the sampler's, the
    hook's or the loss's config is named when the runner builds it from
    its registry."""
    with pytest.raises(TypeError, match='ratoi'):
        DATA_SAMPLERS.build(
            dict(type='InfoBatchSampler', ratoi=0.3),
            default_args=dict(dataset=list(range(8)), seed=0))
    with pytest.raises(TypeError, match='detla'):
        HOOKS.build(dict(type='InfoBatchHook', detla=0.5))
    with pytest.raises(
            TypeError, match="InfoBatchLoss got arguments "
            "\\['los'\\]"):
        MODELS.build(dict(type='InfoBatchLoss', loss=PLAIN_CE, los=PLAIN_CE))


def _plain_config(work_dir, digit_root, passes=1):
    cfg = demo_config(work_dir, digit_root, passes=passes, record=False)
    cfg.custom_hooks = []
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    cfg.model.decode_head.loss_decode = PLAIN_CE
    cfg.model.auxiliary_head.loss_decode = dict(PLAIN_CE, loss_weight=0.4)
    return cfg


def test_resume_without_infobatch_state_starts_fresh(tmp_path, digit_root,
                                                     caplog):
    run_config(_plain_config(tmp_path, digit_root, passes=1))  # iter_10
    cfg = demo_config(tmp_path, digit_root, passes=4, delta=0.6, record=False)
    cfg.resume = True
    runner = run_config(cfg)
    text = ''.join(p.read_text() for p in tmp_path.glob('*/*.log'))
    assert 'without InfoBatch state: InfoBatch starts fresh' in text
    hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
    assert hook.sampler.plan.offset == 10
    assert hook.history[0].start_iter == 10  # first pass at the resume
    assert hook.history[0].pruned == 0  # and is full
    # The annealing point counts the 10 state-less iterations: C = 4
    # passes, delta 0.6, so InfoBatch's own passes t < 2.4 - 1 prune.
    assert [r.may_prune for r in hook.history] == [True, True, False]
    assert runner.iter < 40


def test_resume_with_other_dataset_size():
    """A run of 40 images resumed after its first pass (10 iterations of
    batch 4) on 44 images is refused when the hook restores the
    checkpoint, before the first iteration."""
    data = seg_logits_labels(44, 0)
    first = stand_in_runner(data, n=40, batch=4)
    hook = start_hook(first)
    train(hook, first, until=10)
    checkpoint = dict(meta=dict(iter=first.iter))
    hook.before_save_checkpoint(first, checkpoint)
    resumed = stand_in_runner(data, n=44, batch=4, iteration=10)
    with pytest.raises(
            ValueError,
            match='num_samples=40, but this run has '
            'num_samples=44.*load_from'):
        start_hook(resumed, checkpoint)


def test_sample_idx_mismatch_is_caught():
    from mmseg.structures import SegDataSample

    batch = dict(data_samples=[
        SegDataSample(metainfo=dict(sample_idx=i)) for i in (3, 1)
    ])
    check_batch(batch, torch.tensor([3, 1]), list(range(5)), (0, 0))
    with pytest.raises(
            RuntimeError,
            match='expected samples \\[1, 3\\] but '
            'the batch holds \\[3, 1\\]'):
        check_batch(batch, torch.tensor([1, 3]), list(range(5)), (0, 0))
