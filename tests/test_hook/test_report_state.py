"""The report's checkpoint state (hook/report.py, ``SavingReport``): plain
ints, floats, a bool and a tensor of bin counts, which a resumed run
restores to report as the uninterrupted one would; an empty state (older
checkpoints) is a fresh report."""
import math

import numpy as np
import pytest
import torch

from mmseg_infobatch.hook.report import (LOG_RANGE, LOG_STEP, RelativeLosses,
                                         SavingReport)

BINS = int(round(2 * LOG_RANGE / LOG_STEP))


def _counted():
    """A report that counted pass 0's batches: three equal losses and one
    5 times as high, so three quarters lie below their batch's mean."""
    report = SavingReport()
    for _ in range(3):
        report.add_batch(0, np.array([1.0, 1.0, 1.0, 5.0]))
    return report


def _assert_fresh(report):
    assert report.estimate is None
    assert report.cap_warned is False
    assert math.isnan(report.out_of_reach)
    assert int(report.relative.counts.sum()) == 0
    assert math.isnan(report.relative.share_below_mean())


def test_a_fresh_reports_state_is_plain_values_without_an_estimate():
    state = SavingReport().state_dict()
    assert set(state) == {
        'estimate_pass', 'estimate_ratio', 'estimate_saving', 'cap_warned',
        'out_of_reach', 'relative'
    }
    assert state['estimate_pass'] == -1 and type(state['estimate_pass']) \
        is int
    for key in ('estimate_ratio', 'estimate_saving', 'out_of_reach'):
        assert type(state[key]) is float and math.isnan(state[key])
    assert state['cap_warned'] is False
    counts = state['relative']['counts']
    assert set(state['relative']) == {'counts'}
    assert counts.dtype == torch.int64 and counts.shape == (BINS, )
    assert int(counts.sum()) == 0


def test_the_state_holds_plain_numbers_of_the_estimate():
    """Whatever number types the estimate was made of, the state holds
    plain ints and floats (a checkpoint loads them with weights_only)."""
    report = _counted()
    report.estimate = dict(
        pass_idx=np.int64(3),
        ratio=torch.tensor(0.5, dtype=torch.float64),
        saving=np.float32(0.25))
    report.cap_warned = True
    report.out_of_reach = 0.375
    state = report.state_dict()
    assert [(type(state[k]), state[k])
            for k in ('estimate_pass', 'estimate_ratio', 'estimate_saving',
                      'cap_warned', 'out_of_reach')] == [(int, 3),
                                                         (float, 0.5),
                                                         (float, 0.25),
                                                         (bool, True),
                                                         (float, 0.375)]
    assert int(state['relative']['counts'].sum()) == 12


def test_the_relative_counts_in_the_state_are_a_copy():
    report = _counted()
    counts = report.state_dict()['relative']['counts']
    report.add_batch(0, np.array([1.0, 2.0]))
    assert int(counts.sum()) == 12


def test_a_resumed_report_reports_as_the_uninterrupted_one(tmp_path):
    report = _counted()
    report.estimate = dict(pass_idx=0, ratio=0.5, saving=0.25)
    report.cap_warned = True
    report.out_of_reach = 0.375
    torch.save(report.state_dict(), tmp_path / 'report.pth')
    back = SavingReport()
    back.load_state_dict(
        torch.load(tmp_path / 'report.pth', weights_only=True))
    # An estimate at pass 0 (a resumed run whose pass 0 had scores) counts.
    assert back.estimate == dict(pass_idx=0, ratio=0.5, saving=0.25)
    assert [type(back.estimate[k])
            for k in ('pass_idx', 'ratio', 'saving')] == [int, float, float]
    assert back.cap_warned is True and back.out_of_reach == 0.375
    assert back.relative.share_below_mean() == pytest.approx(0.75)
    assert np.array_equal(back.relative.counts, report.relative.counts)
    # The estimate is made: later batches of pass 0 are no longer counted.
    back.add_batch(0, np.array([1.0, 9.0]))
    assert np.array_equal(back.relative.counts, report.relative.counts)


