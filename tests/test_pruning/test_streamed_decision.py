"""The streamed decision is the decision taken in one piece.

``decide_pass`` and ``PruneRule`` walk the tables in chunks of
``layout.CHUNK`` samples, and promise the same result, drawn from the same
random numbers in the same order, as a decision over the whole table at
once. The reference below is that whole-table decision, written plainly
with torch, and the passes here span several chunks, with a seen mask
that is bool or packed and whose chunks are partly scored.
"""
import math

import numpy as np
import pytest
import torch

from mmseg_infobatch.sampler.decision import decide_pass
from mmseg_infobatch.sampler.layout import CHUNK, pack_bits
from mmseg_infobatch.sampler.prune_rule import PruneRule
from mmseg_infobatch.sampler.random_draws import bernoulli

NUM_SAMPLES = 2 * CHUNK + 1001
BUCKETS = [(0.2, 0.7), (0.5, 0.3), (0.9, 0.5)]


def _table(seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(NUM_SAMPLES, generator=g)**2
    seen = torch.rand(NUM_SAMPLES, generator=g) < 0.9
    # A last chunk scored nowhere but at its end, a first one everywhere.
    seen[:CHUNK] = True
    seen[2 * CHUNK:-3] = False
    return scores, seen


def _reference_codes(scores, seen, policy, prune_high):
    """Each sample's candidate code, from the whole table at once."""
    signed = -scores.double() if prune_high else scores.double()
    codes = torch.zeros(NUM_SAMPLES, dtype=torch.long)
    if policy == 'random':
        codes[seen] = 1
    elif policy == 'mean':
        threshold = signed[seen].mean()
        codes[seen & (signed < threshold)] = 1
    else:
        ordered = signed[seen].sort().values
        num_seen = ordered.numel()
        cuts = torch.stack([
            ordered[max(1, min(num_seen, math.ceil(q * num_seen))) - 1]
            for q, _ in BUCKETS
        ])
        bucket = torch.searchsorted(cuts, signed.contiguous(), side='left')
        in_bucket = seen & (bucket < len(BUCKETS))
        codes[in_bucket] = bucket[in_bucket] + 1
    return codes


def _reference_pass(scores, seen, policy, prune_high, ratio, seed):
    """The kept indices (in sample order) and every sample's weight."""
    codes = _reference_codes(scores, seen, policy, prune_high)
    g = torch.Generator().manual_seed(seed)
    if policy == 'quantile':
        probs = torch.tensor([0.0] + [r for _, r in BUCKETS])
        prob = probs[codes]
        keep = torch.rand(NUM_SAMPLES, generator=g) >= prob
    else:
        probs = torch.tensor([0.0, ratio], dtype=torch.float64)
        prob = probs[codes]
        keep = ~torch.from_numpy(bernoulli(NUM_SAMPLES, ratio, g))
    candidates = prob > 0
    weights = torch.where(candidates & keep, 1 / (1 - prob.float()),
                          torch.ones(()))
    return torch.nonzero(keep | ~candidates).flatten(), weights, candidates


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.parametrize('policy,prune_high', [('mean', False), ('mean', True),
                                               ('random', False),
                                               ('quantile', False),
                                               ('quantile', True)])
def test_a_pass_over_several_chunks_is_the_pass_decided_in_one_piece(
        policy, prune_high, packed):
    scores, seen = _table()
    ratio = 0.4
    buckets = BUCKETS if policy == 'quantile' else None
    mask = pack_bits(seen) if packed else seen
    decision = decide_pass(
        scores,
        mask,
        ratio,
        torch.Generator().manual_seed(7),
        policy=policy,
        prune_high=prune_high,
        buckets=buckets,
        shuffle=False)
    kept, weights, candidates = _reference_pass(scores, seen, policy,
                                                prune_high, ratio, 7)
    assert decision.num_candidates == int(candidates.sum())
    assert torch.equal(decision.indices, kept)
    assert decision.num_pruned == NUM_SAMPLES - kept.numel()
    assert torch.allclose(decision.weights, weights, rtol=0, atol=1e-6)


@pytest.mark.parametrize('packed', [False, True])
@pytest.mark.parametrize('policy,prune_high', [('mean', False), ('mean', True),
                                               ('random', False),
                                               ('quantile', True)])
def test_the_rule_over_several_chunks_counts_every_code(
        policy, prune_high, packed):
    scores, seen = _table(1)
    buckets = BUCKETS if policy == 'quantile' else None
    rule = PruneRule(scores,
                     pack_bits(seen) if packed else seen, policy, prune_high,
                     buckets)
    codes = _reference_codes(scores, seen, policy, prune_high)
    assert np.array_equal(rule.codes, codes.numpy())
    # One count per code, code 0 included.
    num_codes = len(BUCKETS) + 1 if policy == 'quantile' else 2
    assert rule.counts.tolist() == torch.bincount(
        codes, minlength=num_codes).tolist()
    if policy == 'mean':
        signed = -scores.double() if prune_high else scores.double()
        mean = float(signed[seen].mean())
        assert math.isclose(
            rule.threshold, -mean if prune_high else mean, rel_tol=1e-12)


def test_the_mean_of_every_scored_sample_is_the_sum_of_one_call():
    """Chunk by chunk, each sum continues from the last: bitwise the
    float64 sum numpy takes of the whole table in one call."""
    scores = torch.rand(
        NUM_SAMPLES, generator=torch.Generator().manual_seed(3))
    seen = torch.ones(NUM_SAMPLES, dtype=torch.bool)
    values = scores.numpy()
    whole = float(np.add.reduce(values, dtype=np.float64) / NUM_SAMPLES)
    assert PruneRule(scores, seen).threshold == whole
    assert PruneRule(scores, pack_bits(seen)).threshold == whole


@pytest.mark.parametrize('policy', ['mean', 'random'])
def test_ratio_zero_over_several_chunks_keeps_every_sample_at_weight_one(
        policy):
    scores, seen = _table()
    decision = decide_pass(
        scores,
        seen,
        0.0,
        torch.Generator().manual_seed(0),
        policy=policy,
        shuffle=False)
    assert decision.num_candidates == 0 and decision.num_pruned == 0
    assert torch.equal(decision.indices, torch.arange(NUM_SAMPLES))
    assert (decision.weights == 1).all()
