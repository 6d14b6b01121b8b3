"""Heads that use their class's default ``loss_decode``: add_infobatch
writes that loss out (a config can only wrap what it names), where the
class's ``__init__`` takes it or hands its keywords on to one that does,
and leaves the head alone elsewhere."""
import copy
import sys
import uuid

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.models.decode_heads import FCNHead
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS

from mmseg_infobatch import add_infobatch
from mmseg_infobatch.config import default_loss_decode, with_default_losses

# BaseDecodeHead's default loss_decode, as mmseg documents it.
BASE_DEFAULT = dict(
    type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@MODELS.register_module(force=True)
class FixedLossHeadForDefaultLosses(BaseDecodeHead):
    """A head that chooses its own loss: its ``__init__`` takes no
    ``loss_decode`` and hands no keywords on."""

    def __init__(self, num_classes):
        super().__init__(
            in_channels=4,
            channels=4,
            num_classes=num_classes,
            loss_decode=dict(type='DiceLoss'))


@MODELS.register_module(force=True)
class ClassWeightHeadForDefaultLosses(BaseDecodeHead):
    """A head whose default loss holds a list: its class weights."""

    def __init__(self,
                 loss_decode=dict(
                     type='CrossEntropyLoss', class_weight=[1.0, 2.0, 0.5]),
                 **kwargs):
        super().__init__(loss_decode=loss_decode, **kwargs)


@MODELS.register_module(force=True)
class InheritedInitHeadForDefaultLosses(FCNHead):
    """A head with no ``__init__`` of its own: FCNHead's serves it."""


def fcn_head(**kwargs):
    return dict(
        type='FCNHead', in_channels=8, channels=4, num_classes=3, **kwargs)


def test_an_auxiliary_head_on_the_default_gets_base_decode_heads_loss():
    """FCNHead hands its keywords on to BaseDecodeHead, whose default is
    written out; a head that names its loss keeps it; the input model is
    left as it was."""
    model = dict(
        type='EncoderDecoder',
        decode_head=fcn_head(loss_decode=dict(type='DiceLoss')),
        auxiliary_head=[fcn_head(), fcn_head(concat_input=False)])
    before = copy.deepcopy(model)
    out = with_default_losses(model)
    assert model == before
    assert out['decode_head'] == model['decode_head']
    assert out['auxiliary_head'] == [
        dict(fcn_head(), loss_decode=BASE_DEFAULT),
        dict(fcn_head(concat_input=False), loss_decode=BASE_DEFAULT)
    ]


def test_a_head_without_an_init_of_its_own_gets_the_inherited_default():
    node = dict(fcn_head(), type='InheritedInitHeadForDefaultLosses')
    out = with_default_losses(dict(type='EncoderDecoder', decode_head=node))
    assert out['decode_head'] == dict(node, loss_decode=BASE_DEFAULT)


def test_each_written_default_is_a_config_of_its_own():
    cls = MODELS.get('FCNHead')
    first = default_loss_decode(cls, fcn_head())
    second = default_loss_decode(cls, fcn_head())
    assert first == second == BASE_DEFAULT
    first['loss_weight'] = 0.4
    assert second == BASE_DEFAULT
    assert default_loss_decode(cls, fcn_head()) == BASE_DEFAULT


def test_a_written_default_leaves_the_class_default_alone():
    """An edit of the written loss, down to its class weights, does not
    reach the class's default, which the next config gets."""
    node = dict(type='ClassWeightHeadForDefaultLosses', num_classes=3)
    model = dict(type='EncoderDecoder', decode_head=node)
    expected = dict(type='CrossEntropyLoss', class_weight=[1.0, 2.0, 0.5])
    written = with_default_losses(model)['decode_head']['loss_decode']
    assert written == expected
    written['class_weight'][0] = 4.0
    again = with_default_losses(model)
    assert again['decode_head']['loss_decode'] == expected


def test_a_head_without_num_classes_gets_no_loss():
    """KNet's IterativeDecodeHead skips BaseDecodeHead's ``__init__``
    (which needs num_classes): it has no loss of its own, while its kernel
    head, an FCNHead, does."""
    model = dict(
        type='EncoderDecoder',
        decode_head=dict(
            type='IterativeDecodeHead',
            num_stages=3,
            kernel_generate_head=fcn_head(),
            kernel_update_head=[dict(type='KernelUpdateHead')] * 3))
    out = with_default_losses(model)
    assert 'loss_decode' not in out['decode_head']
    assert out['decode_head']['kernel_generate_head'] == dict(
        fcn_head(), loss_decode=BASE_DEFAULT)
    assert default_loss_decode(
        MODELS.get('IterativeDecodeHead'), model['decode_head']) is None


def test_a_head_that_takes_no_loss_decode_is_left_alone():
    node = dict(type='FixedLossHeadForDefaultLosses', num_classes=3)
    assert default_loss_decode(FixedLossHeadForDefaultLosses, node) is None
    out = with_default_losses(dict(type='EncoderDecoder', decode_head=node))
    assert out['decode_head'] == node


def test_nodes_that_are_not_registered_classes_are_left_alone():
    model = dict(
        type='EncoderDecoder',
        decode_head=fcn_head(loss_decode=dict(type='DiceLoss')),
        auxiliary_head=dict(type='NoSuchHeadForDefaultLosses', channels=4),
        data_preprocessor=dict(size=(8, 8)))
    assert with_default_losses(model) == model


def test_the_configs_own_imports_register_heads_before_wrapping(
        tmp_path, monkeypatch):
    """A head registered by the config's ``custom_imports`` (a module not
    imported before) has its class's default loss written out and
    wrapped."""
    suffix = uuid.uuid4().hex
    module, head = f'user_heads_{suffix}', f'UserDiceHead{suffix}'
    (tmp_path / f'{module}.py').write_text(
        'from mmseg.models.decode_heads import FCNHead\n'
        'from mmseg.registry import MODELS\n\n\n'
        '@MODELS.register_module()\n'
        f'class {head}(FCNHead):\n\n'
        '    def __init__(self, loss_decode=dict(type=\'DiceLoss\', '
        'loss_weight=0.5), **kwargs):\n'
        '        super().__init__(loss_decode=loss_decode, **kwargs)\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = Config(
        dict(
            custom_imports=dict(imports=[module]),
            model=dict(
                type='EncoderDecoder', decode_head=dict(fcn_head(),
                                                        type=head)),
            train_dataloader=dict(sampler=dict(type='DefaultSampler'))))
    try:
        out = add_infobatch(cfg)
    finally:
        sys.modules.pop(module, None)
    assert out.model.decode_head.loss_decode == dict(
        type='InfoBatchLoss', loss=dict(type='DiceLoss', loss_weight=0.5))
    assert out.custom_imports.imports == [module, 'mmseg_infobatch']
