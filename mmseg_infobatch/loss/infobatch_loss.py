"""InfoBatchLoss: per-image scores and rescaling around any mmseg loss.

InfoBatch needs two things from each loss term: one score per image (the
image's loss) and a way to multiply each image's share of the batch loss by
its weight. mmseg's losses reduce in different ways, so the wrapper serves
each in one of two modes:

- ``'weight'``: each image's share is multiplied by its weight before the
  loss's own reduction, whose divisor never depends on the weights, so
  with every weight at 1 the result is the plain loss bit for bit, whatever
  its shape or options. Where the table below says "one", the loss is
  evaluated once: its per-element values (from the inner loss at
  ``loss_weight`` 1, with ``reduction_override='none'``) give the detached
  scores, and the wrapper reduces them as the inner loss does, with mmseg's
  ``weight_reduce_loss``, the same divisor (``avg_factor``,
  ``avg_non_ignore``, class weights) and ``loss_weight`` last
  (``loss_kinds.one_call``). Elsewhere the image weights go in through the
  inner loss's own ``weight=`` (multiplied into any pixel weight the head
  passes, e.g. from ``OHEMPixelSampler``) and the loss reduces itself; the
  scores then come from a second, gradient-free call with
  ``reduction_override='none'``, one image at a time so that it adds no
  batch-sized temporary.
- ``'per_image'``: the inner loss runs once per image and the batch loss is
  the mean over images of ``w_i * loss_i``. For losses that already average
  per-image values this is exact too. For losses that couple the images of
  a batch (a threshold or balance computed over all its pixels) the coupling
  becomes per image; the user must ask for that with ``mode='per_image'``.

``mode='auto'`` (the default) picks the mode by the table below. A loss it
cannot serve exactly is refused when the model is built, with a message
that names the option to set.

=====================================  =========  ========  ===============
mmseg loss                             auto mode  calls     at weights 1
=====================================  =========  ========  ===============
CrossEntropyLoss (softmax or sigmoid)  weight     one       bitwise
sigmoid CE with a head's pixel weight  weight     two       bitwise
DiceLoss, SiLogLoss                    weight     one       bitwise
FocalLoss                              weight     two       bitwise
CrossEntropyLoss(use_mask=True)        per_image  one each  mean of images
LovaszLoss(per_image=True)             per_image  one each  mean of images
TverskyLoss, HuasdorffDisstanceLoss    per_image  one each  mean of images
KLDivLoss                              per_image  one each  mean of images
OhemCrossEntropy, BoundaryLoss         refused    -         set ``mode=``
LovaszLoss(per_image=False)            refused    -         set ``mode=``
a loss outside mmseg                   refused    -         set ``mode=``
=====================================  =========  ========  ===============

A refused loss's message names the mode to set: ``mode='per_image'`` (one
call each) for the batch-coupled ones; ``mode='weight'`` (two calls) or
``mode='per_image'`` for a loss outside mmseg.

"Two" calls, in ``'weight'`` mode, also serve any call with
``reduction='none'`` or a keyword the wrapper does not know. FocalLoss
takes two because its ``'none'`` output is transposed back from the
(pixels, classes) layout it reduces, so a sum of it would add in another
order; sigmoid cross-entropy with a pixel weight because it folds that
weight into its valid mask, out of the wrapper's reach. "One each": one
evaluation per image.

``LovaszLoss(per_image=True, reduction='sum')`` is refused too: it adds the
images' values where the per-image mode averages them.
"""
from typing import Optional

import torch
import torch.nn as nn
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS

from .loss_kinds import (ONE_CALL, WEIGHT_LAYOUTS, default_ignore_index,
                         exact_mode, mmseg_loss_name, one_call)

MODES = ('auto', 'weight', 'per_image')


