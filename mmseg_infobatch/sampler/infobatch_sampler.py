"""InfoBatchSampler: soft-prunes each pass over the data from loss scores."""
import math
from dataclasses import replace
from typing import Iterator, Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .decision import decide_pass
from .history import PassRecord, history_from_state, history_state
from .layout import packed_size, set_bits, unpack_bits
from .prune_rule import (Profile, PruneRule, max_bucket_ratio, scale_buckets,
                         validate_policy)
from .run_plan import PassPosition, RunPlan, batches_per_pass
from .served_pass import ServedPass
from .state import check_layout, dataset_fingerprint, upgrade_state
from .target import PassRatio, solve_pass_ratio, validate_target

# The prune probability of the paper, where the config sets none.
DEFAULT_RATIO = 0.5
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

    The sampler owns the score table, the run's :class:`RunPlan` and the
    pass it serves (a :class:`ServedPass`: whole batches on every rank,
    rank shares, position, replay), and decides each pass with the one
    :class:`PruneRule`. Per sample it holds 9 bytes at most (see
    docs/design.md): the score (float32), a seen bit, a weight code (uint8)
    and the pass order (int32 below 2**31 samples). ``InfoBatchHook``
    configures it once (:meth:`configure` with the layout,
    :meth:`set_plan` with the run's budget), feeds it the scores and tells
    it when a batch was trained.

    No pass is decided before :meth:`configure`: a dataloader with worker
    processes draws indices for them as soon as the loop builds its
    iterator (in the main process, before the hook runs); that draw gets
    an empty pass, and the loop starts the next one. The pass number is
    the sampler's own, not ``set_epoch``'s: mmengine's infinite iterator
    restarts its epoch count after a resume.

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
        self.num_samples = len(dataset)
        if self.num_samples == 0:
            raise ValueError('InfoBatchSampler got an empty dataset: check '
                             'the data_root and ann_file of train_dataloader')
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
        rank, world_size = get_dist_info()
        self.served = ServedPass(self.num_samples, rank, world_size)
        self.scores = torch.zeros(self.num_samples, dtype=torch.float32)
        # Which samples were scored, one bit each (see the seen property).
        self.seen_bits = torch.zeros(
            packed_size(self.num_samples), dtype=torch.uint8)
        # The layout, set once by configure(), before training; the run's
        # passes, made by configure() and set_plan().
        self.fingerprint = 0
        self.plan: Optional[RunPlan] = None
        # Iterations asked for before configure(): with worker processes,
        # the loop's iterator draws indices once, as soon as it is built.
        self._unconfigured_iters = 0
        # Full-data iterations the passes before the current one saved.
        self.saved_iters = 0.0
        # What the decision of the current pass found, until InfoBatchHook
        # records it in its history (None after a restore), and the
        # profile it was decided with.
        self.decision: Optional[PassRecord] = None
        self._profile: Optional[Profile] = None

    # -- set-up ----------------------------------------------------------
    @property
    def configured(self) -> bool:
        return self.plan is not None

    def configure(self, batch_size: int, drop_last: bool = False) -> None:
        """Set the layout that shapes a pass; called once by
        ``InfoBatchHook``, before the first pass and before a restore.

        Args:
            batch_size (int): Per-rank batch size of the train dataloader.
            drop_last (bool): Cut each pass down to whole batches instead of
                padding it up. Defaults to False.
        """
        if isinstance(
                batch_size,
                bool) or not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError('InfoBatchSampler batch_size must be a positive '
                             f'int, but got {batch_size!r}')
        if self.num_samples < self.world_size * batch_size:
            raise ValueError(
                f'The train dataset has {self.num_samples} samples, fewer '
                f'than world size x batch size = {self.world_size} x '
                f'{batch_size}, so not even one full batch per rank exists. '
                'Lower train_dataloader.batch_size or use more data.')
        self.served.batch_size = batch_size
        self.plan = RunPlan(
            self.num_samples,
            self.world_size * batch_size,
            drop_last=bool(drop_last))
        self.fingerprint = dataset_fingerprint(self.dataset)

    def set_plan(self,
                 budget_iters: int,
                 offset: int = 0,
                 delta: Optional[float] = None) -> None:
        """Give the run's passes, after :meth:`configure` and before a
        restore; called once by ``InfoBatchHook``.

        Args:
            budget_iters (int): The run's full-data iterations, which
                ``target_saving`` is a share of (0: unknown).
            offset (int): Iterations run before the run had InfoBatch state
                (the checkpoint's, on a resume). Defaults to 0.
            delta (float, optional): Passes ``t < delta * C`` may prune; None
                lets every pass prune. Defaults to None.
        """
        assert self.configured, 'configure() the sampler before set_plan()'
        self.plan = replace(
            self.plan, budget_iters=budget_iters, offset=offset, delta=delta)

    # -- the layout, as the served pass and the plan hold it ------------
    @property
    def rank(self) -> int:
        return self.served.rank

    @property
    def world_size(self) -> int:
        return self.served.world_size

    @property
    def batch_size(self) -> Optional[int]:
        """Per-rank batch size (None until configured)."""
        return self.served.batch_size

    @property
    def drop_last(self) -> bool:
        return self.configured and self.plan.drop_last

    @property
    def global_batch(self) -> int:
        """Samples one iteration takes over all ranks (world x batch; the
        batch counts as 1 until configured)."""
        return self.world_size * (self.batch_size or 1)

    @property
    def full_pass_batches(self) -> int:
        """Per-rank iterations of a full pass (the plan's, once
        configured; at batch size 1 before)."""
        if self.configured:
            return self.plan.full_pass_batches
        return batches_per_pass(self.num_samples, self.world_size, 1)

    @property
    def prune_stop(self) -> float:
        """Passes ``t < prune_stop`` may prune (the plan's)."""
        return self.plan.prune_stop if self.configured else math.inf

    # -- the pass, as the served pass holds it --------------------------
    @property
    def pass_idx(self) -> int:
        return self.served.pass_idx

    @property
    def trained_batches(self) -> int:
        return self.served.trained_batches

    @property
    def pass_batches(self) -> int:
        return self.served.pass_batches

    @property
    def position(self) -> PassPosition:
        return self.served.position

    @property
    def order(self) -> Optional[torch.Tensor]:
        return self.served.order

    @property
    def padded_order(self) -> Optional[torch.Tensor]:
        return self.served.padded_order

    def batch_indices(self) -> torch.Tensor:
        return self.served.batch_indices()

    def weights_of(self, indices: torch.Tensor) -> torch.Tensor:
        return self.served.weights_of(indices)

    def finish_batch(self) -> None:
        self.served.finish_batch()

    def prepare_rest(self) -> None:
        self.served.prepare_rest()

    def prepare_replay(self, num_batches: int) -> None:
        self.served.prepare_replay(num_batches)

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
        served = self.served
        if served.replay_batches is not None:
            if served.pass_idx < 0:
                self._decide_next_pass()
            return served.replay()
        if served.rest_pending:
            return served.rest()
        if served.finished:
            self._decide_next_pass()
        elif served.trained_batches > 0:
            raise RuntimeError(
                'The train dataloader was restarted after '
                f'{served.trained_batches} of {served.pass_batches} batches '
                f'of InfoBatch pass {served.pass_idx}, outside the '
                'sampler\'s control. Use InfoBatchSampler only in '
                'train_dataloader, and do not iterate that dataloader '
                'elsewhere.')
        # else: the pass is decided but untrained; iterate it from its start.
        return served.from_start()

    def __len__(self) -> int:
        """Per-rank length of the current pass (a full pass before any)."""
        if self.padded_order is None:
            return self.full_pass_batches * (self.batch_size or 1)
        return self.padded_order.numel() // self.world_size

    # -- the decision ----------------------------------------------------
    @property
    def prunes_now(self) -> bool:
        """Whether the current pass was allowed to prune (before annealing)."""
        return self.pass_idx < self.prune_stop

    def pass_saving(self) -> float:
        """Full-data iterations the current pass saves (its share of the
        budget, if the budget holds only part of it)."""
        if self.padded_order is None:
            return 0.0
        return self.plan.pass_saving(self.pass_idx, self.pass_batches)

    def profile(self) -> Profile:
        """The candidates of the current pass as decided (see
        :class:`Profile`); from the scores now for a restored pass."""
        if self._profile is None:
            rule = PruneRule(self.scores, self.seen_bits, self.policy,
                             self.prune_high, self.buckets)
            self._profile = rule.profile()
        return self._profile

    def _pass_ratio(self, profile: Optional[Profile]) -> PassRatio:
        """r_t of the pass being decided: the fixed ratio (for
        'quantile', the largest bucket ratio), or the one solved for
        ``target_saving`` from the pass's ``profile`` (None where it
        cannot prune), with whether ``max_ratio`` bound and the saving the
        run is then expected to reach."""
        if self.target_saving is None:
            ratio = max_bucket_ratio(self.buckets) \
                if self.policy == 'quantile' else self.ratio
            return PassRatio(ratio, False, math.nan)
        if profile is None or profile.candidates == 0:
            # Annealing, or nothing scored yet (pass 0): no ratio to solve.
            return PassRatio(0.0, False, math.nan)
        if not self.plan.budget_iters:
            raise ValueError(
                'InfoBatchSampler target_saving needs the run\'s budget it '
                'is a share of, which InfoBatchHook passes to set_plan(). '
                f'Add the hook to the config:{CONFIG_HINT}')
        return solve_pass_ratio(self.target_saving, profile, self.plan,
                                self.pass_idx, self.saved_iters,
                                self.max_ratio)

    def _decide_next_pass(self) -> None:
        # The pass that ends has saved what it saved.
        self.saved_iters += self.pass_saving()
        self.served.start_next()
        # One look at the score table: the rule gives the solver its
        # profile and the decision its candidates.
        rule = None
        self._profile = None
        if self.prunes_now:
            rule = PruneRule(self.scores, self.seen_bits, self.policy,
                             self.prune_high, self.buckets)
            self._profile = rule.profile()
        solved = self._pass_ratio(self._profile)
        buckets = self.buckets
        if self.target_saving is not None and self.policy == 'quantile':
            buckets = scale_buckets(self.buckets, solved.ratio)
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.pass_idx)
        decision = decide_pass(
            self.scores,
            self.seen_bits,
            solved.ratio,
            generator,
            prune=self.prunes_now,
            policy=self.policy,
            prune_high=self.prune_high,
            buckets=buckets,
            rescale=self.rescale,
            shuffle=self.shuffle,
            spare=self.global_batch,
            rule=rule)
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
        self.served.hold(buffer, kept, decision.codes, decision.table,
                         self.plan)
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
            ratio=float(solved.ratio) if decision.num_candidates else 0.0,
            capped=bool(solved.capped),
            expected=float(solved.expected))

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

    # -- scores ----------------------------------------------------------
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
            self.served.state_dict(),
            layout=self.layout(),
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

    def load_state_dict(self, state: dict, history: Sequence = ()) -> None:
        """Restore a configured sampler; the checkpoint's seed wins.

        Args:
            state (dict): What :meth:`state_dict` wrote, in any format this
                version reads.
            history (Sequence[PassRecord]): The run's pass history, from
                which a checkpoint that lacks the saving before the
                current pass (older versions) has it made.
        """
        assert self.configured, 'configure() the sampler before a restore'
        check_layout(state['layout'], self.layout())
        state = upgrade_state(state, history, self.plan)
        self.seed = int(state['seed'])
        self.served.load_state_dict(state, self.plan)
        self.scores = state['scores'].clone().float()
        self.seen_bits = state['seen_bits'].clone()
        self._profile = None
        # The decision's record is in InfoBatchHook's history, unless the
        # checkpoint came before the pass's first batch.
        self.decision = None
        pending = state.get('decision')
        if pending is not None:
            self.decision = history_from_state(pending)[0]
        elif self.order is not None and self.trained_batches == 0:
            self.decision = self._record_of_restored_pass()
        self.saved_iters = float(state['saved_iters'])
