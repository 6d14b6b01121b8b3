"""add_infobatch: a stock or user config gains InfoBatch, every head loss
wrapped with its options as they were; what cannot be served is refused."""
import copy
import logging
import os.path as osp

import pytest
import torch
from helpers import REPO
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg_infobatch import InfoBatchLoss, add_infobatch
from mmseg_infobatch.config import with_default_losses

FLAGSHIP = REPO / 'configs' / 'upernet_r50_ade20k_infobatch.py'
PSPNET = 'pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py'
# The loss options a wrapping must keep, as the built losses hold them.
OPTIONS = ('loss_weight', 'class_weight', 'avg_non_ignore', 'ignore_index',
           'loss_name', 'use_sigmoid', 'naive_dice')


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def stock(path):
    import mmseg
    root = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')
    return Config.fromfile(osp.join(root, path))


def unwrap(node):
    """The config with every InfoBatchLoss replaced by its inner loss."""
    if isinstance(node, dict):
        if node.get('type') == 'InfoBatchLoss':
            return unwrap(node['loss'])
        return {k: unwrap(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(unwrap(v) for v in node)
    return node


def head_terms(model: dict):
    """(path, loss config) of every head loss term of a model config."""
    found = []

    def visit(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                where = f'{path}.{key}'
                if key.startswith('loss_') and key.endswith('_decode'):
                    terms = value if isinstance(value, list) else [value]
                    found.extend(
                        (f'{where}[{i}]', t) for i, t in enumerate(terms))
                else:
                    visit(value, where)
        elif isinstance(node, (list, tuple)):
            for i, value in enumerate(node):
                visit(value, f'{path}[{i}]')

    visit(model, 'model')
    return found


def test_stock_pspnet_gains_the_three_components(log):
    cfg = stock(PSPNET)
    before = cfg.pretty_text
    out = add_infobatch(cfg, ratio=0.3, delta=0.9)
    assert cfg.pretty_text == before  # the input is left as it was
    # InfiniteSampler(shuffle=True) becomes InfoBatchSampler, shuffle kept.
    assert out.train_dataloader.sampler == dict(
        type='InfoBatchSampler', shuffle=True, ratio=0.3)
    assert out.custom_hooks == [dict(type='InfoBatchHook', delta=0.9)]
    assert out.custom_imports == dict(
        imports=['mmseg_infobatch'], allow_failed_imports=False)
    model = out.model.to_dict()
    assert [t['type'] for _, t in head_terms(model)] == ['InfoBatchLoss'] * 2
    assert 'mode' not in model['decode_head']['loss_decode']
    # Nothing else changed: the model but for the wrappers, the schedule.
    assert unwrap(model) == cfg.model.to_dict()
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                'val_dataloader', 'default_hooks'):
        assert out[key] == cfg[key], key
    assert set(out) == set(cfg) | {'custom_imports', 'custom_hooks'}
    assert 'model.auxiliary_head.loss_decode: InfoBatchLoss' in log.text


@pytest.mark.parametrize(
    'path,per_image',
    [
        (PSPNET, []),  # an auxiliary head
        ('ocrnet/ocrnet_hr18s_4xb4-80k_ade20k-512x512.py', []),  # cascade
        ('unet/unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_chase-db1-128x128.py',
         []),  # a list of terms
        ('encnet/encnet_r50-d8_4xb2-40k_cityscapes-512x1024.py',
         []),  # loss_se_decode
        ('bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py',
         []),  # auxiliary heads on their class's default loss
        ('ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py',
         ['OhemCrossEntropy'] * 2),
        ('pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
         ['OhemCrossEntropy', 'BoundaryLoss', 'OhemCrossEntropy']),
    ])
def test_every_term_of_stock_configs_is_wrapped_as_it_was(
        path, per_image, log):
    cfg = stock(path)
    out = add_infobatch(cfg)
    plain = with_default_losses(cfg.model.to_dict())
    model = out.model.to_dict()
    terms = head_terms(model)
    assert len(terms) == len(head_terms(plain)) > 0
    assert all(t['type'] == 'InfoBatchLoss' for _, t in terms)
    assert unwrap(model) == plain
    # The mode is chosen where the default one refuses, and logged.
    chosen = [(p, t['loss']['type']) for p, t in terms if 'mode' in t]
    assert [name for _, name in chosen] == per_image
    assert all(t['mode'] == 'per_image' for _, t in terms if 'mode' in t)
    warnings = [r for r in log.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(per_image)
    for record, (where, name) in zip(warnings, chosen):
        text = record.getMessage()
        assert f"({name}) gets mode='per_image'" in text
        assert where in text


def test_a_second_call_changes_nothing(log):
    once = add_infobatch(stock(PSPNET), ratio=0.3, delta=0.9)
    log.clear()
    twice = add_infobatch(once, ratio=0.3, delta=0.9)
    assert twice.pretty_text == once.pretty_text
    assert 'add_infobatch added' not in log.text
    again = add_infobatch(once)  # no knobs: keeps those set
    assert again.pretty_text == once.pretty_text


def test_knobs_update_what_is_there():
    cfg = Config.fromfile(str(FLAGSHIP))  # ratio=0.5, delta=0.875
    out = add_infobatch(cfg, target_saving=0.3, delta=0.9, anneal=False)
    sampler = out.train_dataloader.sampler
    assert sampler.target_saving == 0.3 and 'ratio' not in sampler
    assert sampler.shuffle is True
    assert [dict(h) for h in out.custom_hooks
            ] == [dict(type='InfoBatchHook', delta=0.9, anneal=False)]
    back = add_infobatch(out, ratio=0.4)
    assert back.train_dataloader.sampler.ratio == 0.4
    assert 'target_saving' not in back.train_dataloader.sampler
    # The wrapped terms of the config are left alone.
    assert out.model == cfg.model


def test_sampler_seed_is_kept_and_imports_merge():
    cfg = stock(PSPNET)
    cfg.train_dataloader.sampler = dict(
        type='DefaultSampler', shuffle=False, seed=7, round_up=True)
    cfg.custom_imports = dict(imports='helpers.infobatch_recorder')
    cfg.custom_hooks = [dict(type='EMAHook')]
    out = add_infobatch(cfg, policy='random')
    assert out.train_dataloader.sampler == dict(
        type='InfoBatchSampler', shuffle=False, seed=7, policy='random')
    assert out.custom_imports.imports == [
        'helpers.infobatch_recorder', 'mmseg_infobatch'
    ]
    assert [h['type']
            for h in out.custom_hooks] == ['EMAHook', 'InfoBatchHook']


def _tiny_model(decode_loss, auxiliary_head):
    norm_cfg = dict(type='BN', requires_grad=True)
    head = dict(
        type='FCNHead',
        in_channels=16,
        in_index=0,
        channels=8,
        num_convs=1,
        concat_input=False,
        num_classes=3,
        norm_cfg=norm_cfg)
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)),
        backbone=dict(
            type='ResNetV1c',
            depth=18,
            stem_channels=8,
            base_channels=8,
            num_stages=2,
            strides=(1, 2),
            dilations=(1, 1),
            out_indices=(1, ),
            norm_cfg=norm_cfg),
        decode_head=dict(head, loss_decode=decode_loss),
        auxiliary_head=[
            dict(head, loss_decode=loss) for loss in auxiliary_head
        ],
        train_cfg=dict(),
        test_cfg=dict(mode='whole'))