@MODELS.register_module()
class InfoBatchLoss(nn.Module):
    """Wrap an mmseg loss so InfoBatch can score and rescale each image.

    Without weights (no hook, or outside training) it is the inner loss,
    called with exactly the arguments the head gave. With the weights that
    ``InfoBatchHook`` sets for a training iteration it rescales each image's
    share of the loss and records one detached score per image: the mean of
    the per-element loss over the image's valid pixels
    (``label != ignore_index``), or the image's loss in the per-image mode.
    The module docstring tells which mode serves which loss.

    Args:
        loss (dict): Config of the inner loss, e.g.
            ``dict(type='CrossEntropyLoss', loss_weight=1.0)``.
        mode (str): 'auto', 'weight' or 'per_image'. 'auto' serves every
            mmseg loss that can be served exactly and refuses the others.
            'weight' hands the weights to the inner loss's ``weight=``,
            shaped like the label; set it for a loss of your own that
            takes such a weight and divides by a count that does not depend
            on it. 'per_image' evaluates the inner loss image by image and
            averages ``w_i * loss_i``; a loss that couples the images of a
            batch then does so within each image. Defaults to 'auto'.
        **inherited: Keys left over when a config that inherits a plain
            loss merges ``type='InfoBatchLoss'`` into it. They are accepted
            only where they repeat the inner loss's own value.
    """

    def __init__(self, loss: dict, mode: str = 'auto', **inherited) -> None:
        super().__init__()
        if not isinstance(loss, dict) or 'type' not in loss:
            raise TypeError('InfoBatchLoss(loss=...) must be an mmseg loss '
                            "config such as dict(type='CrossEntropyLoss'), "
                            f'but got {loss!r}')
        stray = {k: v for k, v in inherited.items() if loss.get(k) != v}
        if stray:
            raise TypeError(
                f'InfoBatchLoss got arguments {sorted(stray)} that are not '
                f"its own and differ from its inner loss {loss['type']}. "
                'Put inner-loss settings inside loss=dict(...); if they were '
                'inherited from a base config, add _delete_=True next to '
                "type='InfoBatchLoss'.")
        if loss['type'] in ('InfoBatchLoss', InfoBatchLoss):
            raise TypeError('InfoBatchLoss must not wrap another '
                            'InfoBatchLoss')
        if mode not in MODES:
            raise ValueError(f'InfoBatchLoss mode must be one of {MODES}, '
                             f'but got {mode!r}')
        self.loss = MODELS.build(loss)
        self.mode = self._resolve_mode(mode)
        name = mmseg_loss_name(self.loss)
        self._layout = WEIGHT_LAYOUTS.get(name, 'label')
        self._ignore_index = default_ignore_index(self.loss)
        # The inner loss at loss_weight 1: its 'none' values are then the
        # ones its own reduction sums, and loss_weight multiplies the
        # reduced value last, as in the inner loss. A plain attribute, not
        # a submodule: it holds no tensors, and the model's printout and
        # module tree stay those of the inner loss.
        self.__dict__['_unit_loss'] = MODELS.build(
            dict(loss, loss_weight=1.0)) \
            if self.mode == 'weight' and name in ONE_CALL else None
        # Set by InfoBatchHook before each training iteration, cleared after.
        self.batch_weights: Optional[torch.Tensor] = None
        self._scores: Optional[torch.Tensor] = None

    def _resolve_mode(self, mode: str) -> str:
        """Check the requested mode against the inner loss, at build time,
        so that a loss we can't serve fails before any data is loaded."""
        exact, why = exact_mode(self.loss)
        name = type(self.loss).__name__
        if mode == 'per_image':
            return mode
        if mode == 'weight':
            if mmseg_loss_name(self.loss) is None or exact == 'weight':
                return mode
            raise ValueError(
                f"InfoBatchLoss(mode='weight') can't serve {name}: its "
                'forward does not rescale by a per-image weight= argument. '
                "Use mode='auto' or mode='per_image'.")
        if exact is not None:
            return exact
        if mmseg_loss_name(self.loss) is None:
            raise ValueError(
                f'InfoBatchLoss does not know how {name} reduces, so it '
                'cannot tell how to rescale each image. If its forward takes '
                'weight= shaped like the label and divides by a count that '
                "does not depend on it (as CrossEntropyLoss does), set "
                "mode='weight'; otherwise set mode='per_image' to evaluate "
                'it image by image.')
        raise ValueError(
            f'InfoBatchLoss cannot rescale each image of {name} exactly: '
            f'{why}. It can evaluate {name} image by image instead, which '
            'makes that coupling per image. To accept this, set '
            "mode='per_image': loss_decode=dict(type='InfoBatchLoss', "
            f"mode='per_image', loss=dict(type='{name}', ...)).")

    @property
    def loss_name(self) -> str:
        """The inner loss's name, so log keys stay e.g. ``decode.loss_ce``."""
        return self.loss.loss_name

    def extra_repr(self) -> str:
        return f'mode={self.mode!r}'

    def set_batch_weights(self, weights: Optional[torch.Tensor]) -> None:
        """Set (or clear, with None) the per-image weights of the next call.

        Plain attribute writes: this runs every iteration, and
        ``nn.Module.__setattr__``'s parameter bookkeeping is not needed.
        """
        self.__dict__['batch_weights'] = weights

    def pop_scores(self) -> Optional[torch.Tensor]:
        """Return and clear the per-image scores summed since the last pop."""
        scores = self._scores
        self.__dict__['_scores'] = None
        return scores

    def forward(self, pred: torch.Tensor, target: torch.Tensor, *args,
                **kwargs) -> torch.Tensor:
        weights = self.batch_weights
        if weights is None:
            return self.loss(pred, target, *args, **kwargs)
        num_images = pred.shape[0]
        if weights.numel() != num_images:
            raise RuntimeError(
                f'InfoBatchLoss({self.loss_name}) got {num_images} images '
                f'but {weights.numel()} weights: the batch does not match '
                'the sampler. Use InfoBatchSampler with the default '
                'BatchSampler (no custom batch_sampler) in train_dataloader, '
                'and wrap only losses that heads call with one row per '
                'image.')
        if self.mode == 'per_image':
            return self._per_image(weights, pred, target, args, kwargs)
        return self._weighted(weights, pred, target, *args, **kwargs)

    def _weighted(self,
                  weights: torch.Tensor,
                  pred: torch.Tensor,
                  target: torch.Tensor,
                  weight: Optional[torch.Tensor] = None,
                  **kwargs) -> torch.Tensor:
        """One evaluation of the inner loss where its reduction is known:
        its per-element values at loss_weight 1, with gradient, give the
        scores and are reduced here as the inner loss reduces them, with
        the image weights multiplied into its pixel weights."""
        reduction = one_call(self.loss, pred, target, weight, **kwargs)
        if reduction is None:
            return self._weighted_two_calls(weights, pred, target, weight,
                                            **kwargs)
        kwargs.pop('avg_factor', None)
        kwargs['reduction_override'] = 'none'
        values = self._unit_loss(pred, target, **kwargs)
        ignore_index = kwargs.get('ignore_index', self._ignore_index)
        loss_weight = self.loss.loss_weight
        self._add_scores(loss_weight *
                         _valid_mean(values, target, ignore_index))
        image_weight = weights.to(device=values.device, dtype=torch.float32)
        image_weight = image_weight.view((-1, ) + (1, ) * (values.dim() - 1))
        if reduction.weight is not None:
            image_weight = reduction.weight * image_weight
        return loss_weight * weight_reduce_loss(
            values,
            weight=image_weight,
            reduction=reduction.reduction,
            avg_factor=reduction.avg_factor)

    def _weighted_two_calls(self,
                            weights: torch.Tensor,
                            pred: torch.Tensor,
                            target: torch.Tensor,
                            weight: Optional[torch.Tensor] = None,
                            **kwargs) -> torch.Tensor:
        """The inner loss with the image weights in its ``weight=``, and
        a second, gradient-free call for the scores."""
        image_weight = self._layout_weights(weights, pred, target)
        if weight is not None:
            image_weight = image_weight * weight
        loss = self.loss(pred, target, weight=image_weight, **kwargs)
        kwargs.pop('avg_factor', None)
        kwargs['reduction_override'] = 'none'
        ignore_index = kwargs.get('ignore_index', self._ignore_index)
        num_images = pred.shape[0]
        # One image at a time: a whole-batch call would hold one more
        # logits-sized temporary (the inner log-softmax) next to the one
        # kept for backward. The 'none' values of these losses are per
        # image, so slicing the batch changes none of them.
        with torch.no_grad():
            scores = [
                _valid_mean(
                    self.loss(
                        pred[i:i + 1].detach(), target[i:i + 1], **{
                            k: _image_slice(v, i, num_images)
                            for k, v in kwargs.items()
                        }), target[i:i + 1], ignore_index)
                for i in range(num_images)
            ]
        self._add_scores(torch.cat(scores))
        return loss

    def _layout_weights(self, weights: torch.Tensor, pred: torch.Tensor,
                        target: torch.Tensor) -> torch.Tensor:
        weights = weights.to(device=pred.device, dtype=torch.float32)
        if self._layout == 'image':
            return weights
        if self._layout == 'flat':
            # One weight per pixel of pred (N, C, *pixels), flattened.
            pixels = weights.view((-1, ) + (1, ) * (pred.dim() - 2))
            return pixels.expand((-1, ) + pred.shape[2:]).reshape(-1)
        shape = (-1, ) + (1, ) * (target.dim() - 1)
        return weights.view(shape).expand(target.shape)

    def _per_image(self, weights: torch.Tensor, pred: torch.Tensor,
                   target: torch.Tensor, args: tuple,
                   kwargs: dict) -> torch.Tensor:
        """Mean over images of ``w_i * loss_i``, one inner call per image."""
        if kwargs.get('avg_factor') is not None:
            raise ValueError(
                "InfoBatchLoss(mode='per_image') can't split a batch-wide "
                'avg_factor over images; call it without avg_factor.')
        num_images = pred.shape[0]

        def image(value, i):
            return _image_slice(value, i, num_images)

        losses = torch.stack([
            self.loss(pred[i:i + 1], image(target, i),
                      *[image(a, i) for a in args], **{
                          k: image(v, i)
                          for k, v in kwargs.items()
                      }).mean() for i in range(num_images)
        ])
        ignore_index = kwargs.get('ignore_index', self._ignore_index)
        scores = losses.detach().float()
        if ignore_index is not None and not target.is_floating_point():
            has_valid = (target != ignore_index).flatten(1).any(1)
            scores = torch.where(has_valid, scores, float('nan'))
        self._add_scores(scores)
        return (losses * weights.to(losses)).mean()

    def _add_scores(self, scores: torch.Tensor) -> None:
        self.__dict__['_scores'] = scores if self._scores is None else \
            self._scores + scores


