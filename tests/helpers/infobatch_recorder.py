"""Test-only hook: records InfoBatch's decisions, weights and schedule.

Imported through ``custom_imports`` by the tests; one file per rank.
"""
import torch
from helpers import all_weights
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from mmseg_infobatch import InfoBatchHook


@HOOKS.register_module()
class InfoBatchRecorderHook(Hook):
    """Records, per pass, what the sampler decided and, per iteration, the
    batch, the weights that reached every wrapped loss, the LR and the
    progress."""
    # After InfoBatchHook (LOW), so the pass it begins is already set up.
    priority = 'VERY_LOW'

    def __init__(self, out_file):
        self.out_file = out_file
        self.passes = []
        self.iters = []
        self.batches = []
        self.loss_weights = []
        self.img_paths = []
        self.last_pass = None
        self.loaded_keys = None

    def after_load_checkpoint(self, runner, checkpoint):
        # What this rank's checkpoint held for InfoBatch.
        self.loaded_keys = sorted(checkpoint.get('infobatch') or {})

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
        sampler = hook.sampler
        if sampler.pass_idx != self.last_pass:
            self.last_pass = sampler.pass_idx
            self.passes.append(
                dict(
                    pass_idx=sampler.pass_idx,
                    start_iter=runner.iter,
                    position=sampler.trained_batches,
                    padded_order=sampler.padded_order.clone(),
                    rank_indices=sampler.served.rank_indices().clone(),
                    weights=all_weights(sampler).clone(),
                    scores=sampler.scores.clone(),
                    seen=sampler.seen.clone(),
                    prunes=sampler.prunes_now))
        self.iters.append([
            runner.iter,
            sampler.plan.virtual_iter(sampler.position),
            runner.optim_wrapper.get_lr()['lr'][0], sampler.pass_idx,
            sampler.trained_batches
        ])
        self.batches.append(hook._batch_indices.tolist())
        # What each wrapped loss will multiply this batch's images by.
        self.loss_weights.append(
            [loss.batch_weights.clone() for loss in hook.losses])
        self.img_paths.append(
            [s.metainfo['img_path'] for s in data_batch['data_samples']])

    def after_train(self, runner):
        hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
        rank, _ = get_dist_info()
        torch.save(
            dict(
                passes=self.passes,
                iters=self.iters,
                batches=self.batches,
                loss_weights=self.loss_weights,
                img_paths=self.img_paths,
                final_scores=hook.sampler.scores.clone(),
                final_seen=hook.sampler.seen.clone(),
                final_iter=runner.iter,
                loaded_keys=self.loaded_keys,
                final_lr=runner.optim_wrapper.get_lr()['lr'][0],
                final_params=[
                    p.detach().clone() for p in runner.model.parameters()
                ]), self.out_file.format(rank=rank))
