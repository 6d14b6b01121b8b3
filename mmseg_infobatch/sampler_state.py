"""The sampler's checkpoint state around the sampler itself: the check
that a resume keeps the layout that shapes a pass, the dataset fingerprint
in that layout, the upgrade of older formats, and the tables as plain
tensors for analysis."""
import zlib

import torch

from .pass_layout import pack_bits, unpack_bits

_LAYOUT_FIXES = dict(
    num_samples='Resume with the same dataset',
    world_size='Resume on the same number of processes: the saved pass is '
    'split per rank',
    batch_size='Resume with the same train_dataloader.batch_size: the saved '
    'pass is split into batches of the old size',
    drop_last='Resume with the same train_dataloader.drop_last',
    fingerprint='Resume with the same data (the image and label paths of '
    'the train dataset changed)')


def check_layout(saved: dict, current: dict) -> None:
    """Refuse a resume that would cut the saved pass differently."""
    for key, fix in _LAYOUT_FIXES.items():
        if saved[key] != current[key]:
            raise ValueError(
                f'The checkpoint holds InfoBatch state made with {key}='
                f'{saved[key]!r}, but this run has {key}={current[key]!r}. '
                f'{fix}, or start a fresh run from its weights with '
                'load_from=CHECKPOINT instead of --resume.')


def dataset_fingerprint(dataset) -> int:
    """A cheap CRC32 of the sample list (image and label paths and the
    rest of each sample's info), looking through dataset wrappers."""
    crc = zlib.crc32(str(len(dataset)).encode())
    for part in _sample_lists(dataset):
        crc = zlib.crc32(part, crc)
    return crc


def _sample_lists(dataset):
    """Byte strings that describe the samples of ``dataset``."""
    data_bytes = getattr(dataset, 'data_bytes', None)
    if data_bytes is not None:
        # mmengine's BaseDataset keeps its sample list serialized here.
        yield memoryview(data_bytes)
        return
    data_list = getattr(dataset, 'data_list', None)
    if data_list:
        yield '\n'.join(f"{info.get('img_path')}|{info.get('seg_map_path')}"
                        for info in data_list).encode()
    for inner in getattr(dataset, 'datasets', None) or []:
        yield from _sample_lists(inner)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None and inner is not dataset:
        yield from _sample_lists(inner)


def upgrade_state(state: dict) -> dict:
    """A sampler state as :meth:`InfoBatchSampler.state_dict` writes it,
    from itself or from the plain tables of checkpoint format 2 (a bool
    seen mask, float32 weights, int64 order)."""
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
