"""The sampler's per-sample memory layout (docs/design.md, Memory): at most
9 bytes per sample held and saved, one copy of the pass, rank shares as
views, and the same decisions as the plain tables gave (the random stream
pinned by CRCs that the plain-table implementation produced)."""
import math
import zlib

import pytest
import torch
from helpers import all_weights, make_sampler

from mmseg_infobatch.sampler import random_draws
from mmseg_infobatch.sampler.decision import decide_pass
from mmseg_infobatch.sampler.layout import index_dtype, pack_bits
from mmseg_infobatch.sampler.state import sample_tables, upgrade_state


def _sampler(n, rank=0, world=1, batch_size=4, **kwargs):
    return make_sampler(n, rank, world, batch_size, **kwargs)


def _pruned(n=10_000, **kwargs):
    """A sampler in its second pass, pruned from scores of every sample."""
    s = _sampler(n, **kwargs)
    iter(s)
    for _ in range(s.pass_batches):
        s.finish_batch()
    g = torch.Generator().manual_seed(0)
    s.update_scores(torch.arange(n), torch.rand(n, generator=g))
    iter(s)
    assert s.decision.pruned > 0
    return s


def _storage(tensor):
    return tensor.untyped_storage().data_ptr()


def test_at_most_nine_bytes_per_sample_held_and_saved():
    n = 10_000
    s = _pruned(n)
    assert s.scores.dtype == torch.float32 and s.scores.numel() == n
    assert s.seen_bits.dtype == torch.uint8
    assert s.seen_bits.numel() == math.ceil(n / 8)
    assert s.served.weight_codes.dtype == torch.uint8
    assert s.served.weight_codes.numel() == n
    assert s.served.weight_table.tolist() == [1.0, 2.0]
    assert s.order.dtype == torch.int32
    # The sampler's own tables and its served pass's, each storage once.
    held = {
        _storage(t): t.untyped_storage().nbytes()
        for t in [*vars(s).values(), *vars(s.served).values()]
        if torch.is_tensor(t)
    }
    assert 8 <= sum(held.values()) / n <= 9.2
    state = s.state_dict()
    saved = sum(t.untyped_storage().nbytes() for t in state.values()
                if torch.is_tensor(t))
    assert saved / n <= 9.2
    assert 'seen' not in state and 'weights' not in state


@pytest.mark.parametrize(
    'num_samples', [1, 10_000, 2**31 - 1, 2**31, 2**31 + 1, 2**32, 2**40])
def test_int32_indices_are_used_only_below_2_31_samples(num_samples):
    # Indices run from 0 to N - 1: int32 holds them all up to N = 2**31
    # (4 bytes a sample in the pass order); index 2**31 overflows it.
    fits = torch.iinfo(torch.int32).max >= num_samples - 1
    assert fits == (num_samples <= 2**31)
    assert index_dtype(num_samples) == (torch.int32 if fits else torch.int64)


def test_the_pass_is_one_buffer_and_each_share_a_view_of_it():
    # 103 kept of 103 (a full pass), 3 ranks x batch 4: padded to 108 in
    # place, after the order.
    shares = []
    for rank in range(3):
        s = _sampler(103, rank=rank, world=3)
        iter(s)
        assert s.padded_order.numel() == 108
        assert _storage(s.padded_order) == _storage(s.order)
        share = s.served.rank_indices()
        assert _storage(share) == _storage(s.order)
        assert torch.equal(s.padded_order[103:], s.order[:5])
        shares.append(share.tolist())
    assert sorted(sum(
        shares, [])) == sorted(list(range(103)) + list(s.order[:5].tolist()))
    # A batch handed out is a copy: the pass buffer can go when the next
    # pass is decided.
    assert _storage(s.batch_indices()) != _storage(s.order)


def test_iteration_yields_the_share_lazily_as_ints():
    s = _sampler(10_000, batch_size=8)
    share = iter(s)
    assert not isinstance(share, list)
    values = list(share)
    assert values == s.served.rank_indices().tolist()
    assert all(type(v) is int for v in values[:3])


def test_weights_and_seen_read_as_before():
    s = _pruned(2_000, ratio=0.3)
    below = s.scores < s.scores.double().mean()
    kept = torch.zeros(2_000, dtype=torch.bool)
    kept[s.order.long()] = True
    assert torch.equal(all_weights(s) == 1 / 0.7, below & kept)
    assert s.weights_of(torch.tensor([0, 1])).dtype == torch.float32
    assert torch.equal(
        s.weights_of(s.order[:10]),
        all_weights(s)[s.order[:10]])
    assert s.seen.dtype == torch.bool and s.seen.all()


def test_a_format_2_checkpoint_state_resumes_the_same_pass():
    s = _pruned(1_000)
    s.finish_batch()
    tables = sample_tables(s.state_dict())
    # Checkpoint format 2 held the plain tables.
    old = dict(
        s.state_dict(),
        seen=tables['seen'],
        weights=tables['weights'],
        order=tables['order'])
    for key in ('seen_bits', 'weight_codes', 'weight_table'):
        del old[key]
    assert 'seen_bits' in upgrade_state(old)
    t = _sampler(1_000)
    t.load_state_dict(old)
    assert torch.equal(t.padded_order, s.padded_order)
    assert torch.equal(all_weights(t), all_weights(s))
    assert torch.equal(t.seen, s.seen) and t.trained_batches == 1
    t.prepare_replay(2)
    s.prepare_replay(2)
    assert list(iter(t)) == list(iter(s))


# CRC32 of the kept indices (int64) and weights (float32) that the plain
# tables' decide_pass gave for the input of _scores(): the compact layout
# kept every decision and the random stream as they were.
GOLDEN = {
    'mean': (dict(ratio=0.5), 1331479997, 321205136, 3152980269),
    'high': (dict(ratio=0.3,
                  prune_high=True), 2718192554, 2070083691, 2774130300),
    'random': (dict(ratio=0.3,
                    policy='random'), 3279541176, 66971310, 4051306111),
    'quantile':
    (dict(ratio=0.0, policy='quantile',
          buckets=[(0.3, 0.8),
                   (0.7, 0.4)]), 951456920, 1101270301, 3553717207),
    'full': (dict(ratio=0.5, prune=False), 1563196728, 2763403303, 3657944013),
}


def _scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(5000, generator=g)**3
    return scores, torch.rand(5000, generator=g) < 0.9


def _crc(tensor):
    return zlib.crc32(tensor.numpy().tobytes())


@pytest.mark.parametrize('name', sorted(GOLDEN))
@pytest.mark.parametrize('bucketed', [False, True])
def test_decisions_are_those_of_the_plain_tables(name, bucketed, monkeypatch):
    if bucketed:
        monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 64)
        monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', 16)
    kwargs, direct_crc, bucketed_crc, weights_crc = GOLDEN[name]
    scores, seen = _scores()
    d = decide_pass(
        scores, seen, generator=torch.Generator().manual_seed(7), **kwargs)
    assert _crc(d.indices) == (bucketed_crc if bucketed else direct_crc)
    assert _crc(d.weights) == weights_crc
    # Packed seen bits and a spare tail decide the same pass.
    c = decide_pass(
        scores,
        pack_bits(seen),
        generator=torch.Generator().manual_seed(7),
        spare=16,
        **kwargs)
    assert c.buffer.numel() == c.num_kept + 16
    assert torch.equal(c.order.long(), d.indices)
    assert torch.equal(c.weights, d.weights)
