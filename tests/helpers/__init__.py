"""Helpers the tests share, written once (imported as ``helpers``: the
tests folder is on ``sys.path``, see conftest.py)."""
import math
from typing import Optional


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
    delta = None
    if math.isfinite(prune_stop):
        delta = (prune_stop + offset / full) / (budget / full)
    sampler.set_plan(budget, offset, delta)
    if delta is not None:
        assert sampler.prune_stop == prune_stop or math.isclose(
            sampler.prune_stop, prune_stop, rel_tol=1e-12), sampler.prune_stop


def all_weights(sampler):
    """Every sample's loss weight in the sampler's current pass
    (float32, N)."""
    import torch
    return sampler.weights_of(torch.arange(sampler.num_samples))
