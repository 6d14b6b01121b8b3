"""add_infobatch's refusals, its warning and its report, compared whole:
each text names what is wrong (or what changed) and the fix, and a
fragment would let the rest say anything."""
import logging

import pytest
from helpers import refusal
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmseg_infobatch import add_infobatch


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def head(loss=None, **kwargs):
    """A decode head config (only its type and loss are read)."""
    node = dict(type='FCNHead', in_channels=8, channels=4, num_classes=3)
    node.update(kwargs)
    if loss is not None:
        node['loss_decode'] = loss
    return node


def config(decode_head=None, **parts):
    """A training config: a model and a train_dataloader with a sampler."""
    cfg = dict(
        model=dict(
            type='EncoderDecoder',
            decode_head=decode_head
            or head(dict(type='CrossEntropyLoss', loss_weight=1.0))),
        train_dataloader=dict(
            batch_size=2, sampler=dict(type='DefaultSampler', shuffle=True)))
    cfg.update(parts)
    return Config(cfg)


def _without(key):
    cfg = config()
    cfg.pop(key)
    return cfg


def _with_loader(**loader):
    cfg = config()
    cfg.train_dataloader.update(loader)
    return cfg


def _heads(decode_head, auxiliary_head=None):
    cfg = config(decode_head=decode_head)
    if auxiliary_head is not None:
        cfg.model.auxiliary_head = auxiliary_head
    return cfg


def _outside_loss():
    from mmseg.models.losses import CrossEntropyLoss
    from mmseg.registry import MODELS

    @MODELS.register_module(force=True)
    class UserLossForConfigRefusals(CrossEntropyLoss):
        pass

    return _heads(head(dict(type='UserLossForConfigRefusals')))


# (the bad config and knobs, the error, the whole message)
# yapf: disable
REFUSALS = [
    (lambda: add_infobatch(config(), ratoi=0.3), TypeError,
     "add_infobatch got unknown knobs ['ratoi']. Valid are "
     "InfoBatchSampler's ['shuffle', 'seed', 'ratio', 'policy', "
     "'prune_high', 'buckets', 'rescale', 'target_saving', 'max_ratio'] "
     "and InfoBatchHook's ['delta', 'anneal', 'adjust_schedule']."),
    (lambda: add_infobatch(_without('model')), TypeError,
     'add_infobatch needs a config with a model dict.'),
    (lambda: add_infobatch(_without('train_dataloader')), TypeError,
     'add_infobatch needs a config that trains: it has no '
     'train_dataloader, whose sampler InfoBatch replaces.'),
    (lambda: add_infobatch(
        _with_loader(batch_sampler=dict(type='AspectRatioBatchSampler'))),
     TypeError,
     "InfoBatch finds each batch's sample indices from the sampler's "
     'pass order, which needs the default torch BatchSampler, but '
     "train_dataloader sets batch_sampler={'type': "
     "'AspectRatioBatchSampler'}. Remove batch_sampler from "
     'train_dataloader.'),
    (lambda: add_infobatch(_heads(
        head(type='MaskFormerHead'),
        [head(), head(type='Mask2FormerHead')])), TypeError,
     'InfoBatch cannot serve model.decode_head (MaskFormerHead), '
     'model.auxiliary_head[1] (Mask2FormerHead): its losses match '
     'queries to masks, so their inputs have no per-image rows to score '
     'or rescale. Train this model without InfoBatch (docs/compat.md '
     'lists what is served).'),
    (lambda: add_infobatch(_heads(dict(type='FCNHead'))), TypeError,
     'add_infobatch found no head loss to wrap in model (no `loss_decode` '
     'in any head), so InfoBatch could score and rescale no image. It '
     'serves mmseg decode heads with loss_decode=dict(type=...); train '
     'this model without InfoBatch.'),
    (lambda: add_infobatch(_outside_loss()), ValueError,
     'add_infobatch cannot wrap model.decode_head.loss_decode '
     '(UserLossForConfigRefusals), a loss from outside mmseg: '
     'InfoBatchLoss does not know how it reduces, so it cannot choose a '
     "mode. Wrap it in the config yourself, with mode='weight' if its "
     'forward takes weight= shaped like the label and divides by a count '
     "that does not depend on it, else mode='per_image': "
     "dict(type='InfoBatchLoss', mode=..., "
     "loss=dict(type='UserLossForConfigRefusals', ...)). add_infobatch "
     'leaves wrapped terms as they are.'),
]
# yapf: enable


@pytest.mark.parametrize('call,error,message', REFUSALS)
def test_a_config_that_cannot_be_served_is_refused_with_its_fix(
        call, error, message):
    assert refusal(call, error) == message


def test_a_batch_coupled_loss_gets_per_image_with_a_whole_warning(log):
    cfg = _heads(
        head([
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=8),
            dict(type='CrossEntropyLoss')
        ]))
    out = add_infobatch(cfg)
    assert out.model.decode_head.loss_decode[0].mode == 'per_image'
    assert log.messages(logging.WARNING) == [
        'add_infobatch: model.decode_head.loss_decode[0] '
        "(OhemCrossEntropy) gets mode='per_image': it keeps the hardest "
        'pixels of the whole batch. Image by image, that coupling becomes '
        'per image (docs/compat.md).'
    ]


def test_the_report_lists_every_change_whole(log):
    """One line per change: the import, the sampler (old type, new
    sampler, the old settings not kept), the hook, each wrapped term."""
    cfg = _heads(
        head([
            dict(type='OhemCrossEntropy', thres=0.9, min_kept=8),
            dict(type='DiceLoss', loss_weight=3.0)
        ]), head(dict(type='CrossEntropyLoss', loss_weight=0.4)))
    cfg.train_dataloader.sampler = dict(
        type='DefaultSampler', shuffle=True, seed=1, round_up=True)
    add_infobatch(cfg, ratio=0.3)
    assert log.messages() == [
        'add_infobatch added to the config:\n'
        "  custom_imports: ['mmseg_infobatch']\n"
        '  train_dataloader.sampler: DefaultSampler -> '
        "{'type': 'InfoBatchSampler', 'shuffle': True, 'seed': 1, "
        "'ratio': 0.3} (not kept: round_up)\n"
        "  custom_hooks: {'type': 'InfoBatchHook'}\n"
        '  model.decode_head.loss_decode[0]: '
        'InfoBatchLoss(OhemCrossEntropy, per_image)\n'
        '  model.decode_head.loss_decode[1]: InfoBatchLoss(DiceLoss)\n'
        '  model.auxiliary_head.loss_decode: InfoBatchLoss(CrossEntropyLoss)'
    ]


def test_the_report_of_a_sampler_without_type_or_dropped_settings(log):
    """A loader without a sampler reports ``None`` as the old type and
    no settings not kept."""
    cfg = config()
    cfg.train_dataloader.pop('sampler')
    add_infobatch(cfg)
    changes = log.messages()[0].split('\n  ')
    assert changes[2] == ('train_dataloader.sampler: None -> '
                          "{'type': 'InfoBatchSampler'}")


def test_the_report_names_every_sampler_setting_not_kept(log):
    cfg = config()
    cfg.train_dataloader.sampler = dict(
        type='UserSampler', shuffle=False, window=4, stride=2)
    add_infobatch(cfg)
    changes = log.messages()[0].split('\n  ')
    assert changes[2] == ('train_dataloader.sampler: UserSampler -> '
                          "{'type': 'InfoBatchSampler', 'shuffle': False} "
                          '(not kept: stride, window)')
