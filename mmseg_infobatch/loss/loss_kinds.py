"""What InfoBatchLoss knows of the mmseg losses it wraps.

How each reduces, and so which mode of InfoBatchLoss serves it exactly
(the table in :mod:`mmseg_infobatch.loss` sums it up), how it lays out its
``weight=`` argument, and which label it ignores by default.
"""
import inspect
from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn as nn

# How the losses that take per-image weights lay out their ``weight=``:
# 'label' is shaped like the label (sigmoid CE expands it over classes),
# 'flat' is one weight per pixel, flattened (as FocalLoss flattens pixels),
# 'image' is one weight per image.
WEIGHT_LAYOUTS = {
    'CrossEntropyLoss': 'label',
    'FocalLoss': 'flat',
    'DiceLoss': 'image',
    'SiLogLoss': 'image',
}

# Losses whose 'none' output at loss_weight 1 holds the values that their
# 'mean' and 'sum' hand to mmseg's ``weight_reduce_loss``, in the same
# layout, and whose loss_weight multiplies the reduced value last. For
# them InfoBatchLoss evaluates the loss once: scores from those values,
# and its own reduction with the image weights (see ``one_call``).
# FocalLoss is not among them: its 'none' output is transposed back from
# the (pixels, classes) layout it reduces, so a reduction of it would add
# in another order.
ONE_CALL = ('CrossEntropyLoss', 'DiceLoss', 'SiLogLoss')

# mmseg losses whose batch value is the mean of their per-image values, so
# evaluating them image by image is exact.
MEAN_OF_IMAGES = ('TverskyLoss', 'HuasdorffDisstanceLoss', 'KLDivLoss')

# Why the batch-coupled mmseg losses cannot be rescaled per image as is.
COUPLED = {
    'OhemCrossEntropy':
    'it keeps the hardest pixels of the whole batch',
    'BoundaryLoss':
    'it balances boundary against other pixels over the '
    'whole batch',
}


def mmseg_loss_name(loss: nn.Module) -> Optional[str]:
    """The class name of an mmseg loss; None for a loss defined elsewhere,
    whose reduction we can't know (a subclass may override ``forward``)."""
    cls = type(loss)
    if cls.__module__.startswith('mmseg.models.losses.'):
        return cls.__name__
    return None


def exact_mode(loss: nn.Module) -> Tuple[Optional[str], str]:
    """The mode that serves ``loss`` exactly, or None and the reason."""
    name = mmseg_loss_name(loss)
    if name == 'CrossEntropyLoss' and loss.use_mask:
        return 'per_image', ''
    if name in WEIGHT_LAYOUTS:
        return 'weight', ''
    if name in MEAN_OF_IMAGES:
        return 'per_image', ''
    if name == 'LovaszLoss':
        if not loss.per_image:
            return None, ('with per_image=False it computes one Lovasz '
                          "extension over the whole batch's pixels")
        if loss.reduction == 'sum':
            return None, ("with reduction='sum' it adds the images' values, "
                          'where the per-image mode averages them')
        return 'per_image', ''
    if name in COUPLED:
        return None, COUPLED[name]
    return None, 'InfoBatchLoss does not know how it reduces'


def default_ignore_index(loss: nn.Module) -> Optional[int]:
    """The label a loss ignores when the head passes no ``ignore_index``."""
    param = inspect.signature(loss.forward).parameters.get('ignore_index')
    if param is not None and isinstance(param.default, int):
        return param.default
    for attr in ('ignore_index', 'ignore_label'):
        if isinstance(getattr(loss, attr, None), int):
            return getattr(loss, attr)
    return None


class Reduction(NamedTuple):
    """How an inner loss reduces its element-wise values ``v``:
    ``loss_weight * weight_reduce_loss(v, weight, reduction, avg_factor)``.
    ``weight`` is the head's pixel weight as the loss multiplies it in
    (None for none)."""
    reduction: str
    weight: Optional[torch.Tensor]
    avg_factor: Optional[float]


def one_call(loss: nn.Module,
             pred: torch.Tensor,
             target: torch.Tensor,
             weight: Optional[torch.Tensor] = None,
             avg_factor: Optional[float] = None,
             reduction_override: Optional[str] = None,
             ignore_index: Optional[int] = None,
             **kwargs) -> Optional[Reduction]:
    """The reduction ``loss`` would apply to this call, where the wrapper
    can apply it itself to the loss's 'none' values; None where it can't:
    a loss outside ``ONE_CALL``, a reduction of 'none', sigmoid
    cross-entropy with a pixel weight (which it folds into its valid mask),
    SiLog on shapes it would refuse, or keywords this function does not
    know. The divisors follow mmseg's ``cross_entropy`` and
    ``binary_cross_entropy`` (``avg_non_ignore``); the other losses take
    ``avg_factor`` as given."""
    name = mmseg_loss_name(loss)
    if name not in ONE_CALL:
        return None
    reduction = reduction_override or loss.reduction
    if reduction not in ('mean', 'sum'):
        return None
    if name == 'DiceLoss':  # any keyword; it multiplies weight as given
        return Reduction(reduction, weight, avg_factor)
    if kwargs or name == 'SiLogLoss' and ignore_index is not None:
        return None
    if weight is not None:
        weight = weight.float()
    if name == 'SiLogLoss':
        return Reduction(reduction, weight, avg_factor) \
            if pred.shape == target.shape else None
    if loss.use_mask or loss.use_sigmoid and weight is not None:
        return None
    if ignore_index is None:
        ignore_index = default_ignore_index(loss)
    if avg_factor is None and reduction == 'mean':
        avg_factor = _ce_divisor(loss, pred, target, ignore_index)
    return Reduction(reduction, weight, avg_factor)


def _ce_divisor(loss: nn.Module, pred: torch.Tensor, target: torch.Tensor,
                ignore_index: int):
    """What mmseg's ``cross_entropy`` and ``binary_cross_entropy`` divide
    the sum by for 'mean' without ``avg_factor``, computed as they compute
    it: the same tensors give the same rounding. None where the sigmoid
    form takes a plain mean."""
    if loss.use_sigmoid:
        if not loss.avg_non_ignore:
            return None
        valid = (target >= 0) & (target != ignore_index)
        if pred.shape[1] != 1 and pred.dim() != target.dim():
            valid = valid.unsqueeze(1).expand(pred.shape)
        return valid.float().sum().item()
    if loss.class_weight is None:
        ignored = (target == ignore_index).sum().item() \
            if loss.avg_non_ignore else 0
        return target.numel() - ignored
    label_weights = pred.new_tensor(loss.class_weight)[target]
    if loss.avg_non_ignore:
        label_weights[target == ignore_index] = 0
    return label_weights.sum()
