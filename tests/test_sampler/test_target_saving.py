"""InfoBatchSampler with target_saving: each pass's ratio solved so that
the run saves a share of its full-data iterations."""
import math

import pytest
import torch
from helpers import all_weights, make_sampler

from mmseg_infobatch.sampler.history import PassRecord
from mmseg_infobatch.sampler.infobatch_sampler import InfoBatchSampler

N, BATCH, PASSES, DELTA = 1000, 16, 28, 0.875
FULL = 63  # ceil(1000 / 16)
BUDGET = PASSES * FULL


def _sampler(n=N,
             rank=0,
             world=1,
             batch_size=BATCH,
             budget=BUDGET,
             prune_stop=DELTA * PASSES,
             offset=0,
             **kwargs):
    return make_sampler(
        n,
        rank,
        world,
        batch_size,
        prune_stop=prune_stop,
        budget_iters=budget,
        offset=offset,
        **kwargs)


def _scores(pass_idx, n=N):
    """Scores that drift from pass to pass, the same in every run: the
    share below the mean moves between about 0.5 and 0.75."""
    g = torch.Generator().manual_seed(1000 + pass_idx)
    power = 1.0 + 2.0 * (pass_idx % 5) / 4
    return torch.rand(n, generator=g)**power


def _train_pass(sampler):
    """Iterate the next pass, score every sample it trained, count its
    batches as trained (what InfoBatchHook does)."""
    share = torch.tensor(list(iter(sampler)))
    scores = _scores(sampler.pass_idx, sampler.num_samples)
    sampler.update_scores(share, scores[share])
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    return share


def _run(sampler, passes=PASSES, stop_after=None):
    """Train passes up to the budget; returns r_t and iterations per pass."""
    ratios, iters = [], []
    while sampler.pass_idx + 1 < passes:
        _train_pass(sampler)
        ratios.append(sampler.decision.ratio)
        iters.append(sampler.pass_batches)
        if stop_after is not None and sampler.pass_idx == stop_after:
            break
    return ratios, iters


def _saved_share(iters, budget=BUDGET, full=FULL):
    saved = sum(full - it for it in iters)
    return saved / budget


@pytest.mark.parametrize('target', [0.15, 0.3])
@pytest.mark.parametrize('seed', [0, 1])
def test_run_saves_its_target_share(target, seed):
    s = _sampler(target_saving=target, seed=seed)
    ratios, iters = _run(s)
    assert _saved_share(iters) == pytest.approx(target, abs=0.01)
    # The sampler's own account agrees with the passes' lengths.
    assert s.saved_iters + s.pass_saving() == pytest.approx(
        sum(FULL - it for it in iters))
    # Pass 0 has no scores; passes t >= 24.5 anneal.
    assert ratios[0] == 0 and ratios[25:] == [0.0] * 3
    assert all(0 < r <= 0.8 for r in ratios[1:25])
    # The ratio follows the data: it is not one number.
    assert len({round(r, 6) for r in ratios[1:25]}) > 3


def test_default_ratio_is_half_and_a_fixed_ratio_is_recorded():
    a, b = _sampler(), _sampler(ratio=0.5)
    ra, ia = _run(a, passes=4)
    rb, ib = _run(b, passes=4)
    assert (ra, ia) == (rb, ib) and a.ratio == 0.5
    assert torch.equal(a.padded_order, b.padded_order)
    assert ra == [0.0, 0.5, 0.5, 0.5]  # pass 0: no candidates


def test_cap_binds_when_the_target_is_out_of_reach():
    s = _sampler(target_saving=0.6, max_ratio=0.7)
    _train_pass(s)
    _train_pass(s)
    stats = s.decision
    assert stats.capped and stats.ratio == 0.7
    # What r 0.7 reaches if every pruning pass looks like pass 1 (half
    # the samples below the mean): 0.7 x 0.5 x 24 of 28 passes.
    assert stats.expected == pytest.approx(0.7 * 0.5 * 24 / 28, abs=0.01)
    ratios, _ = _run(s)
    assert all(r == 0.7 for r in ratios[:23])  # passes 2..24
    reached = (s.saved_iters + s.pass_saving()) / BUDGET
    # Later passes have more candidates (up to 75%), so more is reached.
    assert stats.expected < reached < 0.6


