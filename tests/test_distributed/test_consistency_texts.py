"""The rank check (hook/consistency.py): the digest every rank must share,
and the whole error every rank raises when they do not, naming each
differing field with every rank's value, the likely cause and the fix
(all_gather and get_dist_info mocked, as test_rank_consistency.py does)."""
import zlib
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from helpers import make_sampler, refusal

from mmseg_infobatch.hook import consistency
from mmseg_infobatch.hook.consistency import (NO_STATE, ON_RANK0, RESUME_FIX,
                                              SAME_SETUP_FIX, TABLES,
                                              agree_on_resume,
                                              check_ranks_agree, resume_kind,
                                              sampler_digest)

HEAD = ('InfoBatch state differs across the {n} ranks {when}; they would '
        'train passes of different lengths and hang.')
RESUME = ('Likely cause: the ranks resumed from different checkpoints, or '
          'some started fresh: each node has its own work_dir (no shared '
          'file system) and --resume found a checkpoint on some nodes only, '
          'or a different one per node. Fix: resume every node from the '
          'same checkpoint: tools/train.py CONFIG --resume PATH, with PATH '
          'readable on every node (a shared work_dir, or a copy of the '
          'checkpoint on each node); or start a new run from its weights '
          'with --cfg-options load_from=PATH and no --resume.')
SETUP = ('Likely cause: the nodes run different configs or data (sampler '
         'seed, dataset, batch_size, drop_last). Fix: start every node with '
         'the same config and the same data.')
DECISION = ('Likely cause: the ranks decided the same pass differently from '
            'the same scores. Fix: install the same torch and numpy versions '
            'on every node.')
DIGEST = dict(
    iteration=14,
    seed=3,
    position=2,
    layout=0x1234,
    order=0xbeef,
    scores=0xcafe)
DIGEST['pass'] = 4


def _as_ranks(*rows, rank=0):
    """Mock mmengine's all_gather and get_dist_info as rank ``rank`` of
    ``len(rows)``, each rank contributing its row."""
    gathered = []

    def all_gather(local):
        gathered.append(local)
        return [
            local if r == rank else torch.tensor(row, dtype=torch.int64)
            for r, row in enumerate(rows)
        ]

    patches = (mock.patch.object(consistency, 'all_gather', all_gather),
               mock.patch.object(
                   consistency,
                   'get_dist_info',
                   return_value=(rank, len(rows))))
    return patches, gathered


def _check_refusal(*digests, when='at the start of pass 4'):
    (gather, info), _ = _as_ranks(*[list(d.values()) for d in digests])
    with gather, info:
        return refusal(lambda: check_ranks_agree(digests[0], when),
                       RuntimeError)


def test_the_rank_check_names_the_differing_field_cause_and_fix():
    other = dict(DIGEST, **{'pass': 5})
    assert _check_refusal(DIGEST, other) == '\n'.join([
        HEAD.format(n=2, when='at the start of pass 4'),
        '  pass: rank 0: 4, rank 1: 5', RESUME
    ])


def test_the_rank_check_shows_hashes_as_hex_and_each_cause_once():
    """Fields in the digest's order, every rank's value (CRC32s as eight
    hex digits), and each likely cause once, in the order of its first
    field."""
    other = dict(
        DIGEST, seed=4, layout=0x89abcdef, order=0xbef0, scores=0xcaff)
    third = dict(DIGEST, iteration=15)
    assert _check_refusal(
        DIGEST, other, third, when='at the start of training') == '\n'.join([
            HEAD.format(n=3, when='at the start of training'),
            '  iteration: rank 0: 14, rank 1: 14, '
            'rank 2: 15', '  seed: rank 0: 3, rank 1: 4, rank 2: 3',
            '  layout: rank 0: 00001234, rank 1: 89abcdef, '
            'rank 2: 00001234', '  order: rank 0: 0000beef, rank 1: 0000bef0, '
            'rank 2: 0000beef',
            '  scores: rank 0: 0000cafe, rank 1: 0000caff, '
            'rank 2: 0000cafe', RESUME, SETUP, DECISION
        ])


