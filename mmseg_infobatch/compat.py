"""Every use of an mmengine internal, in one place, behind a version check.

InfoBatch changes three things mmengine exposes no public setter for: the
end of an ``IterBasedTrainLoop`` (it moves as passes are pruned), the
gradient-accumulation count of the optimizer wrapper (which must follow that
end), and the loop's dataloader iterator (restarted once after the InfoBatch
state is configured or restored). ``NoPauseIterBasedTrainLoop`` takes over
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
    """Move an ``IterBasedTrainLoop``'s end: its ``max_iters`` is read-only,
    and the loop, the checkpoint hook, validation and the ETA all read it."""
    loop._max_iters = max_iters


def set_accumulation_end(optim_wrapper, max_counts: int) -> None:
    """Tell gradient accumulation where training now ends, so the last
    partial group is still applied (mmengine's rule) at the true end.

    ``initialize_count_status`` would do it but also resets the inner count
    and repeats its warnings; only the end-dependent fields change here.
    """
    wrappers = optim_wrapper.values() if hasattr(
        optim_wrapper, 'optim_wrappers') else [optim_wrapper]
    for wrapper in wrappers:
        if not hasattr(wrapper, '_accumulative_counts'):
            continue
        wrapper._max_counts = max_counts
        wrapper._remainder_counts = max_counts % wrapper._accumulative_counts


def started_pass(dataloader_iterator):
    """The pass iterator that mmengine's infinite iterator already started."""
    first_pass = getattr(dataloader_iterator, '_iterator', None)
    if first_pass is None:
        raise RuntimeError(
            'NoPauseIterBasedTrainLoop expects the iterator of mmengine '
            f"{MMENGINE_MIN}'s IterBasedTrainLoop; with this mmengine use "
            "train_cfg = dict(type='IterBasedTrainLoop', ...).")
    return first_pass
