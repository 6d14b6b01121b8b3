"""A stand-in runner: InfoBatchHook driven as mmengine's loops drive it,
without a model or a data pipeline, so that a test takes milliseconds.

The runner holds mmengine's own train loop (built by its ``__init__``, so
its length is mmengine's) around a real dataloader and InfoBatchSampler,
and a model of two real ``InfoBatchLoss`` terms (a decode and an
auxiliary head's weights). The hook is called as mmengine's loop calls it:
:func:`start_hook` (``after_load_checkpoint``, ``before_train``), then per
iteration :func:`step` (``before_train_iter``, every loss term on the
batch's logits and labels, ``after_train_iter``).
"""
import logging
from types import SimpleNamespace
from typing import Optional, Sequence
from unittest import mock

import torch

from . import all_weights, make_sampler

IGNORE = 255
LOSS_WEIGHTS = (1.0, 0.4)  # decode and auxiliary head
# 12 images, batch 2: 6 iterations a full pass; 4 passes, delta * C = 2.8:
# passes 1 and 2 prune, pass 3 anneals.
N, BATCH, PASSES, DELTA = 12, 2, 4, 0.7


def seg_logits_labels(num: int, seed: int, ignore: int = IGNORE):
    """Logits (num, 3, 4, 4) and labels (num, 4, 4) of 3 classes, about
    30% of the pixels ``ignore``."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(num, 3, 4, 4, generator=g)
    labels = torch.randint(0, 3, (num, 4, 4), generator=g)
    labels[torch.rand(num, 4, 4, generator=g) < 0.3] = ignore
    return logits, labels


class Heads(torch.nn.Module):
    """The model's loss terms: one InfoBatchLoss per head."""

    def __init__(self, loss_weights: Sequence[float] = LOSS_WEIGHTS):
        from mmseg.registry import MODELS
        super().__init__()
        self.terms = torch.nn.ModuleList([
            MODELS.build(
                dict(
                    type='InfoBatchLoss',
                    loss=dict(type='CrossEntropyLoss', loss_weight=w)))
            for w in loss_weights
        ])


class CountingScheduler:
    """Counts the steps the hook adds beyond mmengine's one a batch."""

    def __init__(self, by_epoch: bool):
        self.by_epoch = by_epoch
        self.steps = 0

    def step(self):
        self.steps += 1


def stand_in_runner(data,
                    n: int = N,
                    batch: int = BATCH,
                    seed: int = 3,
                    iteration: int = 0,
                    drop_last: bool = False,
                    by_epoch: bool = False,
                    world: int = 1,
                    passes: int = PASSES,
                    max_iters: Optional[int] = None,
                    optim_wrapper=None,
                    param_schedulers: Optional[list] = None,
                    logger: str = 'stand_in_runner',
                    sampler_args: Optional[dict] = None):
    """A runner at iteration ``iteration`` over the first ``n`` images of
    ``data`` (logits, labels), in batches of ``batch``.

    Its InfoBatchSampler (``seed``, ``sampler_args`` or ``ratio=0.5``) is
    rank 0 of ``world``. An epoch-based loop runs ``passes`` epochs; an
    iteration-based one ``max_iters``, or the budget of ``passes`` full
    passes as the dataloader counts them. ``optim_wrapper`` and
    ``param_schedulers`` (none unless given) are the runner's.
    """
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop
    from torch.utils.data import DataLoader
    assert n <= data[0].shape[0], 'fewer images in data than n'
    sampler = make_sampler(
        n, rank=0, world=world, seed=seed, **(sampler_args or dict(ratio=0.5)))
    dataloader = DataLoader(
        list(range(n)), batch_size=batch, sampler=sampler, drop_last=drop_last)
    runner = SimpleNamespace(
        model=Heads(),
        seg_data=data,
        logger=logging.getLogger(logger),
        iter=iteration,
        cfg={},
        optim_wrapper=optim_wrapper or SimpleNamespace(),
        param_schedulers=param_schedulers or [],
        visualizer=mock.MagicMock())
    if by_epoch:
        runner.train_loop = EpochBasedTrainLoop(
            runner, dataloader, max_epochs=passes)
    else:
        runner.train_loop = IterBasedTrainLoop(
            runner,
            dataloader,
            max_iters=max_iters or passes * len(dataloader))
    return runner


def start_hook(runner, checkpoint: Optional[dict] = None, **hook_args):
    """An InfoBatchHook (``delta=DELTA`` unless given) that loaded
    ``checkpoint`` if given and started training on ``runner``."""
    from mmseg_infobatch import InfoBatchHook
    hook = InfoBatchHook(**{'delta': DELTA, **hook_args})
    if checkpoint is not None:
        hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    return hook


def _counted_steps(runner, by_epoch: bool) -> Optional[int]:
    return next(
        (s.steps for s in runner.param_schedulers
         if isinstance(s, CountingScheduler) and s.by_epoch is by_epoch), None)


def step(hook, runner, train_step=None) -> dict:
    """One training iteration as mmengine runs it (``train_step``, if
    given, stands for the optimizer wrapper's part of
    ``model.train_step``). Returns what the loss terms were handed and
    what the batch was, taken from the sampler's pass directly (not
    through the hook): the iteration, pass, batch, the weights each term
    was handed and whether they were cleared after, the pass's weights,
    the score table before and after, the loop's end, the steps of the
    counting schedulers (None without them) and the full-data progress.
    """
    sampler = hook.sampler
    if sampler.pass_idx < 0 or sampler.trained_batches >= sampler.pass_batches:
        list(iter(sampler))  # the dataloader starts the next pass
    size = runner.train_loop.dataloader.batch_size
    start = sampler.trained_batches * size
    batch = sampler.served.rank_indices()[start:start + size].clone()
    before = sampler.scores.clone(), sampler.seen.clone()
    hook.before_train_iter(runner, runner.iter)
    handed = [term.batch_weights.clone() for term in runner.model.terms]
    logits, labels = runner.seg_data
    for term in runner.model.terms:
        term(logits[batch], labels[batch], ignore_index=IGNORE)
    if train_step is not None:
        train_step()
    hook.after_train_iter(runner, runner.iter)
    runner.iter += 1
    return dict(
        iter=runner.iter - 1,
        pass_idx=sampler.pass_idx,
        batch=batch,
        handed=handed,
        cleared=[term.batch_weights is None for term in runner.model.terms],
        pass_weights=all_weights(sampler).clone(),
        before=before,
        after=(sampler.scores.clone(), sampler.seen.clone()),
        end=runner.train_loop.max_iters,
        steps=_counted_steps(runner, by_epoch=False),
        epoch_steps=_counted_steps(runner, by_epoch=True),
        virtual=sampler.plan.virtual_iter(sampler.position))


def train(hook, runner, until: Optional[int] = None, **step_args) -> list:
    """:func:`step` until iteration ``until`` or the loop's end; the rows
    of every iteration."""
    rows = []
    while runner.iter < (until or runner.train_loop.max_iters):
        rows.append(step(hook, runner, **step_args))
    return rows


def as_lists(rows):
    """``rows`` with every tensor as a (nested) list, to compare with
    ``==``."""
    if isinstance(rows, torch.Tensor):
        return rows.tolist()
    if isinstance(rows, dict):
        return {key: as_lists(value) for key, value in rows.items()}
    if isinstance(rows, (list, tuple)):
        return [as_lists(value) for value in rows]
    return rows
