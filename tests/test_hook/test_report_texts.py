"""What a run is told (hook/report.py), whole line by whole line: the
start-up lines, each pass's line and scalars, the out-of-reach and cap
warnings, the pre-flight estimate and the closing lines.

The sampler is a stand-in holding exactly what the report reads, around a
real :class:`RunPlan`, so each number in a line is one the test chose or
computes by hand; the saving and ratios of the estimate are the target
solver's formulas (sampler/target.py, tested in test_target.py), called
here with the arguments the line names.
"""
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_infobatch.hook.report import (SavingReport, log_finish,
                                         log_pass_start, log_setup)
from mmseg_infobatch.sampler.history import PassRecord
from mmseg_infobatch.sampler.prune_rule import Profile
from mmseg_infobatch.sampler.run_plan import RunPlan
from mmseg_infobatch.sampler.target import (expected_saving,
                                            max_expected_saving,
                                            ratio_for_saving)

LOGGER = 'test_report_texts'
FIX_REACH = ("Raise InfoBatchHook's delta (more passes prune) or the number "
             'of passes, lower target_saving or raise max_ratio.')
FIX_CAP = ("Raise max_ratio, lower target_saving or raise InfoBatchHook's "
           'delta (more passes prune).')


def _lines(caplog, call):
    """(level, message) of each record ``call()`` logs."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        call(logging.getLogger(LOGGER))
    return [(r.levelname, r.getMessage()) for r in caplog.records
            if r.name == LOGGER]


def _sampler(plan, **fields):
    """A stand-in InfoBatchSampler: what the report reads of one."""
    values = dict(
        plan=plan,
        num_samples=plan.num_samples,
        target_saving=None,
        ratio=0.5,
        max_ratio=0.75,
        policy='mean',
        prune_high=False,
        buckets=(),
        world_size=1,
        batch_size=plan.global_batch,
        pass_idx=-1,
        saved_iters=0.0,
        prune_stop=plan.prune_stop)
    values.update(fields)
    sampler = SimpleNamespace(**values)
    sampler.pass_saving = lambda: fields.get('current_saving', 0.0)
    return sampler


def _record(**fields):
    values = dict(
        pass_idx=2,
        start_iter=20,
        kept=30,
        pruned=10,
        candidates=20,
        iters=8,
        threshold=0.53127,
        may_prune=True,
        ratio=0.5,
        capped=False,
        expected=0.2)
    values.update(fields)
    return PassRecord(**values)


# -- the start-up lines ----------------------------------------------------

# 40 samples, 2 ranks x 4: 5 iterations a full pass; 23 iterations are
# 4.6 passes, and delta 0.5 prunes passes t < 2.3, so pass 3 anneals.
SETUP_PLAN = RunPlan(40, 8, 23, delta=0.5)


def _setup_lines(caplog, cfg=None, plan=SETUP_PLAN, **fields):
    sampler = _sampler(plan, world_size=2, batch_size=4, **fields)
    runner = SimpleNamespace(cfg=cfg or Config(dict()))
    return _lines(
        caplog, lambda logger: log_setup(
            SimpleNamespace(cfg=runner.cfg, logger=logger), sampler))


@pytest.mark.parametrize(
    'fields,pruning', [
        (dict(ratio=0.5), "ratio 0.5, policy 'mean'"),
        (dict(ratio=None, target_saving=0.25),
         "target_saving 25.0%: a ratio per pass, at most 0.75, policy 'mean'"),
        (dict(policy='quantile', buckets=((0.3, 0.5), (0.7, 0.25))),
         "buckets (q 0.3, r 0.5), (q 0.7, r 0.25), policy 'quantile'"),
    ],
    ids=['ratio', 'target_saving', 'quantile'])
def test_the_start_up_line_states_layout_passes_and_pruning(
        fields, pruning, caplog):
    assert _setup_lines(caplog, **fields) == [
        ('INFO', 'InfoBatch: 40 samples, total batch 8 (2 x 4), 5 iterations '
         'per full pass, 4.60 passes; pruning in passes t < 2.30 '
         f'({pruning}), full-data annealing from pass 3.')
    ]


@pytest.mark.parametrize(
    'plan,stop,anneal',
    [
        (RunPlan(40, 8, 23), 'inf', 'never'),
        # A resume 15 iterations in: pruning stopped before the run's pass 0.
        (RunPlan(40, 8, 20, offset=15, delta=0.5), '-1.00', '0'),
    ],
    ids=['no-delta', 'resumed-past-pruning'])
def test_the_start_up_line_says_where_annealing_starts(plan, stop, anneal,
                                                       caplog):
    passes = f'{plan.budget_iters / 5:.2f}'
    assert _setup_lines(
        caplog, plan=plan) == [
            ('INFO',
             'InfoBatch: 40 samples, total batch 8 (2 x 4), 5 iterations '
             f'per full pass, {passes} passes; pruning in passes t < {stop} '
             f"(ratio 0.5, policy 'mean'), full-data annealing from pass "
             f'{anneal}.')
        ]


def _recipe_warning(recipe, source):
    return ('WARNING', f"InfoBatch: the config's {source} says a total batch "
            f'of {recipe}, but this run trains with 8: the same max_iters now '
            'make 4.60 passes over the data, so the annealing point and the '
            'LR per sample change. Scale max_iters (and the schedule) with '
            'the batch, or use auto_scale_lr.')


def test_a_recipe_batch_other_than_the_runs_is_warned_of(caplog, tmp_path):
    """The recipe's total batch: auto_scale_lr.base_batch_size, else the
    config name's 'NxbM' (N x M)."""
    cfg = Config(dict(auto_scale_lr=dict(base_batch_size=16)))
    assert _setup_lines(caplog, cfg)[1:] == [
        _recipe_warning(16, 'auto_scale_lr.base_batch_size')
    ]
    named = tmp_path / 'fcn_r50-d8_2xb3-80k_ade20k-512x512.py'
    named.write_text('auto_scale_lr = dict(enable=False)\n')
    assert _setup_lines(caplog, Config.fromfile(
        str(named)))[1:] == [_recipe_warning(6, 'name')]