def test_inner_loss_options_survive_unchanged():
    """A list of loss terms and a list of auxiliary heads, with every
    option a mistyped copy would change."""
    model = _tiny_model(
        decode_loss=[
            dict(
                type='CrossEntropyLoss',
                class_weight=[0.8, 1.0, 1.3],
                avg_non_ignore=True,
                loss_weight=0.7,
                loss_name='loss_ce'),
            dict(
                type='DiceLoss',
                ignore_index=2,
                naive_dice=True,
                loss_weight=3.0,
                loss_name='loss_dice'),
        ],
        auxiliary_head=[
            dict(
                type='CrossEntropyLoss',
                use_sigmoid=True,
                loss_weight=0.4,
                loss_name='loss_aux'),
            [
                dict(type='FocalLoss', loss_weight=0.2, loss_name='loss_f'),
                dict(
                    type='LovaszLoss',
                    per_image=True,
                    reduction='none',
                    loss_weight=0.3,
                    loss_name='loss_lovasz')
            ],
        ])
    cfg = Config(
        dict(
            model=model,
            train_dataloader=dict(sampler=dict(type='DefaultSampler'))))
    out = add_infobatch(cfg).model.to_dict()
    plain_terms = head_terms(model)
    wrapped_terms = head_terms(out)
    assert [p for p, _ in wrapped_terms] == [p for p, _ in plain_terms]
    assert len(plain_terms) == 5
    for (_, plain), (_, wrapped) in zip(plain_terms, wrapped_terms):
        assert wrapped == dict(type='InfoBatchLoss', loss=plain)

    from mmseg.registry import MODELS
    plain_losses = _built_terms(MODELS.build(copy.deepcopy(model)))
    wrapped_losses = _built_terms(MODELS.build(out))
    assert len(wrapped_losses) == 5
    for plain, wrapped in zip(plain_losses, wrapped_losses):
        assert isinstance(wrapped, InfoBatchLoss)
        inner = wrapped.loss
        assert type(inner) is type(plain)
        kept = [name for name in OPTIONS if hasattr(plain, name)]
        assert 'loss_weight' in kept and 'loss_name' in kept
        for name in kept:
            assert getattr(inner, name) == getattr(plain, name), name
        assert wrapped.loss_name == plain.loss_name
    # The set options, as built: nothing fell back to a default.
    ce, dice = plain_losses[:2]
    assert (ce.class_weight, ce.avg_non_ignore, ce.loss_weight) == \
        ([0.8, 1.0, 1.3], True, 0.7)
    assert (dice.ignore_index, dice.loss_weight) == (2, 3.0)


