"""InfoBatchHook: routes weights and scores, anneals, aligns the schedule."""
import math
from typing import List, Optional

import torch
from mmengine.dist import all_gather, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS
from torch.utils.data import BatchSampler

from .loss import InfoBatchLoss
from .progress import (batches_per_pass, end_iter, extra_scheduler_steps,
                       virtual_iter)
from .sampler import InfoBatchSampler

CKPT_KEY = 'infobatch'
CONFIG_HINT = """
    custom_imports = dict(imports=['mmseg_infobatch'], allow_failed_imports=False)
    train_dataloader = dict(sampler=dict(type='InfoBatchSampler', ratio=0.5))
    custom_hooks = [dict(type='InfoBatchHook', delta=0.875)]
    model = dict(decode_head=dict(loss_decode=dict(
        type='InfoBatchLoss', loss=dict(type='CrossEntropyLoss', loss_weight=1.0))))"""


@HOOKS.register_module()
class InfoBatchHook(Hook):
    """Drive InfoBatch: weights in, scores out, annealing and progress.

    - Before each iteration it hands the batch's weights, taken from the
      sampler's own pass list, to every ``InfoBatchLoss`` in the model.
    - After it, it gathers the per-image scores from all ranks (indices as
      int64, scores as float32) into the sampler's score table.
    - Passes ``t >= delta * C`` (C = number of full-data passes in the
      schedule) are full with all weights 1: annealing.
    - In an ``IterBasedTrainLoop``, ``max_iters`` is the full-data budget:
      the loop ends when C passes' worth of progress is done, so its
      ``max_iters`` shrinks as passes are pruned; iteration-based parameter
      schedulers are stepped in full-data iterations so the LR at any point
      equals full-data training's at the same epoch progress.
    - All state goes into checkpoints under ``'infobatch'`` as plain tensors
      and ints, and a resume lands on the exact pass and offset it left.

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
            raise ValueError('InfoBatchHook delta (fraction of passes that '
                             f'may prune) must be in (0, 1], but got {delta!r}')
        self.delta = float(delta)
        self.anneal = anneal
        self.adjust_schedule = adjust_schedule
        self.sampler: Optional[InfoBatchSampler] = None
        self.losses: List[InfoBatchLoss] = []
        self._pending_state: Optional[dict] = None
        self._reset_progress()

    def _reset_progress(self) -> None:
        self.pass_idx = -1  # the pass the hook has accounted for
        self.position = 0  # batches of that pass already trained
        self.pass_start_iter = 0
        self.pass_batches = 1
        self.full_batches = 1
        self.budget_iters = 0
        self.offset = 0  # full-data iterations run before InfoBatch state
        self.num_unscored = 0
        self.history: List[list] = []  # one row per pass, see _begin_pass
        self._batch_indices: Optional[torch.Tensor] = None

    # -- set-up ----------------------------------------------------------
    def check_setup(self, runner) -> None:
        """Validate the whole set-up and say exactly what to add. Called in
        before_train, not before_run: mmengine also calls before_run for
        test-only runs, which have no train loop to check."""
        loop = runner.train_loop
        dataloader = loop.dataloader
        sampler = getattr(dataloader, 'sampler', None)
        batch_sampler = getattr(dataloader, 'batch_sampler', None)
        if isinstance(getattr(batch_sampler, 'sampler', None),
                      InfoBatchSampler):
            sampler = batch_sampler.sampler  # under a custom batch_sampler
        if not isinstance(sampler, InfoBatchSampler):
            raise TypeError(
                'InfoBatchHook needs train_dataloader to use InfoBatchSampler, '
                f'but it uses {type(sampler).__name__}. Add to the config:'
                f'{CONFIG_HINT}')
        if type(batch_sampler) is not BatchSampler or \
                dataloader.sampler is not sampler:
            raise TypeError(
                'InfoBatch finds each batch\'s sample indices from the '
                'sampler\'s pass order, which needs the default torch '
                f'BatchSampler, but train_dataloader uses '
                f'{type(batch_sampler).__name__}. Remove batch_sampler from '
                'train_dataloader.')
        self.losses = _find_losses(runner.model)
        if not self.losses:
            raise TypeError(
                'InfoBatchHook found no InfoBatchLoss in the model, so no '
                'image can be scored or rescaled. Wrap the head losses:'
                f'{CONFIG_HINT}')
        unwrapped = _unwrapped_head_losses(runner.model)
        if unwrapped:
            runner.logger.warning(
                'InfoBatch: these loss terms are not wrapped in '
                f'InfoBatchLoss: {", ".join(unwrapped)}. They are not '
                'rescaled, which biases the gradient of pruned passes, and '
                'they do not count in the scores. Wrap each of them: '
                "loss_decode=dict(type='InfoBatchLoss', loss=<the loss>).")
        _, world_size = get_dist_info()
        self.world_size = world_size
        batch_size = dataloader.batch_size
        if sampler.num_samples < world_size * batch_size:
            raise ValueError(
                f'The train dataset has {sampler.num_samples} samples, fewer '
                f'than world size x batch size = {world_size} x {batch_size}'
                ', so not even one full batch per rank exists. Lower '
                'train_dataloader.batch_size or use more data.')
        sampler.hook_attached = True
        sampler.batch_size = batch_size
        self.sampler = sampler
        self.batch_size = batch_size
        self.full_batches = batches_per_pass(
            math.ceil(sampler.num_samples / world_size), batch_size,
            dataloader.drop_last)

    def before_train(self, runner) -> None:
        self.check_setup(runner)
        loop = runner.train_loop
        iter_based = isinstance(loop, IterBasedTrainLoop)
        if iter_based:
            self.budget_iters = loop.max_iters
            num_passes = self.budget_iters / self.full_batches
        else:
            self.budget_iters = loop.max_epochs * self.full_batches
            num_passes = loop.max_epochs
        self.num_passes = num_passes
        resumed_iter = runner.iter
        if resumed_iter > 0:
            self._restore(runner, resumed_iter)
        self._pending_state = None
        stop = self.delta * num_passes - self.offset / self.full_batches
        self.sampler.prune_stop = stop if self.anneal else math.inf
        runner.logger.info(
            f'InfoBatch: {self.sampler.num_samples} samples, '
            f'{self.full_batches} iterations per full pass, '
            f'{num_passes:.2f} passes, pruning in passes t < '
            f'{self.sampler.prune_stop:.2f} (ratio '
            f'{self.sampler.ratio}, policy {self.sampler.policy!r})')
        if resumed_iter > 0 and iter_based:
            # mmengine now advances the dataloader by resumed_iter batches.
            # Filler makes that advance land on the saved pass and offset;
            # the loop's iterator was built before the checkpoint loaded
            # (and with workers it prefetched), so it is built again.
            self.sampler.prepare_replay(
                (resumed_iter - self.position) * self.batch_size)
            loop.dataloader_iterator = type(loop.dataloader_iterator)(
                loop.dataloader)
        if self.pass_idx >= 0:
            self._update_end(runner)

    # -- per iteration ---------------------------------------------------
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self.sampler.pass_idx != self.pass_idx:
            self._begin_pass(runner)
        indices = self.sampler.batch_indices(self.position, self.batch_size)
        num_images = _batch_len(data_batch)
        if num_images is not None and num_images != indices.numel():
            raise RuntimeError(
                f'InfoBatch expected {indices.numel()} images in this batch '
                f'(pass {self.pass_idx}, batch {self.position}) but the '
                f'batch has {num_images}: sample indices cannot reach the '
                'batch. Do not replace the sampler or batch_sampler of '
                'train_dataloader while InfoBatch is on.')
        _check_sample_idx(data_batch, indices, self.sampler.dataset)
        self._batch_indices = indices
        weights = self.sampler.weights[indices]
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
        indices = self._batch_indices
        if self.world_size > 1:
            indices = torch.cat(all_gather(indices.to(torch.int64)))
            scores = torch.cat(all_gather(scores.float()))
        self.num_unscored += self.sampler.update_scores(
            indices.cpu(), scores.detach().float().cpu())
        if self.adjust_schedule and runner.param_schedulers:
            extra = extra_scheduler_steps(self.pass_idx, self.position,
                                          self.pass_batches,
                                          self.full_batches,
                                          self.budget_iters, self.offset)
            _step_iter_schedulers(runner.param_schedulers, extra)
        self.position += 1

    def after_train(self, runner) -> None:
        saved = self.budget_iters - runner.iter
        runner.logger.info(
            f'InfoBatch finished: {runner.iter} iterations instead of '
            f'{self.budget_iters} ({saved} saved, '
            f'{saved / max(self.budget_iters, 1):.1%}) over '
            f'{len(self.history)} passes; {self.num_unscored} image scores '
            'were skipped (no valid pixel or non-finite loss).')

    # -- checkpoint ------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[CKPT_KEY] = dict(
            sampler=self.sampler.state_dict(),
            hook=dict(
                pass_idx=self.pass_idx,
                position=self.position,
                pass_start_iter=self.pass_start_iter,
                pass_batches=self.pass_batches,
                full_batches=self.full_batches,
                budget_iters=self.budget_iters,
                offset=self.offset,
                num_unscored=self.num_unscored,
                history=torch.tensor(self.history, dtype=torch.float64)
                if self.history else torch.zeros(0, 8,
                                                 dtype=torch.float64)))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Applied in before_train, where runner.iter tells a resume (> 0)
        # from load_from (= 0, weights only: InfoBatch starts fresh).
        self._pending_state = checkpoint.get(CKPT_KEY)

    def _restore(self, runner, resumed_iter: int) -> None:
        state = self._pending_state
        if state is None:
            runner.logger.warning(
                f'Resumed at iteration {resumed_iter} from a checkpoint '
                'without InfoBatch state: InfoBatch starts fresh from here '
                '(all samples unscored, the next pass is full).')
            self.offset = resumed_iter
            return
        hook = state['hook']
        self.sampler.load_state_dict(state['sampler'])
        if hook['full_batches'] != self.full_batches:
            raise ValueError(
                'The checkpoint was made with '
                f"{hook['full_batches']} iterations per full pass, but this "
                f'run has {self.full_batches}: resume with the same dataset, '
                'batch size and number of processes.')
        self.pass_idx = int(hook['pass_idx'])
        self.position = int(hook['position'])
        self.pass_start_iter = int(hook['pass_start_iter'])
        self.pass_batches = int(hook['pass_batches'])
        self.offset = int(hook['offset'])
        self.num_unscored = int(hook['num_unscored'])
        self.history = hook['history'].tolist()
        if not isinstance(runner.train_loop, IterBasedTrainLoop) and \
                self.position < self.pass_batches:
            runner.logger.warning(
                'Resumed an epoch-based run mid-epoch: mmengine starts the '
                'next epoch, so InfoBatch starts the next pass.')
            self.position = self.pass_batches
        runner.logger.info(
            f'InfoBatch resumed in pass {self.pass_idx} at batch '
            f'{self.position}/{self.pass_batches}.')

    # -- passes ----------------------------------------------------------
    def _begin_pass(self, runner) -> None:
        sampler = self.sampler
        if self.pass_idx >= 0 and self.position < self.pass_batches:
            raise RuntimeError(
                f'InfoBatch pass {sampler.pass_idx} started after only '
                f'{self.position} of {self.pass_batches} batches of pass '
                f'{self.pass_idx}: the dataloader was restarted outside the '
                'sampler\'s control.')
        self.pass_idx = sampler.pass_idx
        self.position = 0
        self.pass_start_iter = runner.iter
        loader = runner.train_loop.dataloader
        self.pass_batches = batches_per_pass(len(sampler), self.batch_size,
                                             loader.drop_last)
        stats = sampler.pass_stats
        kept = sampler.num_samples - stats['pruned']
        self.history.append([
            self.pass_idx, self.pass_start_iter, kept, stats['pruned'],
            stats['candidates'], self.pass_batches, stats['threshold'],
            float(sampler.prunes_now)
        ])
        end = self._update_end(runner)
        saved = self.budget_iters - end
        threshold = stats['threshold']
        runner.logger.info(
            f'InfoBatch pass {self.pass_idx} '
            f'({self.pass_idx + 1}/{math.ceil(self.num_passes)}): kept '
            f'{kept}/{sampler.num_samples}, pruned {stats["pruned"]} of '
            f'{stats["candidates"]} below threshold {threshold:.4f}; '
            f'{self.pass_batches} iterations (full pass '
            f'{self.full_batches}); saved so far {saved} iterations '
            f'({saved / max(self.budget_iters, 1):.1%}), ends at '
            f'{end} of {self.budget_iters}'
            + ('' if sampler.prunes_now else ' [annealing: full data]'))
        scalars = {
            'infobatch/pass': self.pass_idx,
            'infobatch/kept': kept,
            'infobatch/pruned': stats['pruned'],
            'infobatch/pass_iters': self.pass_batches,
            'infobatch/saved_iters': saved,
            'infobatch/saved_ratio': saved / max(self.budget_iters, 1),
        }
        if not math.isnan(threshold):
            scalars['infobatch/threshold'] = threshold
        runner.visualizer.add_scalars(scalars, step=runner.iter)

    def _update_end(self, runner) -> int:
        """Move the loop's end so the last checkpoint, validation and ETA
        come at the true last iteration."""
        end = end_iter(self.pass_idx, self.pass_start_iter, self.pass_batches,
                       self.full_batches, self.budget_iters, self.offset)
        loop = runner.train_loop
        if self.adjust_schedule and isinstance(loop, IterBasedTrainLoop):
            # max_iters is read-only; its backing field is the loop's end.
            loop._max_iters = end
        return end

    @property
    def virtual_iter(self) -> int:
        """Full-data iterations of progress so far."""
        return virtual_iter(self.pass_idx, self.position, self.pass_batches,
                            self.full_batches, self.offset)


def _find_losses(model) -> List[InfoBatchLoss]:
    if is_model_wrapper(model):
        model = model.module
    return [m for m in model.modules() if isinstance(m, InfoBatchLoss)]


def _unwrapped_head_losses(model) -> List[str]:
    """Names of head loss terms (mmseg's ``loss_decode``) not wrapped."""
    if is_model_wrapper(model):
        model = model.module
    names = []
    for head_name, head in model.named_modules():
        terms = getattr(head, 'loss_decode', None)
        if terms is None:
            continue
        if isinstance(terms, torch.nn.Module) and not isinstance(
                terms, torch.nn.ModuleList):
            terms = [terms]
        for term in terms:
            if not isinstance(term, InfoBatchLoss):
                names.append(f'{head_name}.{getattr(term, "loss_name", "?")}')
    return names


def _batch_len(data_batch) -> Optional[int]:
    if isinstance(data_batch, dict):
        for key in ('data_samples', 'inputs'):
            if key in data_batch:
                return len(data_batch[key])
    return None


def _check_sample_idx(data_batch, indices: torch.Tensor, dataset) -> None:
    """Cross-check against mmengine's own ``sample_idx`` where it is
    meaningful: present in the metainfo and the dataset is not a wrapper
    (wrappers renumber it)."""
    if not isinstance(data_batch, dict) or hasattr(dataset, 'datasets') or \
            hasattr(dataset, 'times') or hasattr(dataset, 'dataset'):
        return
    samples = data_batch.get('data_samples') or []
    # PackSegInputs drops sample_idx unless it is in meta_keys: then skip
    # at the cost of one lookup.
    if not samples or 'sample_idx' not in samples[0]:
        return
    seen = [s.sample_idx for s in samples]
    if seen != indices.tolist():
        raise RuntimeError(
            f'InfoBatch expected samples {indices.tolist()} but the batch '
            f'holds {seen}: sample indices cannot reach the batch. Keep '
            'shuffling in InfoBatchSampler and do not reorder batches.')


def _step_iter_schedulers(param_schedulers, steps: int) -> None:
    if steps <= 0:
        return
    groups = param_schedulers.values() if isinstance(
        param_schedulers, dict) else [param_schedulers]
    for schedulers in groups:
        for scheduler in schedulers:
            if not scheduler.by_epoch:
                for _ in range(steps):
                    scheduler.step()