def test_no_recipe_warning_where_the_batch_is_the_recipes_or_unstated(
        caplog, tmp_path):
    named = tmp_path / 'fcn_r50-d8_2xb4-80k_ade20k-512x512.py'
    named.write_text('x = 1\n')
    unnamed = tmp_path / 'mine.py'
    unnamed.write_text('auto_scale_lr = dict(base_batch_size=None)\n')
    for cfg in (Config(dict(auto_scale_lr=dict(base_batch_size=8))),
                Config.fromfile(str(named)), Config.fromfile(str(unnamed)),
                Config(dict())):
        assert len(_setup_lines(caplog, cfg)) == 1


# -- each pass -------------------------------------------------------------

# 40 samples in batches of 4: 10 iterations a full pass, 95 of them 9.5
# passes (10 passes, the last in part).
PASS_PLAN = RunPlan(40, 4, 95, delta=0.8)


def _pass_start(caplog, record, end, keeps_schedule):
    added = []
    sampler = _sampler(PASS_PLAN)

    def call(logger):
        runner = SimpleNamespace(
            logger=logger,
            iter=20,
            visualizer=SimpleNamespace(
                add_scalars=lambda s, step: added.append((s, step))))
        log_pass_start(runner, record, sampler, end, keeps_schedule)

    return _lines(caplog, call), added


def test_a_pass_line_states_its_ratio_kept_pruned_and_the_end(caplog):
    # Training ends at 91 of the budget's 95: 4 iterations saved so far.
    lines, added = _pass_start(caplog, _record(), 91, False)
    assert lines == [
        ('INFO', 'InfoBatch pass 2 (3/10): r 0.500, kept 30/40, pruned 10 of '
         '20 below threshold 0.5313; 8 iterations (full pass 10); saved so '
         'far 4 iterations (4.2%), ends at 91 of 95')
    ]
    assert added == [({
        'infobatch/pass': 2,
        'infobatch/kept': 30,
        'infobatch/pruned': 10,
        'infobatch/pass_iters': 8,
        'infobatch/saved_iters': 4,
        'infobatch/saved_ratio': 4 / 95,
        'infobatch/threshold': 0.53127,
        'infobatch/ratio': 0.5,
    }, 20)]


