import math
import tracemalloc
from collections import Counter

import numpy as np
import pytest
import torch
from helpers import pad_to_multiple

from mmseg_infobatch.sampler import random_draws
from mmseg_infobatch.sampler.decision import decide_pass
from mmseg_infobatch.sampler.layout import cycle_to, rank_share
from mmseg_infobatch.sampler.prune_rule import (Profile, PruneRule,
                                                prune_probabilities,
                                                validate_policy)


def _scores(n=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g)**3, torch.ones(n, dtype=torch.bool)


def _monte_carlo_kept_weight(trials=4000, **kwargs):
    scores, seen = _scores(200)
    total = torch.zeros(200, dtype=torch.float64)
    for t in range(trials):
        g = torch.Generator().manual_seed(t)
        d = decide_pass(scores, seen, generator=g, shuffle=False, **kwargs)
        kept = torch.zeros(200, dtype=torch.float64)
        kept[d.indices] = 1
        total += kept * d.weights.double()
    return total / trials


@pytest.mark.parametrize('kwargs', [
    dict(ratio=0.5),
    dict(ratio=0.8),
    dict(ratio=0.5, prune_high=True),
    dict(ratio=0.0, policy='quantile', buckets=[(0.3, 0.8), (0.7, 0.4)]),
    dict(ratio=0.3, policy='random'),
])
def test_unbiased_kept_times_weight_is_one_per_sample(kwargs):
    mean = _monte_carlo_kept_weight(**kwargs)
    # Per-sample standard error is at most sqrt(r/(1-r)/trials) ~ 0.032.
    assert torch.allclose(mean, torch.ones_like(mean), atol=0.13), mean
    assert abs(float(mean.mean()) - 1) < 0.01


def test_no_rescale_is_biased_by_design():
    mean = _monte_carlo_kept_weight(ratio=0.5, rescale=False)
    assert float(mean.min()) < 0.7


def test_mean_policy_prunes_only_below_mean_with_exact_weights():
    scores, seen = _scores()
    d = decide_pass(scores, seen, 0.5, torch.Generator().manual_seed(0))
    mean = float(scores.double().mean())
    assert d.threshold == pytest.approx(mean)
    kept = torch.zeros(1000, dtype=torch.bool)
    kept[d.indices] = True
    assert kept[scores >= mean].all()
    below = scores < mean
    assert d.num_candidates == int(below.sum())
    assert d.num_pruned == int((~kept).sum()) > 0
    assert torch.equal(d.weights[kept & below],
                       torch.full_like(d.weights[kept & below], 2.0))
    assert (d.weights[~below] == 1).all()
    assert len(set(d.indices.tolist())) == d.indices.numel()


def test_unseen_samples_are_never_pruned_nor_in_threshold():
    scores, seen = _scores()
    seen[:500] = False
    scores[:500] = 100.0  # a stale value must not move the mean
    d = decide_pass(scores, seen, 0.9, torch.Generator().manual_seed(0))
    assert d.threshold == pytest.approx(float(scores[500:].double().mean()))
    assert set(range(500)) <= set(d.indices.tolist())


def test_first_pass_full_when_nothing_scored():
    scores = torch.zeros(50)
    seen = torch.zeros(50, dtype=torch.bool)
    d = decide_pass(scores, seen, 0.5, torch.Generator().manual_seed(0))
    assert sorted(d.indices.tolist()) == list(range(50))
    assert (d.weights == 1).all() and d.num_pruned == 0


def test_prune_false_is_full_pass_with_unit_weights():
    scores, seen = _scores()
    d = decide_pass(scores, seen, 0.5, torch.Generator(), prune=False)
    assert sorted(d.indices.tolist()) == list(range(1000))
    assert (d.weights == 1).all()


