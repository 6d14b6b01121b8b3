"""Properties of InfoBatch's pure arithmetic, for any legal input.

hypothesis draws the inputs: score tables full of ties, with unscored
entries that hold anything (the table's initial 0, a stale value, NaN,
inf); dataset sizes from 1; world and batch sizes; ``drop_last``; every
policy with random ratios and quantile buckets. Each test states one rule
of docs/design.md that must hold for all of them, against a formula of
its own (plain Python, exact fractions) rather than the package's code.

Scored entries are finite: the sampler never writes a non-finite loss
into the table (its example tests check that). Where a test compares with
the exact mean, scores lie on a grid of eighths, where the package's
float64 mean is exact too.

Profiles: ``ci`` (fixed examples, the same on every run; chosen when the
``CI`` environment variable is set) and ``dev`` (new random examples each
run); ``HYPOTHESIS_PROFILE=<name>`` picks one by name. Both keep this
module under about a minute on one CPU core.
"""
import math
import os
import random
from fractions import Fraction
from itertools import chain, count, repeat
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import all_weights, make_sampler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.dataset import DefaultSampler
from torch.utils.data import DataLoader

from mmseg_infobatch.sampler.decision import decide_pass
from mmseg_infobatch.sampler.layout import cycle_to, rank_share
from mmseg_infobatch.sampler.prune_rule import (float32_bound,
                                                prune_probabilities)
from mmseg_infobatch.sampler.run_plan import (PassPosition, RunPlan,
                                              batches_per_pass)

