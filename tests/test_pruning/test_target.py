"""The target-saving solver: pure functions of score tables and the
run plan (mmseg_infobatch/sampler/target.py), the pass profiles it works
from (sampler/prune_rule.py) and the relative losses of the estimate
(hook/report.py)."""
import math

import pytest
import torch
from helpers import delta_for_prune_stop

from mmseg_infobatch.hook.report import RelativeLosses
from mmseg_infobatch.sampler.prune_rule import (Profile, PruneRule,
                                                scale_buckets)
from mmseg_infobatch.sampler.run_plan import RunPlan
from mmseg_infobatch.sampler.target import (expected_pass_iters,
                                            expected_saving,
                                            max_expected_saving, pass_saving,
                                            ratio_for_saving, solve_pass_ratio,
                                            validate_target)


def _plan(num_samples,
          global_batch,
          budget_iters,
          drop_last=False,
          offset=0,
          prune_stop=math.inf):
    """A :class:`RunPlan` whose passes ``t < prune_stop`` prune."""
    full = RunPlan(num_samples, global_batch).full_pass_batches
    delta = delta_for_prune_stop(prune_stop, budget_iters, full, offset)
    return RunPlan(num_samples, global_batch, budget_iters, drop_last, offset,
                   delta)


def prune_profile(scores, seen, policy='mean', prune_high=False, buckets=None):
    return PruneRule(scores, seen, policy, prune_high, buckets).profile()


# The quick study's shape: 1,000 samples, batch 16, 28 passes, delta 0.875.
QUICK = _plan(
    num_samples=1000,
    global_batch=16,
    budget_iters=28 * 63,
    prune_stop=0.875 * 28)


def _exact_iters(schedule, num_candidates, ratio):
    """E[pass iterations] under the exact binomial count of pruned."""
    count = torch.distributions.Binomial(num_candidates,
                                         torch.tensor(float(ratio)))
    pruned = torch.arange(num_candidates + 1, dtype=torch.float64)
    pmf = count.log_prob(pruned.float()).double().exp()
    iters = torch.tensor([
        schedule.pass_iters(schedule.num_samples - k)
        for k in range(num_candidates + 1)
    ],
                         dtype=torch.float64)
    return float((pmf * iters).sum() / pmf.sum())


@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('n,batch,cands,ratio', [(1000, 16, 550, 0.5),
                                                 (1000, 16, 550, 0.05),
                                                 (100, 8, 60, 0.8),
                                                 (37, 4, 20, 0.3),
                                                 (20210, 16, 11000, 0.37)])
def test_expected_iterations_match_the_exact_binomial(drop_last, n, batch,
                                                      cands, ratio):
    schedule = _plan(n, batch, 10 * n, drop_last=drop_last)
    model = expected_pass_iters(schedule, ratio * cands,
                                ratio * (1 - ratio) * cands)
    exact = _exact_iters(schedule, cands, ratio)
    # Whole-batch rounding modelled: within a few hundredths of an
    # iteration, where ignoring it errs by up to half an iteration.
    assert model == pytest.approx(exact, abs=0.03)


@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('cands,ratio', [(20, 0.2), (40, 0.1), (8, 0.5)])
def test_expected_iterations_of_a_nearly_full_pass_count_its_last_batch(
        drop_last, cands, ratio):
    # A few samples pruned: the pass mostly keeps all of its F batches,
    # so the sum's last term, P(K >= c_F), is close to 1. Padded up,
    # 1000 samples in batches of 16 take 63 iterations while at most 7
    # are pruned (c_63 = 62 x 16 + 1); cut down, 62 while at most 8 are.
    schedule = _plan(1000, 16, 10 * 1000, drop_last=drop_last)
    full = schedule.full_pass_batches
    model = expected_pass_iters(schedule, ratio * cands,
                                ratio * (1 - ratio) * cands)
    exact = _exact_iters(schedule, cands, ratio)
    assert exact > full - 0.3  # nearly full: the last batch counts
    assert model == pytest.approx(exact, abs=0.03)
    profile = Profile(cands, float(cands), float(cands))
    saving = pass_saving(schedule, profile, ratio)
    assert saving == pytest.approx(full - exact, abs=0.03)


@pytest.mark.parametrize('n,batch,drop_last', [(1000, 16, False),
                                               (1000, 64, False),
                                               (1000, 64, True)])
