"""Every refusal of InfoBatchLoss, compared whole: at build time a loss it
cannot serve (the text names the mode to set), at call time a batch that
does not match the weights; a fragment would let the rest say anything."""
import pytest
import torch
from helpers import refusal
from helpers.loss_cases import build_wrapped

import mmseg_infobatch  # noqa: F401


class UserLossForLossRefusals(torch.nn.Module):
    """A loss defined outside mmseg."""

    loss_name = 'loss_user'

    def forward(self, pred, target, weight=None, **kwargs):
        return pred.mean()


class FutureLossForLossRefusals(torch.nn.Module):
    """A loss of an mmseg release newer than the tables of loss_kinds:
    defined in mmseg's losses package, of a reduction not known."""

    loss_name = 'loss_future'

    def forward(self, pred, target, **kwargs):
        return pred.mean()


FutureLossForLossRefusals.__module__ = 'mmseg.models.losses.future_loss'


def _called(inner, num_weights, mode='auto', **kwargs):
    """A call of the wrapper on 4 images with ``num_weights`` weights."""
    wrapped = build_wrapped(inner, mode=mode)
    wrapped.set_batch_weights(torch.ones(num_weights))
    logits = torch.zeros(4, 3, 2, 2)
    label = torch.zeros(4, 2, 2, dtype=torch.long)
    return wrapped(logits, label, **kwargs)