def test_a_pass_line_under_a_kept_schedule_and_in_annealing(caplog):
    """The loop keeps its end (the passes make room for more); an
    annealing pass says so, and a record's unknown threshold and ratio
    (NaN) are no scalars."""
    record = _record(
        pass_idx=8,
        kept=40,
        pruned=0,
        candidates=0,
        iters=10,
        threshold=math.nan,
        may_prune=False,
        ratio=math.nan)
    lines, added = _pass_start(caplog, record, 95, True)
    assert lines == [
        ('INFO', 'InfoBatch pass 8 (9): r nan, kept 40/40, pruned 0 of 0 '
         'below threshold nan; 10 iterations (full pass 10); saved so far 0 '
         'iterations (0.0%), ends at 95 (schedule kept) [annealing: full '
         'data]')
    ]
    assert added == [({
        'infobatch/pass': 8,
        'infobatch/kept': 40,
        'infobatch/pruned': 0,
        'infobatch/pass_iters': 10,
        'infobatch/saved_iters': 0,
        'infobatch/saved_ratio': 0.0,
    }, 20)]


# -- the closing line -------------------------------------------------------


def test_the_closing_line_states_iterations_saved_passes_and_skipped(caplog):
    lines = _lines(
        caplog, lambda logger: log_finish(
            SimpleNamespace(iter=70, logger=logger), 80, 9, 2))
    assert lines == [
        ('INFO', 'InfoBatch finished: 70 iterations instead of 80 (10 saved, '
         '12.5%) over 9 passes; 2 image scores were skipped (no valid pixel '
         'or non-finite loss).')
    ]


# -- target_saving out of reach --------------------------------------------

# 40 samples in batches of 4, 10 iterations a pass, 10 passes; delta 0.5:
# passes 0..4 prune.
REACH_PLAN = RunPlan(40, 4, 100, delta=0.5)


def _reachable(caplog, report, sampler):
    return _lines(caplog,
                  lambda logger: report.check_reachable(logger, sampler))


@pytest.mark.parametrize(
    'plan,pass_idx,limit,first,passes',
    [(REACH_PLAN, -1, 'passes t < 5.00 may prune and pass 0 has no scores', 1,
      '4.00'), (REACH_PLAN, 2, 'passes t < 5.00 may prune', 3, '2.00'),
     (RunPlan(40, 4, 100), 0, 'every pass may prune and pass 0 has no scores',
      1, '9.00')],
    ids=['before-pass-0', 'resumed-in-pass-2', 'no-annealing'])
def test_a_target_out_of_reach_is_said_with_the_most_the_run_saves(
        plan, pass_idx, limit, first, passes, caplog):
    """Before the first pass that may prune from scores (pass 1 at the
    start): the passes from there on, each pruning every sample at
    max_ratio, after what the run saved (3 iterations: 2 in the passes
    before, 1 in the current one)."""
    sampler = _sampler(
        plan,
        ratio=None,
        target_saving=0.9,
        pass_idx=pass_idx,
        saved_iters=2.0,
        current_saving=1.0)
    most = max_expected_saving(plan, first, 3.0, 0.75)
    assert most < max_expected_saving(plan, first, 0.0, 1.0) < 0.9
    report = SavingReport()
    assert _reachable(caplog, report, sampler) == [
        ('WARNING', f'InfoBatch: target_saving 90.0% cannot be reached. Only '
         f'{limit}, which leaves {passes} pruning passes from pass {first} '
         'on: even pruning every sample at max_ratio 0.75 in them, the run '
         f'would save {most:.1%} of its 100 full-data iterations. '
         f'{FIX_REACH}')
    ]
    assert report.out_of_reach == most
    # Said once: a resume that restored the report says nothing again.
    assert _reachable(caplog, report, sampler) == []


def test_a_reachable_target_or_a_fixed_ratio_is_not_warned_of(caplog):
    fresh = _sampler(REACH_PLAN, ratio=None, target_saving=0.9)
    most = max_expected_saving(REACH_PLAN, 1, 0.0, 0.75)
    for sampler in (_sampler(REACH_PLAN, ratio=0.5),
                    _sampler(RunPlan(40, 4), ratio=None, target_saving=0.9),
                    _sampler(REACH_PLAN, ratio=None, target_saving=most)):
        report = SavingReport()
        assert _reachable(caplog, report, sampler) == []
        assert math.isnan(report.out_of_reach)
    # Unless the report already said it (out_of_reach restored).
    report = SavingReport()
    report.out_of_reach = 0.5
    assert _reachable(caplog, report, fresh) == []
    assert report.out_of_reach == 0.5