_COMMON = dict(
    deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile('ci', max_examples=200, derandomize=True, **_COMMON)
settings.register_profile('dev', max_examples=60, **_COMMON)
settings.load_profile(
    os.environ.get('HYPOTHESIS_PROFILE',
                   'ci' if os.environ.get('CI') else 'dev'))

# -- strategies ----------------------------------------------------------

STALE = st.sampled_from([0.0, -1.0, 1e6, math.nan, math.inf, -math.inf])
RATIOS = st.one_of(st.just(0.0), st.floats(0.05, 0.95))


@st.composite
def tables(draw, min_size=1, max_size=40, grid=None):
    """``(scores, seen)``: a float32 score table and its scored mask.

    Scored values are eighths in [0, 3] (exact sums, many ties, the mean
    itself often a score) or, unless ``grid``, any float32 in [0, 50].
    Unscored entries hold a stale value each.
    """
    n = draw(st.integers(min_size, max_size))
    if grid is None:
        grid = draw(st.booleans())
    value = st.integers(0, 24).map(lambda i: i / 8) if grid else \
        st.floats(0, 50, width=32)
    values = draw(st.lists(value, min_size=n, max_size=n))
    seen = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    stale = draw(st.lists(STALE, min_size=n, max_size=n))
    scores = [v if s else x for v, s, x in zip(values, seen, stale)]
    return (torch.tensor(scores, dtype=torch.float32),
            torch.tensor(seen, dtype=torch.bool))


@st.composite
def policies(draw):
    """Keyword arguments of a pass decision: every policy and side."""
    policy = draw(st.sampled_from(['mean', 'quantile', 'random']))
    prune_high = draw(st.booleans())
    if policy != 'quantile':
        return dict(policy=policy, ratio=draw(RATIOS), prune_high=prune_high)
    cuts = sorted(draw(st.sets(st.integers(1, 100), min_size=1, max_size=4)))
    buckets = [(c / 100, draw(RATIOS)) for c in cuts]
    return dict(
        policy=policy, ratio=0.0, prune_high=prune_high, buckets=buckets)


SEEDS = st.integers(0, 2**31 - 1)


def _generator(seed):
    return torch.Generator().manual_seed(seed)


# -- an independent statement of the rules -------------------------------


def reference_probabilities(scores,
                            seen,
                            policy,
                            ratio,
                            prune_high=False,
                            buckets=None):
    """Each sample's drop probability as docs/design.md states it, in
    exact arithmetic: unscored samples never; 'random' every scored one
    with r; 'mean' the scored ones strictly below the mean of the scored
    scores (above, with ``prune_high``) with r; 'quantile' bucket by bucket
    the scored samples up to the cut point, the k-th lowest score with
    k = ceil(q x scored), q as written, ties at a cut in its bucket."""
    scores, seen = scores.tolist(), seen.tolist()
    scored = [i for i, s in enumerate(seen) if s]
    prob = [0.0] * len(scores)
    if not scored:
        return prob
    if policy == 'random':
        for i in scored:
            prob[i] = ratio
    elif policy == 'mean':
        mean = sum(Fraction(scores[i]) for i in scored) / len(scored)
        for i in scored:
            value = Fraction(scores[i])
            if (value > mean) if prune_high else (value < mean):
                prob[i] = ratio
    else:
        key = {i: -scores[i] if prune_high else scores[i] for i in scored}
        ranked = sorted(key.values())
        left = set(scored)
        for q, r in buckets:
            k = max(1, math.ceil(Fraction(str(q)) * len(scored)))
            members = {i for i in left if key[i] <= ranked[k - 1]}
            for i in members:
                prob[i] = r
            left -= members
    return prob


def _kept(decision, num_samples):
    kept = torch.zeros(num_samples, dtype=torch.bool)
    kept[decision.indices] = True
    return kept


# -- the pass decision ---------------------------------------------------


@given(tables(grid=True), policies(), SEEDS, st.booleans(), st.booleans())
def test_decision_follows_the_rules(table, policy, seed, shuffle, rescale):
    """Which samples are candidates, which are kept, and their weights,
    against the exact rules."""
    scores, seen = table
    n = scores.numel()
    d = decide_pass(
        scores,
        seen,
        generator=_generator(seed),
        shuffle=shuffle,
        rescale=rescale,
        **policy)
    prob = torch.tensor(reference_probabilities(scores, seen, **policy))
    candidates = prob > 0
    kept = _kept(d, n)
    # Each kept sample once; in ascending order without shuffling.
    assert d.indices.dtype == torch.int64
    assert d.indices.unique().numel() == d.indices.numel()
    if not shuffle:
        assert d.indices.tolist() == sorted(d.indices.tolist())
    # Unscored samples kept at weight 1; only candidates pruned.
    assert kept[~seen].all()
    assert kept[~candidates].all()
    assert d.num_candidates == int(candidates.sum())
    assert d.num_pruned == n - d.indices.numel()
    # Survivors carry 1 / (1 - p) (1 without rescaling); all others 1.
    survivors = kept & candidates
    expected = torch.ones(n, dtype=torch.float64)
    if rescale:
        expected[survivors] = 1 / (1 - prob[survivors].double())
    torch.testing.assert_close(d.weights.double(), expected, rtol=1e-6, atol=0)
    if policy['policy'] == 'mean' and policy['ratio'] > 0 and seen.any():
        mean = sum(Fraction(v) for v in scores[seen].tolist()) / \
            int(seen.sum())
        assert d.threshold == float(mean)


@given(tables(grid=False), policies(), SEEDS)
def test_decision_agrees_with_its_threshold_for_any_scores(
        table, policy, seed):
    scores, seen = table
    d = decide_pass(scores, seen, generator=_generator(seed), **policy)
    kept = _kept(d, scores.numel())
    assert kept[~seen].all() and (d.weights[~seen] == 1).all()
    if policy['policy'] != 'mean' or policy['ratio'] == 0 or not seen.any():
        return
    values = scores[seen].double()
    # The float64 mean, to its rounding.
    exact = math.fsum(values.tolist()) / values.numel()
    assert d.threshold == pytest.approx(exact, rel=1e-12, abs=1e-300)
    side = values > d.threshold if policy['prune_high'] else \
        values < d.threshold
    assert d.num_candidates == int(side.sum())
    assert kept[seen][~side].all()


@given(tables(), st.lists(STALE, min_size=40, max_size=40), policies(), SEEDS)
def test_unscored_entries_change_nothing(table, other_stale, policy, seed):
    """Whatever unscored entries hold, the decision is the same: they
    never shape the threshold or the cut points, and are never pruned."""
    scores, seen = table
    changed = scores.clone()
    changed[~seen] = torch.tensor(other_stale[:scores.numel()])[~seen]
    a = decide_pass(scores, seen, generator=_generator(seed), **policy)
    b = decide_pass(changed, seen, generator=_generator(seed), **policy)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.weights, b.weights)
    assert a.num_candidates == b.num_candidates
    assert a.num_pruned == b.num_pruned
    both_nan = math.isnan(a.threshold) and math.isnan(b.threshold)
    assert a.threshold == b.threshold or both_nan