def test_one_rank_checks_nothing():
    with mock.patch.object(consistency, 'all_gather') as all_gather, \
            mock.patch.object(consistency, 'get_dist_info',
                              return_value=(0, 1)):
        check_ranks_agree(DIGEST, 'at the start of pass 4')
    all_gather.assert_not_called()


def test_agreeing_ranks_gather_their_digest_once():
    (gather,
     info), gathered = _as_ranks(list(DIGEST.values()), list(DIGEST.values()))
    with gather, info:
        check_ranks_agree(DIGEST, 'at the start of pass 4')
    assert len(gathered) == 1
    assert gathered[0].dtype == torch.int64
    assert gathered[0].tolist() == list(DIGEST.values())


# -- the resume ---------------------------------------------------------------


def test_what_a_checkpoint_held_for_infobatch():
    assert resume_kind(None) == NO_STATE
    assert resume_kind({'format': 3}) == TABLES
    assert resume_kind({'format': 3, 'on_rank0': False}) == TABLES
    assert resume_kind({'format': 3, 'on_rank0': True}) == ON_RANK0


def _resume_refusal(rows, state, rank=0):
    (gather, info), _ = _as_ranks(*rows, rank=rank)
    with gather, info:
        return refusal(lambda: agree_on_resume(rows[rank][0], state, 2),
                       RuntimeError)


def test_ranks_resumed_apart_are_told_to_resume_from_one_checkpoint():
    when = 'at the start of training, after loading checkpoints'
    assert _resume_refusal([[14, TABLES], [0, NO_STATE]],
                           {'format': 3}) == '\n'.join([
                               HEAD.format(n=2, when=when),
                               '  iteration: rank 0: 14, rank 1: 0',
                               '  checkpoint state: rank 0: tables, rank 1: '
                               'none', RESUME
                           ])
    # Per-rank checkpoints whose rank 0 holds no tables either: nothing to
    # hand out, though every rank points at rank 0's.
    assert _resume_refusal([[14, ON_RANK0], [14, ON_RANK0]], {
        'format': 3,
        'on_rank0': True
    }) == '\n'.join([
        HEAD.format(n=2, when=when),
        "  checkpoint state: rank 0: rank 0's, rank 1: rank 0's", RESUME
    ])
    assert _resume_refusal([[14, NO_STATE], [14, ON_RANK0]], None,
                           rank=0) == '\n'.join([
                               HEAD.format(n=2, when=when),
                               "  checkpoint state: rank 0: none, rank 1: "
                               "rank 0's", RESUME
                           ])


def test_rank_0_hands_its_tables_to_ranks_pointing_at_them():
    tables = {'format': 3, 'sampler': 'tables'}
    sent = []

    def broadcast(objects, src):
        assert src == 0
        sent.append(list(objects))

    (gather, info), _ = _as_ranks([14, TABLES], [14, ON_RANK0])
    with gather, info, mock.patch.object(consistency, 'broadcast_object_list',
                                         broadcast):
        assert agree_on_resume(14, tables, 2) is tables
    assert sent == [[tables]]


def test_a_rank_pointing_at_rank_0s_tables_receives_them():
    tables = {'format': 3, 'sampler': 'tables'}

    def broadcast(objects, src):
        assert src == 0 and objects == [None]
        objects[0] = tables

    (gather, info), _ = _as_ranks([14, TABLES], [14, ON_RANK0], rank=1)
    with gather, info, mock.patch.object(consistency, 'broadcast_object_list',
                                         broadcast):
        assert agree_on_resume(14, {
            'format': 3,
            'on_rank0': True
        }, 2) is tables


