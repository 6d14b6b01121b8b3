"""Helpers the tests share, written once (imported as ``helpers``: the
tests folder is on ``sys.path``, see conftest.py, and on ``PYTHONPATH`` of
the training subprocesses).

- This module: the repository's paths, InfoBatchSampler as a given rank
  builds it (:func:`make_sampler`) with its run plan
  (:func:`plan_prune_stop`) and weights (:func:`all_weights`), the padding
  rule the tests state (:func:`pad_to_multiple`) and a free TCP port for
  ``torchrun`` (:func:`free_port`).
- ``helpers.configs``: the config factories and the ways the tests train
  them (in process, in a subprocess, the recorded run).
- ``helpers.stand_in``: a stand-in runner that drives InfoBatchHook as
  mmengine's loops do, without a model or a data pipeline.
- ``helpers.infobatch_recorder``, ``helpers.killer_hook``,
  ``helpers.cpu_amp_optim_wrapper``: test-only mmseg modules, which
  configs load by these names through ``custom_imports``.
"""
import math
import socket
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / 'tests'
TOOLS = REPO / 'tools'
DEMO_CONFIG = (
    REPO / 'configs' / 'demo' / 'upernet_r18_digit_scenes_infobatch.py')

# Where InfoBatchSampler asks mmengine for its rank and world size.
SAMPLER_DIST_INFO = 'mmseg_infobatch.sampler.infobatch_sampler.get_dist_info'


def make_sampler(dataset_or_n,
                 rank: int = 0,
                 world: int = 1,
                 batch_size: Optional[int] = None,
                 drop_last: bool = False,
                 prune_stop: Optional[float] = None,
                 budget_iters: Optional[int] = None,
                 offset: int = 0,
                 **sampler_kwargs):
    """An InfoBatchSampler as rank ``rank`` of ``world`` builds it
    (mmengine's ``get_dist_info`` mocked while it is built) over
    ``dataset_or_n`` (a dataset, or ``n`` for ``list(range(n))``), with
    ``seed=3`` unless ``sampler_kwargs`` give one.

    With ``batch_size`` it is configured as InfoBatchHook configures it
    (``configure(batch_size, drop_last)``); with ``prune_stop`` as well it
    gets the run plan of :func:`plan_prune_stop` (``budget_iters`` and
    ``offset`` as there). Without ``batch_size`` it is left unconfigured.
    """
    from unittest import mock

    from mmseg_infobatch import InfoBatchSampler
    dataset = list(range(dataset_or_n)) if isinstance(dataset_or_n,
                                                      int) else dataset_or_n
    sampler_kwargs.setdefault('seed', 3)
    with mock.patch(SAMPLER_DIST_INFO, return_value=(rank, world)):
        sampler = InfoBatchSampler(dataset, **sampler_kwargs)
    if batch_size is not None:
        sampler.configure(batch_size, drop_last)
        if prune_stop is not None:
            plan_prune_stop(sampler, prune_stop, budget_iters, offset)
    return sampler


def delta_for_prune_stop(prune_stop: float,
                         budget_iters: int,
                         full_pass_batches: int,
                         offset: int = 0) -> Optional[float]:
    """The ``delta`` of a run plan whose ``prune_stop`` is ``prune_stop``
    (None, no annealing, for an infinite one)."""
    if not math.isfinite(prune_stop):
        return None
    return (prune_stop + offset / full_pass_batches) / (
        budget_iters / full_pass_batches)


def plan_prune_stop(sampler,
                    prune_stop: float = math.inf,
                    budget_iters: Optional[int] = None,
                    offset: int = 0) -> None:
    """Give a configured sampler a run plan in which passes
    ``t < prune_stop`` prune: with ``budget_iters`` (one full pass where
    None, so that ``prune_stop`` is exactly ``delta``) and the ``delta``
    that puts the plan's ``prune_stop`` there."""
    full = sampler.full_pass_batches
    budget = full if budget_iters is None else budget_iters
    delta = delta_for_prune_stop(prune_stop, budget, full, offset)
    sampler.set_plan(budget, offset, delta)
    if delta is not None:
        assert sampler.prune_stop == prune_stop or math.isclose(
            sampler.prune_stop, prune_stop, rel_tol=1e-12), sampler.prune_stop


def all_weights(sampler):
    """Every sample's loss weight in the sampler's current pass
    (float32, N)."""
    import torch
    return sampler.weights_of(torch.arange(sampler.num_samples))


def pad_to_multiple(indices, multiple: int):
    """``indices`` padded to the least whole multiple of ``multiple`` by
    repeating its head: to the world size, so every rank gets an equal
    share, or to world size x batch size, so every batch is full.

    The sampler pads by the batches of a pass (``batches_per_pass``); the
    tests state this simpler rule, which it meets on one batch.
    """
    from mmseg_infobatch.sampler.layout import cycle_to
    total = math.ceil(indices.numel() / multiple) * multiple
    return cycle_to(indices, total)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a rendezvous."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def refusal(call, error: type = ValueError) -> str:
    """The whole message of the ``error`` that ``call()`` raises.

    A refusal's text is how a user learns the fix, so the refusal tests
    compare it whole, not by a fragment: a fragment would let the rest of
    the text say anything.
    """
    import pytest
    with pytest.raises(error) as info:
        call()
    return str(info.value)
