"""Every refusal and warning of InfoBatchHook and its checks, compared
whole: the text names what is wrong and the fix, and a fragment would let
the rest say anything."""
import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import make_sampler, refusal
from helpers.stand_in import (BATCH, N, seg_logits_labels, stand_in_runner,
                              start_hook, train)
from mmengine.registry import STRATEGIES
from mmengine.structures import BaseDataElement
from torch.utils.data import BatchSampler, DataLoader

from mmseg_infobatch import InfoBatchHook, InfoBatchSampler
from mmseg_infobatch.hook.checks import (check_batch, check_eval_samplers,
                                         find_losses, find_train_sampler)
from mmseg_infobatch.sampler.infobatch_sampler import CONFIG_HINT

FULL = N // BATCH
DATA = seg_logits_labels(N, 0)
LOGGER = 'test_hook_refusals'


def _runner(**kwargs):
    return stand_in_runner(DATA, logger=LOGGER, **kwargs)


def _checkpoint_at(iteration, **runner_args):
    """A stand-in run's checkpoint at ``iteration``, and its hook."""
    runner = _runner(**runner_args)
    hook = start_hook(runner)
    train(hook, runner, until=iteration)
    checkpoint = dict(meta=dict(iter=runner.iter))
    hook.before_save_checkpoint(runner, checkpoint)
    return checkpoint, hook


def _lines(caplog, level=logging.INFO):
    """The whole messages logged at ``level`` or above."""
    return [r.getMessage() for r in caplog.records if r.levelno >= level]


def _warnings(caplog):
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
    ]


# -- the hook's own -------------------------------------------------------
DELTA_MESSAGE = ('InfoBatchHook delta (fraction of passes that may prune) '
                 'must be in (0, 1], but got {}')


@pytest.mark.parametrize('delta', [0, 0.0, -0.5, 1.0001, 2, '0.5', None])
def test_a_delta_outside_0_1_is_refused_with_its_range(delta):
    assert refusal(lambda: InfoBatchHook(delta=delta)) == \
        DELTA_MESSAGE.format(repr(delta))


@pytest.mark.parametrize('delta', [1, 1.0, 0.001, 0.875])
def test_a_delta_in_0_1_is_taken_as_a_float(delta):
    hook = InfoBatchHook(delta=delta)
    assert hook.delta == delta and type(hook.delta) is float


def _run_runner(hooks=(), cfg=None, strategy=None):
    runner = SimpleNamespace(
        hooks=list(hooks), cfg=cfg or {}, logger=logging.getLogger(LOGGER))
    if strategy is not None:
        runner.strategy = object.__new__(STRATEGIES.get(strategy))
    return runner


@pytest.mark.parametrize('count', [2, 3])
def test_more_than_one_infobatch_hook_is_refused(count):
    hooks = [InfoBatchHook() for _ in range(count)] + [object()]
    runner = _run_runner(hooks)
    assert refusal(lambda: hooks[0].before_run(runner)) == (
        f'The runner has {count} InfoBatchHook entries; InfoBatch needs '
        "exactly one. Keep one dict(type='InfoBatchHook', ...) in "
        'custom_hooks (a base config may already add one).')


def test_one_infobatch_hook_among_others_starts(caplog):
    hook = InfoBatchHook()
    runner = _run_runner([object(), hook, object()])
    with caplog.at_level(logging.INFO, logger=LOGGER):
        hook.before_run(runner)
    assert _lines(caplog) == []


STOCK_FSDP_WARNING = (
    "mmengine's FSDPStrategy cannot resume with this torch (it passes "
    'FSDP.optim_state_dict_to_load its arguments in the order of torch '
    "2.0): use strategy=dict(type='ResumableFSDPStrategy', ...) from "
    'mmseg_infobatch, which takes the same arguments.')