def test_ranks_holding_their_own_tables_keep_them():
    state = {'format': 3}
    (gather, info), gathered = _as_ranks([14, TABLES], [14, TABLES])
    with gather, info, mock.patch.object(consistency,
                                         'broadcast_object_list') as broadcast:
        assert agree_on_resume(14, state, 2) is state
    broadcast.assert_not_called()
    assert gathered[0].tolist() == [14, TABLES]
    # Fresh starts everywhere agree as well.
    (gather, info), _ = _as_ranks([0, NO_STATE], [0, NO_STATE])
    with gather, info, mock.patch.object(consistency,
                                         'broadcast_object_list') as broadcast:
        assert agree_on_resume(0, None, 2) is None
    broadcast.assert_not_called()


def test_one_rank_resumes_without_gathering():
    state = {'format': 3, 'on_rank0': True}
    with mock.patch.object(consistency, 'all_gather') as all_gather:
        assert agree_on_resume(14, state, 1) is state
    all_gather.assert_not_called()


# -- the digest ---------------------------------------------------------------


def _stand_in(order, **fields):
    """A sampler as the digest reads it."""
    values = dict(
        seed=7,
        pass_idx=3,
        trained_batches=5,
        order=order,
        served=SimpleNamespace(
            weight_codes=torch.tensor([0, 1, 1, 0], dtype=torch.uint8),
            weight_table=torch.tensor([1.0, 2.0])),
        scores=torch.tensor([0.5, 1.5, 2.5, 3.5]),
        seen_bits=torch.tensor([11], dtype=torch.uint8),
        layout=lambda: dict(num_samples=4, batch_size=2))
    values.update(fields)
    return SimpleNamespace(**values)


def _bytes(*tables):
    return b''.join(t.numpy().tobytes() for t in tables)


def test_the_digest_is_the_seed_position_and_crc32s_of_the_tables():
    """CRC32 continued over tables is the CRC32 of their bytes one after
    the other: the order, its weight codes and table; the scores and the
    seen bits. A pass not yet decided has order 0."""
    # The pass's order as the sampler may hold it: a strided view.
    order = torch.tensor([3, 9, 1, 9, 0, 9, 2, 9])[::2]
    sampler = _stand_in(order)
    digest = sampler_digest(sampler)
    served = sampler.served
    assert digest == {
        'seed':
        7,
        'pass':
        3,
        'position':
        5,
        'layout':
        digest['layout'],
        'order':
        zlib.crc32(
            _bytes(order.contiguous(), served.weight_codes,
                   served.weight_table)),
        'scores':
        zlib.crc32(_bytes(sampler.scores, sampler.seen_bits)),
    }
    assert digest['order'] != 0
    assert sampler_digest(_stand_in(None))['order'] == 0


@pytest.mark.parametrize('change', [
    dict(weight_codes=torch.tensor([0, 1, 0, 1], dtype=torch.uint8)),
    dict(weight_table=torch.tensor([1.0, 1.0])),
])
def test_the_digest_tells_each_samples_weight(change):
    order = torch.tensor([3, 1, 0, 2])
    served = dict(
        weight_codes=torch.tensor([0, 1, 1, 0], dtype=torch.uint8),
        weight_table=torch.tensor([1.0, 2.0]))
    other = _stand_in(order, served=SimpleNamespace(**dict(served, **change)))
    assert sampler_digest(other)['order'] != sampler_digest(
        _stand_in(order))['order']


def test_the_digest_tells_layouts_apart():
    """Samplers of the same layout share it; another batch size, dataset
    size or world size is another layout."""
    same = [make_sampler(40, batch_size=4, seed=s) for s in (3, 5)]
    assert sampler_digest(same[0])['layout'] == sampler_digest(
        same[1])['layout']
    others = [
        make_sampler(40, batch_size=2),
        make_sampler(41, batch_size=4),
        make_sampler(40, rank=0, world=2, batch_size=4)
    ]
    layouts = {sampler_digest(s)['layout'] for s in same[:1] + others}
    assert len(layouts) == 4
    assert all(0 <= v < 2**32 for v in layouts)


def test_the_fixes_are_the_ones_named():
    assert RESUME.endswith(f'Fix: {RESUME_FIX}.')
    assert SETUP.endswith(f'Fix: {SAME_SETUP_FIX}.')
