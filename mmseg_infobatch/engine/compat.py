"""Every use of an mmengine internal, in one place, behind a version check.

InfoBatch changes three things mmengine exposes no public setter for: the
end of the train loop (it moves as passes are pruned), the
gradient-accumulation end of the optimizer wrapper (which must follow that
end; a group in progress is rescaled to its new size), and the loop's
dataloader iterator (restarted once after the InfoBatch state is configured
or restored). ``NoPauseIterBasedTrainLoop`` takes over
the pass that the stock loop's iterator already started. ``FSDPStrategy``,
whose resume ``ResumableFSDPStrategy`` repairs, lives in the private
``mmengine._strategy`` and is looked up in the registry. All of it is
written against mmengine 0.10.x.
"""
from typing import Optional

import mmengine
from mmengine.utils import digit_version

MMENGINE_MIN, MMENGINE_MAX = '0.10.7', '0.11.0'


def check_mmengine_version() -> None:
    """Refuse an mmengine whose internals this module was not written for."""
    version = digit_version(mmengine.__version__)
    if not digit_version(MMENGINE_MIN) <= version < digit_version(
            MMENGINE_MAX):
        raise RuntimeError(
            f'mmseg_infobatch supports mmengine >= {MMENGINE_MIN}, '
            f'< {MMENGINE_MAX}, but mmengine {mmengine.__version__} is '
            f'installed: pip install "mmengine>={MMENGINE_MIN},'
            f'<{MMENGINE_MAX}"')


def fsdp_strategy_class() -> Optional[type]:
    """mmengine's ``FSDPStrategy`` (from its registry: the class lives in
    the private ``mmengine._strategy``), or None where mmengine has none:
    torch < 2.0, or a torch without distributed support."""
    import mmengine.runner  # noqa: F401  registers the strategies
    from mmengine.registry import STRATEGIES
    return STRATEGIES.get('FSDPStrategy')


def uses_stock_fsdp(runner) -> bool:
    """Whether a FlexibleRunner trains with mmengine's own FSDPStrategy,
    whose resume fails with torch >= 2.1 (see strategies.py)."""
    stock = fsdp_strategy_class()
    return stock is not None and type(getattr(runner, 'strategy',
                                              None)) is stock


def set_train_end(loop, max_iters: int) -> None:
    """Move a train loop's end: its ``max_iters`` is read-only, and the
    checkpoint hook, the ETA and the logs read it (an
    ``IterBasedTrainLoop`` and its validation end by it too)."""
    loop._max_iters = max_iters


def set_accumulation_end(optim_wrapper, max_counts: int) -> None:
    """Tell gradient accumulation where training now ends, so the last
    partial group is still applied (mmengine's rule) at the true end, and
    every iteration of a group counts 1 / (the group's final size).

    mmengine divides each iteration's loss by the size of its group, as
    known when that iteration runs. Where the end moves into a group that
    is already open, the gradient accumulated so far is rescaled from the
    old size to the new one. ``initialize_count_status`` would set the end
    but also resets the inner count and repeats its warnings; only the
    end-dependent fields change here.
    """
    wrappers = optim_wrapper.values() if hasattr(
        optim_wrapper, 'optim_wrappers') else [optim_wrapper]
    for wrapper in wrappers:
        if not hasattr(wrapper, '_accumulative_counts'):
            continue
        size_before = open_group_size(wrapper)
        wrapper._max_counts = max_counts
        wrapper._remainder_counts = max_counts % wrapper._accumulative_counts
        size_after = open_group_size(wrapper)
        if size_before and size_after and size_before != size_after:
            _scale_gradients(wrapper, size_before / size_after)


def open_group_size(wrapper) -> Optional[int]:
    """The divisor mmengine's ``OptimWrapper.scale_loss`` applies to the
    iterations of the accumulation group in progress; None where no group
    holds gradient yet (or there is no accumulation)."""
    count, size = wrapper._inner_count, wrapper._accumulative_counts
    if count % size == 0:  # between groups; always without accumulation
        return None
    if wrapper._max_counts == -1:
        return size
    # Groups start at multiples of size; the one at max - remainder is
    # the last, partial, group.
    start = count - count % size
    last_start = wrapper._max_counts - wrapper._remainder_counts
    return size if start < last_start else wrapper._remainder_counts


def _scale_gradients(wrapper, factor: float) -> None:
    """Multiply the gradient accumulated in ``wrapper``'s parameters."""
    for group in wrapper.optimizer.param_groups:
        for param in group['params']:
            if param.grad is not None:
                param.grad.mul_(factor)


def started_pass(dataloader_iterator):
    """The pass iterator that mmengine's infinite iterator already started."""
    first_pass = getattr(dataloader_iterator, '_iterator', None)
    if first_pass is None:
        raise RuntimeError(
            'NoPauseIterBasedTrainLoop expects the iterator of mmengine '
            f"{MMENGINE_MIN}'s IterBasedTrainLoop; with this mmengine use "
            "train_cfg = dict(type='IterBasedTrainLoop', ...).")
    return first_pass
