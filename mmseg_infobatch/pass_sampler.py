"""PassSampler: serves one decided pass at a time, as whole batches on
every rank, and lands a resumed run on its saved pass and position.

What a pass holds is decided elsewhere (:class:`InfoBatchSampler` decides
it from the scores); this module holds how a decided pass is served: its
order padded in place to whole batches on every rank, the rank's
interleaved share, the loss weights as codes into a small table, the
batches trained so far, the replay that a resume draws, and the pass's
checkpoint state.
"""
from itertools import chain
from typing import Iterator, Optional, Sized

import torch
from torch.utils.data import Sampler

from .pass_layout import cycle_to, index_dtype, rank_share
from .progress import PassPosition, batches_per_pass
from .sampler_state import dataset_fingerprint

# What a config needs for InfoBatch, named by every error that finds a part
# of it missing.
CONFIG_HINT = """
    custom_imports = dict(
        imports=['mmseg_infobatch'], allow_failed_imports=False)
    train_dataloader = dict(sampler=dict(type='InfoBatchSampler', ratio=0.5))
    custom_hooks = [dict(type='InfoBatchHook')]
    model = dict(decode_head=dict(loss_decode=dict(
        type='InfoBatchLoss',
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0))))"""


class PassSampler(Sampler):
    """A finite sampler that serves one decided pass at a time.

    Every pass is whole batches on every rank, as mmseg's
    ``InfiniteSampler`` gives. ``__iter__`` starts the next pass when the
    current one was trained to its end, and otherwise iterates the current
    pass again from its start: mmengine's infinite iterator restarts its
    epoch count after a resume, so no pass number is taken from
    ``set_epoch``. No pass is decided before :meth:`configure`: a dataloader
    with worker processes draws indices for them as soon as the loop builds
    its iterator (in the main process, before the hook runs); that draw gets
    an empty pass, and the loop starts the next one.

    Subclasses decide each pass in ``_decide_next_pass`` and hand it over
    with :meth:`_hold_pass`.

    Args:
        dataset (Sized): The dataset.
        rank (int): This process's rank.
        world_size (int): The number of ranks.
    """

    def __init__(self, dataset: Sized, rank: int, world_size: int) -> None:
        self.dataset = dataset
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(dataset)
        if self.num_samples == 0:
            raise ValueError('InfoBatchSampler got an empty dataset: check '
                             'the data_root and ann_file of train_dataloader')
        # The layout, set once by configure(), before training.
        self.batch_size: Optional[int] = None
        self.drop_last = False
        self.fingerprint = 0
        # Iterations asked for before configure(): with worker processes,
        # the loop's iterator draws indices once, as soon as it is built.
        self._unconfigured_iters = 0
        # The current pass.
        self.pass_idx = -1
        self.trained_batches = 0  # batches of the pass trained so far
        # The pass as decided (order), and padded to whole batches on every
        # rank (padded_order): views of one buffer, padded in place.
        self.order: Optional[torch.Tensor] = None
        self.padded_order: Optional[torch.Tensor] = None
        self._pass_buffer: Optional[torch.Tensor] = None
        # Weight of sample i: weight_table[weight_codes[i]]; code 0 is 1.
        self.weight_codes = torch.zeros(self.num_samples, dtype=torch.uint8)
        self.weight_table = torch.ones(1, dtype=torch.float32)
        self._replay_batches: Optional[int] = None
        # Set by prepare_rest(): the next __iter__ serves the untrained
        # rest of the current pass.
        self._serve_rest = False

    # -- set-up ----------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self.batch_size is not None

    def configure(self, batch_size: int, drop_last: bool = False) -> None:
        """Set the layout that shapes a pass; called once by
        ``InfoBatchHook``, before the first pass and before a restore.

        Args:
            batch_size (int): Per-rank batch size of the train dataloader.
            drop_last (bool): Cut each pass down to whole batches instead of
                padding it up. Defaults to False.
        """
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError('InfoBatchSampler batch_size must be a positive '
                             f'int, but got {batch_size!r}')
        if self.num_samples < self.world_size * batch_size:
            raise ValueError(
                f'The train dataset has {self.num_samples} samples, fewer '
                f'than world size x batch size = {self.world_size} x '
                f'{batch_size}, so not even one full batch per rank exists. '
                'Lower train_dataloader.batch_size or use more data.')
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        self.fingerprint = dataset_fingerprint(self.dataset)

    @property
    def global_batch(self) -> int:
        """Samples one iteration takes over all ranks (world x batch; the
        batch counts as 1 until configured)."""
        return self.world_size * (self.batch_size or 1)

    @property
    def full_pass_batches(self) -> int:
        """Per-rank iterations of a full pass."""
        return batches_per_pass(self.num_samples, self.world_size,
                                self.batch_size or 1, self.drop_last)

    # -- mmengine sampler interface ------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Ignore the epoch: the pass number is the sampler's own, as
        mmengine's infinite iterator restarts its epoch count on resume."""

    def __iter__(self) -> Iterator[int]:
        if not self.configured:
            # With num_workers > 0 the dataloader's iterator draws indices
            # for its workers once, when the loop builds it, before
            # InfoBatchHook runs: that pass is empty, and the loop starts
            # the next, configured, one. A second means no hook configures
            # the sampler.
            self._unconfigured_iters += 1
            if self._unconfigured_iters > 1:
                raise RuntimeError(
                    'InfoBatchSampler has no InfoBatchHook, so it has no '
                    'scores to prune from. Add it to the config:'
                    f'{CONFIG_HINT}')
            return iter(())
        if self._replay_batches is not None:
            return self._replay()
        if self._serve_rest:
            self._serve_rest = False
            trained = self.trained_batches * self.batch_size
            return _ints(self.rank_indices()[trained:])
        if self.pass_idx < 0 or self.trained_batches >= self.pass_batches:
            self._decide_next_pass()
        elif self.trained_batches > 0:
            raise RuntimeError(
                'The train dataloader was restarted after '
                f'{self.trained_batches} of {self.pass_batches} batches of '
                f'InfoBatch pass {self.pass_idx}, outside the sampler\'s '
                'control. Use InfoBatchSampler only in train_dataloader, '
                'and do not iterate that dataloader elsewhere.')
        # else: the pass is decided but untrained; iterate it from its start.
        return _ints(self.rank_indices())

    def __len__(self) -> int:
        """Per-rank length of the current pass (a full pass before any)."""
        if self.padded_order is None:
            return self.full_pass_batches * (self.batch_size or 1)
        return self.padded_order.numel() // self.world_size

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
        return self.padded_order.numel() // self.global_batch

    def _decide_next_pass(self) -> None:
        """Decide the next pass, and hold it with :meth:`_hold_pass`."""
        raise NotImplementedError

    def _start_next_pass(self) -> None:
        """Count the next pass and drop the last: only one pass is held
        at a time."""
        self.pass_idx += 1
        self.trained_batches = 0
        self.order = self.padded_order = self._pass_buffer = None

    def _hold_pass(self, buffer: torch.Tensor, kept: int, codes: torch.Tensor,
                   table: torch.Tensor) -> None:
        """Hold the decided pass whose order is ``buffer[:kept]`` (the rest
        of the buffer is room for its padding), with every sample's weight
        as ``table[codes]``."""
        # Fresh weights every pass: nothing leaks into annealing passes.
        self.weight_codes, self.weight_table = codes, table
        self._set_order(buffer, kept)
        self._pad_pass()

    def _set_order(self, buffer: torch.Tensor, kept: int) -> None:
        """Hold the pass whose order is ``buffer[:kept]``; the rest of the
        buffer is room for its padding."""
        self._pass_buffer = buffer
        self.order = buffer[:kept]

    def _pad_pass(self) -> None:
        # Whole batches, padded up by repeating the head or cut down with
        # drop_last: a last batch of one image breaks BatchNorm, and every
        # rank must take the same number of steps.
        total = self.global_batch * batches_per_pass(
            self.order.numel(), self.world_size, self.batch_size or 1,
            self.drop_last)
        kept = self.order.numel()
        if total > self._pass_buffer.numel():
            # A restored pass: move to a buffer with room for its padding.
            buffer = torch.empty(
                kept + self.global_batch, dtype=self.order.dtype)
            buffer[:kept] = self.order
            self._set_order(buffer, kept)
        if total > kept:
            pad = total - kept
            # The padding repeats the head, after the order in its buffer.
            self._pass_buffer[kept:total] = cycle_to(self.order[:pad], pad)
        self.padded_order = self._pass_buffer[:total]

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

    @property
    def weights(self) -> torch.Tensor:
        """Every sample's loss weight in the current pass (float32, N; a
        new tensor, made from the codes)."""
        return self.weight_table[self.weight_codes.long()]

    def finish_batch(self) -> None:
        """Count the batch from :meth:`batch_indices` as trained."""
        self.trained_batches += 1

    def prepare_rest(self) -> None:
        """Make the next ``__iter__`` yield only the untrained rest of the
        current pass: nothing if it was trained to its end.

        mmengine resumes an epoch-based loop from an iteration checkpoint
        by running the saved epoch again from its start (the checkpoint
        stores the epoch in progress). Serving the rest of the saved pass
        in that epoch trains each batch once, as the uninterrupted run did.
        """
        assert self.padded_order is not None, 'no pass has started yet'
        self._serve_rest = True

    def prepare_replay(self, num_batches: int) -> None:
        """Make the next ``__iter__`` yield ``num_batches`` batches of
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
        self._replay_batches = int(num_batches)

    def _replay(self) -> Iterator[int]:
        filler = self._replay_batches * self.batch_size
        self._replay_batches = None
        if self.pass_idx < 0:
            self._decide_next_pass()
        share = self.rank_indices()
        return chain(_cycle(share, filler), _ints(share))

    # -- checkpoint ------------------------------------------------------
    def layout(self) -> dict:
        """What shapes a pass; a resume must not change any of it."""
        return dict(
            num_samples=self.num_samples,
            world_size=self.world_size,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            fingerprint=self.fingerprint)

    def _pass_state(self) -> dict:
        """The pass's part of the checkpoint: the layout, the pass, the
        batches of it trained and its order and weights."""
        return dict(
            layout=self.layout(),
            pass_idx=self.pass_idx,
            position=self.trained_batches,
            weight_codes=self.weight_codes.clone(),
            weight_table=self.weight_table.clone(),
            order=None if self.order is None else self.order.clone())

    def _load_pass_state(self, state: dict) -> None:
        """Restore the pass from :meth:`_pass_state` (layout checked)."""
        self.pass_idx = int(state['pass_idx'])
        self.trained_batches = int(state['position'])
        self.weight_codes = state['weight_codes'].clone()
        self.weight_table = state['weight_table'].clone().float()
        self.order = self.padded_order = self._pass_buffer = None
        order = state['order']
        if order is not None:
            self._set_order(
                order.to(index_dtype(self.num_samples)), order.numel())
            self._pad_pass()


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