@settings(max_examples=25)
@given(tables(max_size=24, grid=True), policies(), SEEDS)
def test_unbiased_in_expectation(table, policy, seed):
    """E[kept x weight] = 1 for every sample, by 400 decisions.

    A sample dropped with probability p has kept x weight 0 or 1/(1-p):
    mean 1, variance p/(1-p). Each sample's average must lie within 6
    standard errors of 1, and the sum over all samples and trials within
    6 of its own (a false alarm has a chance below 1e-8 per sample).
    """
    scores, seen = table
    trials = 400
    n = scores.numel()
    prob = torch.tensor(
        reference_probabilities(scores, seen, **policy), dtype=torch.float64)
    total = torch.zeros(n, dtype=torch.float64)
    for trial in range(trials):
        d = decide_pass(
            scores,
            seen,
            generator=_generator(seed + trial),
            shuffle=False,
            **policy)
        total += _kept(d, n) * d.weights.double()
    mean = total / trials
    variance = prob / (1 - prob)
    assert torch.equal(mean[prob == 0], torch.ones_like(mean[prob == 0]))
    bound = 6 * torch.sqrt(variance / trials) + 1e-9
    assert ((mean - 1).abs() <= bound).all(), (mean, bound)
    if variance.sum() > 0:
        z = float(
            (total - trials).sum()) / math.sqrt(trials * float(variance.sum()))
        assert abs(z) < 6, z


@given(tables(), policies(), SEEDS, st.booleans())
def test_decision_is_a_pure_function_of_seed_and_scores(
        table, policy, seed, prune):
    scores, seen = table
    before = scores.clone(), seen.clone()
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    py_state = random.getstate()
    a = decide_pass(
        scores, seen, generator=_generator(seed), prune=prune, **policy)
    b = decide_pass(
        scores, seen, generator=_generator(seed), prune=prune, **policy)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.weights, b.weights)
    # No global generator drawn from; the score table left as it was.
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert random.getstate() == py_state
    assert torch.equal(scores.nan_to_num(-7.0), before[0].nan_to_num(-7.0))
    assert torch.equal(seen, before[1])
    if not prune:
        # First pass and annealing: the full data at weight 1.
        assert sorted(a.indices.tolist()) == list(range(scores.numel()))
        assert (a.weights == 1).all() and a.num_pruned == 0


@given(tables(grid=True), policies())
def test_prune_probabilities_match_the_rules(table, policy):
    scores, seen = table
    kwargs = dict(policy)
    prob, _ = prune_probabilities(scores, seen, kwargs.pop('ratio'), **kwargs)
    expected = reference_probabilities(scores, seen, **policy)
    assert prob.tolist() == pytest.approx(expected, rel=1e-6)


# -- padding, rank shares, pass lengths -----------------------------------


@given(st.integers(1, 50), st.integers(1, 200))
def test_cycle_to_repeats_the_head(n, total):
    indices = torch.randperm(n, generator=_generator(n))
    out = cycle_to(indices, total)
    assert out.tolist() == [indices[i % n].item() for i in range(total)]