@pytest.mark.parametrize('strategy', [None, 'FSDPStrategy', 'DDPStrategy'])
def test_mmengines_own_fsdp_strategy_is_warned_of_with_the_fix(
        strategy, caplog):
    if strategy is not None and STRATEGIES.get(strategy) is None:
        pytest.skip(f'this mmengine has no {strategy}')
    hook = InfoBatchHook()
    runner = _run_runner([hook], strategy=strategy)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        hook.before_run(runner)
    expected = [STOCK_FSDP_WARNING] if strategy == 'FSDPStrategy' else []
    assert _warnings(caplog) == expected


def test_an_eval_sampler_that_prunes_is_refused_before_the_run():
    hook = InfoBatchHook()
    cfg = dict(val_dataloader=dict(sampler=dict(type='InfoBatchSampler')))
    runner = _run_runner([hook], cfg=cfg)
    assert refusal(lambda: hook.before_run(runner)) == (
        'val_dataloader uses InfoBatchSampler, which prunes; evaluation '
        'must see every sample. Use it only in train_dataloader and give '
        "val_dataloader sampler=dict(type='DefaultSampler', shuffle=False).")


@pytest.mark.parametrize('iteration', [1, FULL])
def test_a_resume_without_infobatch_state_is_told_it_starts_fresh(
        iteration, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        start_hook(_runner(iteration=iteration))
    assert _warnings(caplog) == [
        f'Resumed at iteration {iteration} from a checkpoint without '
        'InfoBatch state: InfoBatch starts fresh from here (all samples '
        'unscored, the next pass is full).'
    ]


def test_load_from_a_checkpoint_with_state_starts_fresh_without_warning(
        caplog):
    """``load_from`` (iteration 0) takes the weights only."""
    checkpoint, _ = _checkpoint_at(FULL + 1)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        hook = start_hook(_runner(), checkpoint)
    assert _warnings(caplog) == []
    assert hook.history == [] and hook.sampler.pass_idx == -1
    assert hook.sampler.plan.offset == 0


@pytest.mark.parametrize('fmt,shown', [(99, 99), (1, 1), (None, 1)])
def test_a_checkpoint_of_another_format_is_refused_with_the_fix(fmt, shown):
    checkpoint, _ = _checkpoint_at(FULL + 1)
    if fmt is None:
        del checkpoint['infobatch']['format']  # format 1 wrote none
    else:
        checkpoint['infobatch']['format'] = fmt
    resumed = _runner(iteration=FULL + 1)
    assert refusal(lambda: start_hook(resumed, checkpoint)) == (
        'The checkpoint holds InfoBatch state of another format '
        f'({shown}; this version reads (2, 3, 4)). Resume with the '
        'mmseg_infobatch version that wrote it, or start a fresh run from '
        'its weights with load_from=CHECKPOINT instead of --resume.')


def test_an_iteration_without_infobatch_loss_is_refused_with_the_fix():
    runner = _runner()
    hook = start_hook(runner)
    list(iter(hook.sampler))  # the dataloader starts the first pass
    hook.before_train_iter(runner, 0)
    # No loss term ran: none holds scores.
    assert refusal(lambda: hook.after_train_iter(runner, 0), RuntimeError) == (
        'No InfoBatchLoss ran in this training iteration, so no image was '
        'scored. Wrap the losses that the heads use.')


# -- the checks -----------------------------------------------------------
def _eval_message(key):
    return (f'{key} uses InfoBatchSampler, which prunes; evaluation must '
            'see every sample. Use it only in train_dataloader and give '
            f"{key} sampler=dict(type='DefaultSampler', shuffle=False).")


@pytest.mark.parametrize('key', ['val_dataloader', 'test_dataloader'])
@pytest.mark.parametrize('kind', ['InfoBatchSampler', InfoBatchSampler])
def test_an_eval_dataloader_with_infobatch_sampler_is_refused(key, kind):
    cfg = dict(
        train_dataloader=dict(sampler=dict(type='InfoBatchSampler')),
        **{key: dict(sampler=dict(type=kind))})
    assert refusal(lambda: check_eval_samplers(cfg)) == _eval_message(key)


def test_the_validation_dataloader_is_checked_before_the_test_one():
    cfg = dict(
        val_dataloader=dict(sampler=dict(type='InfoBatchSampler')),
        test_dataloader=dict(sampler=dict(type='InfoBatchSampler')))
    assert refusal(lambda: check_eval_samplers(cfg)) == \
        _eval_message('val_dataloader')


@pytest.mark.parametrize('cfg', [
    {},
    dict(val_dataloader=None, test_dataloader=None),
    dict(val_dataloader=dict(sampler=None), test_dataloader=dict()),
    dict(
        val_dataloader=dict(sampler=dict(type='DefaultSampler')),
        test_dataloader=dict(sampler=dict(type='DefaultSampler'))),
    dict(train_dataloader=dict(sampler=dict(type='InfoBatchSampler'))),
])
def test_eval_dataloaders_without_infobatch_sampler_pass(cfg):
    check_eval_samplers(cfg)


class _OtherBatchSampler(BatchSampler):
    """A batch sampler of its own (it could reorder batches)."""


def test_a_train_dataloader_without_infobatch_sampler_is_refused():
    loader = DataLoader(list(range(N)), batch_size=BATCH, shuffle=True)
    assert refusal(lambda: find_train_sampler(loader), TypeError) == (
        'InfoBatchHook needs train_dataloader to use InfoBatchSampler, but '
        f'it uses RandomSampler. Add to the config:{CONFIG_HINT}')


def test_a_train_dataloader_without_a_sampler_is_refused():
    """An object that is no torch DataLoader (it has no sampler)."""
    assert refusal(lambda: find_train_sampler(object()), TypeError) == (
        'InfoBatchHook needs train_dataloader to use InfoBatchSampler, but '
        f'it uses NoneType. Add to the config:{CONFIG_HINT}')


def test_a_batch_sampler_given_in_the_config_is_refused():
    """Even torch's own BatchSampler, when the config gives it (the
    dataloader's sampler is then its default, not InfoBatchSampler)."""
    sampler = make_sampler(N)
    loader = DataLoader(
        list(range(N)), batch_sampler=BatchSampler(sampler, BATCH, False))
    assert refusal(lambda: find_train_sampler(loader), TypeError) == (
        "InfoBatch finds each batch's sample indices from the sampler's "
        'pass order, which needs the default torch BatchSampler, but '
        'train_dataloader uses BatchSampler. Remove batch_sampler from '
        'train_dataloader.')


def test_a_custom_batch_sampler_is_refused():
    sampler = make_sampler(N)
    loader = DataLoader(
        list(range(N)),
        batch_sampler=_OtherBatchSampler(sampler, BATCH, False))
    assert refusal(lambda: find_train_sampler(loader), TypeError) == (
        "InfoBatch finds each batch's sample indices from the sampler's "
        'pass order, which needs the default torch BatchSampler, but '
        'train_dataloader uses _OtherBatchSampler. Remove batch_sampler '
        'from train_dataloader.')


def test_the_train_sampler_is_found_under_the_default_batch_sampler():
    sampler = make_sampler(N)
    loader = DataLoader(list(range(N)), batch_size=BATCH, sampler=sampler)
    assert find_train_sampler(loader) is sampler


class _Head(torch.nn.Module):

    def __init__(self, loss_decode):
        super().__init__()
        self.loss_decode = loss_decode


def _loss(wrapped=True, name='loss_ce'):
    from mmseg.registry import MODELS
    loss = dict(type='CrossEntropyLoss', loss_name=name)
    if wrapped:
        loss = dict(type='InfoBatchLoss', loss=loss)
    return MODELS.build(loss)


def test_a_model_without_infobatch_loss_is_refused_with_the_config():
    model = torch.nn.Sequential(_Head(_loss(wrapped=False)))
    assert refusal(
        lambda: find_losses(model, logging.getLogger(LOGGER)), TypeError
    ) == ('InfoBatchHook found no InfoBatchLoss in the model, so no image can '
          f'be scored or rescaled. Wrap the head losses:{CONFIG_HINT}')


@pytest.mark.parametrize('heads,named', [
    (['Mask2FormerHead'], 'Mask2FormerHead'),
    (['SideAdapterCLIPHead', 'MaskFormerHead', 'MaskFormerHead'
      ], 'MaskFormerHead, SideAdapterCLIPHead'),
])
def test_query_matching_heads_are_refused(heads, named):
    model = torch.nn.Sequential(
        *[type(name, (torch.nn.Module, ), {})() for name in heads],
        _Head(_loss()))
    assert refusal(
        lambda: find_losses(model, logging.getLogger(LOGGER)), TypeError
    ) == (f'InfoBatch cannot serve {named}: its losses match queries to '
          'masks, so their inputs have no per-image rows to score or '
          'rescale. Train this model without InfoBatch (docs/compat.md lists '
          'what is served).')


def test_unwrapped_head_losses_are_warned_of_by_name(caplog):
    unnamed = torch.nn.MSELoss()  # no loss_name: shown as '?'
    model = torch.nn.ModuleDict(
        dict(
            decode=_Head(
                torch.nn.ModuleList(
                    [_loss(), _loss(False, 'loss_dice'), unnamed])),
            aux=_Head(_loss(False, 'loss_aux')),
            plain=_Head(None)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        losses = find_losses(model, logging.getLogger(LOGGER))
    assert losses == [model['decode'].loss_decode[0]]
    assert _lines(caplog) == [
        'InfoBatch: these loss terms are not wrapped in InfoBatchLoss: '
        'decode.loss_dice, decode.?, aux.loss_aux. They are not rescaled, '
        'which biases the gradient of pruned passes, and they do not count '
        "in the scores. Wrap each of them: loss_decode=dict(type='"
        "InfoBatchLoss', loss=<the loss>)."
    ]


def test_unwrapped_head_losses_of_a_wrapped_model_are_named_inside_it(caplog):
    model = torch.nn.ModuleDict(
        dict(decode=_Head(_loss()), aux=_Head(_loss(False, 'loss_aux'))))
    wrapped = torch.nn.DataParallel(model)  # a registered model wrapper
    with caplog.at_level(logging.INFO, logger=LOGGER):
        losses = find_losses(wrapped, logging.getLogger(LOGGER))
    assert losses == [model['decode'].loss_decode]
    assert _lines(caplog) == [
        'InfoBatch: these loss terms are not wrapped in InfoBatchLoss: '
        'aux.loss_aux. They are not rescaled, which biases the gradient of '
        'pruned passes, and they do not count in the scores. Wrap each of '
        "them: loss_decode=dict(type='InfoBatchLoss', loss=<the loss>)."
    ]


def test_wrapped_head_losses_are_not_warned_of(caplog):
    model = torch.nn.ModuleDict(
        dict(
            decode=_Head(_loss()),
            aux=_Head(torch.nn.ModuleList([_loss(), _loss()]))))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        losses = find_losses(model, logging.getLogger(LOGGER))
    assert len(losses) == 3 and _lines(caplog) == []


def _sample(**fields):
    return BaseDataElement(metainfo=fields)


@pytest.mark.parametrize('key', ['data_samples', 'inputs'])
def test_a_batch_of_another_size_is_refused(key):
    batch = {key: [_sample(sample_idx=i) for i in range(3)]}
    assert refusal(
        lambda: check_batch(batch, torch.tensor([4, 5]), list(range(N)),
                            (2, 7)),
        RuntimeError) == (
            'InfoBatch expected 2 images in this batch (pass 2, batch 7) but '
            'the batch has 3: sample indices cannot reach the batch. Do not '
            'replace the sampler or batch_sampler of train_dataloader while '
            'InfoBatch is on.')


class _Paths:
    """A dataset whose sample ``i`` is the image ``img_i.png``."""

    def __len__(self):
        return N

    def get_data_info(self, index):
        return dict(img_path=f'img_{index}.png', sample_idx=0)


def test_a_batch_of_other_images_is_refused_by_their_paths():
    samples = [_sample(img_path=f'img_{i}.png') for i in (3, 1)]
    batch = dict(data_samples=samples)
    check_batch(batch, torch.tensor([3, 1]), _Paths(), (0, 0))
    assert refusal(
        lambda: check_batch(batch, torch.tensor([3, 2]), _Paths(), (0, 0)),
        RuntimeError) == (
            'InfoBatch expected image 1 of this batch to be sample 2, '
            'img_2.png, but it is img_1.png: sample indices cannot reach the '
            'batch. Keep shuffling in InfoBatchSampler and do not reorder '
            'batches.')


def test_a_batch_of_other_samples_is_refused_by_their_indices():
    samples = [_sample(sample_idx=i) for i in (3, 1)]
    batch = dict(data_samples=samples, inputs=[0, 0])
    check_batch(batch, torch.tensor([3, 1]), list(range(N)), (0, 0))
    assert refusal(
        lambda: check_batch(batch, torch.tensor([1, 3]), list(range(N)),
                            (0, 0)),
        RuntimeError) == (
            'InfoBatch expected samples [1, 3] but the batch holds [3, 1]: '
            'sample indices cannot reach the batch. Keep shuffling in '
            'InfoBatchSampler and do not reorder batches.')


def test_the_hook_warns_of_unwrapped_head_losses_on_the_runners_logger(caplog):
    runner = _runner()
    runner.model = torch.nn.ModuleDict(
        dict(
            decode=_Head(torch.nn.ModuleList([_loss(), _loss(False)])),
            aux=_Head(_loss())))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        hook = start_hook(runner)
    assert len(hook.losses) == 2
    assert _warnings(caplog) == [
        'InfoBatch: these loss terms are not wrapped in InfoBatchLoss: '
        'decode.loss_ce. They are not rescaled, which biases the gradient '
        'of pruned passes, and they do not count in the scores. Wrap each '
        "of them: loss_decode=dict(type='InfoBatchLoss', loss=<the loss>)."
    ]


def test_the_hook_refuses_a_batch_of_another_size_naming_where(caplog):
    runner = _runner()
    hook = start_hook(runner)
    list(iter(hook.sampler))  # the dataloader starts the first pass
    batch = dict(inputs=[torch.zeros(1)] * 3)
    assert refusal(
        lambda: hook.before_train_iter(runner, 0, batch), RuntimeError
    ) == (f'InfoBatch expected {BATCH} images in this batch (pass 0, batch 0) '
          'but the batch has 3: sample indices cannot reach the batch. Do not '
          'replace the sampler or batch_sampler of train_dataloader while '
          'InfoBatch is on.')


class _PathList(list):
    """A dataset of images ``img_<i>.png``."""

    def get_data_info(self, index):
        return dict(img_path=f'img_{index}.png')


def test_the_hook_checks_each_batch_against_the_samplers_dataset():
    sampler = make_sampler(
        _PathList(range(N)),
        batch_size=BATCH,
        prune_stop=0,  # a full pass
        shuffle=False)
    iter(sampler)
    hook = InfoBatchHook()
    hook.sampler = sampler
    runner = SimpleNamespace(iter=0)

    def batch(*indices):
        return dict(data_samples=[
            BaseDataElement(metainfo=dict(img_path=f'img_{i}.png'))
            for i in indices
        ])

    # At the pass's second batch (the first began the pass).
    sampler.served.trained_batches = 1
    hook.before_train_iter(runner, 1, batch(2, 3))
    assert refusal(
        lambda: hook.before_train_iter(runner, 1, batch(2, 4)),
        RuntimeError) == (
            'InfoBatch expected image 1 of this batch to be sample 3, '
            'img_3.png, but it is img_4.png: sample indices cannot reach the '
            'batch. Keep shuffling in InfoBatchSampler and do not reorder '
            'batches.')