def test_reachable_target_never_caps():
    s = _sampler(target_saving=0.2)
    _train_pass(s)
    for _ in range(5):
        _train_pass(s)
        assert not s.decision.capped
        assert s.decision.expected == pytest.approx(0.2, abs=0.01)


def _kept_times_weight(sampler, trials):
    """Mean over seeds of kept x weight per sample in pass 1, and the r_t
    each seed's pass 1 was decided with."""
    _train_pass(sampler)
    # The same score table for every seed.
    sampler.update_scores(torch.arange(200), _scores(7, 200))
    state = sampler.state_dict()
    total = torch.zeros(200, dtype=torch.float64)
    ratios = set()
    for seed in range(trials):
        sampler.load_state_dict(state)
        sampler.seed = seed
        list(iter(sampler))  # decides pass 1
        kept = torch.zeros(200, dtype=torch.float64)
        kept[sampler.order.long()] = 1
        total += kept * all_weights(sampler).double()
        ratios.add(sampler.decision.ratio)
    return total / trials, ratios


@pytest.mark.parametrize('kwargs', [
    dict(target_saving=0.2),
    dict(target_saving=0.35, max_ratio=0.6),
    dict(
        target_saving=0.2, policy='quantile', buckets=[(0.3, 0.8),
                                                       (0.7, 0.4)]),
])
def test_decision_is_unbiased_at_its_solved_ratio(kwargs):
    trials = 2000
    sampler = _sampler(200, budget=10 * 13, prune_stop=8, **kwargs)
    mean, ratios = _kept_times_weight(sampler, trials)
    # One r_t for every seed: the ratio is a function of the scores and
    # the schedule, not of the draw.
    assert len(ratios) == 1
    r = ratios.pop()
    assert 0.1 < r <= kwargs.get('max_ratio', 0.8)
    # 4.5 per-sample standard errors, sqrt(r / (1 - r) / trials).
    assert mean.sub(1).abs().max() < 4.5 * math.sqrt(r / (1 - r) / trials)
    assert mean.mean() == pytest.approx(1.0, abs=0.01)


def test_weights_are_one_over_one_minus_the_pass_ratio():
    s = _sampler(target_saving=0.25)
    _train_pass(s)
    _train_pass(s)
    r = s.decision.ratio
    weights = all_weights(s)
    kept = s.order.long()
    for value in weights.unique().tolist():
        assert value == 1.0 or value == pytest.approx(1 / (1 - r), rel=1e-6)
    assert (weights[kept] > 1).sum() == s.decision.candidates - \
        s.decision.pruned


def test_quantile_buckets_are_scaled_together():
    buckets = [(0.3, 0.8), (0.7, 0.4)]
    s = _sampler(target_saving=0.2, policy='quantile', buckets=buckets)
    ratios, iters = _run(s)
    assert _saved_share(iters) == pytest.approx(0.2, abs=0.01)
    # r_t is the largest bucket's ratio; the other keeps half of it.
    table = sorted(s.served.weight_table.tolist())
    assert max(ratios) <= 0.8
    s2 = _sampler(target_saving=0.2, policy='quantile', buckets=buckets)
    _train_pass(s2)
    _train_pass(s2)
    r = s2.decision.ratio
    want = sorted([1.0, 1 / (1 - r), 1 / (1 - r / 2)])
    assert sorted(s2.served.weight_table.tolist()) == pytest.approx(
        want, rel=1e-6)
    assert table[0] == 1.0