def test_pass_saving_is_the_expected_saving_of_whole_batches(
        n, batch, drop_last):
    schedule = _plan(n, batch, 10 * n, drop_last=drop_last)
    profile = Profile(550, 550.0, 550.0)
    for ratio in (0.1, 0.5, 0.8):
        exact = schedule.full_pass_batches - _exact_iters(schedule, 550, ratio)
        assert pass_saving(schedule, profile, ratio) == pytest.approx(
            exact, abs=0.03)


def test_expected_iterations_without_spread_are_the_whole_batches():
    s = _plan(1000, 16, 1000)
    assert expected_pass_iters(s, 0, 0) == s.full_pass_batches == 63
    assert expected_pass_iters(s, 40, 0) == 60  # 960 kept: 60 batches
    assert expected_pass_iters(s, 41, 0) == 60
    assert expected_pass_iters(s, 999, 0) == 1  # refilled to one batch
    d = _plan(1000, 16, 1000, drop_last=True)
    assert d.full_pass_batches == 62 and expected_pass_iters(d, 9, 0) == 61


@pytest.mark.parametrize(
    'stop,offset,budget,want',
    [
        (math.inf, 0, 28 * 63, 27.0),  # passes 1..27
        (24.5, 0, 28 * 63, 24.0),  # passes 1..24 (t < 24.5)
        (24.0, 0, 28 * 63, 23.0),  # passes 1..23
        (math.inf, 0, 28 * 63 + 21, 27 + 1 / 3),  # a third of pass 28
        (math.inf, 126, 28 * 63, 25.0),  # two passes ran before the state
        (-1.0, 0, 28 * 63, 0.0),
    ])
def test_pruning_share_counts_passes_left_that_may_prune(
        stop, offset, budget, want):
    s = _plan(1000, 16, budget, offset=offset, prune_stop=stop)
    assert s.pruning_share(1) == pytest.approx(want)
    assert s.pruning_share(0) == pytest.approx(
        want + (s.pass_share(0) if stop > 0 else 0))


def test_solved_ratio_meets_the_need_exactly():
    profile = Profile(550, 550.0, 550.0)
    for target in (0.1, 0.2, 0.3):
        got = solve_pass_ratio(target, profile, QUICK, 1, 0.0)
        assert not got.capped and 0 < got.ratio < 0.8
        assert got.expected == pytest.approx(target, abs=1e-6)
        need = target * QUICK.budget_iters / QUICK.pruning_share(1)
        assert pass_saving(QUICK, profile, got.ratio) == pytest.approx(need)
    # Ratios rise with the target.
    ratios = [ratio_for_saving(t, profile, QUICK, 1) for t in (.1, .2, .3)]
    assert ratios == sorted(ratios)


def test_ratio_accounts_for_what_earlier_passes_saved():
    profile = Profile(550, 550.0, 550.0)
    fresh = solve_pass_ratio(0.3, profile, QUICK, 10, 0.0)
    ahead = solve_pass_ratio(0.3, profile, QUICK, 10, 300.0)
    assert ahead.ratio < fresh.ratio
    assert ahead.expected == pytest.approx(0.3, abs=1e-6)
    done = solve_pass_ratio(0.3, profile, QUICK, 10, 0.3 * 1764 + 1)
    assert done.ratio == 0 and not done.capped


def test_cap_binds_and_says_what_is_reached():
    profile = Profile(550, 550.0, 550.0)
    got = solve_pass_ratio(0.5, profile, QUICK, 1, 0.0, max_ratio=0.8)
    assert got.capped and got.ratio == 0.8
    # What r 0.8 reaches: 0.8 x 550 / 16 iterations in each of passes
    # 1..24 (t < 24.5) of 28.
    assert got.expected == pytest.approx(
        24 * pass_saving(QUICK, profile, 0.8) / 1764)
    assert 0.3 < got.expected < 0.5
    assert ratio_for_saving(0.5, profile, QUICK, 1) is None


def test_nothing_to_prune_gives_ratio_zero():
    for profile, t in ((Profile(0, 0.0, 0.0), 1), (Profile(5, 5., 5.), 30)):
        got = solve_pass_ratio(0.3, profile, QUICK, t, 0.0)
        assert got.ratio == 0 and not got.capped


