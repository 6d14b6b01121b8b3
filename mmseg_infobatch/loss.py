"""InfoBatchLoss: per-image scores and rescaling around any mmseg loss."""
from typing import Optional

import torch
import torch.nn as nn
from mmseg.models.losses.utils import weight_reduce_loss
from mmseg.registry import MODELS


@MODELS.register_module()
class InfoBatchLoss(nn.Module):
    """Wrap an mmseg loss so InfoBatch can score and rescale each image.

    The inner loss runs with ``reduction_override='none'``. Its output, per
    pixel (N, H, W) or per image (N,), is

    - reduced to one detached score per image, the mean over valid pixels
      (``label != ignore_index``), kept for ``InfoBatchHook``;
    - multiplied by the batch's per-image weights and reduced as the inner
      loss's own 'mean' (or 'sum') would, so with all weights 1 the result
      equals the unwrapped loss.

    Without weights (no hook, or outside training) it is the inner loss.

    Args:
        loss (dict): Config of the inner loss, e.g.
            ``dict(type='CrossEntropyLoss', loss_weight=1.0)``.
        **inherited: Keys left over when a config that inherits a plain
            loss merges ``type='InfoBatchLoss'`` into it. They are accepted
            only where they repeat the inner loss's own value.
    """

    def __init__(self, loss: dict, **inherited) -> None:
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
        self.loss = MODELS.build(loss)
        # Set by InfoBatchHook before each training iteration, cleared after.
        self.batch_weights: Optional[torch.Tensor] = None
        self._scores: Optional[torch.Tensor] = None

    @property
    def loss_name(self) -> str:
        """The inner loss's name, so log keys stay e.g. ``decode.loss_ce``."""
        return self.loss.loss_name

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

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> torch.Tensor:
        if self.batch_weights is None:
            return self.loss(
                pred,
                target,
                weight=weight,
                avg_factor=avg_factor,
                reduction_override=reduction_override,
                **kwargs)
        num_images = pred.shape[0]
        if self.batch_weights.numel() != num_images:
            raise RuntimeError(
                f'InfoBatchLoss({self.loss_name}) got {num_images} images '
                f'but {self.batch_weights.numel()} weights: the batch does '
                'not match the sampler. Use InfoBatchSampler with the '
                "default BatchSampler (no custom batch_sampler) in "
                'train_dataloader.')
        per_element = self.loss(
            pred,
            target,
            weight=weight,
            avg_factor=None,
            reduction_override='none',
            **kwargs)
        if per_element.dim() == 0 or per_element.shape[0] != num_images:
            raise RuntimeError(
                f'InfoBatchLoss needs per-image or per-pixel values from '
                f"{type(self.loss).__name__}(reduction='none'), but got "
                f'shape {tuple(per_element.shape)} for {num_images} images. '
                'Wrap only losses that keep the batch dimension.')
        ignore_index = kwargs.get('ignore_index')
        self._add_scores(per_element.detach(), target, ignore_index)

        reduction = reduction_override or getattr(self.loss, 'reduction',
                                                  'mean')
        if reduction == 'none':
            raise ValueError("InfoBatchLoss can't rescale with "
                             "reduction='none'; use 'mean' or 'sum'")
        if avg_factor is None and reduction == 'mean':
            avg_factor = self._mean_denominator(target, ignore_index)
        shape = (num_images, ) + (1, ) * (per_element.dim() - 1)
        image_weights = self.batch_weights.to(
            device=per_element.device, dtype=per_element.dtype).view(shape)
        return weight_reduce_loss(
            per_element,
            weight=image_weights,
            reduction=reduction,
            avg_factor=avg_factor)

    def _mean_denominator(self, target: torch.Tensor,
                          ignore_index: Optional[int]) -> Optional[float]:
        """The denominator of mmseg's cross-entropy 'mean', which is not a
        plain mean: all pixels, non-ignored pixels (``avg_non_ignore``) or
        the summed class weights of the labels. None for other losses."""
        if not hasattr(self.loss, 'avg_non_ignore'):
            return None
        valid = torch.ones_like(target, dtype=torch.bool) \
            if ignore_index is None else target != ignore_index
        class_weight = getattr(self.loss, 'class_weight', None)
        if class_weight is None:
            if self.loss.avg_non_ignore:
                return valid.sum().item()
            return target.numel()
        class_weight = target.new_tensor(class_weight, dtype=torch.float)
        label_weights = class_weight[torch.where(valid, target, 0)]
        if self.loss.avg_non_ignore:
            label_weights = label_weights * valid
        return label_weights.sum()

    def _add_scores(self, values: torch.Tensor, target: torch.Tensor,
                    ignore_index: Optional[int]) -> None:
        """Accumulate one score per image; NaN for an image with no valid
        pixel, which the hook then leaves at its old score."""
        values = values.float()
        if values.dim() == target.dim() + 1 and values.shape[1] == 1:
            values = values.squeeze(1)  # (N, 1, H, W) from sigmoid losses
        if values.dim() == 1:
            scores = values
        elif values.shape == target.shape:
            valid = torch.ones_like(values, dtype=torch.bool) \
                if ignore_index is None else target != ignore_index
            dims = tuple(range(1, values.dim()))
            count = valid.sum(dims)
            total = torch.where(valid, values, 0).sum(dims)
            scores = torch.where(count > 0, total / count.clamp(min=1),
                                 torch.full_like(total, float('nan')))
        else:
            scores = values.flatten(1).mean(1)
        self.__dict__['_scores'] = scores if self._scores is None else \
            self._scores + scores
