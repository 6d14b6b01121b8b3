"""InfoBatchSampler's interface to mmengine and to InfoBatchHook: the
layout before and after configure(), the run plan, the length of a pass,
the epoch-based resume's rest of the saved pass, the saving of the passes
before the current one, and the checkpoint's layout and seed."""
import math
from unittest import mock

import pytest
import torch
from helpers import SAMPLER_DIST_INFO, make_sampler

from mmseg_infobatch.sampler.infobatch_sampler import (DEFAULT_RATIO,
                                                       InfoBatchSampler)
from mmseg_infobatch.sampler.prune_rule import Profile
from mmseg_infobatch.sampler.run_plan import PassPosition, RunPlan
from mmseg_infobatch.sampler.state import dataset_fingerprint


def _score_all(sampler, seed=0):
    g = torch.Generator().manual_seed(seed)
    sampler.update_scores(
        torch.arange(sampler.num_samples),
        torch.rand(sampler.num_samples, generator=g))


def _train_pass(sampler):
    indices = list(iter(sampler))
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    return indices


def test_before_configure_the_layout_is_one_sample_a_batch():
    s = make_sampler(10, rank=1, world=3)
    assert (s.rank, s.world_size) == (1, 3)
    assert not s.configured and s.plan is None
    assert s.batch_size is None and s.drop_last is False
    assert s.global_batch == 3
    # 10 samples over 3 ranks: 4 a rank.
    assert s.full_pass_batches == 4 and len(s) == 4
    assert s.prune_stop == math.inf and s.prunes_now
    assert s.pass_saving() == 0.0
    assert s.position == PassPosition(-1, 0, 0)
    assert s.order is None and s.padded_order is None


def test_configure_sets_the_layout_and_the_plan():
    s = make_sampler(20, rank=1, world=2)
    s.configure(3, drop_last=1)
    assert s.configured and s.batch_size == 3
    assert s.drop_last is True and s.plan.drop_last is True
    assert s.plan == RunPlan(20, 6, drop_last=True)
    assert s.global_batch == 6
    # 20 samples cut down to whole iterations of 6: 3 a pass.
    assert s.full_pass_batches == 3 and len(s) == 9
    assert s.fingerprint == dataset_fingerprint(s.dataset)
    assert s.layout() == dict(
        num_samples=20,
        world_size=2,
        batch_size=3,
        drop_last=True,
        fingerprint=dataset_fingerprint(s.dataset))
    t = make_sampler(20, world=2, batch_size=3)
    assert t.drop_last is False and t.full_pass_batches == 4


def test_set_plan_gives_the_budget_offset_and_annealing():
    s = make_sampler(20, batch_size=2)
    s.set_plan(100, offset=20, delta=0.5)
    assert s.plan == RunPlan(20, 2, budget_iters=100, offset=20, delta=0.5)
    # delta x C passes, less the offset's: 0.5 x 10 - 2.
    assert s.prune_stop == 3
    s.set_plan(100)
    assert s.plan == RunPlan(20, 2, budget_iters=100)
    assert s.prune_stop == math.inf


def test_the_length_is_the_rank_share_of_the_current_pass():
    s = make_sampler(50, rank=1, world=2, batch_size=4)
    assert len(s) == 7 * 4  # a full pass, before any: 56 slots, 28 a rank
    first = _train_pass(s)
    assert len(s) == len(first) == 28
    _score_all(s)
    second = list(iter(s))
    assert len(s) == len(second) == s.padded_order.numel() // 2 < 28


def test_set_epoch_changes_nothing():
    s = make_sampler(20, batch_size=2)
    first = list(iter(s))
    s.set_epoch(5)
    assert list(iter(s)) == first and s.pass_idx == 0


def test_defaults_of_the_paper():
    with mock.patch(SAMPLER_DIST_INFO, return_value=(0, 1)):
        s = InfoBatchSampler(list(range(8)), seed=1)
    assert s.ratio == DEFAULT_RATIO == 0.5 and s.target_saving is None
    assert (s.policy, s.prune_high, s.buckets, s.rescale, s.shuffle) == \
        ('mean', False, None, True, True)
    assert s.max_ratio == 0.8
    t = make_sampler(8, target_saving=0.25, max_ratio=0.5)
    assert t.ratio is None and t.target_saving == 0.25
    assert t.max_ratio == 0.5
    q = make_sampler(8, policy='quantile', buckets=[[0.3, 0.8], [0.7, 0.4]])
    assert q.buckets == [(0.3, 0.8), (0.7, 0.4)]


