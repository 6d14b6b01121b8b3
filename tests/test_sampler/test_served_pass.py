"""ServedPass: a decided pass served as whole batches on every rank: its
order padded in place by repeating its head, the rank's interleaved share,
the batches trained so far, the replay and the rest a resume draws, and
its checkpoint state."""
import torch

from mmseg_infobatch.sampler.run_plan import PassPosition, RunPlan
from mmseg_infobatch.sampler.served_pass import ServedPass

# 10 samples on 2 ranks of batch 2: 4 samples an iteration.
N, WORLD, BATCH = 10, 2, 2
ORDER = [5, 3, 8, 1, 0, 9, 2]


def _served(rank=1, drop_last=False, order=ORDER, room=4):
    """Rank ``rank``'s pass holding ``order`` in a buffer with ``room``
    entries after it, its samples at even positions of it weighted 2."""
    served = ServedPass(N, rank, WORLD)
    served.batch_size = BATCH
    served.start_next()
    buffer = torch.full((len(order) + room, ), -1, dtype=torch.int32)
    buffer[:len(order)] = torch.tensor(order)
    codes = torch.zeros(N, dtype=torch.uint8)
    codes[torch.tensor(order[::2])] = 1
    served.hold(buffer, len(order), codes, torch.tensor([1.0, 2.0]),
                RunPlan(N, WORLD * BATCH, drop_last=drop_last))
    return served


def test_before_any_pass_nothing_is_served():
    served = ServedPass(N, 0, WORLD)
    assert served.pass_idx == -1 and served.finished
    assert served.pass_batches == 0
    assert served.position == PassPosition(-1, 0, 0)
    assert served.order is None and served.padded_order is None
    assert served.weights_of(torch.arange(N)).tolist() == [1.0] * N
    state = served.state_dict()
    assert state['order'] is None and state['pass_idx'] == -1


def test_a_pass_is_padded_in_its_buffer_by_repeating_its_head():
    served = _served()
    # 7 samples -> 2 iterations of 4: one slot, filled by the head.
    assert served.order.tolist() == ORDER
    assert served.padded_order.tolist() == ORDER + ORDER[:1]
    assert served.padded_order.data_ptr() == served.order.data_ptr()
    assert served.pass_batches == 2
    assert served.position == PassPosition(0, 0, 2)
    assert not served.finished
    # Rank 1 takes every second sample from the second on.
    assert served.rank_indices().tolist() == [3, 1, 9, 5]
    assert _served(rank=0).rank_indices().tolist() == [5, 8, 0, 2]


def test_padding_repeats_the_head_as_often_as_needed():
    served = _served(order=[7], room=4)
    # One sample -> one iteration of 4.
    assert served.padded_order.tolist() == [7, 7, 7, 7]
    served = _served(order=[6, 4, 9, 1, 2, 3, 0, 8], room=4)
    # Whole batches already: no padding.
    assert served.padded_order.tolist() == [6, 4, 9, 1, 2, 3, 0, 8]


def test_drop_last_cuts_a_pass_down_to_whole_batches():
    served = _served(drop_last=True)
    assert served.padded_order.tolist() == ORDER[:4]
    assert served.order.tolist() == ORDER and served.pass_batches == 1


def test_batches_walk_the_rank_share_and_count_as_trained():
    served = _served()
    assert served.batch_indices().tolist() == [3, 1]
    served.finish_batch()
    assert served.position == PassPosition(0, 1, 2)
    assert served.batch_indices().tolist() == [9, 5]
    served.finish_batch()
    assert served.finished


def test_a_batch_is_a_copy_of_the_pass():
    served = _served()
    batch = served.batch_indices()
    batch[0] = -5
    assert served.rank_indices().tolist() == [3, 1, 9, 5]


def test_the_weights_are_the_table_at_each_sample_code():
    served = _served()
    weights = served.weights_of(torch.tensor([5, 3, 8, 4]))
    assert weights.dtype == torch.float32
    assert weights.tolist() == [2.0, 1.0, 2.0, 1.0]


def test_the_next_pass_drops_the_last():
    served = _served()
    served.finish_batch()
    served.start_next()
    assert served.position == PassPosition(1, 0, 0)
    assert served.order is None and served.padded_order is None
    assert served._buffer is None


def test_a_replay_serves_filler_then_the_pass_from_its_start_once():
    served = _served()
    served.finish_batch()
    served.prepare_replay(3)
    assert served.replay_batches == 3
    replay = list(served.replay())
    share = [3, 1, 9, 5]
    # 3 batches of 2 drawn from the share, cycled.
    assert replay == share + share[:2] + share
    assert served.replay_batches is None
    served.prepare_replay(0)
    assert list(served.replay()) == share
    # The count is an int, as a checkpoint's tensor or float gives it.
    served.prepare_replay(torch.tensor(2))
    assert type(served.replay_batches) is int and served.replay_batches == 2


def test_the_rest_serves_the_untrained_batches_once():
    served = _served()
    served.finish_batch()
    served.prepare_rest()
    assert served.rest_pending
    assert list(served.rest()) == [9, 5]
    assert not served.rest_pending
    served.finish_batch()
    served.prepare_rest()
    assert list(served.rest()) == []  # trained to its end
    assert list(served.from_start()) == [3, 1, 9, 5]


def test_the_checkpoint_state_restores_the_same_pass():
    served = _served()
    served.finish_batch()
    state = served.state_dict()
    assert (state['pass_idx'], state['position']) == (0, 1)
    # Copies: the pass goes on after it is saved.
    for key in ('weight_codes', 'weight_table', 'order'):
        assert state[key].data_ptr() != getattr(served, key).data_ptr(), key
    assert state['order'].tolist() == ORDER
    restored = ServedPass(N, 1, WORLD)
    restored.batch_size = BATCH
    # As a checkpoint holds it: int64 order, float64 table.
    state = dict(
        state,
        order=state['order'].long(),
        weight_table=state['weight_table'].double(),
        pass_idx=torch.tensor(0),
        position=torch.tensor(1))
    restored.load_state_dict(state, RunPlan(N, WORLD * BATCH))
    assert restored.position == PassPosition(0, 1, 2)
    assert type(restored.pass_idx) is int
    assert type(restored.trained_batches) is int
    assert restored.order.dtype == torch.int32
    assert restored.weight_table.dtype == torch.float32
    assert restored.padded_order.tolist() == ORDER + ORDER[:1]
    assert restored.batch_indices().tolist() == [9, 5]
    assert torch.equal(
        restored.weights_of(torch.arange(N)),
        served.weights_of(torch.arange(N)))
    # The restored tables are its own.
    state['weight_codes'][:] = 7
    state['weight_table'][:] = 7
    assert torch.equal(
        restored.weights_of(torch.arange(N)),
        served.weights_of(torch.arange(N)))


def test_a_state_from_before_any_pass_restores_none():
    restored = _served()  # the pass it held is dropped
    restored.finish_batch()
    restored.load_state_dict(
        dict(ServedPass(N, 1, WORLD).state_dict()), RunPlan(N, WORLD * BATCH))
    assert restored.position == PassPosition(-1, 0, 0) and restored.finished
    assert restored.order is None and restored.padded_order is None