def test_quantile_buckets_assign_their_own_probability():
    scores = torch.arange(100, dtype=torch.float32)
    seen = torch.ones(100, dtype=torch.bool)
    prob, _ = prune_probabilities(scores, seen, 0.0, 'quantile', False,
                                  [(0.3, 0.8), (0.7, 0.4)])
    assert (prob[:30] == 0.8).all()
    assert (prob[30:70] == 0.4).all()
    assert (prob[70:] == 0).all()
    prob, _ = prune_probabilities(scores, seen, 0.0, 'quantile', True,
                                  [(0.3, 0.8)])
    assert (prob[70:] == 0.8).all() and (prob[:70] == 0).all()


def test_decision_is_deterministic_and_leaves_global_rng_alone():
    scores, seen = _scores()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = decide_pass(scores, seen, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(torch.get_rng_state(), before)
    b = decide_pass(scores, seen, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.weights, b.weights)


def test_rank_shares_are_equal_disjoint_and_cover():
    indices = torch.randperm(103)
    world = 4
    padded = pad_to_multiple(indices, world)
    assert padded.numel() == 104
    shares = [rank_share(padded, r, world) for r in range(world)]
    assert {s.numel() for s in shares} == {26}
    assert set(torch.cat(shares).tolist()) == set(indices.tolist())
    # Only the padding repeats, and it repeats the head of the list.
    assert torch.equal(padded[:103], indices)
    assert padded[103] == indices[0]
    # Padding to world x batch repeats the head as often as needed.
    assert cycle_to(torch.arange(3), 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


@pytest.mark.parametrize('policy,ratio,buckets,match', [
    ('mean', 1.0, None, r'must be in \[0, 1\), but got 1.0'),
    ('mean', -0.1, None, 'but got -0.1'),
    ('median', 0.5, None, "one of .* but got 'median'"),
    ('quantile', 0.5, None, 'needs buckets'),
    ('quantile', 0.5, [(0.5, 0.2), (0.4, 0.1)], 'must increase'),
    ('quantile', 0.5, [(0.5, 1.0)], r'must be in \[0, 1\)'),
    ('quantile', 0.5, [(0.5, 0.2), (0.5, 0.1)], 'must increase'),
    ('quantile', 0.5, [(0.5, 0.2), (1.5, 0.1)], 'must increase'),
    ('quantile', 0.5, [((i + 1) / 256, 0.1)
                       for i in range(256)], 'at most 255 buckets'),
    ('mean', 0.5, [(0.5, 0.2)], "only used with policy='quantile'"),
])
def test_bad_policy_arguments_are_named(policy, ratio, buckets, match):
    with pytest.raises(ValueError, match=match):
        validate_policy(policy, ratio, buckets)


def test_threshold_mean_is_exact_for_large_n():
    scores = torch.full((2**25 + 3, ), 0.1)
    seen = torch.ones_like(scores, dtype=torch.bool)
    _, thr = prune_probabilities(scores, seen, 0.5)
    assert math.isclose(thr, 0.1, rel_tol=1e-7)


@pytest.mark.parametrize('kwargs', [
    dict(ratio=0.5),
    dict(ratio=0.3, prune_high=True),
    dict(ratio=0.0, policy='quantile', buckets=[(0.3, 0.8), (0.7, 0.4)]),
    dict(ratio=0.3, policy='random'),
    dict(ratio=0.5, prune=False),
])
@pytest.mark.parametrize('bucketed', [False, True])
def test_same_generator_state_gives_the_same_pass(kwargs, bucketed,
                                                  monkeypatch):
    """The sampler re-derives a pass from (seed, scores) on resume, so the
    decision must be a pure function of its inputs and generator state,
    also in the bucketed shuffle used at scale."""
    if bucketed:
        monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 64)
        monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', 16)
    scores, seen = _scores(1000)
    np_state = np.random.get_state()[1].copy()
    runs = []
    for _ in range(2):
        g = torch.Generator().manual_seed(11)
        d = decide_pass(scores, seen, generator=g, **kwargs)
        runs.append((d, torch.rand(4, generator=g)))
    (a, next_a), (b, next_b) = runs
    assert a.indices.dtype == torch.int64 and a.weights.dtype == torch.float32
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.weights, b.weights)
    assert (a.threshold == b.threshold
            or math.isnan(a.threshold) and math.isnan(b.threshold))
    assert (a.num_candidates, a.num_pruned) == (b.num_candidates, b.num_pruned)
    # The generator is left in the same state too.
    assert torch.equal(next_a, next_b)
    # Another seed gives another order.
    c = decide_pass(
        scores, seen, generator=torch.Generator().manual_seed(12), **kwargs)
    assert not torch.equal(a.indices, c.indices)
    # numpy's global generator is not touched either.
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_bucketed_shuffle_is_a_uniform_permutation(monkeypatch):
    # Buckets of about 2 out of 5 indices: the deal and the shuffles within
    # buckets together must still give each of the 120 orders equally often.
    monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 4)
    monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', 2)
    indices = torch.tensor([3, 1, 4, 9, 7])
    g = torch.Generator().manual_seed(0)
    counts = Counter(
        tuple(random_draws.shuffled(indices, g).tolist())
        for _ in range(24000))
    assert len(counts) == 120
    assert all(sorted(order) == [1, 3, 4, 7, 9] for order in counts)
    # 200 expected per order: a chi-square with 119 degrees of freedom
    # stays below 180 with probability 0.9997.
    chi2 = sum((c - 200)**2 / 200 for c in counts.values())
    assert chi2 < 180, chi2