def test_without_a_seed_all_ranks_share_a_synced_one():
    with mock.patch(SAMPLER_DIST_INFO, return_value=(0, 1)), \
            mock.patch('mmseg_infobatch.sampler.infobatch_sampler.'
                       'sync_random_seed', return_value=1234):
        assert InfoBatchSampler(list(range(8))).seed == 1234
        assert InfoBatchSampler(list(range(8)), seed=0).seed == 0


def test_each_pass_is_drawn_from_the_seed_and_its_number():
    # Two samplers of different seeds agree on a pass when the seed plus
    # the pass number agree.
    a = make_sampler(30, batch_size=2, seed=5)
    b = make_sampler(30, batch_size=2, seed=6)
    _train_pass(a)
    first_b = _train_pass(b)
    second_a = list(iter(a))
    assert second_a == first_b


def test_the_rest_of_a_saved_pass_is_served_once_in_its_epoch():
    # An epoch-based loop resumed mid-epoch runs the epoch again from its
    # start: the sampler serves the untrained rest of the saved pass, then
    # the next pass.
    s = make_sampler(20, batch_size=2)
    _train_pass(s)
    _score_all(s)
    share = list(iter(s))
    s.finish_batch()
    s.finish_batch()
    t = make_sampler(20, batch_size=2, seed=8)
    t.load_state_dict(s.state_dict())
    t.prepare_rest()
    assert list(iter(t)) == share[4:]
    for _ in range(t.pass_batches - 2):
        t.finish_batch()
    _score_all(t, 1)
    list(iter(t))
    assert t.pass_idx == 2


def test_the_rest_of_a_pass_trained_to_its_end_is_nothing():
    s = make_sampler(20, batch_size=2)
    _train_pass(s)
    t = make_sampler(20, batch_size=2)
    t.load_state_dict(s.state_dict())
    t.prepare_rest()
    assert list(iter(t)) == [] and t.pass_idx == 0
    # Nothing scored: the next pass is full.
    assert len(list(iter(t))) == 20 and t.pass_idx == 1


def test_a_replay_serves_filler_then_the_saved_pass():
    s = make_sampler(20, batch_size=2)
    _train_pass(s)
    _score_all(s)
    share = list(iter(s))
    s.finish_batch()
    t = make_sampler(20, batch_size=2)
    t.load_state_dict(s.state_dict())
    t.prepare_replay(1)
    assert list(iter(t)) == share[:2] + share
    assert t.position == PassPosition(1, 1, s.pass_batches)


def test_each_pass_adds_what_it_saved_to_the_saving_before_the_next():
    s = make_sampler(40, batch_size=2, prune_stop=math.inf, budget_iters=80)
    full = s.full_pass_batches
    assert full == 20
    _train_pass(s)
    assert s.pass_saving() == 0.0 and s.saved_iters == 0.0
    _score_all(s)
    _train_pass(s)
    first = s.pass_saving()
    assert first == full - s.pass_batches > 0
    assert s.saved_iters == 0.0
    _score_all(s, 1)
    _train_pass(s)
    assert s.saved_iters == first
    second = s.pass_saving()
    _score_all(s, 2)
    list(iter(s))
    assert s.saved_iters == first + second
    state = s.state_dict()
    assert state['saved_iters'] == first + second
    t = make_sampler(40, batch_size=2, prune_stop=math.inf, budget_iters=80)
    t.load_state_dict(state)
    assert t.saved_iters == first + second
    assert type(t.saved_iters) is float


def test_the_profile_is_that_of_the_decision_or_of_the_scores_now():
    s = make_sampler(40, batch_size=2)
    _train_pass(s)
    _score_all(s)
    list(iter(s))
    decided = s.profile()
    assert decided.candidates == s.decision.candidates > 0
    # Scores written during the pass leave its profile as decided.
    s.update_scores(torch.arange(40), torch.arange(40).float())
    assert s.profile() is decided
    t = make_sampler(40, batch_size=2)
    t.load_state_dict(s.state_dict())
    # A restored pass: the profile of the scores now (20 below the mean).
    assert t.profile().candidates == 20
    assert t.profile() is t.profile()


def test_the_checkpoint_seed_wins_and_its_tables_are_copies():
    s = make_sampler(20, batch_size=2, seed=4)
    _train_pass(s)
    _score_all(s)
    state = s.state_dict()
    assert state['seed'] == 4 and state['layout'] == s.layout()
    assert state['scores'].data_ptr() != s.scores.data_ptr()
    assert state['seen_bits'].data_ptr() != s.seen_bits.data_ptr()
    state['scores'] = state['scores'].double()
    state['seed'] = torch.tensor(4)
    t = make_sampler(20, batch_size=2, seed=11)
    t.load_state_dict(state)
    assert t.seed == 4 and type(t.seed) is int
    assert t.scores.dtype == torch.float32
    assert torch.equal(t.scores, s.scores)
    assert torch.equal(t.seen, s.seen)
    state['scores'][:] = -1
    state['seen_bits'][:] = 0
    assert torch.equal(t.scores, s.scores) and torch.equal(t.seen, s.seen)