def _simulate(target, schedule, shares, seed=0, max_ratio=0.8, per_pass=False):
    """A run of pure passes: pass t has a share ``shares[t]`` of
    candidates, the pruned count is drawn, and each pass saves what its
    whole batches save. Returns the share of the budget saved and r_t."""
    g = torch.Generator().manual_seed(seed)
    n, full = schedule.num_samples, schedule.full_pass_batches
    saved, ratios, t = 0.0, [], 0
    while schedule.pass_share(t) > 0:
        prunes = t < schedule.prune_stop and t > 0  # pass 0: no scores
        cands = int(shares[t % len(shares)] * n) if prunes else 0
        profile = Profile(cands, float(cands), float(cands))
        if per_pass:  # the wrong rule: every pass saves target x F
            one_pass = _plan(n, schedule.global_batch, full)
            solved = solve_pass_ratio(target, profile, one_pass, 0, 0.0,
                                      max_ratio)
        else:
            solved = solve_pass_ratio(target, profile, schedule, t, saved,
                                      max_ratio)
        pruned = int(
            torch.bernoulli(torch.full((cands, ), solved.ratio),
                            generator=g).sum())
        iters = schedule.pass_iters(n - pruned)
        saved += schedule.pass_share(t) * (full - iters)
        ratios.append(solved.ratio)
        t += 1
    return saved / schedule.budget_iters, ratios


@pytest.mark.parametrize('target,shares', [(0.15, [0.55]), (0.25, [0.55]),
                                           (0.3, [0.55]),
                                           (0.2, [0.7, 0.6, 0.5, 0.45]),
                                           (0.3, [0.7, 0.6, 0.5, 0.45]),
                                           (0.2, [0.3, 0.8])])
def test_a_run_reaches_its_target_within_half_a_point(target, shares):
    for seed in range(3):
        saved, ratios = _simulate(target, QUICK, shares, seed)
        assert saved == pytest.approx(target, abs=0.005), (seed, ratios)
        assert max(ratios) <= 0.8
        # Pass 0 and the annealing passes (t >= 24.5) prune nothing.
        assert ratios[0] == 0 and all(r == 0 for r in ratios[25:])


def test_an_unreachable_target_prunes_at_the_cap_throughout():
    saved, ratios = _simulate(0.4, QUICK, [0.55])
    assert ratios[1:25] == [0.8] * 24
    reach = solve_pass_ratio(0.4, Profile(550, 550., 550.), QUICK, 1, 0.0)
    assert reach.capped
    assert saved == pytest.approx(reach.expected, abs=0.005)
    assert saved < 0.39


def test_per_pass_target_misses_the_run_target():
    # Pass 0 and the annealing passes save nothing, so saving the target
    # in each pruning pass saves less than the target over the run.
    saved, _ = _simulate(0.3, QUICK, [0.55], per_pass=True)
    assert saved == pytest.approx(0.3 * 24 / 28, abs=0.005)


def test_fractional_schedule_and_offset_reach_the_target():
    s = _plan(1000, 16, 28 * 63 + 40, offset=63, prune_stop=0.875 * 28)
    saved, _ = _simulate(0.25, s, [0.55])
    assert saved == pytest.approx(0.25, abs=0.005)


def test_drop_last_and_large_batch_reach_the_target():
    s = _plan(1000, 64, 28 * 15, drop_last=True, prune_stop=24.5)
    saved, _ = _simulate(0.3, s, [0.55])
    # 15 iterations a pass: savings come in steps of 1/15 of a pass.
    assert saved == pytest.approx(0.3, abs=0.01)


def test_estimate_matches_a_fixed_ratio_run():
    profile = Profile(550, 550.0, 550.0)
    est = expected_saving(0.5, profile, QUICK, 1)
    runs = [_fixed(0.5, 0.55, seed) for seed in range(5)]
    assert est == pytest.approx(sum(runs) / 5, abs=0.003)
    # The README's rule: r x share below the mean x share of pruning passes.
    assert est == pytest.approx(0.5 * 0.55 * 24 / 28, abs=0.01)


def _fixed(ratio, share, seed):
    g = torch.Generator().manual_seed(seed)
    saved = 0.0
    for t in range(1, 25):
        cands = int(share * 1000)
        pruned = int(
            torch.bernoulli(torch.full((cands, ), ratio), generator=g).sum())
        saved += QUICK.pass_share(t) * (63 - QUICK.pass_iters(1000 - pruned))
    return saved / QUICK.budget_iters


