"""InfoBatchSampler: soft-prunes each pass over the data from loss scores."""
import math
from typing import Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS

from .history import PassRecord, history_from_state, history_state
from .pass_layout import packed_size, set_bits, unpack_bits
from .pass_sampler import CONFIG_HINT, PassSampler
from .progress import Progress
from .prune_rule import validate_policy
from .pruning import decide_compact
from .sampler_state import check_layout, upgrade_state
from .target import Schedule, solve_pass_ratio, validate_target
from .target_profile import (Profile, max_bucket_ratio, prune_profile,
                             scale_buckets)

# The prune probability of the paper, where the config sets none.
DEFAULT_RATIO = 0.5


@DATA_SAMPLERS.register_module()
class InfoBatchSampler(PassSampler):
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

    The sampler owns the score table and decides each pass; how a decided
    pass is served (whole batches on every rank, rank shares, position,
    replay) is :class:`PassSampler`'s. Per sample it holds 9 bytes at most
    (see docs/design.md): the score (float32), a seen bit, a weight code
    (uint8) and the pass order (int32 below 2**31 samples).
    ``InfoBatchHook`` configures it once (:meth:`configure` with the
    layout, :meth:`set_schedule` with the run's passes), feeds it the
    scores and tells it when a batch was trained.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Whether to shuffle each pass. Defaults to True.
        seed (int, optional): Seed shared by all ranks. If None, a synced
            random seed is used. Defaults to None.
        ratio (float, optional): Prune probability r for the 'mean' and
            'random' policies, in [0, 1). None is ``DEFAULT_RATIO``, unless
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
        fixed = DEFAULT_RATIO if ratio is None else ratio
        validate_policy(policy, fixed, buckets)
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.target_saving = None if target_saving is None else \
            float(target_saving)
        self.max_ratio = float(max_ratio)
        # The fixed ratio; None when each pass solves its own.
        self.ratio = None if target_saving is not None else float(fixed)
        self.policy = policy
        self.prune_high = prune_high
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.rescale = rescale
        super().__init__(dataset, *get_dist_info())
        self.scores = torch.zeros(self.num_samples, dtype=torch.float32)
        # Which samples were scored, one bit each (see the seen property).
        self.seen_bits = torch.zeros(
            packed_size(self.num_samples), dtype=torch.uint8)
        # Set by set_schedule(): passes t < prune_stop may prune; the
        # run's passes, for target_saving (None without a budget).
        self.prune_stop = math.inf
        self.schedule: Optional[Schedule] = None
        # Full-data iterations the passes before the current one saved.
        self.saved_iters = 0.0
        # What the decision of the current pass found, until InfoBatchHook
        # records it in its history (None after a restore).
        self.decision: Optional[PassRecord] = None

    # -- set-up ----------------------------------------------------------
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
            self.schedule = Schedule(self.num_samples, self.global_batch,
                                     progress.budget_iters, self.drop_last,
                                     progress.offset, self.prune_stop)

    # -- the pass --------------------------------------------------------
    @property
    def prunes_now(self) -> bool:
        """Whether the current pass was allowed to prune (before annealing)."""
        return self.pass_idx < self.prune_stop

    def pass_saving(self) -> float:
        """Full-data iterations the current pass saves (its share of the
        budget, if the budget holds only part of it)."""
        if self.padded_order is None:
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
                'share of, which InfoBatchHook passes to set_schedule(). '
                f'Add the hook to the config:{CONFIG_HINT}')
        solved = solve_pass_ratio(self.target_saving, profile, self.schedule,
                                  self.pass_idx, self.saved_iters,
                                  self.max_ratio)
        return solved._asdict()

    def _decide_next_pass(self) -> None:
        # The pass that ends has saved what it saved.
        self.saved_iters += self.pass_saving()
        self._start_next_pass()
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
            decision.codes[refill] = 0  # weight 1
            buffer[kept:kept + refill.numel()] = refill
            kept += refill.numel()
            pruned -= refill.numel()
        self._hold_pass(buffer, kept, decision.codes, decision.table)
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

    def _record_of_restored_pass(self) -> PassRecord:
        """What is known of a decided, untrained pass from a checkpoint
        that does not hold its decision (older versions)."""
        kept = self.order.numel()
        return PassRecord(
            pass_idx=self.pass_idx,
            start_iter=-1,
            kept=kept,
            pruned=self.num_samples - kept,
            candidates=self.num_samples - kept,
            iters=self.pass_batches,
            threshold=math.nan,
            may_prune=self.prunes_now)

    @property
    def seen(self) -> torch.Tensor:
        """Which samples were ever scored (bool, N; a new tensor)."""
        return unpack_bits(self.seen_bits, self.num_samples)

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
    def state_dict(self) -> dict:
        """Plain tensors and ints, loadable with ``weights_only=True``:
        9 bytes per sample at most, as held."""
        return dict(
            self._pass_state(),
            seed=self.seed,
            scores=self.scores.clone(),
            seen_bits=self.seen_bits.clone(),
            saved_iters=self.saved_iters,
            decision=history_state([self.decision])
            if self._decision_pending else None)

    @property
    def _decision_pending(self) -> bool:
        """The current pass was decided, and InfoBatchHook has not yet
        recorded its decision (it does at the pass's first batch)."""
        return self.decision is not None and self.trained_batches == 0

    def load_state_dict(self, state: dict) -> None:
        """Restore a configured sampler; the checkpoint's seed wins."""
        assert self.configured, 'configure() the sampler before a restore'
        check_layout(state['layout'], self.layout())
        state = upgrade_state(state)
        self.seed = int(state['seed'])
        self._load_pass_state(state)
        self.scores = state['scores'].clone().float()
        self.seen_bits = state['seen_bits'].clone()
        # The decision's record is in InfoBatchHook's history, unless the
        # checkpoint came before the pass's first batch.
        self.decision = None
        pending = state.get('decision')
        if pending is not None:
            self.decision = history_from_state(pending)[0]
        elif self.order is not None and self.trained_batches == 0:
            self.decision = self._record_of_restored_pass()
        # Older checkpoints lack the saving before the pass: NaN, which
        # InfoBatchHook fills from its pass history.
        self.saved_iters = float(state.get('saved_iters', math.nan))