# -- the cap and the estimate at a pass start -------------------------------

# 40 samples in batches of 4, 10 passes of 10 iterations; delta 0.8:
# passes 0..7 prune.
PLAN = RunPlan(40, 4, 100, delta=0.8)
NOW, LATER = Profile(20, 20.0, 20.0), Profile(28, 28.0, 28.0)


def _estimate_sampler(**fields):
    """Pass 2 decided from 20 candidates, 1 iteration saved before it,
    37 samples scored."""
    seen = torch.zeros(40, dtype=torch.bool)
    seen[:37] = True
    fields.setdefault('profile', lambda: NOW)
    return _sampler(PLAN, saved_iters=1.0, seen=seen, pass_idx=2, **fields)


def _pass_zero(report):
    """Pass 0's batches of 4, three equal losses and one 5 times as high
    (and one with a non-finite loss, skipped): relative to their batch a
    quarter lie above the mean, three quarters below."""
    for _ in range(9):
        report.add_batch(0, np.array([2.0, 2.0, 2.0, 10.0]))
    report.add_batch(0, np.array([1.0, 1.0, 1.0, 5.0, np.nan]))
    report.add_batch(1, np.array([9.0, 1.0, 1.0, 1.0]))  # pass 1: not counted


def _pass_start_lines(caplog, report, sampler, record):
    return _lines(
        caplog,
        lambda logger: report.after_pass_start(logger, sampler, record))


def _wants(later):
    ratios = [
        ratio_for_saving(t, NOW, PLAN, 2, 1.0, 0.75, later)
        for t in (0.2, 0.3, 0.4)
    ]
    return ', '.join(f'{t}%: ' +
                     (f'{r:.3f}' if r is not None else 'above max_ratio 0.75')
                     for t, r in zip((20, 30, 40), ratios))


def _estimate_line(assumed, planned, saving, later):
    # With 28 candidates later, 20% takes a ratio below max_ratio 0.75 and
    # 40% one above it.
    if later == LATER:
        assert 'above max_ratio' not in _wants(later).split(', ')[0]
        assert 'above max_ratio' in _wants(later).split(', ')[2]
    return (f'InfoBatch estimate at the start of pass 2: 20 of 40 samples '
            f'are candidates (50.0%); {assumed}. {planned} {saving:.1%} of '
            'the 100 full-data iterations over the run. One ratio for every '
            f'pass that saves {_wants(later)}.')


@pytest.mark.parametrize('prune_high,share,side', [(False, 0.75, 'below'),
                                                   (True, 0.25, 'above')])
def test_the_estimate_assumes_pass_0s_relative_share_for_later_passes(
        prune_high, share, side, caplog):
    """Policy 'mean': the passes after the first pruning one are assumed
    to have the share of pass 0's losses, relative to their batch, on the
    pruned side of the mean, of the samples scored (37), rounded: 27.75
    to 28 below, 9.25 to 9 above."""
    later = Profile(*[round(share * 37)] * 3)
    report = SavingReport()
    _pass_zero(report)
    sampler = _estimate_sampler(prune_high=prune_high)
    saving = expected_saving(0.5, NOW, PLAN, 2, 1.0, later)
    assumed = (f"relative to their own batch, pass 0's losses put "
               f'{share:.1%} {side} the mean, which later passes are assumed '
               'to have')
    assert _pass_start_lines(caplog, report, sampler, _record()) == [
        ('INFO',
         _estimate_line(assumed, 'Ratio 0.5 is expected to save', saving,
                        later))
    ]
    assert report.estimate == dict(pass_idx=2, ratio=0.5, saving=saving)
    # Made once.
    assert _pass_start_lines(caplog, report, sampler, _record(pass_idx=3)) \
        == []


@pytest.mark.parametrize('policy,batches', [('random', True), ('mean', False)])
def test_the_estimate_assumes_the_passs_own_candidates_otherwise(
        policy, batches, caplog):
    """Other policies, or no batch of two scores counted: later passes are
    assumed to have the candidates of the pass itself."""
    report = SavingReport()
    if batches:
        _pass_zero(report)
    else:
        report.add_batch(0, np.array([1.0]))
        report.add_batch(0, np.array([1.0, np.inf]))
    sampler = _estimate_sampler(policy=policy)
    saving = expected_saving(0.5, NOW, PLAN, 2, 1.0, None)
    assert _pass_start_lines(caplog, report, sampler, _record()) == [
        ('INFO',
         _estimate_line('later passes are assumed to have as many',
                        'Ratio 0.5 is expected to save', saving, None))
    ]


