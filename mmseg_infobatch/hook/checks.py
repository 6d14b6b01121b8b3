"""Set-up and per-batch checks of InfoBatch, each failing with the fix."""
from typing import List, Optional, Tuple

import torch
from mmengine.model import is_model_wrapper
from torch.utils.data import BatchSampler

from ..loss import InfoBatchLoss
from ..sampler import InfoBatchSampler
from ..sampler.infobatch_sampler import CONFIG_HINT


def check_eval_samplers(cfg) -> None:
    """InfoBatchSampler prunes training passes; evaluation must see all."""
    for key in ('val_dataloader', 'test_dataloader'):
        sampler = (cfg.get(key) or {}).get('sampler') or {}
        if sampler.get('type') in ('InfoBatchSampler', InfoBatchSampler):
            raise ValueError(
                f'{key} uses InfoBatchSampler, which prunes; evaluation '
                'must see every sample. Use it only in train_dataloader and '
                f"give {key} sampler=dict(type='DefaultSampler', "
                'shuffle=False).')


def find_train_sampler(dataloader) -> InfoBatchSampler:
    """The train dataloader's InfoBatchSampler under the default
    BatchSampler, which lets the sampler's order name each batch."""
    sampler = getattr(dataloader, 'sampler', None)
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    if isinstance(getattr(batch_sampler, 'sampler', None), InfoBatchSampler):
        sampler = batch_sampler.sampler  # under a custom batch_sampler
    if not isinstance(sampler, InfoBatchSampler):
        raise TypeError(
            'InfoBatchHook needs train_dataloader to use InfoBatchSampler, '
            f'but it uses {type(sampler).__name__}. Add to the config:'
            f'{CONFIG_HINT}')
    if type(batch_sampler) is not BatchSampler or \
            dataloader.sampler is not sampler:
        raise TypeError(
            'InfoBatch finds each batch\'s sample indices from the '
            'sampler\'s pass order, which needs the default torch '
            'BatchSampler, but train_dataloader uses '
            f'{type(batch_sampler).__name__}. Remove batch_sampler from '
            'train_dataloader.')
    return sampler


# Heads whose losses match queries to masks: no row of their loss inputs is
# an image, so no image can be scored or rescaled (docs/compat.md).
UNSERVED_HEADS = ('MaskFormerHead', 'Mask2FormerHead', 'SideAdapterCLIPHead')


def find_losses(model, logger) -> List[InfoBatchLoss]:
    """Every InfoBatchLoss of the model; warns of head losses not wrapped."""
    if is_model_wrapper(model):
        model = model.module
    unserved = sorted({
        type(m).__name__
        for m in model.modules() if type(m).__name__ in UNSERVED_HEADS
    })
    if unserved:
        raise TypeError(
            f'InfoBatch cannot serve {", ".join(unserved)}: its losses '
            'match queries to masks, so their inputs have no per-image rows '
            'to score or rescale. Train this model without InfoBatch '
            '(docs/compat.md lists what is served).')
    losses = [m for m in model.modules() if isinstance(m, InfoBatchLoss)]
    if not losses:
        raise TypeError(
            'InfoBatchHook found no InfoBatchLoss in the model, so no image '
            f'can be scored or rescaled. Wrap the head losses:{CONFIG_HINT}')
    unwrapped = _unwrapped_head_losses(model)
    if unwrapped:
        logger.warning(
            'InfoBatch: these loss terms are not wrapped in InfoBatchLoss: '
            f'{", ".join(unwrapped)}. They are not rescaled, which biases '
            'the gradient of pruned passes, and they do not count in the '
            "scores. Wrap each of them: loss_decode=dict(type='InfoBatchLoss"
            "', loss=<the loss>).")
    return losses


def _unwrapped_head_losses(model) -> List[str]:
    """Names of head loss terms (mmseg's ``loss_decode``) not wrapped."""
    names = []
    for head_name, head in model.named_modules():
        terms = getattr(head, 'loss_decode', None)
        if terms is None:
            continue
        if isinstance(terms, torch.nn.Module) and not isinstance(
                terms, torch.nn.ModuleList):
            terms = [terms]
        for term in terms:
            if not isinstance(term, InfoBatchLoss):
                names.append(f'{head_name}.{getattr(term, "loss_name", "?")}')
    return names


def check_batch(data_batch, indices: torch.Tensor, dataset,
                where: Tuple[int, int]) -> None:
    """The batch holds the images the sampler chose for it."""
    num_images = _batch_len(data_batch)
    if num_images is not None and num_images != indices.numel():
        raise RuntimeError(
            f'InfoBatch expected {indices.numel()} images in this batch '
            f'(pass {where[0]}, batch {where[1]}) but the batch has '
            f'{num_images}: sample indices cannot reach the batch. Do not '
            'replace the sampler or batch_sampler of train_dataloader while '
            'InfoBatch is on.')
    _check_identity(data_batch, indices, dataset)


def _batch_len(data_batch) -> Optional[int]:
    if isinstance(data_batch, dict):
        for key in ('data_samples', 'inputs'):
            if key in data_batch:
                return len(data_batch[key])
    return None


def _check_identity(data_batch, indices: torch.Tensor, dataset) -> None:
    """Each image of the batch is the one the sampler chose: its
    ``img_path``, which mmseg's ``PackSegInputs`` packs by default, is the
    dataset's for the chosen index (one ``get_data_info`` per image, which
    dataset wrappers map to the inner dataset's sample). Where no
    ``img_path`` is packed, mmengine's ``sample_idx`` where it is packed
    and meaningful (not renumbered by a wrapper)."""
    samples = data_batch.get('data_samples') if isinstance(data_batch,
                                                           dict) else None
    # check_batch has compared their count with the indices.
    if not samples:
        return
    chosen = indices.tolist()
    if 'img_path' in samples[0] and hasattr(dataset, 'get_data_info'):
        for j, (index, sample) in enumerate(zip(chosen, samples)):
            expected = dataset.get_data_info(index).get('img_path')
            if sample.img_path != expected:
                raise RuntimeError(
                    f'InfoBatch expected image {j} of this batch to be '
                    f'sample {index}, {expected}, but it is '
                    f'{sample.img_path}: sample indices cannot reach the '
                    'batch. Keep shuffling in InfoBatchSampler and do not '
                    'reorder batches.')
        return
    if 'sample_idx' not in samples[0] or _renumbers(dataset):
        return
    held = [s.sample_idx for s in samples]
    if held != chosen:
        raise RuntimeError(
            f'InfoBatch expected samples {chosen} but the batch holds '
            f'{held}: sample indices cannot reach the batch. Keep shuffling '
            'in InfoBatchSampler and do not reorder batches.')


def _renumbers(dataset) -> bool:
    """A dataset wrapper, whose samples carry their inner index."""
    return any(
        hasattr(dataset, name) for name in ('datasets', 'times', 'dataset'))