def _image_slice(value, i: int, num_images: int):
    """Image ``i`` of a per-image argument (a tensor with one row per
    image); any other argument as it is."""
    if torch.is_tensor(value) and value.dim() > 0 and \
            value.shape[0] == num_images:
        return value[i:i + 1]
    return value


def _valid_mean(values: torch.Tensor, target: torch.Tensor,
                ignore_index: Optional[int]) -> torch.Tensor:
    """Per-image mean of a loss's 'none' output over the valid pixels.

    ``values`` is (N,) per image, or per element: shaped like the label
    (N, H, W), or with a class axis (N, C, H, W) or (N, 1, H, W), over which
    the label's valid mask is broadcast. NaN for an image with no valid
    pixel, which the hook then leaves at its old score.
    """
    values = values.detach().float()
    if values.dim() == 1:
        return values
    valid = None
    per_pixel = 1
    if ignore_index is not None and not target.is_floating_point():
        valid = target != ignore_index
        if values.dim() == valid.dim() + 1 and \
                values.shape[2:] == valid.shape[1:]:
            # Add up the class axis first: one pass over the values.
            per_pixel = values.shape[1]
            values = values.sum(1)
        elif values.shape != valid.shape:
            valid = None
    if valid is None:
        return values.flatten(1).mean(1)
    count = valid.flatten(1).sum(1)
    if per_pixel > 1:
        count = count * per_pixel
    total = torch.where(valid, values, 0).flatten(1).sum(1)
    return total / count  # 0 / 0: NaN where no pixel is valid