def test_bucketed_shuffle_keeps_the_kept_set(monkeypatch):
    monkeypatch.setattr(random_draws, 'SHUFFLE_DIRECT', 100)
    monkeypatch.setattr(random_draws, 'SHUFFLE_BUCKET', 8)
    scores, seen = _scores(5000)
    d = decide_pass(scores, seen, 0.5, torch.Generator().manual_seed(3))
    ordered = decide_pass(
        scores, seen, 0.5, torch.Generator().manual_seed(3), shuffle=False)
    assert d.indices.numel() > 100
    assert torch.equal(d.indices.sort().values, ordered.indices)
    assert not torch.equal(d.indices, ordered.indices)


@pytest.mark.parametrize('ratio', [0.5, 0.3])
def test_ties_at_the_mean_are_kept_and_candidates_drop_at_rate_r(ratio):
    # Exactly representable scores whose mean, 0.5, is itself a score.
    scores = torch.tensor([0.0, 0.25, 0.5, 0.5, 0.5, 0.75, 1.0] * 300)
    seen = torch.ones_like(scores, dtype=torch.bool)
    below = scores < 0.5
    dropped = 0
    total = torch.zeros(scores.numel(), dtype=torch.float64)
    trials = 200
    for seed in range(trials):
        d = decide_pass(scores, seen, ratio,
                        torch.Generator().manual_seed(seed))
        assert d.threshold == 0.5
        assert d.num_candidates == int(below.sum())
        kept = torch.zeros(scores.numel(), dtype=torch.bool)
        kept[d.indices] = True
        assert kept[~below].all()  # ties and above: never pruned
        assert (d.weights[~below] == 1).all()
        survivors = kept & below
        assert (d.weights[survivors] == torch.tensor(1 / (1 - ratio))).all()
        assert (d.weights[below & ~kept] == 1).all()
        dropped += int((below & ~kept).sum())
        total += kept * d.weights.double()
    draws = trials * int(below.sum())
    sigma = math.sqrt(draws * ratio * (1 - ratio))
    assert abs(dropped - draws * ratio) < 4 * sigma
    # E[kept * weight] = 1 per sample: 200 trials, per-sample standard
    # error at most sqrt(r / (1 - r) / 200) = 0.071.
    assert torch.allclose(total / trials, torch.ones_like(total), atol=0.3)
    assert abs(float((total / trials)[below].mean()) - 1) < 0.01