def test_profile_of_each_policy():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0, 5.0, 0.0, 0.0])
    seen = torch.tensor([True] * 6 + [False] * 2)
    # Mean of the scored 1.25: five below it; the unscored never count.
    assert prune_profile(scores, seen) == Profile(5, 5.0, 5.0)
    assert prune_profile(scores, seen, prune_high=True) == Profile(1, 1., 1.)
    assert prune_profile(scores, seen, 'random') == Profile(6, 6.0, 6.0)
    buckets = [(0.5, 0.8), (1.0, 0.4)]
    got = prune_profile(scores, seen, 'quantile', buckets=buckets)
    # Three scored samples at 0.8 (unit 1), three at 0.4 (unit 0.5).
    assert got.candidates == 6
    assert got.first == pytest.approx(4.5)
    assert got.second == pytest.approx(3.75)


def test_scaled_buckets_keep_their_proportions():
    assert scale_buckets([(0.3, 0.8), (0.7, 0.4)],
                         0.6) == [(0.3, pytest.approx(0.6)),
                                  (0.7, pytest.approx(0.3))]


@pytest.mark.parametrize('kwargs,match', [
    (dict(target_saving=0.3, ratio=0.5), 'both ratio=0.5 and target'),
    (dict(target_saving=1.0), r'in \(0, 1\).*got 1.0'),
    (dict(target_saving=0), r'in \(0, 1\).*got 0'),
    (dict(target_saving=True), r'got True'),
    (dict(target_saving='0.3'), r"got '0.3'"),
    (dict(max_ratio=1.0), r'max_ratio .* got 1.0'),
    (dict(max_ratio=0), r'max_ratio .* got 0'),
    (dict(target_saving=0.3, policy='quantile',
          buckets=[(0.5, 0.0)]), 'every ratio in buckets is 0'),
])
def test_bad_target_set_ups_name_the_fix(kwargs, match):
    args = dict(
        target_saving=None,
        max_ratio=0.8,
        ratio=None,
        policy='mean',
        buckets=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        validate_target(**args)


def test_bad_schedule_is_refused():
    with pytest.raises(ValueError, match='global_batch must be an int >= 1'):
        _plan(100, 0, 10)


def _first_pass_losses(sigma, seed=0, n=1008, batch=16):
    """Losses of one first pass: a sample's difficulty (log-normal) times
    a model level, one level a batch, that stays high for most of the pass
    and then falls sevenfold (as when a warm-up ends)."""
    g = torch.Generator().manual_seed(seed)
    difficulty = torch.exp(sigma *
                           torch.randn(n, generator=g, dtype=torch.float64))
    x = torch.linspace(0, 1, n // batch, dtype=torch.float64)
    level = 0.5 + 2.9 / (1 + torch.exp(20 * (x - 0.75)))
    losses = difficulty * level.repeat_interleave(batch)
    return difficulty, losses.view(-1, batch)


@pytest.mark.parametrize('sigma', [0.3, 0.6, 1.0])
@pytest.mark.parametrize('seed', [0, 1, 2])
def test_relative_losses_see_the_share_of_one_model_state(sigma, seed):
    difficulty, batches = _first_pass_losses(sigma, seed)
    relative = RelativeLosses()
    for batch in batches:
        relative.add(batch.numpy())
    truth = float((difficulty < difficulty.mean()).double().mean())
    assert relative.share_below_mean() == pytest.approx(truth, abs=0.03)
    if sigma == 0.3:
        # Where the spread of difficulty is small against the fall of the
        # level, the raw table's share is the level's, not the samples'.
        mixed = batches.flatten()
        raw = float((mixed < mixed.mean()).double().mean())
        assert truth - raw > 0.07


def test_relative_losses_skip_what_has_no_spread_and_round_trip():
    relative = RelativeLosses()
    assert math.isnan(relative.share_below_mean())
    relative.add([1.0])  # one score: no spread
    relative.add([float('nan'), 2.0])  # one finite score
    assert math.isnan(relative.share_below_mean())
    relative.add([1.0, 1.0, 1.0, 5.0])
    # Ratios to the geometric mean 5 ** 0.25: three below their mean.
    assert relative.share_below_mean() == pytest.approx(0.75)
    state = relative.state_dict()
    back = RelativeLosses()
    back.load_state_dict(state)
    assert back.share_below_mean() == pytest.approx(0.75)
    back.load_state_dict({})  # older checkpoints: empty
    assert math.isnan(back.share_below_mean())


def test_estimate_with_later_passes_of_another_profile():
    now, later = Profile(486, 486., 486.), Profile(590, 590., 590.)
    same = expected_saving(0.5, now, QUICK, 1, 0.0, later=now)
    assert same == pytest.approx(expected_saving(0.5, now, QUICK, 1, 0.0))
    mixed = expected_saving(0.5, now, QUICK, 1, 0.0, later=later)
    # Pass 1 with 486 candidates, passes 2..24 with 590.
    assert mixed == pytest.approx(
        (pass_saving(QUICK, now, 0.5) + 23 * pass_saving(QUICK, later, 0.5)) /
        1764)
    r = ratio_for_saving(0.3, now, QUICK, 1, 0.0, 0.8, later)
    assert expected_saving(r, now, QUICK, 1, 0.0, later) == pytest.approx(
        0.3, abs=1e-6)
    assert r < ratio_for_saving(0.3, now, QUICK, 1)


def _summed_over_every_step(plan, pruned_mean, pruned_var):
    """The docstring's sum over every step j = 2..F, with no window."""
    kept = plan.num_samples - pruned_mean
    sd = math.sqrt(pruned_var)
    first_step = plan.global_batch if plan.drop_last else 1
    total = 1.0
    for j in range(2, plan.full_pass_batches + 1):
        c_j = (j - 1) * plan.global_batch + first_step
        total += 0.5 * math.erfc((c_j - 0.5 - kept) / (sd * math.sqrt(2.0)))
    return total


@pytest.mark.parametrize('drop_last', [False, True])
@pytest.mark.parametrize('num_samples,batch', [(1000, 16), (1024, 16),
                                               (100, 32), (37, 4)])
@pytest.mark.parametrize('pruned_mean,pruned_sd', [(0.0, 0.01), (0.3, 0.5),
                                                   (3.0, 2.0), (40.0, 0.2),
                                                   (55.5, 6.0), (9.0, 30.0),
                                                   (30.0, 0.9)])
def test_the_tail_window_leaves_out_only_what_is_nearly_0_or_1(
        num_samples, batch, drop_last, pruned_mean, pruned_sd):
    """The expected iterations sum one term per step only within TAIL
    standard deviations: the same, to 1e-9, as the sum over every step."""
    plan = _plan(num_samples, batch, 10 * num_samples, drop_last=drop_last)
    windowed = expected_pass_iters(plan, pruned_mean, pruned_sd**2)
    assert windowed == pytest.approx(
        _summed_over_every_step(plan, pruned_mean, pruned_sd**2), abs=1e-9)


def test_the_solver_gives_ratio_zero_exactly_when_the_need_is_met():
    profile = Profile(550, 550.0, 550.0)
    budget = QUICK.budget_iters
    met = solve_pass_ratio(0.25, profile, QUICK, 3, 0.25 * budget)
    assert met.ratio == 0.0 and met.capped is False
    # Half an iteration still needed: a ratio above 0 saves it.
    short = solve_pass_ratio(0.25, profile, QUICK, 3, 0.25 * budget - 0.5)
    assert 0 < short.ratio < 0.01 and short.capped is False
    assert short.expected == pytest.approx(0.25, abs=1e-9)


def test_the_savings_default_to_none_saved_before():
    profile = Profile(550, 550.0, 550.0)
    assert expected_saving(0.4, profile, QUICK,
                           2) == expected_saving(0.4, profile, QUICK, 2, 0.0)
    assert ratio_for_saving(0.2, profile, QUICK,
                            2) == ratio_for_saving(0.2, profile, QUICK, 2, 0.0)


def test_the_most_a_run_can_save_counts_what_was_saved_before():
    budget = QUICK.budget_iters
    fresh = max_expected_saving(QUICK, 4, 0.0, 0.8)
    ahead = max_expected_saving(QUICK, 4, 100.0, 0.8)
    assert ahead - fresh == pytest.approx(100.0 / budget)
    # Every sample a candidate at 0.8: 800 of 1,000 pruned per pass.
    everyone = Profile(1000, 1000.0, 1000.0)
    assert fresh == expected_saving(0.8, everyone, QUICK, 4)