LOVASZ = dict(type='LovaszLoss', loss_type='multi_class')
# (the bad set-up, the error, the whole message)
# yapf: disable
REFUSALS = [
    (lambda: build_wrapped('CrossEntropyLoss'), TypeError,
     'InfoBatchLoss(loss=...) must be an mmseg loss config such as '
     "dict(type='CrossEntropyLoss'), but got 'CrossEntropyLoss'"),
    (lambda: build_wrapped(dict(loss_weight=1.0)), TypeError,
     'InfoBatchLoss(loss=...) must be an mmseg loss config such as '
     "dict(type='CrossEntropyLoss'), but got {'loss_weight': 1.0}"),
    (lambda: build_wrapped(dict(type='CrossEntropyLoss'),
                           avg_non_ignore=True, loss_weight=1.0,
                           use_sigmoid=False), TypeError,
     "InfoBatchLoss got arguments ['avg_non_ignore', 'loss_weight', "
     "'use_sigmoid'] that are not its own and differ from its inner loss "
     'CrossEntropyLoss. Put inner-loss settings inside loss=dict(...); if '
     'they were inherited from a base config, add _delete_=True next to '
     "type='InfoBatchLoss'."),
    (lambda: build_wrapped(dict(type='InfoBatchLoss',
                                loss=dict(type='CrossEntropyLoss'))),
     TypeError,
     'InfoBatchLoss must not wrap another InfoBatchLoss'),
    (lambda: build_wrapped(dict(type=mmseg_infobatch.InfoBatchLoss,
                                loss=dict(type='CrossEntropyLoss'))),
     TypeError,
     'InfoBatchLoss must not wrap another InfoBatchLoss'),
    (lambda: build_wrapped(dict(type=FutureLossForLossRefusals)), ValueError,
     'InfoBatchLoss cannot rescale each image of FutureLossForLossRefusals '
     'exactly: InfoBatchLoss does not know how it reduces. It can evaluate '
     'FutureLossForLossRefusals image by image instead, which makes that '
     "coupling per image. To accept this, set mode='per_image': "
     "loss_decode=dict(type='InfoBatchLoss', mode='per_image', "
     "loss=dict(type='FutureLossForLossRefusals', ...))."),
    (lambda: build_wrapped(dict(type='CrossEntropyLoss'), mode='exact'),
     ValueError,
     "InfoBatchLoss mode must be one of ('auto', 'weight', 'per_image'), "
     "but got 'exact'"),
    (lambda: build_wrapped(dict(type='OhemCrossEntropy'), mode='weight'),
     ValueError,
     "InfoBatchLoss(mode='weight') can't serve OhemCrossEntropy: its "
     'forward does not rescale by a per-image weight= argument. Use '
     "mode='auto' or mode='per_image'."),
    (lambda: build_wrapped(dict(type=UserLossForLossRefusals)), ValueError,
     'InfoBatchLoss does not know how UserLossForLossRefusals reduces, so '
     'it cannot tell how to rescale each image. If its forward takes '
     'weight= shaped like the label and divides by a count that does not '
     'depend on it (as CrossEntropyLoss does), set mode=\'weight\'; '
     "otherwise set mode='per_image' to evaluate it image by image."),
    (lambda: build_wrapped(dict(type='OhemCrossEntropy')), ValueError,
     'InfoBatchLoss cannot rescale each image of OhemCrossEntropy exactly: '
     'it keeps the hardest pixels of the whole batch. It can evaluate '
     'OhemCrossEntropy image by image instead, which makes that coupling '
     "per image. To accept this, set mode='per_image': "
     "loss_decode=dict(type='InfoBatchLoss', mode='per_image', "
     "loss=dict(type='OhemCrossEntropy', ...))."),
    (lambda: build_wrapped(dict(type='BoundaryLoss')), ValueError,
     'InfoBatchLoss cannot rescale each image of BoundaryLoss exactly: '
     'it balances boundary against other pixels over the whole batch. It '
     'can evaluate BoundaryLoss image by image instead, which makes that '
     "coupling per image. To accept this, set mode='per_image': "
     "loss_decode=dict(type='InfoBatchLoss', mode='per_image', "
     "loss=dict(type='BoundaryLoss', ...))."),
    (lambda: build_wrapped(dict(LOVASZ, per_image=False, reduction='none')),
     ValueError,
     'InfoBatchLoss cannot rescale each image of LovaszLoss exactly: with '
     "per_image=False it computes one Lovasz extension over the whole "
     "batch's pixels. It can evaluate LovaszLoss image by image instead, "
     "which makes that coupling per image. To accept this, set "
     "mode='per_image': loss_decode=dict(type='InfoBatchLoss', "
     "mode='per_image', loss=dict(type='LovaszLoss', ...))."),
    (lambda: build_wrapped(dict(LOVASZ, per_image=True, reduction='sum')),
     ValueError,
     'InfoBatchLoss cannot rescale each image of LovaszLoss exactly: with '
     "reduction='sum' it adds the images' values, where the per-image "
     'mode averages them. It can evaluate LovaszLoss image by image '
     'instead, which makes that coupling per image. To accept this, set '
     "mode='per_image': loss_decode=dict(type='InfoBatchLoss', "
     "mode='per_image', loss=dict(type='LovaszLoss', ...))."),
    (lambda: _called(dict(type='CrossEntropyLoss'), 3), RuntimeError,
     'InfoBatchLoss(loss_ce) got 4 images but 3 weights: the batch does '
     'not match the sampler. Use InfoBatchSampler with the default '
     'BatchSampler (no custom batch_sampler) in train_dataloader, and '
     'wrap only losses that heads call with one row per image.'),
    (lambda: _called(dict(type='CrossEntropyLoss'), 4, mode='per_image',
                     avg_factor=10.0), ValueError,
     "InfoBatchLoss(mode='per_image') can't split a batch-wide "
     'avg_factor over images; call it without avg_factor.'),
]
# yapf: enable


@pytest.mark.parametrize('call,error,message', REFUSALS)
def test_a_loss_that_cannot_be_served_is_refused_with_its_fix(
        call, error, message):
    assert refusal(call, error) == message


def test_the_printout_names_the_mode_beside_the_inner_loss():
    wrapped = build_wrapped(dict(type='CrossEntropyLoss'))
    per_image = build_wrapped(dict(type='CrossEntropyLoss'), mode='per_image')
    assert wrapped.extra_repr() == "mode='weight'"
    assert per_image.extra_repr() == "mode='per_image'"
    assert repr(wrapped).splitlines()[0] == "InfoBatchLoss("
    assert repr(wrapped).splitlines()[1].strip() == "mode='weight'"