def test_unscored_samples_are_never_pruned_even_below_the_mean():
    # The sampler's table starts at 0, below any mean of real losses: a
    # sample never scored (no valid pixel yet) must still be kept, at 1.
    scores, seen = _scores()
    scores[:500] = 0.0
    seen[:500] = False
    d = decide_pass(scores, seen, 0.9, torch.Generator().manual_seed(0))
    assert set(range(500)) <= set(d.indices.tolist())
    assert (d.weights[:500] == 1).all()
    assert d.num_candidates == int((scores[500:] < d.threshold).sum())


@pytest.mark.parametrize('all_seen', [True, False])
def test_tied_scores_prune_nothing_at_scale(all_seen):
    # 2**25 equal scores: the float64 mean is the score itself, so none is
    # below it. A float32 sum drifts off it (a float32 step with numpy's
    # pairwise sum, far more with a mask, which sums in sequence), and then
    # every sample would be a candidate.
    scores = torch.full((2**25 + 3, ), 0.1)
    seen = torch.ones_like(scores, dtype=torch.bool)
    if not all_seen:
        seen[::1000] = False
    prob, threshold = prune_probabilities(scores, seen, 0.5)
    assert threshold == float(scores[0])
    assert not prob.any()


def test_a_score_just_below_the_mean_is_a_candidate():
    # numpy 2 rounds a Python float to float32 when it meets float32
    # scores: a score half a float32 step below the mean would be a tie.
    one = torch.tensor(1.0)
    up = torch.nextafter(one, torch.tensor(2.0))
    scores = torch.stack([one, one, up])
    seen = torch.ones(3, dtype=torch.bool)
    prob, threshold = prune_probabilities(scores, seen, 0.5)
    # The float64 mean, 1 + step / 3, lies above both ones.
    assert float(one) < threshold < float(up)
    assert prob.tolist() == [0.5, 0.5, 0.0]


def test_a_score_just_above_the_mean_is_a_candidate_with_prune_high():
    # The same under numpy 1.x, which rounds a float64 scalar to the
    # scores' float32 before comparing: the mean, up - step / 3, would
    # round to up and tie with both ups.
    one = torch.tensor(1.0)
    up = torch.nextafter(one, torch.tensor(2.0))
    scores = torch.stack([up, up, one])
    seen = torch.ones(3, dtype=torch.bool)
    prob, threshold = prune_probabilities(scores, seen, 0.5, prune_high=True)
    assert float(one) < threshold < float(up)
    assert prob.tolist() == [0.5, 0.5, 0.0]


# -- gaps the automated mutation run found ---------------------------------
def test_bucket_edges_the_policy_accepts():
    """255 buckets (one weight code each) and a bucket of ratio 0 (kept
    whole) are valid."""
    validate_policy('quantile', 0.5,
                    [((i + 1) / 255, 0.1) for i in range(255)])
    validate_policy('quantile', 0.5, [(0.5, 0.0), (1.0, 0.5)])


def test_the_mean_of_one_scored_sample_is_its_score():
    scores = torch.tensor([0.25, 0.5, 0.75, 1.0])
    seen = torch.tensor([False, True, False, False])
    probability, threshold = prune_probabilities(scores, seen, 0.5)
    assert threshold == 0.5 and not probability.any()  # strictly below


def test_a_full_pass_prunes_nothing_and_ratio_zero_has_no_threshold():
    scores, seen = torch.rand(50), torch.ones(50, dtype=torch.bool)
    d = decide_pass(scores, seen, 0.5, torch.Generator(), prune=False)
    assert d.num_pruned == 0 and d.num_kept == 50 and d.num_candidates == 0
    assert math.isnan(prune_probabilities(scores, seen, 0.0)[1])


def test_a_bucket_of_ratio_zero_holds_no_candidate():
    scores, seen = torch.arange(100.0), torch.ones(100, dtype=torch.bool)
    d = decide_pass(
        scores,
        seen,
        0.0,
        torch.Generator().manual_seed(0),
        policy='quantile',
        buckets=[(0.5, 0.0), (1.0, 0.5)])
    assert d.num_candidates == 50
    assert set(range(50)) <= set(d.indices.tolist())


