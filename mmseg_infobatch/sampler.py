"""InfoBatchSampler: soft-prunes each pass over the data from loss scores."""
import math
from itertools import chain
from typing import Iterator, Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .history import PassRecord
from .pass_layout import (cycle_to, index_dtype, packed_size, rank_share,
                          set_bits, unpack_bits)
from .progress import PassPosition, Progress, batches_per_pass
from .prune_rule import validate_policy
from .pruning import decide_compact
from .sampler_state import check_layout, dataset_fingerprint, upgrade_state
from .target import Schedule, solve_pass_ratio, validate_target
from .target_profile import (Profile, max_bucket_ratio, prune_profile,
                             scale_buckets)

# What a config needs for InfoBatch, named by every error that finds a part
# of it missing.
CONFIG_HINT = """
    custom_imports = dict(imports=['mmseg_infobatch'], allow_failed_imports=False)
    train_dataloader = dict(sampler=dict(type='InfoBatchSampler', ratio=0.5))
    custom_hooks = [dict(type='InfoBatchHook')]
    model = dict(decode_head=dict(loss_decode=dict(
        type='InfoBatchLoss', loss=dict(type='CrossEntropyLoss', loss_weight=1.0))))"""


@DATA_SAMPLERS.register_module()
class InfoBatchSampler(Sampler):
    """A finite, per-pass sampler that prunes well-learned samples.

    Each pass over the dataset is decided once, at its start, from the seed,
    the pass number and the score table: a sample scored below the mean is
    dropped with probability ``ratio``, and the survivors below the mean get
    loss weight ``1 / (1 - ratio)``. Samples never scored are never pruned,
    so the first pass is full. Passes ``t >= prune_stop`` are full with all
    weights 1 (annealing).

    With ``target_saving`` instead of ``ratio``, each pruning pass sets its
    own ratio r_t at its start, from the scores and the schedule, so that
    the run saves that share of its full-data iterations (see
    :mod:`mmseg_infobatch.target`); the rule within a pass is the same.

    The sampler owns the pass: its number, its order and weights, how many
    of its batches were trained, the score table and their checkpoint state.
    Per sample it holds 9 bytes at most (see docs/design.md): the score
    (float32), a seen bit, a weight code (uint8, into a table of the pass's
    few distinct weights) and the pass order (int32 below 2**31 samples),
    padded in place; each rank's share is a view of it.
    ``InfoBatchHook`` configures it once (:meth:`configure` with the
    layout, :meth:`set_schedule` with the run's passes), feeds it the
    scores and tells it when a batch was trained. No pass is decided
    before it is configured. Every pass is whole
    batches on every rank, as mmseg's ``InfiniteSampler`` gives.

    ``__iter__`` starts the next pass when the current one was trained to
    its end, and otherwise iterates the current pass again from its start:
    mmengine's infinite iterator restarts its epoch count after a resume, so
    no pass number is taken from ``set_epoch``.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Whether to shuffle each pass. Defaults to True.
        seed (int, optional): Seed shared by all ranks. If None, a synced
            random seed is used. Defaults to None.
        ratio (float, optional): Prune probability r for the 'mean' and
            'random' policies, in [0, 1). None is 0.5, unless
            ``target_saving`` is given. Defaults to None.
        policy (str): 'mean' (paper: prune below the mean score),
            'quantile' (buckets of cut points, each with its own ratio) or
            'random' (Random*: drop any sample with probability r).
            Defaults to 'mean'.
        prune_high (bool): Prune high-score samples instead of low ones
            (paper Tab. 4). Defaults to False.
        buckets (Sequence[tuple], optional): For ``policy='quantile'``,
            increasing ``(quantile, ratio)`` pairs, e.g.
            ``[(0.3, 0.8), (0.7, 0.4)]``: the lowest 30% of scores are pruned
            with probability 0.8, the next 40% with 0.4. Defaults to None.
        rescale (bool): Give survivors weight ``1 / (1 - r)``. False is the
            paper's "no rescaling" ablation. Defaults to True.
        target_saving (float, optional): Instead of ``ratio``: the share of
            the full-data iterations the run should save, in (0, 1). Each
            pruning pass solves its ratio r_t for it; with
            ``policy='quantile'`` every bucket ratio is scaled so that the
            largest is r_t. Defaults to None.
        max_ratio (float): The largest r_t ``target_saving`` may set, in
            (0, 1): the weights ``1 / (1 - r)`` grow fast above 0.8.
            Defaults to 0.8.
    """

    def __init__(self,
                 dataset: Sized,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 ratio: Optional[float] = None,
                 policy: str = 'mean',
                 prune_high: bool = False,
                 buckets: Optional[Sequence[Sequence[float]]] = None,
                 rescale: bool = True,
                 target_saving: Optional[float] = None,
                 max_ratio: float = 0.8) -> None:
        # ratio None is the default, so that a ratio given next to
        # target_saving is told apart from the default.
        validate_target(target_saving, max_ratio, ratio, policy, buckets)
        validate_policy(policy, 0.5 if ratio is None else ratio, buckets)
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.target_saving = None if target_saving is None else \
            float(target_saving)
        self.max_ratio = float(max_ratio)
        # The fixed ratio; None when each pass solves its own.
        self.ratio = None if target_saving is not None else \
            0.5 if ratio is None else float(ratio)
        self.policy = policy
        self.prune_high = prune_high
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.rescale = rescale
        self.rank, self.world_size = get_dist_info()

        self.num_samples = len(dataset)
        if self.num_samples == 0:
            raise ValueError('InfoBatchSampler got an empty dataset: check '
                             'the data_root and ann_file of train_dataloader')
        self.scores = torch.zeros(self.num_samples, dtype=torch.float32)
        # Which samples were scored, one bit each (see the seen property).
        self.seen_bits = torch.zeros(
            packed_size(self.num_samples), dtype=torch.uint8)
        # Weight of sample i: weight_table[weight_codes[i]]; code 0 is 1.
        self.weight_codes = torch.zeros(self.num_samples, dtype=torch.uint8)
        self.weight_table = torch.ones(1, dtype=torch.float32)
        # The layout, set once by configure(), before training.
        self.batch_size: Optional[int] = None
        self.drop_last = False
        self.fingerprint = 0
        # Set by set_schedule(): passes t < prune_stop may prune; the
        # run's passes, for target_saving (None without a budget).
        self.prune_stop = math.inf
        self.schedule: Optional[Schedule] = None
        # Full-data iterations the passes before the current one saved.
        self.saved_iters = 0.0
        # Iterations asked for before configure(): worker processes
        # prefetch as soon as the loop builds its iterator, once.
        self._unconfigured_iters = 0
        # The current pass.
        self.pass_idx = -1
        self.trained_batches = 0  # batches of the pass trained so far
        # The pass as decided (order), and padded to whole batches on every
        # rank (pass_indices): views of one buffer, padded in place.
        self.order: Optional[torch.Tensor] = None
        self.pass_indices: Optional[torch.Tensor] = None
        self._pass_buffer: Optional[torch.Tensor] = None
        # What the decision of the current pass found, until InfoBatchHook
        # records it in its history (None after a restore).
        self.decision: Optional[PassRecord] = None
        self._replay_batches: Optional[int] = None

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

    def set_schedule(self,
                     progress: Optional[Progress] = None,
                     prune_stop: float = math.inf) -> None:
        """Set the run's passes, after :meth:`configure`; called once by
        ``InfoBatchHook``.

        Args:
            progress (Progress, optional): The run's full-data budget,
                which ``target_saving`` is a share of, and offset. Defaults
                to None (unknown).
            prune_stop (float): Passes ``t < prune_stop`` may prune.
                Defaults to inf (no annealing).
        """
        self.prune_stop = float(prune_stop)
        # No budget (or an empty one): target_saving has nothing to be a
        # share of, and says so when it would solve a ratio.
        self.schedule = None
        if progress is not None and progress.budget_iters:
            self.schedule = Schedule(
                self.num_samples, self.global_batch, progress.budget_iters,
                self.drop_last, progress.offset, self.prune_stop)

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
            # Worker processes prefetch once, before InfoBatchHook runs:
            # that pass is empty, and the loop starts the next, configured,
            # one. A second means no hook configures the sampler.
            self._unconfigured_iters += 1
            if self._unconfigured_iters > 1:
                raise RuntimeError(
                    'InfoBatchSampler has no InfoBatchHook, so it has no '
                    'scores to prune from. Add it to the config:'
                    f'{CONFIG_HINT}')
            return iter(())
        if self._replay_batches is not None:
            return self._replay()
        if self.pass_idx < 0 or self.trained_batches >= self.pass_batches:
            self._decide_next_pass()
        elif self.trained_batches > 0:
            raise RuntimeError(
                'The train dataloader was restarted after '
                f'{self.trained_batches} of {self.pass_batches} batches of InfoBatch pass '
                f'{self.pass_idx}, outside the sampler\'s control. Use '
                'InfoBatchSampler only in train_dataloader, and do not '
                'iterate that dataloader elsewhere.')
        # else: the pass is decided but untrained; iterate it from its start.
        return _ints(self.rank_indices())

    def __len__(self) -> int:
        """Per-rank length of the current pass (a full pass before any)."""
        if self.pass_indices is None:
            return self.full_pass_batches * (self.batch_size or 1)
        return self.pass_indices.numel() // self.world_size

    # -- the pass --------------------------------------------------------
    @property
    def prunes_now(self) -> bool:
        """Whether the current pass was allowed to prune (before annealing)."""
        return self.pass_idx < self.prune_stop

    @property
    def position(self) -> PassPosition:
        """The pass, its batches trained so far and its length."""
        return PassPosition(self.pass_idx, self.trained_batches,
                            self.pass_batches)

    @property
    def pass_batches(self) -> int:
        """Per-rank iterations of the current pass."""
        if self.pass_indices is None:
            return 0
        return self.pass_indices.numel() // self.global_batch

    def pass_saving(self) -> float:
        """Full-data iterations the current pass saves (its share of the
        budget, if the budget holds only part of it)."""
        if self.pass_indices is None:
            return 0.0
        share = 1.0 if self.schedule is None else \
            self.schedule.pass_share(self.pass_idx)
        return share * (self.full_pass_batches - self.pass_batches)

    def profile(self) -> Profile:
        """The candidates a pass decided from the scores now would have
        (see :class:`mmseg_infobatch.target_profile.Profile`)."""
        return prune_profile(self.scores, self.seen_bits, self.policy,
                             self.prune_high, self.buckets)

    def _pass_ratio(self) -> dict:
        """r_t of the pass being decided: the fixed ratio (for
        'quantile', the largest bucket ratio), or the one solved for
        ``target_saving``, with whether ``max_ratio`` bound and the saving
        the run is then expected to reach."""
        if self.target_saving is None:
            ratio = max_bucket_ratio(self.buckets) \
                if self.policy == 'quantile' else self.ratio
            return dict(ratio=ratio, capped=False, expected=math.nan)
        if not self.prunes_now:
            return dict(ratio=0.0, capped=False, expected=math.nan)
        profile = self.profile()
        if profile.candidates == 0:
            # Nothing scored yet (pass 0): no ratio to solve.
            return dict(ratio=0.0, capped=False, expected=math.nan)
        if self.schedule is None:
            raise ValueError(
                'InfoBatchSampler target_saving needs the schedule it is a '
                'share of, which InfoBatchHook passes to configure(). Add '
                f'the hook to the config:{CONFIG_HINT}')
        solved = solve_pass_ratio(self.target_saving, profile,
                                  self.schedule, self.pass_idx,
                                  self.saved_iters, self.max_ratio)
        return solved._asdict()

    def _decide_next_pass(self) -> None:
        # The pass that ends has saved what it saved.
        self.saved_iters += self.pass_saving()
        self.pass_idx += 1
        self.trained_batches = 0
        # Only one pass is held at a time: drop the last before deciding.
        self.order = self.pass_indices = self._pass_buffer = None
        solved = self._pass_ratio()
        buckets = self.buckets
        if self.target_saving is not None and self.policy == 'quantile':
            buckets = scale_buckets(self.buckets, solved['ratio'])
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.pass_idx)
        decision = decide_compact(
            self.scores,
            self.seen_bits,
            solved['ratio'],
            generator,
            prune=self.prunes_now,
            policy=self.policy,
            prune_high=self.prune_high,
            buckets=buckets,
            rescale=self.rescale,
            shuffle=self.shuffle,
            spare=self.global_batch)
        # Fresh weights every pass: nothing leaks into annealing passes.
        self.weight_codes = decision.codes
        self.weight_table = decision.table
        buffer, kept = decision.buffer, decision.num_kept
        pruned = decision.num_pruned
        short = self.global_batch - kept
        if short > 0:
            # So much was pruned that not one batch per rank is left (the
            # 'random' policy or a quantile bucket at q=1 can drop all):
            # train a few pruned samples after all, at weight 1, rather
            # than an empty pass, which would end training.
            dropped = torch.ones(self.num_samples, dtype=torch.bool)
            dropped[buffer[:kept]] = False
            dropped = dropped.nonzero().squeeze(1)
            refill = dropped[torch.randperm(
                dropped.numel(), generator=generator)[:short]]
            self.weight_codes[refill] = 0  # weight 1
            buffer[kept:kept + refill.numel()] = refill
            kept += refill.numel()
            pruned -= refill.numel()
        self._set_order(buffer, kept)
        self._pad_pass()
        # r_t is 0 where no sample was a candidate.
        self.decision = PassRecord(
            pass_idx=self.pass_idx,
            start_iter=-1,
            kept=kept,
            pruned=pruned,
            candidates=decision.num_candidates,
            iters=self.pass_batches,
            threshold=float(decision.threshold),
            may_prune=self.prunes_now,
            ratio=float(solved['ratio']) if decision.num_candidates else 0.0,
            capped=bool(solved['capped']),
            expected=float(solved['expected']))

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
            buffer = torch.empty(kept + self.global_batch,
                                 dtype=self.order.dtype)
            buffer[:kept] = self.order
            self._set_order(buffer, kept)
        if total > kept:
            pad = total - kept
            # The padding repeats the head, after the order in its buffer.
            self._pass_buffer[kept:total] = cycle_to(self.order[:pad], pad)
        self.pass_indices = self._pass_buffer[:total]

    def rank_indices(self) -> torch.Tensor:
        """This rank's indices of the current pass, in training order."""
        assert self.pass_indices is not None, 'no pass has started yet'
        share = rank_share(self.pass_indices, self.rank, self.world_size)
        assert share.numel() * self.world_size == self.pass_indices.numel()
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

    @property
    def seen(self) -> torch.Tensor:
        """Which samples were ever scored (bool, N; a new tensor)."""
        return unpack_bits(self.seen_bits, self.num_samples)

    def finish_batch(self) -> None:
        """Count the batch from :meth:`batch_indices` as trained."""
        self.trained_batches += 1

    def skip_rest_of_pass(self) -> None:
        """Count the current pass as trained to its end (an epoch-based
        loop resumed mid-epoch starts the next epoch)."""
        self.trained_batches = self.pass_batches

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

    def update_scores(self, indices: torch.Tensor,
                      scores: torch.Tensor) -> int:
        """Write trained samples' scores; skip non-finite ones.

        Returns:
            int: How many non-finite scores were skipped.
        """
        # numpy views of the tables: on a batch's few values numpy's
        # per-call overhead is far below that of a torch op.
        index, value = indices.numpy(), scores.numpy()
        finite = np.isfinite(value)
        if not finite.all():
            index, value = index[finite], value[finite]
        self.scores.numpy()[index] = value
        set_bits(self.seen_bits.numpy(), index)
        return int(finite.size - index.size)

    # -- checkpoint ------------------------------------------------------
    def layout(self) -> dict:
        """What shapes a pass; a resume must not change any of it."""
        return dict(
            num_samples=self.num_samples,
            world_size=self.world_size,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            fingerprint=self.fingerprint)

    def state_dict(self) -> dict:
        """Plain tensors and ints, loadable with ``weights_only=True``:
        9 bytes per sample at most, as held."""
        return dict(
            layout=self.layout(),
            seed=self.seed,
            pass_idx=self.pass_idx,
            position=self.trained_batches,
            scores=self.scores.clone(),
            seen_bits=self.seen_bits.clone(),
            weight_codes=self.weight_codes.clone(),
            weight_table=self.weight_table.clone(),
            order=None if self.order is None else self.order.clone(),
            saved_iters=self.saved_iters)

    def load_state_dict(self, state: dict) -> None:
        """Restore a configured sampler; the checkpoint's seed wins."""
        assert self.configured, 'configure() the sampler before a restore'
        check_layout(state['layout'], self.layout())
        state = upgrade_state(state)
        self.seed = int(state['seed'])
        self.pass_idx = int(state['pass_idx'])
        self.trained_batches = int(state['position'])
        self.scores = state['scores'].clone().float()
        self.seen_bits = state['seen_bits'].clone()
        self.weight_codes = state['weight_codes'].clone()
        self.weight_table = state['weight_table'].clone().float()
        self.order = self.pass_indices = self._pass_buffer = None
        order = state['order']
        # The decision's record is in InfoBatchHook's history.
        self.decision = None
        # Older checkpoints lack the saving before the pass: NaN, which
        # InfoBatchHook fills from its pass history.
        self.saved_iters = float(state.get('saved_iters', math.nan))
        if order is not None:
            self._set_order(order.to(index_dtype(self.num_samples)),
                            order.numel())
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