def test_the_estimate_under_target_saving_is_what_the_solver_planned(caplog):
    report = SavingReport()
    _pass_zero(report)
    sampler = _estimate_sampler(ratio=None, target_saving=0.3)
    record = _record(ratio=0.4567, expected=0.2875)
    later = LATER
    assumed = ("relative to their own batch, pass 0's losses put 75.0% below "
               'the mean, which later passes are assumed to have')
    planned = ('target_saving solved ratio 0.457 for this pass (and solves '
               'each pass again), planning to save')
    assert _pass_start_lines(caplog, report, sampler, record) == [
        ('INFO', _estimate_line(assumed, planned, 0.2875, later))
    ]
    assert report.estimate == dict(pass_idx=2, ratio=0.4567, saving=0.2875)


def test_no_estimate_before_candidates_nor_in_annealing(caplog):
    for sampler, record in (
        (_estimate_sampler(profile=lambda: Profile(0, 0.0, 0.0)), _record()),
        (_estimate_sampler(), _record(may_prune=False)),
    ):
        report = SavingReport()
        assert _pass_start_lines(caplog, report, sampler, record) == []
        assert report.estimate is None


def test_the_cap_is_warned_of_once_where_the_start_did_not_warn(caplog):
    """max_ratio bounds target_saving's ratio: said once, at the first pass
    it binds, unless the start said the target was out of reach."""
    sampler = _estimate_sampler(ratio=None, target_saving=0.3)
    capped = _record(ratio=0.75, capped=True, expected=0.2125, may_prune=False)
    report = SavingReport()
    assert _pass_start_lines(caplog, report, sampler, capped) == [
        ('WARNING', "InfoBatch: target_saving 30.0% cannot be reached with "
         "policy 'mean' and max_ratio 0.75: pass 2 prunes at r 0.75, and the "
         f'run is expected to save 21.2%. {FIX_CAP}')
    ]
    assert report.cap_warned
    assert _pass_start_lines(caplog, report, sampler, capped) == []
    out_of_reach = SavingReport()
    out_of_reach.out_of_reach = 0.25
    assert _pass_start_lines(caplog, out_of_reach, sampler, capped) == []
    assert not out_of_reach.cap_warned


# -- the closing lines ------------------------------------------------------


def _at_end(caplog, report, reached, **fields):
    sampler = _sampler(PLAN, **fields)
    return _lines(caplog,
                  lambda logger: report.at_end(logger, sampler, reached))


@pytest.mark.parametrize('out_of_reach,cap_warned,short', [
    (math.nan, False, '.'),
    (math.nan, True, '; max_ratio 0.75 stopped it short.'),
    (0.18, True, '; it was out of reach of the passes that may prune (at '
     'most 18.0%).'),
])
def test_the_end_compares_the_saving_with_the_target(out_of_reach, cap_warned,
                                                     short, caplog):
    report = SavingReport()
    report.out_of_reach, report.cap_warned = out_of_reach, cap_warned
    assert _at_end(
        caplog, report, 0.175, ratio=None, target_saving=0.25) == [
            ('INFO', 'InfoBatch target_saving 25.0%: the run saved 17.5% '
             f'(-7.5 points){short}')
        ]


def test_the_end_compares_the_saving_with_the_estimate(caplog):
    """In signed points, a difference that rounds to zero as +0.0."""
    report = SavingReport()
    report.estimate = dict(pass_idx=1, ratio=0.5, saving=0.2)
    assert _at_end(caplog, report, 0.3125) == [
        ('INFO', 'InfoBatch estimate at the start of pass 1: 20.0%; the run '
         'saved 31.2% (+11.2 points).')
    ]
    assert _at_end(
        caplog, report, 0.1996, ratio=None, target_saving=0.2) == [
            ('INFO', 'InfoBatch target_saving 20.0%: the run saved 20.0% '
             '(+0.0 points).'),
            ('INFO', 'InfoBatch estimate at the start of pass 1: 20.0%; the '
             'run saved 20.0% (+0.0 points).'),
        ]
    # Neither a target nor an estimate: nothing to compare.
    assert _at_end(caplog, SavingReport(), 0.3) == []