def test_a_state_without_an_estimate_clears_the_one_held():
    report = _counted()
    report.estimate = dict(pass_idx=1, ratio=0.5, saving=0.25)
    report.cap_warned = True
    report.out_of_reach = 0.375
    report.load_state_dict(SavingReport().state_dict())
    _assert_fresh(report)


@pytest.mark.parametrize(
    'state', [{}, {
        'estimate_pass': -1
    }, {
        'relative': None
    }, {
        'relative': {}
    }],
    ids=['empty', 'no-estimate', 'no-relative', 'no-counts'])
def test_an_older_checkpoints_state_is_a_fresh_report(state):
    report = _counted()
    report.estimate = dict(pass_idx=1, ratio=0.5, saving=0.25)
    report.cap_warned = True
    report.out_of_reach = 0.375
    report.load_state_dict(state)
    _assert_fresh(report)


def test_an_older_state_without_the_newer_fields_reads_their_defaults():
    """A checkpoint written before the cap, out-of-reach and relative
    losses were kept holds only the estimate."""
    report = SavingReport()
    report.cap_warned, report.out_of_reach = True, 0.375
    report.load_state_dict(
        dict(estimate_pass=2, estimate_ratio=0.5, estimate_saving=0.25))
    assert report.estimate == dict(pass_idx=2, ratio=0.5, saving=0.25)
    assert report.cap_warned is False and math.isnan(report.out_of_reach)


def test_relative_losses_restore_their_counts_into_the_same_bins():
    losses = RelativeLosses()
    losses.add(np.array([1.0, 2.0, 3.0]))
    back = RelativeLosses()
    back.load_state_dict(losses.state_dict())
    assert np.array_equal(back.counts, losses.counts)
    assert back.counts.dtype == np.int64 and back.counts.shape == (BINS, )


# -- the bin counts the state carries ----------------------------------------


def _edge(i):
    """The lower edge of bin ``i``: log ratios from -LOG_RANGE up, LOG_STEP
    wide."""
    return -LOG_RANGE + LOG_STEP * i


def test_a_batch_of_two_scores_has_a_spread_and_is_counted():
    relative = RelativeLosses()
    relative.add(np.array([1.0, 4.0, np.nan]))
    # Ratios 1/2 and 2 to the geometric mean 2: one on each side of the
    # ratios' mean 1.25.
    assert int(relative.counts.sum()) == 2
    assert relative.share_below_mean() == pytest.approx(0.5)


def test_ratios_beyond_the_range_count_in_the_edge_bins():
    """A loss 1e10 times its batch's geometric mean, and one 1e-10 times
    it, lie beyond +-LOG_RANGE (log 1e10 = 23)."""
    relative = RelativeLosses()
    relative.add(np.array([1e-10, 1e10]))
    assert relative.counts[0] == 1 and relative.counts[-1] == 1
    assert int(relative.counts.sum()) == 2


def test_single_precision_scores_count_as_their_double_values():
    """The hook hands the batch's scores as float32; the ratios are taken
    at double precision, where these four fall into other bins than
    single-precision logs would put one of them."""
    single = np.array([4.58213472, 4.61177349, 2.53010154, 6.13496494],
                      dtype=np.float32)
    as_single, as_double = RelativeLosses(), RelativeLosses()
    as_single.add(single)
    as_double.add(single.astype(np.float64))
    assert np.array_equal(as_single.counts, as_double.counts)


def test_the_share_splits_the_bin_the_mean_falls_in_linearly():
    """100 ratios in each of two neighbouring bins: their mean (of the
    bins' centres) lies just above the edge between them, and the part of
    the upper bin below it counts in proportion to its width."""
    i = 900
    counts = torch.zeros(BINS, dtype=torch.int64)
    counts[i] = counts[i + 1] = 100
    relative = RelativeLosses()
    relative.load_state_dict(dict(counts=counts))
    centres = [_edge(i) + LOG_STEP / 2, _edge(i + 1) + LOG_STEP / 2]
    cut = math.log(sum(math.exp(c) for c in centres) / 2)
    assert _edge(i + 1) < cut < _edge(i + 2)
    fraction = (cut - _edge(i + 1)) / LOG_STEP
    assert 0 < fraction < 0.01
    assert relative.share_below_mean() == pytest.approx(
        (100 + 100 * fraction) / 200, rel=1e-9)