def test_resume_mid_run_reaches_the_same_total():
    ref = _sampler(target_saving=0.3)
    ref_ratios, ref_iters = _run(ref)
    for stop_after, position in ((1, 0), (6, 20), (24, 3)):
        first = _sampler(target_saving=0.3)
        ratios, iters = _run(first, stop_after=stop_after)
        # Mid-pass: the checkpoint holds the pass, its position and the
        # saving of the passes before it.
        first.served.trained_batches = min(position, first.pass_batches)
        state = first.state_dict()
        resumed = _sampler(target_saving=0.3, seed=99)  # checkpoint wins
        resumed.load_state_dict(state)
        assert resumed.saved_iters == first.saved_iters
        assert torch.equal(resumed.served.weight_table,
                           first.served.weight_table)
        # The decision's record is the hook's history, not the sampler's,
        # once the pass's first batch was trained (the hook records it
        # then); before that the checkpoint holds it.
        if first.trained_batches:
            assert resumed.decision is None
        else:
            assert repr(resumed.decision) == repr(first.decision)
        # The pass trained out.
        resumed.served.trained_batches = resumed.pass_batches
        more_ratios, more_iters = _run(resumed)
        assert ratios + more_ratios == ref_ratios
        assert iters + more_iters == ref_iters


def test_ranks_solve_the_same_ratio():
    # 2 ranks x batch 16: 32 iterations a full pass.
    samplers = [
        _sampler(rank=r, world=2, budget=PASSES * 32, target_saving=0.3)
        for r in (0, 1)
    ]
    pruned = 0
    for _ in range(4):
        shares = [torch.tensor(list(iter(s))) for s in samplers]
        pruned += samplers[0].decision.pruned
        a, b = samplers
        trained = torch.cat(shares)
        for s in samplers:  # the hook gathers every rank's scores
            s.update_scores(trained, _scores(s.pass_idx)[trained])
            s.served.trained_batches = s.pass_batches
        assert repr(a.decision) == repr(b.decision)
        assert torch.equal(a.served.weight_table, b.served.weight_table)
        assert torch.equal(a.padded_order, b.padded_order)
        for rank in (0, 1):
            assert torch.equal(shares[rank], a.padded_order[rank::2].long())
    assert pruned > 0  # the ranks agreed on passes that pruned


def test_older_state_has_its_saving_made_from_the_pass_history():
    """Formats 2 and 3 lack the saving before the current pass: the state
    upgrade makes it from the run's pass history: the iterations each
    earlier pass saved."""
    s = _sampler()
    _run(s, passes=3)
    state = s.state_dict()
    del state['saved_iters']
    # Older states held the decision's statistics too: ignored.
    state['pass_stats'] = dict(threshold=0.5, candidates=3, pruned=1)
    full = s.full_pass_batches
    history = [
        PassRecord(t, -1, 0, 0, 0, full - saved, math.nan, True)
        for t, saved in enumerate((4, 3, 5))  # pass 2 is the current one
    ]
    t = _sampler(target_saving=0.3)
    t.load_state_dict(state, history)
    assert t.pass_idx == 2
    assert t.saved_iters == 4 + 3 and t.decision is None


def test_target_needs_the_schedule():
    s = make_sampler(40, batch_size=4, seed=0, target_saving=0.3)
    _train_pass(s)  # pass 0 has nothing to prune: no schedule needed
    with pytest.raises(ValueError, match='InfoBatchHook'):
        list(iter(s))


@pytest.mark.parametrize('kwargs,match', [
    (dict(ratio=0.5, target_saving=0.3), 'give one of them'),
    (dict(ratio=0.0, target_saving=0.3), 'give one of them'),
    (dict(target_saving=1.5), r'target_saving .* got 1.5'),
    (dict(target_saving=0.3, max_ratio=1.0), r'max_ratio .* got 1.0'),
])
def test_bad_target_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoBatchSampler(list(range(10)), seed=0, **kwargs)
