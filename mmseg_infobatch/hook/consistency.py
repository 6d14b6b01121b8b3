"""Check that every rank holds the same InfoBatch state.

Each rank decides every pass on its own, from the same seed and score
table, and trains its share of it. Ranks that start from different states
(nodes without a shared work dir, where ``--resume`` finds the checkpoint
on some nodes only) train passes of different lengths, mix their scores
into one table and hang at the first pass end they do not share; mmengine
checks none of this. One all-gather of a few integers at the start of
training and at every pass start turns that into the same error on every
rank, before anything diverges.
"""
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather, broadcast_object_list, get_dist_info

# What a rank's checkpoint held for InfoBatch (see ``resume_kind``).
NO_STATE, TABLES, ON_RANK0 = 0, 1, 2
_KIND_NAMES = {NO_STATE: 'none', TABLES: 'tables', ON_RANK0: "rank 0's"}
_HASHED = ('layout', 'order', 'scores')

RESUME_FIX = (
    'resume every node from the same checkpoint: tools/train.py CONFIG '
    '--resume PATH, with PATH readable on every node (a shared work_dir, '
    'or a copy of the checkpoint on each node); or start a new run from '
    'its weights with --cfg-options load_from=PATH and no --resume')
SAME_SETUP_FIX = 'start every node with the same config and the same data'
# Likely cause and fix, by the first field that differs.
_CAUSES = dict(
    resume=('the ranks resumed from different checkpoints, or some started '
            'fresh: each node has its own work_dir (no shared file system) '
            'and --resume found a checkpoint on some nodes only, or a '
            'different one per node', RESUME_FIX),
    setup=('the nodes run different configs or data (sampler seed, '
           'dataset, batch_size, drop_last)', SAME_SETUP_FIX),
    decision=('the ranks decided the same pass differently from the same '
              'scores', 'install the same torch and numpy versions on every '
              'node'))
_CAUSE_OF = {
    'iteration': 'resume',
    'checkpoint state': 'resume',
    'pass': 'resume',
    'position': 'resume',
    'scores': 'resume',
    'seed': 'setup',
    'layout': 'setup',
    'order': 'decision'
}


def resume_kind(state: Optional[dict]) -> int:
    """What a loaded checkpoint held for InfoBatch: nothing, the tables, or
    a note that rank 0's checkpoint holds them (per-rank checkpoints)."""
    if state is None:
        return NO_STATE
    return ON_RANK0 if state.get('on_rank0') else TABLES


def agree_on_resume(iteration: int, state: Optional[dict],
                    world_size: int) -> Optional[dict]:
    """Check that every rank resumed at the same iteration with InfoBatch
    state, and hand rank 0's state to ranks whose checkpoint only points at
    it (FSDP's per-rank checkpoints hold the tables once, in rank 0's).

    Returns:
        dict, optional: The state this rank restores.
    """
    kind = resume_kind(state)
    if world_size == 1:
        return state
    rows = _gather([iteration, kind])
    kinds = [row[1] for row in rows]
    # A rank pointing at rank 0's tables agrees with a rank holding them:
    # ON_RANK0 compares as TABLES.
    compared = [[row[0], min(row[1], TABLES)] for row in rows]
    differ = _differing(compared, ('iteration', 'checkpoint state'))
    # Rank 0 holds the tables the others point at (named once).
    if ON_RANK0 in kinds and kinds[0] != TABLES and \
            'checkpoint state' not in differ:
        differ.append('checkpoint state')
    if differ:
        shown = [[row[0], _KIND_NAMES[row[1]]] for row in rows]
        raise RuntimeError(
            _message('at the start of training, after loading checkpoints',
                     ('iteration', 'checkpoint state'), shown, differ))
    if ON_RANK0 in kinds:
        shared = [state if get_dist_info()[0] == 0 else None]
        broadcast_object_list(shared, src=0)
        state = shared[0]
    return state


def sampler_digest(sampler) -> Dict[str, int]:
    """What every rank's ``InfoBatchSampler`` must share, as a few
    integers: the seed, the pass and the batches of it trained, and CRC32s
    of the layout, the decided pass (order and weights) and the score
    table."""
    order = 0
    if sampler.order is not None:
        order = _crc32(sampler.served.weight_codes, _crc32(sampler.order))
        order = _crc32(sampler.served.weight_table, order)
    layout = repr(sorted(sampler.layout().items())).encode()
    return {
        'seed': sampler.seed,
        'pass': sampler.pass_idx,
        'position': sampler.trained_batches,
        'layout': zlib.crc32(layout),
        'order': order,
        'scores': _crc32(sampler.seen_bits, _crc32(sampler.scores)),
    }


def _crc32(table: torch.Tensor, crc: int = 0) -> int:
    """CRC32 of a CPU tensor's bytes, continuing ``crc``."""
    return zlib.crc32(table.contiguous().numpy().view(np.uint8), crc)


def check_ranks_agree(digest: Dict[str, int], when: str) -> None:
    """Raise the same error on every rank unless all ranks hold the same
    ``digest`` (a few named integers); a no-op on one rank."""
    if get_dist_info()[1] == 1:
        return
    names = tuple(digest)
    rows = _gather([int(digest[name]) for name in names])
    differ = _differing(rows, names)
    if differ:
        raise RuntimeError(_message(when, names, rows, differ))


def _gather(values: List[int]) -> List[List[int]]:
    local = torch.tensor(values, dtype=torch.int64)
    return [row.cpu().tolist() for row in all_gather(local)]


def _differing(rows: List[list], names) -> List[str]:
    return [
        name for j, name in enumerate(names) if len({row[j]
                                                     for row in rows}) > 1
    ]


def _message(when: str, names, rows: List[list], differ: List[str]) -> str:
    lines = [
        f'InfoBatch state differs across the {len(rows)} ranks {when}; '
        'they would train passes of different lengths and hang.'
    ]
    for name in differ:
        j = names.index(name)
        values = ', '.join(f'rank {r}: {_shown(name, row[j])}'
                           for r, row in enumerate(rows))
        lines.append(f'  {name}: {values}')
    causes = []
    for name in differ:
        cause = _CAUSES[_CAUSE_OF[name]]
        if cause not in causes:
            causes.append(cause)
    for cause, fix in causes:
        lines.append(f'Likely cause: {cause}. Fix: {fix}.')
    return '\n'.join(lines)


def _shown(name: str, value) -> str:
    if name in _HASHED and isinstance(value, int):
        return f'{value & 0xffffffff:08x}'
    return str(value)
