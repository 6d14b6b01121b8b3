"""How add_infobatch reads a config: the tree walk and its paths, the loss
terms of a head, the knobs (the components' own arguments), and what it
merges into the parts a config already has."""
import inspect

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg_infobatch import InfoBatchHook, InfoBatchSampler, add_infobatch
from mmseg_infobatch.config import (HOOK_KNOBS, SAMPLER_KNOBS, _parameters,
                                    loss_terms, walk)


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def test_walk_visits_every_dict_parents_first_with_its_path():
    tree = dict(
        decode_head=[
            dict(type='FCNHead'),
            dict(type='FCNHead', loss_decode=(dict(type='DiceLoss'), 3)),
        ],
        channels=4)
    seen = []
    walk(tree, lambda node, path: seen.append(path))
    assert seen == [
        '', 'decode_head[0]', 'decode_head[1]', 'decode_head[1].loss_decode[0]'
    ]
    seen.clear()
    walk(tree['decode_head'], lambda node, path: seen.append(path), 'heads')
    assert seen == ['heads[0]', 'heads[1]', 'heads[1].loss_decode[0]']


def test_loss_terms_are_the_typed_loss_configs_of_a_head():
    ce, dice, focal = (
        dict(type=t) for t in ('CrossEntropyLoss', 'DiceLoss', 'FocalLoss'))
    head = dict(
        type='EncHead',
        loss_decode=ce,
        loss_se_decode=(dice, focal),
        loss_untyped_decode=dict(loss_weight=0.4),
        loss_mixed_decode=[dice, dict(loss_weight=0.4)],
        loss_cfg=dict(type='CrossEntropyLoss'))
    assert loss_terms(head) == dict(
        loss_decode=[ce], loss_se_decode=[dice, focal])


def test_the_knobs_are_the_components_own_arguments():

    class Component:

        def __init__(self, dataset, ratio=0.5, *, delta=None, **kwargs):
            pass

    assert _parameters(
        Component, skip=('dataset', )) == ('ratio', 'delta', 'kwargs')
    assert _parameters(
        Component, skip=()) == ('dataset', 'ratio', 'delta', 'kwargs')
    sampler = list(inspect.signature(InfoBatchSampler).parameters)
    hook = list(inspect.signature(InfoBatchHook).parameters)
    assert SAMPLER_KNOBS == tuple(p for p in sampler if p != 'dataset')
    assert HOOK_KNOBS == tuple(hook)


def _config(**parts):
    cfg = dict(
        model=dict(
            type='EncoderDecoder',
            decode_head=dict(
                type='FCNHead', loss_decode=dict(type='CrossEntropyLoss'))),
        train_dataloader=dict(sampler=dict(type='DefaultSampler')))
    cfg.update(parts)
    return Config(cfg)


def test_knobs_given_again_update_the_hook_there():
    cfg = _config(custom_hooks=[dict(type='InfoBatchHook', delta=0.875)])
    out = add_infobatch(cfg, delta=0.9)
    assert [dict(h) for h in out.custom_hooks
            ] == [dict(type='InfoBatchHook', delta=0.9)]


def test_custom_imports_keep_their_allow_failed_imports():
    cfg = _config(
        custom_imports=dict(
            imports=['no_such_module_for_add_infobatch'],
            allow_failed_imports=True))
    out = add_infobatch(cfg)
    assert out.custom_imports == dict(
        imports=['no_such_module_for_add_infobatch', 'mmseg_infobatch'],
        allow_failed_imports=True)


def test_a_term_wrapped_already_stays_and_the_rest_of_its_list_is_wrapped():
    by_hand = dict(
        type='InfoBatchLoss',
        mode='per_image',
        loss=dict(type='CrossEntropyLoss'))
    dice = dict(type='DiceLoss', loss_weight=3.0)
    cfg = _config()
    cfg.model.decode_head.loss_decode = [by_hand, dice]
    out = add_infobatch(cfg)
    assert out.model.decode_head.loss_decode == [
        by_hand, dict(type='InfoBatchLoss', loss=dice)
    ]