@pytest.mark.parametrize('policy,buckets,ratio', [
    ('mean', None, 0.3),
    ('random', None, 0.3),
    ('quantile', [(0.3, 0.8), (0.7, 0.4)], 0.8),
])
def test_the_decision_records_the_pass(policy, buckets, ratio):
    s = make_sampler(
        40,
        batch_size=2,
        policy=policy,
        buckets=buckets,
        ratio=None if buckets else ratio)
    _train_pass(s)
    first = s.decision
    assert (first.pass_idx, first.start_iter, first.kept, first.pruned,
            first.candidates, first.iters) == (0, -1, 40, 0, 0, 20)
    assert first.may_prune and first.ratio == 0.0 and not first.capped
    assert math.isnan(first.expected)
    _score_all(s)
    list(iter(s))
    record = s.decision
    kept = s.order.numel()
    assert (record.pass_idx, record.start_iter, record.kept) == (1, -1, kept)
    assert record.pruned == 40 - kept > 0
    assert record.candidates >= record.pruned
    assert record.iters == s.pass_batches == -(-kept // 2)
    assert record.ratio == ratio and record.may_prune
    assert not record.capped and math.isnan(record.expected)


@pytest.mark.parametrize(
    'options,candidates,first',
    [
        (dict(), 30, 30.0),
        (dict(prune_high=True), 10, 10.0),
        # The lowest quarter at the largest ratio, the next at half of it.
        (dict(
            policy='quantile', ratio=None, buckets=[(0.25, 0.8),
                                                    (0.5, 0.4)]), 20, 15.0),
    ])
def test_a_restored_pass_is_profiled_by_its_own_rule(options, candidates,
                                                     first):
    # 30 low scores and 10 high ones: 30 below the mean, 10 above.
    scores = torch.cat([torch.arange(30) * 0.01, 10 + torch.arange(10.0)])
    s = make_sampler(40, batch_size=2, **options)
    list(iter(s))
    s.update_scores(torch.arange(40), scores)
    t = make_sampler(40, batch_size=2, **options)
    t.load_state_dict(s.state_dict())
    profile = t.profile()
    assert profile.candidates == candidates
    assert profile.first == pytest.approx(first)


def test_a_target_saving_pass_without_candidates_solves_no_ratio():
    # Pass 0 (nothing scored) and an annealing pass: no ratio to solve,
    # so none bound at max_ratio and no expected saving.
    s = make_sampler(
        40, batch_size=2, prune_stop=1, budget_iters=60, target_saving=0.2)
    _train_pass(s)
    _score_all(s)
    list(iter(s))
    assert s.pass_idx == 1 and not s.prunes_now
    record = s.decision
    assert (record.ratio, record.capped, record.candidates) == (0.0, False, 0)
    assert math.isnan(record.expected)
    t = make_sampler(
        40,
        batch_size=2,
        prune_stop=math.inf,
        budget_iters=60,
        target_saving=0.2)
    _train_pass(t)
    assert (t.decision.ratio, t.decision.capped) == (0.0, False)
    assert math.isnan(t.decision.expected)


def test_a_replay_lands_on_the_first_pass_when_saved_in_it():
    s = make_sampler(20, batch_size=2)
    share = list(iter(s))
    s.finish_batch()
    t = make_sampler(20, batch_size=2)
    t.load_state_dict(s.state_dict())
    t.prepare_replay(1)
    assert list(iter(t)) == share[:2] + share
    assert t.position == PassPosition(0, 1, 10)


def test_configure_pads_passes_up_by_default():
    s = make_sampler(21)
    s.configure(2)
    assert s.drop_last is False and s.full_pass_batches == 11


def test_a_fresh_sampler_holds_one_uint8_code_per_sample_and_no_candidate():
    sampler = make_sampler(40)
    assert sampler.served.weight_codes.dtype == torch.uint8
    assert sampler.served.weight_codes.numel() == 40
    # Nothing scored yet: no sample may be pruned.
    assert sampler.profile() == Profile(0, 0.0, 0.0)


def test_the_sampler_refuses_a_target_its_quantile_buckets_cannot_save():
    with pytest.raises(ValueError, match='every ratio in buckets is 0'):
        make_sampler(
            40,
            policy='quantile',
            buckets=[(0.5, 0.0), (1.0, 0.0)],
            ratio=None,
            target_saving=0.3)
