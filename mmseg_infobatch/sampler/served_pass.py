"""ServedPass: one decided pass, served as whole batches on every rank.

What a pass holds is decided elsewhere (:class:`InfoBatchSampler` decides
it from the scores and holds a ``ServedPass``); this module holds how a
decided pass is served: its order padded in place to whole batches on every
rank, the rank's interleaved share, the loss weights as codes into a small
table, the batches trained so far, the replay and the rest that a resume
draws, and the pass's checkpoint state.
"""
from itertools import chain
from typing import Iterator, Optional

import torch

from .layout import cycle_to, index_dtype, rank_share
from .run_plan import PassPosition, RunPlan


class ServedPass:
    """The current pass of one rank.

    Every pass is whole batches on every rank, as mmseg's
    ``InfiniteSampler`` gives: padded up by repeating its head, or cut
    down with ``drop_last`` (a last batch of one image breaks BatchNorm,
    and every rank must take the same number of steps).

    Args:
        num_samples (int): Samples in the dataset.
        rank (int): This process's rank.
        world_size (int): The number of ranks.
    """

    def __init__(self, num_samples: int, rank: int, world_size: int) -> None:
        self.num_samples = num_samples
        self.rank, self.world_size = rank, world_size
        # Per-rank batch size, set once by the sampler's configure().
        self.batch_size: Optional[int] = None
        self.pass_idx = -1
        self.trained_batches = 0  # batches of the pass trained so far
        # The pass as decided (order), and padded to whole batches on every
        # rank (padded_order): views of one buffer, padded in place.
        self.order: Optional[torch.Tensor] = None
        self.padded_order: Optional[torch.Tensor] = None
        self._buffer: Optional[torch.Tensor] = None
        # Weight of sample i: weight_table[weight_codes[i]]; code 0 is 1.
        self.weight_codes = torch.zeros(num_samples, dtype=torch.uint8)
        self.weight_table = torch.ones(1, dtype=torch.float32)
        # Set by prepare_replay() and prepare_rest(), for the next
        # iteration over the pass.
        self.replay_batches: Optional[int] = None
        self.rest_pending = False

    # -- the pass --------------------------------------------------------
    @property
    def position(self) -> PassPosition:
        """The pass, its batches trained so far and its length."""
        return PassPosition(self.pass_idx, self.trained_batches,
                            self.pass_batches)

    @property
    def pass_batches(self) -> int:
        """Per-rank iterations of the current pass."""
        if self.padded_order is None:
            return 0
        return self.padded_order.numel() // (self.world_size * self.batch_size)

    @property
    def finished(self) -> bool:
        """No pass yet, or the current one was trained to its end."""
        return self.pass_idx < 0 or self.trained_batches >= self.pass_batches

    def start_next(self) -> None:
        """Count the next pass and drop the last: only one pass is held
        at a time."""
        self.pass_idx += 1
        self.trained_batches = 0
        self.order = self.padded_order = self._buffer = None

    def hold(self, buffer: torch.Tensor, kept: int, codes: torch.Tensor,
             table: torch.Tensor, plan: RunPlan) -> None:
        """Hold the decided pass whose order is ``buffer[:kept]`` (the rest
        of the buffer is room for its padding), with every sample's weight
        as ``table[codes]``, cut into batches as ``plan`` cuts a pass."""
        # Fresh weights every pass: nothing leaks into annealing passes.
        self.weight_codes, self.weight_table = codes, table
        self._set_order(buffer, kept)
        self._pad(plan)

    def _set_order(self, buffer: torch.Tensor, kept: int) -> None:
        self._buffer = buffer
        self.order = buffer[:kept]

    def _pad(self, plan: RunPlan) -> None:
        total = plan.global_batch * plan.pass_iters(self.order.numel())
        kept = self.order.numel()
        if total > self._buffer.numel():
            # A restored pass: move to a buffer with room for its padding.
            buffer = torch.empty(
                kept + plan.global_batch, dtype=self.order.dtype)
            buffer[:kept] = self.order
            self._set_order(buffer, kept)
        if total > kept:
            pad = total - kept
            # The padding repeats the head, after the order in its buffer.
            self._buffer[kept:total] = cycle_to(self.order[:pad], pad)
        self.padded_order = self._buffer[:total]

    def rank_indices(self) -> torch.Tensor:
        """This rank's indices of the current pass, in training order."""
        assert self.padded_order is not None, 'no pass has started yet'
        share = rank_share(self.padded_order, self.rank, self.world_size)
        assert share.numel() * self.world_size == self.padded_order.numel()
        return share

    def batch_indices(self) -> torch.Tensor:
        """Sample indices of this rank's next batch to train (a copy: a
        view would keep the pass's buffer alive into the next pass)."""
        start = self.trained_batches * self.batch_size
        return self.rank_indices()[start:start + self.batch_size].clone()

    def weights_of(self, indices: torch.Tensor) -> torch.Tensor:
        """The current pass's loss weights of ``indices`` (float32)."""
        return self.weight_table[self.weight_codes[indices].long()]

    def finish_batch(self) -> None:
        """Count the batch from :meth:`batch_indices` as trained."""
        self.trained_batches += 1

    # -- what an iteration over the pass yields --------------------------
    def from_start(self) -> Iterator[int]:
        """This rank's share of the pass, from its start."""
        return _ints(self.rank_indices())

    def rest(self) -> Iterator[int]:
        """The untrained rest of this rank's share (once; see
        :meth:`prepare_rest`)."""
        self.rest_pending = False
        trained = self.trained_batches * self.batch_size
        return _ints(self.rank_indices()[trained:])

    def replay(self) -> Iterator[int]:
        """Filler batches, then the pass from its start (once; see
        :meth:`prepare_replay`)."""
        filler = self.replay_batches * self.batch_size
        self.replay_batches = None
        share = self.rank_indices()
        return chain(_cycle(share, filler), _ints(share))

    def prepare_rest(self) -> None:
        """Make the next iteration yield only the untrained rest of the
        current pass: nothing if it was trained to its end.

        mmengine resumes an epoch-based loop from an iteration checkpoint
        by running the saved epoch again from its start (the checkpoint
        stores the epoch in progress). Serving the rest of the saved pass
        in that epoch trains each batch once, as the uninterrupted run did.
        """
        assert self.padded_order is not None, 'no pass has started yet'
        self.rest_pending = True

    def prepare_replay(self, num_batches: int) -> None:
        """Make the next iteration yield ``num_batches`` batches of
        filler, then the current pass from its start.

        mmengine resumes an iteration-based loop by drawing every batch
        already trained from a fresh iterator. With filler first, that
        advance lands on the saved pass at its saved position, instead of
        deciding the past passes again from today's scores.
        """
        if num_batches < 0:
            raise ValueError(
                f'cannot replay {num_batches} batches: the checkpoint\'s '
                'iteration is earlier than its InfoBatch pass position')
        self.replay_batches = int(num_batches)

    # -- checkpoint ------------------------------------------------------
    def state_dict(self) -> dict:
        """The pass, the batches of it trained and its order and weights."""
        return dict(
            pass_idx=self.pass_idx,
            position=self.trained_batches,
            weight_codes=self.weight_codes.clone(),
            weight_table=self.weight_table.clone(),
            order=None if self.order is None else self.order.clone())

    def load_state_dict(self, state: dict, plan: RunPlan) -> None:
        """Restore from :meth:`state_dict` (the layout checked), padding
        the pass as ``plan`` cuts it."""
        self.pass_idx = int(state['pass_idx'])
        self.trained_batches = int(state['position'])
        self.weight_codes = state['weight_codes'].clone()
        self.weight_table = state['weight_table'].clone().float()
        self.order = self.padded_order = self._buffer = None
        order = state['order']
        if order is not None:
            self._set_order(
                order.to(index_dtype(self.num_samples)), order.numel())
            self._pad(plan)


def _ints(indices: torch.Tensor, chunk: int = 4096) -> Iterator[int]:
    """The indices as Python ints, a few thousand at a time: a whole
    rank share as a Python list costs 36 bytes per entry."""
    for start in range(0, indices.numel(), chunk):
        yield from indices[start:start + chunk].tolist()


def _cycle(indices: torch.Tensor, total: int) -> Iterator[int]:
    """:func:`cycle_to` as Python ints, without the repeated copy."""
    repeats, rest = divmod(total, indices.numel())
    for _ in range(repeats):
        yield from _ints(indices)
    yield from _ints(indices[:rest])