def _built_terms(segmentor):
    terms = []
    for head in [segmentor.decode_head, *segmentor.auxiliary_head]:
        loss = head.loss_decode
        terms += list(loss) if isinstance(loss,
                                          torch.nn.ModuleList) else [loss]
    return terms


def test_unknown_knob_names_the_valid_ones():
    with pytest.raises(TypeError) as info:
        add_infobatch(stock(PSPNET), ratoi=0.3)
    message = str(info.value)
    assert "['ratoi']" in message
    for knob in ('ratio', 'target_saving', 'policy', 'delta', 'anneal'):
        assert f"'{knob}'" in message
    assert "'dataset'" not in message


@pytest.mark.parametrize('edit,error,match', [
    (lambda c: c.model.decode_head.update(type='MaskFormerHead'), TypeError,
     r'cannot serve model.decode_head \(MaskFormerHead\).*without InfoBatch'),
    (lambda c: c.train_dataloader.update(
        batch_sampler=dict(type='AspectRatioBatchSampler')), TypeError,
     'Remove batch_sampler from train_dataloader'),
    (lambda c: c.pop('train_dataloader'), TypeError, 'no train_dataloader'),
    (lambda c: [c.model.pop(k) for k in ('decode_head', 'auxiliary_head')],
     TypeError, 'found no head loss'),
])
def test_configs_that_cannot_be_served_are_refused(edit, error, match):
    cfg = stock(PSPNET)
    edit(cfg)
    with pytest.raises(error, match=match):
        add_infobatch(cfg)


def test_a_loss_from_outside_mmseg_is_refused_until_wrapped():
    from mmseg.models.losses import CrossEntropyLoss
    from mmseg.registry import MODELS

    @MODELS.register_module(force=True)
    class UserLossForAddInfobatch(CrossEntropyLoss):
        pass

    cfg = stock(PSPNET)
    cfg.model.decode_head.loss_decode = dict(type='UserLossForAddInfobatch')
    with pytest.raises(
            ValueError,
            match=r"model.decode_head.loss_decode "
            r"\(UserLossForAddInfobatch\).*mode='weight'"):
        add_infobatch(cfg)
    # Wrapped by hand, it is kept as written; the rest is added.
    by_hand = dict(
        type='InfoBatchLoss',
        mode='weight',
        loss=dict(type='UserLossForAddInfobatch'))
    cfg.model.decode_head.loss_decode = by_hand
    out = add_infobatch(cfg)
    assert out.model.decode_head.loss_decode == by_hand
    assert out.model.auxiliary_head.loss_decode.type == 'InfoBatchLoss'
