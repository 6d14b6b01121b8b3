"""InfoBatchHook: routes weights and scores, anneals, aligns the schedule."""
from dataclasses import replace
from typing import List, Optional

import torch
from mmengine.dist import all_gather, get_dist_info
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS

from ..engine.checkpoint_types import allow_mmengine_checkpoint_types
from ..engine.compat import (check_mmengine_version, set_accumulation_end,
                             set_train_end, uses_stock_fsdp)
from ..loss import InfoBatchLoss
from ..sampler import InfoBatchSampler
from ..sampler.history import PassRecord, history_from_state, history_state
from .checks import (check_batch, check_eval_samplers, find_losses,
                     find_train_sampler)
from .consistency import agree_on_resume, check_ranks_agree, sampler_digest
from .report import SavingReport, log_finish, log_pass_start, log_setup

CKPT_KEY = 'infobatch'
# 4: what a pass decision found is in the history only (with capped and
# expected), not in the sampler's state; the progress state holds no pass
# length. 3 (the sampler's compact tables) and 2 (plain tables) are still
# read; versions that read only those refuse 4 by its number.
CKPT_FORMAT = 4
READ_FORMATS = (2, 3, 4)


@HOOKS.register_module()
class InfoBatchHook(Hook):
    """Drive InfoBatch: weights in, scores out, annealing and progress.

    - Before each iteration it hands the batch's weights, taken from the
      sampler's pass, to every ``InfoBatchLoss`` in the model.
    - After it, it gathers the per-image scores from all ranks (indices as
      int64, scores as float32) into the sampler's score table.
    - Passes ``t >= delta * C`` (C = number of full-data passes in the
      schedule) are full with all weights 1: annealing.
    - In an ``IterBasedTrainLoop``, ``max_iters`` is the full-data budget:
      the loop ends when C passes' worth of progress is done, so its end
      moves earlier as passes are pruned; iteration-based parameter
      schedulers are stepped in full-data iterations so the LR at any point
      equals full-data training's at the same epoch progress.
    - All state goes into checkpoints under ``'infobatch'`` as plain tensors
      and ints, and a resume lands on the exact pass and offset it left.
      Rank 0 writes it; where every rank saves its own checkpoint (FSDP),
      the others note that rank 0's holds it.
    - With several ranks, all of them check at the start of training and
      at every pass start that they hold the same state (seed, pass,
      position, layout, decided pass and score table), and stop with the
      same error if not.

    The pass itself (number, order, weights, position) and the run plan
    (budget, offset, where pruning stops) are the sampler's. The hook only
    connects them to the runner.

    Args:
        delta (float): Fraction of the passes that may prune, in (0, 1].
            Defaults to 0.875.
        anneal (bool): False prunes in every pass (the paper's "no
            annealing" ablation); ``delta`` is then unused. Defaults to True.
        adjust_schedule (bool): Shorten the iteration-based loop and step
            iteration-based schedulers by data progress. Defaults to True.
    """

    # After ParamSchedulerHook (LOW, registered earlier), so extra scheduler
    # steps follow its own; before CheckpointHook (VERY_LOW), so a checkpoint
    # holds this iteration's scores.
    priority = 'LOW'

    def __init__(self,
                 delta: float = 0.875,
                 anneal: bool = True,
                 adjust_schedule: bool = True) -> None:
        if not (isinstance(delta, (int, float)) and 0 < delta <= 1):
            raise ValueError(
                'InfoBatchHook delta (fraction of passes that '
                f'may prune) must be in (0, 1], but got {delta!r}')
        self.delta = float(delta)
        self.anneal = anneal
        self.adjust_schedule = adjust_schedule
        self.sampler: Optional[InfoBatchSampler] = None
        self.losses: List[InfoBatchLoss] = []
        self.history: List[PassRecord] = []
        self.num_skipped_scores = 0
        self._pending_state: Optional[dict] = None
        # What target_saving and the pre-flight estimate tell the user.
        self.report = SavingReport()
        self._batch_indices: Optional[torch.Tensor] = None
        # Here too, not only in before_run: FlexibleRunner loads its
        # checkpoint before calling before_run.
        allow_mmengine_checkpoint_types()

    # -- set-up ----------------------------------------------------------
    def before_run(self, runner) -> None:
        check_mmengine_version()
        # Before load_or_resume: torch >= 2.6 loads safely by default.
        allow_mmengine_checkpoint_types()
        _check_single_hook(runner.hooks)
        check_eval_samplers(runner.cfg)
        if uses_stock_fsdp(runner):
            runner.logger.warning(
                "mmengine's FSDPStrategy cannot resume with this torch (it "
                'passes FSDP.optim_state_dict_to_load its arguments in the '
                "order of torch 2.0): use strategy=dict(type='Resumable"
                "FSDPStrategy', ...) from mmseg_infobatch, which takes the "
                'same arguments.')

    def before_train(self, runner) -> None:
        """Check the set-up, configure the sampler, restore a resume."""
        self.sampler = find_train_sampler(runner.train_loop.dataloader)
        self.losses = find_losses(runner.model, runner.logger)
        state = self._resume_state(runner)
        self._configure(runner, state)
        if state is not None:
            self._restore(runner, state)
        if runner.iter > 0:
            self._land_resume(runner, state)
        log_setup(runner, self.sampler)
        self.report.check_reachable(runner.logger, self.sampler)
        if self.sampler.pass_idx >= 0:
            self._update_end(runner)
        self._check_ranks_agree(runner, 'at the start of training')

    def _resume_state(self, runner) -> Optional[dict]:
        """The checkpoint's InfoBatch state when resuming (the same on
        every rank), or None: a fresh run, ``load_from`` or a checkpoint
        without it."""
        resumed_iter = runner.iter
        state = self._pending_state if resumed_iter > 0 else None
        self._pending_state = None
        state = agree_on_resume(resumed_iter, state, self.sampler.world_size)
        if resumed_iter > 0 and state is None:
            runner.logger.warning(
                f'Resumed at iteration {resumed_iter} from a checkpoint '
                'without InfoBatch state: InfoBatch starts fresh from here '
                '(all samples unscored, the next pass is full).')
        if state is not None and state.get('format') not in READ_FORMATS:
            raise ValueError(
                'The checkpoint holds InfoBatch state of another format '
                f"({state.get('format', 1)}; this version reads "
                f'{READ_FORMATS}). Resume with the mmseg_infobatch version '
                'that wrote it, or start a fresh run from its weights with '
                'load_from=CHECKPOINT instead of --resume.')
        return state

    def _configure(self, runner, state: Optional[dict]) -> None:
        """Give the sampler its layout and the run's plan: the budget, and
        the offset restored from ``state`` (``runner.iter`` where a run
        gains InfoBatch state only now)."""
        sampler, loop = self.sampler, runner.train_loop
        sampler.configure(loop.dataloader.batch_size,
                          loop.dataloader.drop_last)
        budget_iters = loop.max_iters if isinstance(
            loop, IterBasedTrainLoop) else \
            loop.max_epochs * sampler.full_pass_batches
        offset = runner.iter if state is None else \
            int(state['progress']['offset'])
        sampler.set_plan(budget_iters, offset,
                         self.delta if self.anneal else None)

    def _land_resume(self, runner, state: Optional[dict]) -> None:
        """Continue a resumed run where its InfoBatch state left off."""
        sampler = self.sampler
        if isinstance(runner.train_loop, IterBasedTrainLoop):
            # mmengine now draws runner.iter batches to skip what was
            # trained: land them on the saved pass at its saved position.
            sampler.prepare_replay(runner.iter - sampler.trained_batches)
        elif sampler.pass_idx >= 0 and _reruns_saved_epoch(
                runner, state, sampler):
            rest = sampler.pass_batches - sampler.trained_batches
            runner.logger.info(
                'Resumed an epoch-based run from an iteration checkpoint: '
                f'mmengine runs epoch {runner.train_loop.epoch} again from '
                'its start, '
                f'and InfoBatch serves in it the {rest} untrained batches of '
                f'pass {sampler.pass_idx}.')
            sampler.prepare_rest()

    # -- per iteration ---------------------------------------------------
    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch=None) -> None:
        sampler = self.sampler
        if sampler.trained_batches == 0:
            self._begin_pass(runner)
        indices = sampler.batch_indices()
        check_batch(data_batch, indices, sampler.dataset,
                    (sampler.pass_idx, sampler.trained_batches))
        self._batch_indices = indices
        weights = sampler.weights_of(indices)
        for loss in self.losses:
            loss.set_batch_weights(weights)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        scores = None
        for loss in self.losses:
            loss.set_batch_weights(None)
            term = loss.pop_scores()
            if term is not None:
                scores = term if scores is None else scores + term
        if scores is None:
            raise RuntimeError(
                'No InfoBatchLoss ran in this training iteration, so no '
                'image was scored. Wrap the losses that the heads use.')
        sampler = self.sampler
        indices = self._batch_indices
        if sampler.world_size > 1:
            # Separate gathers: int64 indices are exact at any dataset
            # size, float32 is exact only up to 2**24.
            indices = torch.cat(all_gather(indices.to(torch.int64)))
            scores = torch.cat(all_gather(scores.float()))
        scores = scores.detach().float().cpu()
        self.num_skipped_scores += sampler.update_scores(indices.cpu(), scores)
        self.report.add_batch(sampler.pass_idx, scores.numpy())
        if self.adjust_schedule and runner.param_schedulers:
            extra = sampler.plan.extra_scheduler_steps(sampler.position)
            _step_iter_schedulers(runner.param_schedulers, extra)
        sampler.finish_batch()

    def after_train(self, runner) -> None:
        budget_iters = self.sampler.plan.budget_iters
        log_finish(runner, budget_iters, len(self.history),
                   self.num_skipped_scores)
        saved = budget_iters - runner.iter
        budget = max(budget_iters, 1)
        if self._keeps_schedule(runner):
            # The loop kept its end: what the passes saved in data.
            sampler = self.sampler
            saved = sampler.saved_iters + sampler.pass_saving()
        self.report.at_end(runner.logger, self.sampler, saved / budget)

    # -- checkpoint ------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_dist_info()[0] != 0:
            # Only where each rank saves its own checkpoint (FSDP): every
            # rank holds the same state, so rank 0's alone carries it.
            checkpoint[CKPT_KEY] = dict(format=CKPT_FORMAT, on_rank0=True)
            return
        checkpoint[CKPT_KEY] = dict(
            format=CKPT_FORMAT,
            # The loop's epoch at the save: an epoch-based resume that runs
            # it again (an iteration checkpoint) serves the pass's rest.
            epoch=runner.train_loop.epoch,
            sampler=self.sampler.state_dict(),
            progress=self.sampler.plan.state_dict(),
            history=history_state(self.history),
            num_unscored=self.num_skipped_scores,  # the key of old versions
            target=self.report.state_dict())

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied in before_train, where runner.iter tells a resume (> 0)
        # from load_from (= 0, weights only: InfoBatch starts fresh).
        self._pending_state = checkpoint.get(CKPT_KEY)

    def _check_ranks_agree(self, runner, when: str) -> None:
        sampler = self.sampler
        if sampler.world_size > 1:
            digest = sampler_digest(sampler)
            check_ranks_agree(dict(iteration=runner.iter, **digest), when)

    def _restore(self, runner, state: dict) -> None:
        sampler = self.sampler
        seed = sampler.seed
        self.history = history_from_state(state['history'])
        sampler.load_state_dict(state['sampler'], self.history)
        if sampler.seed != seed and _seed_fixed(runner.cfg):
            runner.logger.warning(
                f'InfoBatchSampler seed {seed} of the config differs from '
                f"the checkpoint's {sampler.seed}; the checkpoint's is used "
                'so the resumed run continues the same passes.')
        self.num_skipped_scores = int(state['num_unscored'])
        self.report.load_state_dict(state.get('target') or {})
        runner.logger.info(
            f'InfoBatch resumed in pass {sampler.pass_idx} at batch '
            f'{sampler.trained_batches}/{sampler.pass_batches} (seed '
            f'{sampler.seed}).')

    # -- passes ----------------------------------------------------------
    def _begin_pass(self, runner) -> None:
        sampler = self.sampler
        record = replace(sampler.decision, start_iter=runner.iter)
        self.history.append(record)
        self._check_ranks_agree(runner, f'at the start of pass '
                                f'{record.pass_idx}')
        end = self._update_end(runner)
        log_pass_start(runner, record, sampler, end,
                       self._keeps_schedule(runner))
        self.report.after_pass_start(runner.logger, self.sampler, record)

    def _keeps_schedule(self, runner) -> bool:
        """An iteration-based loop that keeps its ``max_iters``."""
        return not self.adjust_schedule and isinstance(runner.train_loop,
                                                       IterBasedTrainLoop)

    def _update_end(self, runner) -> int:
        """The iteration training ends at, assuming full passes from the
        next one on (exact from the last pass's start). An adjusted
        iteration-based loop is moved there, so the last checkpoint,
        validation and ETA come at the true end; gradient accumulation
        always learns it, so the last partial group is applied and an
        open group is scaled by its final size."""
        sampler, loop = self.sampler, runner.train_loop
        if self._keeps_schedule(runner):
            return loop.max_iters
        end = sampler.plan.end_iter(sampler.position, runner.iter)
        # An epoch-based loop ends by its epochs: its max_iters only
        # informs the ETA, the logs and the last iteration checkpoint.
        set_train_end(loop, end)
        set_accumulation_end(runner.optim_wrapper, end)
        return end