@given(st.integers(1, 6), st.integers(1, 20))
def test_rank_shares_interleave_into_the_pass(world, per_rank):
    padded = torch.randperm(world * per_rank, generator=_generator(world))
    shares = [rank_share(padded, r, world) for r in range(world)]
    assert {s.numel() for s in shares} == {per_rank}
    woven = torch.stack(shares, dim=1).reshape(-1)
    assert torch.equal(woven, padded)


@given(
    st.integers(1, 200), st.integers(1, 4), st.integers(1, 6), st.booleans())
def test_batches_per_pass_counts_whole_batches(n, world, batch, drop_last):
    global_batch = world * batch
    got = batches_per_pass(n, world, batch, drop_last)
    if drop_last:
        assert got == max(1, n // global_batch)
    else:
        assert got == -(-n // global_batch)
    # mmengine's own count, where its per-rank padding matches whole
    # batches: always without drop_last, for n a multiple of world with.
    if n >= global_batch and (not drop_last or n % world == 0):
        with mock.patch(
                'mmengine.dataset.sampler.get_dist_info',
                return_value=(0, world)):
            sampler = DefaultSampler(list(range(n)), seed=0)
        loader = DataLoader(
            list(range(n)),
            batch_size=batch,
            sampler=sampler,
            drop_last=drop_last)
        assert len(loader) == got


# Set-ups that prune nearly everything, so that passes are refilled.
HARSH = st.sampled_from([
    dict(policy='random', ratio=0.95, prune_high=False),
    dict(
        policy='quantile', ratio=0.0, prune_high=False, buckets=[(1.0, 0.95)]),
])


@st.composite
def sampler_setups(draw):
    world = draw(st.integers(1, 3))
    batch = draw(st.integers(1, 4))
    n = draw(st.integers(world * batch, 40))
    table = draw(tables(min_size=n, max_size=n))
    policy = draw(st.one_of(policies(), HARSH))
    return dict(
        world=world,
        batch=batch,
        n=n,
        table=table,
        policy=policy,
        drop_last=draw(st.booleans()),
        prune_stop=draw(st.sampled_from([1.5, 2.0, 3.0, math.inf])),
        shuffle=draw(st.booleans()),
        seed=draw(SEEDS))


def _samplers(setup):
    samplers = []
    for rank in range(setup['world']):
        samplers.append(
            make_sampler(
                setup['n'],
                rank,
                setup['world'],
                setup['batch'],
                setup['drop_last'],
                prune_stop=setup['prune_stop'],
                seed=setup['seed'],
                shuffle=setup['shuffle'],
                **setup['policy']))
    return samplers


def _run_passes(samplers, table, num_passes=4):
    """Train ``num_passes`` passes on every rank, feeding the drawn table
    after the first (unscored entries that hold NaN or inf come as the
    non-finite losses of trained samples); returns, per pass, each rank's
    share and state."""
    scores, seen = table
    # In a batch's order, not the table's.
    fed = torch.nonzero(seen | ~torch.isfinite(scores)).squeeze(1)
    fed = fed[torch.randperm(fed.numel(), generator=_generator(fed.numel()))]
    passes = []
    for pass_no in range(num_passes):
        shares = []
        for s in samplers:
            if pass_no == 1:
                s.update_scores(fed, scores[fed])
            shares.append(list(iter(s)))
            for _ in range(s.pass_batches):
                s.finish_batch()
        passes.append(
            dict(
                shares=shares,
                batches=[(s.pass_batches, len(s)) for s in samplers],
                states=[(s.pass_idx, s.order.clone(), all_weights(s).clone(),
                         s.padded_order.clone()) for s in samplers]))
    return passes


@given(sampler_setups())
def test_every_pass_is_whole_batches_of_one_length_on_every_rank(setup):
    samplers = _samplers(setup)
    world, batch, n = setup['world'], setup['batch'], setup['n']
    full = batches_per_pass(n, world, batch, setup['drop_last'])
    assert all(s.full_pass_batches == full for s in samplers)
    records = _run_passes(samplers, setup['table'])
    # Only finite losses entered the table; the rest stayed unscored.
    scores, seen = setup['table']
    for s in samplers:
        assert torch.equal(s.seen, seen)
        assert torch.equal(s.scores[seen], scores[seen])
        assert not s.scores[~seen].any()
    for record in records:
        pass_batches, length = record['batches'][0]
        pass_idx, order, weights, padded_order = record['states'][0]
        # Every rank holds the same pass and the same weights.
        for other in record['states'][1:]:
            assert other[0] == pass_idx
            assert torch.equal(other[2], weights)
            assert torch.equal(other[3], padded_order)
        # Whole batches, the same count on every rank, never none.
        assert set(record['batches']) == {(pass_batches, length)}
        lengths = {len(share) for share in record['shares']}
        assert lengths == {pass_batches * batch} and pass_batches >= 1
        assert length == pass_batches * batch
        # The decided order, padded up (or cut down with drop_last) by
        # cycling its head, and dealt to ranks r::world.
        expected = batches_per_pass(order.numel(), world, batch,
                                    setup['drop_last'])
        assert pass_batches == expected
        assert torch.equal(padded_order,
                           cycle_to(order, expected * world * batch))
        for rank, share in enumerate(record['shares']):
            assert share == padded_order[rank::world].tolist()
        # No sample twice in a decided pass; unscored ones always in.
        assert order.unique().numel() == order.numel()
        if pass_idx >= 1:
            assert set(
                torch.nonzero(~setup['table'][1]).squeeze(1).tolist()) <= set(
                    order.tolist())
        if pass_idx == 0 or pass_idx >= setup['prune_stop']:
            # The first pass and annealing passes: full, weights 1.
            assert sorted(order.tolist()) == list(range(n))
            assert (weights == 1).all()


@given(sampler_setups())
def test_the_pass_is_a_pure_function_of_seed_pass_and_scores(setup):
    """A second set of samplers with the same seed, fed the same scores,
    decides the same passes; each pass keeps what ``decide_pass`` kept
    from ``seed + pass`` and refills only dropped samples."""
    samplers = _samplers(setup)
    first = _run_passes(samplers, setup['table'])
    again = _run_passes(_samplers(setup), setup['table'])
    for a, b in zip(first, again):
        assert a['shares'] == b['shares']
        for (_, order_a, weights_a, _), (_, order_b, weights_b,
                                         _) in zip(a['states'], b['states']):
            assert torch.equal(order_a, order_b)
            assert torch.equal(weights_a, weights_b)
    # The table as fed before pass 1; it no longer changes (no training).
    scores, seen = samplers[0].scores, samplers[0].seen
    for record in first[1:]:
        pass_idx, order, weights, _ = record['states'][0]
        d = decide_pass(
            scores,
            seen,
            generator=_generator(setup['seed'] + pass_idx),
            prune=pass_idx < setup['prune_stop'],
            shuffle=setup['shuffle'],
            **setup['policy'])
        kept = d.indices.tolist()
        assert order[:len(kept)].tolist() == kept
        refill = order[len(kept):]
        assert not set(refill.tolist()) & set(kept)
        assert (weights[refill] == 1).all()


# -- progress ------------------------------------------------------------


@st.composite
def runs(draw):
    full = draw(st.integers(1, 12))
    budget = draw(st.integers(1, 80))
    offset = draw(st.integers(0, budget))
    lengths = draw(st.lists(st.integers(1, full), min_size=1, max_size=12))
    return full, budget, offset, lengths


def _iterations_to_budget(left, full, lengths):
    """Real iterations until ``left`` full-data iterations of progress
    are done, passes taking ``lengths`` iterations each (an iterator):
    whole passes while more than a full pass is left, then the share of
    the last pass that the rest covers."""
    iterations = 0
    for length in lengths:
        if left <= full:
            return iterations + math.ceil(
                Fraction(max(left, 0) * length, full))
        iterations += length
        left -= full


@given(runs(), st.floats(0.05, 1.0))
def test_progress_ends_at_the_budget_in_full_data_iterations(run, delta):
    """Simulate the loop as the hook drives it: at each pass start the end
    moves to ``end_iter``, where training ends if every later pass is
    full; every iteration mmengine steps the schedulers once and the hook
    adds ``extra_scheduler_steps``. The run must end where its passes'
    worth of progress reaches the budget (an independent count), and the
    steps so far must always equal the full-data progress, up to the
    budget."""
    full, budget, offset, lengths = run
    progress = RunPlan(full, 1, budget, offset=offset, delta=delta)
    assert progress.state_dict() == dict(budget_iters=budget, offset=offset)
    assert progress.num_passes * full == pytest.approx(budget)
    assert progress.prune_stop == pytest.approx(delta * budget / full -
                                                offset / full)
    iteration, steps, pass_idx = offset, 0, 0
    while True:
        pass_batches = lengths[pass_idx % len(lengths)]
        start = iteration
        end = progress.end_iter(PassPosition(pass_idx, 0, pass_batches), start)
        assert end == start + _iterations_to_budget(
            budget - offset - pass_idx * full, full,
            chain([pass_batches], repeat(full)))
        assert progress.virtual_iter(PassPosition(pass_idx, 0,
                                                  pass_batches)) == \
            offset + pass_idx * full
        for position in range(pass_batches):
            if iteration >= end:
                break
            steps += 1 + progress.extra_scheduler_steps(
                PassPosition(pass_idx, position, pass_batches))
            iteration += 1
            done = progress.virtual_iter(
                PassPosition(pass_idx, position + 1, pass_batches))
            assert steps == min(done, budget) - offset
        if iteration >= end:
            break
        pass_idx += 1
    assert iteration == offset + _iterations_to_budget(
        budget - offset, full, (lengths[t % len(lengths)] for t in count()))
    assert steps == budget - offset
    if all(length == full for length in lengths):
        assert iteration == budget


# -- the mean threshold under numpy 1.x and 2.x ---------------------------


@st.composite
def scores_and_a_threshold(draw):
    """float32 scores and a float64 threshold among them, often at the
    midpoint of two neighbouring float32s, where numpy 1.x's rounding of
    a float64 scalar to float32 would decide differently from numpy 2."""
    base = np.float32(draw(st.floats(-1e3, 1e3, width=32)))
    steps = draw(st.lists(st.integers(-3, 3), min_size=1, max_size=12))
    values = np.array([base] * len(steps), dtype=np.float32)
    for i, step in enumerate(steps):
        for _ in range(abs(step)):
            values[i] = np.nextafter(values[i], np.float32(step))
    low = float(draw(st.sampled_from(list(values))))
    step = float(np.nextafter(np.float32(low), np.float32(np.inf))) - low
    threshold = draw(
        st.sampled_from([low, low + step / 2, low + step / 3, low - step / 3]))
    return values, threshold


@given(scores_and_a_threshold(), st.booleans())
def test_the_mean_rule_compares_in_float64_under_either_numpy(case, high):
    values, threshold = case
    bound = float32_bound(threshold, high)
    exact = (values.astype(np.float64) > threshold) if high else \
        (values.astype(np.float64) < threshold)
    # numpy 1.x compares a float32 array with a scalar in float32, numpy 2
    # in the scalar's width: both rules, written out, agree with float64.
    for as_numpy in (np.float32, np.float64):
        side = values.astype(as_numpy)
        found = side > as_numpy(bound) if high else side < as_numpy(bound)
        assert np.array_equal(found, exact), (values, threshold, bound)
