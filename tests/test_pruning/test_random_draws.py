"""The pass's random draws (sampler/random_draws.py) at the sizes where
their large-data paths start: the bucketed shuffle beyond
``SHUFFLE_DIRECT`` indices, its deal in steps of ``DEAL_CHUNK``, and the
Bernoulli cut next to probability 1. The thresholds are lowered here so
that the paths run on small data."""
import numpy as np
import pytest
import torch

from mmseg_infobatch.sampler import random_draws
from mmseg_infobatch.sampler.random_draws import bernoulli, shuffled


def _indices(num, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(10 * num, generator=g)[:num].int()


@pytest.mark.parametrize('bucket', [2, 1024])
def test_the_bucketed_shuffle_over_several_deal_steps_is_a_permutation(
        bucket, monkeypatch):
    # More indices than one deal step, in 65,536 buckets (the most) or in
    # a few hundred.
    monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 64)
    monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', bucket)
    num = random_draws.DEAL_CHUNK + 12345
    indices = _indices(num)
    out = shuffled(indices, torch.Generator().manual_seed(1), spare=3)
    assert out.numel() == num + 3 and out.dtype == indices.dtype
    assert torch.equal(out[:num].sort().values, indices.sort().values)
    # Shuffled across the whole range, not within a step.
    moved = (out[:num].long() - indices.long()).abs().float().mean()
    assert moved > num


def test_the_deal_is_a_stable_sort_by_key(monkeypatch):
    num = 2 * random_draws.DEAL_CHUNK + 7
    g = torch.Generator().manual_seed(2)
    keys = random_draws._random_bits(num, np.uint16, g) & np.uint16(511)
    src = np.arange(num, dtype=np.int32)[::-1].copy()
    counts = np.bincount(keys, minlength=512)
    out = np.empty(num, dtype=np.int32)
    random_draws._deal(src, keys, np.cumsum(counts) - counts, out)
    assert np.array_equal(out, src[np.argsort(keys, kind='stable')])


@pytest.mark.parametrize('num', [64, 65])
def test_the_shuffle_deals_only_above_its_direct_size(num, monkeypatch):
    monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 64)
    monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', 16)
    indices = _indices(num)
    out = shuffled(indices, torch.Generator().manual_seed(5))
    direct = indices[torch.randperm(
        num, generator=torch.Generator().manual_seed(5))]
    assert torch.equal(out, direct) == (num <= 64)
    assert torch.equal(out.sort().values, indices.sort().values)


def test_a_probability_next_to_1_is_drawn_true():
    # p x 2**32 rounds to 2**32, one past the largest uint32 cut.
    g = torch.Generator().manual_seed(0)
    assert bernoulli(10_000, 1 - 2**-40, g).all()
    assert not bernoulli(10_000, 0.0, g).any()