def _check_single_hook(hooks) -> None:
    """Two InfoBatchHooks would each feed the sampler and the losses."""
    count = sum(isinstance(h, InfoBatchHook) for h in hooks)
    if count > 1:
        raise ValueError(
            f'The runner has {count} InfoBatchHook entries; InfoBatch needs '
            "exactly one. Keep one dict(type='InfoBatchHook', ...) in "
            'custom_hooks (a base config may already add one).')


def _reruns_saved_epoch(runner, state: Optional[dict], sampler) -> bool:
    """Whether the resumed epoch-based loop runs the saved pass's epoch
    again: the checkpoint was saved within that epoch (by iteration), not
    after it (by epoch, when mmengine starts the next one)."""
    saved_epoch = (state or {}).get('epoch')
    if saved_epoch is None:
        # Older checkpoints: an epoch checkpoint always holds a whole pass.
        return sampler.trained_batches < sampler.pass_batches
    return runner.train_loop.epoch == int(saved_epoch)


def _seed_fixed(cfg) -> bool:
    """Whether the config fixes the seed (stock mmseg configs don't, and
    then each run draws its own)."""
    randomness = cfg.get('randomness') or {}
    sampler = (cfg.get('train_dataloader') or {}).get('sampler') or {}
    return randomness.get('seed') is not None or \
        sampler.get('seed') is not None


def _step_iter_schedulers(param_schedulers, steps: int) -> None:
    groups = param_schedulers.values() if isinstance(
        param_schedulers, dict) else [param_schedulers]
    for schedulers in groups:
        for scheduler in schedulers:
            if not scheduler.by_epoch:
                for _ in range(steps):
                    scheduler.step()