def test_the_quantile_threshold_under_prune_high_is_the_score_itself():
    scores, seen = torch.arange(100.0), torch.ones(100, dtype=torch.bool)
    _, threshold = prune_probabilities(
        scores, seen, 0.0, 'quantile', prune_high=True, buckets=[(0.3, 0.5)])
    assert threshold == 70.0  # the highest 30% lie at or above 70


def test_a_score_exactly_at_the_mean_is_not_a_candidate_either_way():
    # The mean, 2.0, is a float32: the strict rule keeps the score at it
    # on both sides.
    scores = torch.tensor([1.0, 2.0, 3.0])
    seen = torch.ones(3, dtype=torch.bool)
    low, threshold = prune_probabilities(scores, seen, 0.5)
    high, _ = prune_probabilities(scores, seen, 0.5, prune_high=True)
    assert threshold == 2.0
    assert low.tolist() == [0.5, 0.0, 0.0]
    assert high.tolist() == [0.0, 0.0, 0.5]


def test_the_rule_defaults_to_the_mean_policy_on_low_scores():
    scores, seen = _scores(300)
    default = PruneRule(scores, seen)
    mean_low = PruneRule(scores, seen, 'mean', False)
    assert default.codes.any()
    assert np.array_equal(default.codes, mean_low.codes)
    assert default.profile() == mean_low.profile()


@pytest.mark.parametrize(
    'buckets,want',
    [
        ([(0.5, 0.0), (1.0, 0.0)], Profile(0, 0.0, 0.0)),
        # u = 0 in the first bucket, 0.4 / 0.4 = 1 in the second.
        ([(0.5, 0.0), (1.0, 0.4)], Profile(50, 50.0, 50.0)),
        # u = 0.2 / 0.4 = 0.5 in the first bucket, 1 in the second.
        ([(0.5, 0.2), (1.0, 0.4)], Profile(100, 75.0, 62.5)),
    ])
def test_the_profile_counts_only_buckets_that_may_drop(buckets, want):
    scores, seen = torch.arange(100.0), torch.ones(100, dtype=torch.bool)
    profile = PruneRule(scores, seen, 'quantile', False, buckets).profile()
    # The draws' float32 ratios over the float64 largest one.
    assert profile.candidates == want.candidates
    assert profile.first == pytest.approx(want.first, rel=1e-6)
    assert profile.second == pytest.approx(want.second, rel=1e-6)
    assert type(profile.candidates) is int
    assert type(profile.first) is float and type(profile.second) is float


@pytest.mark.parametrize('policy,buckets,per_sample', [
    ('mean', None, 1.5),
    ('quantile', [(0.3, 0.5), (0.6, 0.2)], 5.5),
])
def test_the_rule_holds_its_codes_and_one_float32_copy_at_most(
        policy, buckets, per_sample):
    """Per sample: a uint8 code, and for 'quantile' one float32 copy of
    the scores (the selection's), beyond the chunk-sized scratch."""
    num = 2_000_000
    scores, seen = torch.rand(num), torch.ones(num, dtype=torch.bool)
    tracemalloc.start()
    try:
        PruneRule(scores, seen, policy, False, buckets)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert num <= peak < per_sample * num, peak / num


def test_an_unshuffled_or_shuffled_pass_leaves_only_the_room_asked_for():
    scores, seen = _scores(300)
    for spare in (None, 5):
        extra = {} if spare is None else dict(spare=spare)
        d = decide_pass(scores, seen, 0.5, torch.Generator(), **extra)
        ordered = decide_pass(
            scores, seen, 0.5, torch.Generator(), shuffle=False, **extra)
        assert d.buffer.numel() == d.num_kept + (spare or 0)
        assert ordered.buffer.numel() == 300 + (spare or 0)
