"""The sampler's checkpoint state around the sampler itself: the check
that a resume keeps the layout that shapes a pass, the dataset fingerprint
in that layout, the upgrade of older formats, and the tables as plain
tensors for analysis."""
import logging
import math
import zlib
from typing import Optional, Sequence

import torch
from mmengine.logging import print_log

from .history import PassRecord
from .layout import pack_bits, unpack_bits
from .run_plan import RunPlan

# The dataset fingerprint of the layout is dict(version=2, crc=...), a CRC32
# of every sample's file paths relative to its dataset's data_root (or
# data_prefix), so that a copy of the data at another place resumes. Formats
# 2 to 4 of older versions stored a bare CRC32 of the absolute paths.
FINGERPRINT_VERSION = 2

_LAYOUT_FIXES = dict(
    num_samples='Resume with the same dataset',
    world_size='Resume on the same number of processes: the saved pass is '
    'split per rank',
    batch_size='Resume with the same train_dataloader.batch_size: the saved '
    'pass is split into batches of the old size',
    drop_last='Resume with the same train_dataloader.drop_last',
    fingerprint='Resume with the same data (the train dataset holds other '
    'images or labels: their paths relative to data_root differ)')


def check_layout(saved: dict, current: dict) -> None:
    """Refuse a resume that would cut the saved pass differently."""
    for key, fix in _LAYOUT_FIXES.items():
        if key == 'fingerprint' and not isinstance(saved[key], dict):
            # A CRC32 of absolute paths, which would refuse moved data.
            print_log(
                'The checkpoint holds a dataset fingerprint of an older '
                'mmseg_infobatch (of absolute paths), which is not '
                'compared: only the dataset size is checked. Resume with '
                'the same data.',
                logger='current',
                level=logging.WARNING)
            continue
        if saved[key] != current[key]:
            raise ValueError(
                f'The checkpoint holds InfoBatch state made with {key}='
                f'{saved[key]!r}, but this run has {key}={current[key]!r}. '
                f'{fix}, or start a fresh run from its weights with '
                'load_from=CHECKPOINT instead of --resume.')


def dataset_fingerprint(dataset) -> dict:
    """A CRC32 of the sample list: each sample's file paths (``*_path``
    of its data info) relative to its dataset's ``data_root`` (or, where
    they are not below it, to its ``data_prefix``), looking through
    dataset wrappers; the same for a copy of the data at another place."""
    crc = zlib.crc32(str(len(dataset)).encode())
    for part in _sample_lists(dataset):
        crc = zlib.crc32(part, crc)
    return dict(version=FINGERPRINT_VERSION, crc=crc)


def _sample_lists(dataset):
    """Byte strings that describe the samples of ``dataset``."""
    inner = getattr(dataset, 'datasets', None)
    if inner:  # ConcatDataset
        for part in inner:
            yield from _sample_lists(part)
        return
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:  # RepeatDataset, ...
        yield from _sample_lists(inner)
        return
    if hasattr(dataset, 'get_data_info'):
        # mmengine's BaseDataset; serialized or not, one info at a time.
        infos = (dataset.get_data_info(i) for i in range(len(dataset)))
    else:
        infos = getattr(dataset, 'data_list', None) or []
    prefixes = getattr(dataset, 'data_prefix', None) or {}
    root = getattr(dataset, 'data_root', None) or ''
    for info in infos:
        yield '|'.join(
            f'{key}={_relative(value, root, prefixes.get(key))}'
            for key, value in sorted(info.items())
            if key.endswith('_path') and isinstance(value, str)).encode()


def _relative(path: str, *bases) -> str:
    """``path`` below the first of ``bases`` it is below, or as it is."""
    for base in bases:
        if isinstance(base, str) and base and path.startswith(base):
            return path[len(base):].lstrip('/\\')
    return path


def upgrade_state(state: dict,
                  history: Sequence[PassRecord] = (),
                  plan: Optional[RunPlan] = None) -> dict:
    """A sampler state as :meth:`InfoBatchSampler.state_dict` writes it,
    from itself or from an older format: the plain tables of checkpoint
    format 2 (a bool seen mask, float32 weights, int64 order), and the
    saving before the current pass, which formats 2 and 3 lack, made from
    the run's pass ``history`` as the ``plan`` counts it."""
    if 'saved_iters' not in state:
        state = dict(
            state,
            saved_iters=saved_before(history, int(state['pass_idx']), plan))
    if 'seen_bits' in state:
        return state
    weights = state['weights'].float()
    table = torch.cat([torch.ones(1), weights.unique()])
    table = table[torch.cat([torch.tensor([True]), table[1:] != 1])]
    if table.numel() > 256:
        raise ValueError(
            f'The checkpoint\'s InfoBatch weights take {table.numel()} '
            'distinct values, more than 256: start a fresh run from its '
            'weights with load_from=CHECKPOINT instead of --resume.')
    codes = torch.zeros(weights.numel(), dtype=torch.uint8)
    for code, value in enumerate(table.tolist()[1:], 1):
        codes[weights == value] = code
    return dict(
        state,
        seen_bits=pack_bits(state['seen'].bool()),
        weight_codes=codes,
        weight_table=table)


def saved_before(history: Sequence[PassRecord], pass_idx: int,
                 plan: Optional[RunPlan]) -> float:
    """Full-data iterations the passes before ``pass_idx`` saved, from
    the pass history; NaN without a plan that knows the budget."""
    if plan is None or not plan.budget_iters:
        return math.nan
    passes = {r.pass_idx: r.iters for r in history if r.pass_idx < pass_idx}
    return sum(plan.pass_saving(t, iters) for t, iters in passes.items())


def sample_tables(state: dict) -> dict:
    """A checkpoint's sampler state (any format, any subset of its tables)
    as plain tables, for analysis: scores (float32), seen (bool), weights
    (float32) and order (int64); None for what the state lacks."""
    scores = state['scores'].float()
    seen, weights, order = state.get('seen'), state.get('weights'), \
        state.get('order')
    if 'seen_bits' in state:
        seen = unpack_bits(state['seen_bits'], scores.numel())
    if 'weight_codes' in state:
        weights = state['weight_table'][state['weight_codes'].long()]
    return dict(
        scores=scores,
        seen=None if seen is None else seen.bool(),
        weights=None if weights is None else weights.float(),
        order=None if order is None else order.long())
