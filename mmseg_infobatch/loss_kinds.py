"""What InfoBatchLoss knows of the mmseg losses it wraps.

How each reduces, and so which mode of InfoBatchLoss serves it exactly
(the table in :mod:`mmseg_infobatch.loss` sums it up), how it lays out its
``weight=`` argument, and which label it ignores by default.
"""
import inspect
from typing import Optional, Tuple

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
