"""target_saving and the pre-flight estimate in real runs: what the log,
the scalars and the checkpoint say (the demo model on tiny digit scenes:
40 scenes, batch 4, 10 iterations a full pass, 8 passes, delta 0.875)."""
import json
import re

import pytest
import torch
from helpers.configs import demo_config, run_config

from mmseg_infobatch.engine.checkpoint_types import load_trusted_checkpoint
from mmseg_infobatch.sampler.prune_rule import Profile
from mmseg_infobatch.sampler.run_plan import RunPlan
from mmseg_infobatch.sampler.target import expected_saving

PASSES, FULL = 8, 10
BUDGET = PASSES * FULL


def _run(work_dir, digit_root, **sampler):
    cfg = demo_config(
        work_dir,
        digit_root,
        passes=PASSES,
        record=False,
        train_dataloader=dict(sampler=sampler))
    runner = run_config(cfg)
    text = ''.join(p.read_text() for p in work_dir.glob('*/*.log'))
    scalars = [
        json.loads(line) for p in work_dir.glob('*/vis_data/scalars.json')
        for line in p.read_text().splitlines()
    ]
    return runner, text, scalars


@pytest.fixture(scope='module')
def target_run(digit_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('target')
    return (work_dir, ) + _run(
        work_dir, digit_root, ratio=None, target_saving=0.25)


def test_target_run_saves_its_share_and_says_so(target_run):
    work_dir, runner, text, _ = target_run
    reached = (BUDGET - runner.iter) / BUDGET
    # 40 samples in batches of 4: a pass saves whole iterations, each
    # 1/80 of the budget, so the run lands within about one of them.
    assert reached == pytest.approx(0.25, abs=1.5 / BUDGET)
    found = re.search(r'target_saving 25\.0%: the run saved (\d+\.\d)%', text)
    assert found and float(found.group(1)) == pytest.approx(
        100 * reached, abs=0.05 + 1e-9)
    assert 'cannot be reached' not in text


def test_each_pass_logs_and_records_its_ratio(target_run):
    work_dir, runner, text, scalars = target_run
    logged = [
        float(r) for r in re.findall(
            r'InfoBatch pass \d+ \(\d+/\d+\): r (\d\.\d+),', text)
    ]
    assert len(logged) == PASSES
    assert logged[0] == 0 and logged[-1] == 0  # unscored, annealing
    assert all(0 < r <= 0.8 for r in logged[1:7])
    by_scalar = [
        r['infobatch/ratio'] for r in scalars if 'infobatch/ratio' in r
    ]
    assert [round(r, 3) for r in by_scalar] == logged
    ckpt = load_trusted_checkpoint(sorted(work_dir.glob('iter_*.pth'))[-1])
    history = ckpt['infobatch']['history']
    assert history['ratio'].round(decimals=3).tolist() == logged
    assert ckpt['infobatch']['target']['estimate_pass'] == 1


def test_estimate_under_target_saving_is_the_solvers_plan(target_run):
    """The solver solves every pass again, so the estimate is what it
    planned at pass 1, and the closing line compares against that."""
    work_dir, runner, text, _ = target_run
    found = re.findall(
        r'target_saving solved ratio (\d\.\d+) for this pass \(and solves '
        r'each pass again\), planning to save (\d+\.\d)% of the 80', text)
    assert len(found) == 1, text[-3000:]
    ckpt = load_trusted_checkpoint(sorted(work_dir.glob('iter_*.pth'))[-1])
    history = ckpt['infobatch']['history']
    assert float(found[0][0]) == pytest.approx(
        float(history['ratio'][1]), abs=5e-4)
    planned = float(found[0][1])
    assert planned == pytest.approx(
        100 * float(history['expected'][1]), abs=0.05 + 1e-9)
    end = re.search(
        r'estimate at the start of pass 1: (\d+\.\d)%; the run '
        r'saved (\d+\.\d)% \(([+-]\d+\.\d) points\)', text)
    assert end and float(end.group(1)) == planned
    reached = 100 * (BUDGET - runner.iter) / BUDGET
    assert float(end.group(3)) == pytest.approx(reached - planned, abs=0.1)


def test_estimate_after_the_first_scored_pass_and_at_the_end(
        digit_root, tmp_path):
    runner, text, _ = _run(tmp_path, digit_root, ratio=0.5)
    found = re.findall(
        r'InfoBatch estimate at the start of pass 1: (\d+) of 40 samples '
        r'are candidates \(\d+\.\d%\); relative to their own batch, pass '
        r"0's losses put (\d+\.\d)% below the mean, which later passes are "
        r'assumed to have\. Ratio 0\.5 is expected to save (\d+\.\d)% of '
        r'the 80 full-data iterations over the run\. One ratio for every pass '
        r'that saves '
        r'20%: (\S+), 30%: (\S+), 40%: (\S+)', text)
    assert len(found) == 1, text[-3000:]
    now, share, estimate = int(found[0][0]), float(found[0][1]), \
        float(found[0][2])
    # The estimate is the formula's: pass 1 with its own candidates,
    # passes 2..6 with the share pass 0's relative losses give.
    later = round(share / 100 * 40)
    schedule = RunPlan(40, 4, BUDGET, delta=0.875)
    # Logged to 0.1 points: off by at most half of that (1e-9: a tie
    # such as 18.75 prints as 18.8).
    assert estimate == pytest.approx(
        100 * expected_saving(0.5, Profile(now, now, now), schedule, 1, 0.0,
                              Profile(later, later, later)),
        abs=0.05 + 1e-9)
    reached = 100 * (BUDGET - runner.iter) / BUDGET
    end = re.search(
        r'estimate at the start of pass 1: (\d+\.\d)%; the run '
        r'saved (\d+\.\d)% \(([+-]\d+\.\d) points\)', text)
    assert end, text[-2000:]
    assert float(end.group(1)) == estimate
    assert float(end.group(2)) == pytest.approx(reached, abs=0.05 + 1e-9)
    assert float(end.group(3)) == pytest.approx(reached - estimate, abs=0.1)


def test_a_target_capped_by_max_ratio_is_logged_once(digit_root, tmp_path):
    """Pruning every sample at r 0.5 in passes 1 to 6 would save 34.7%,
    so 30% is not out of reach at the start; the candidates the passes
    have make max_ratio 0.5 bind, which is said once, when it does."""
    runner, text, _ = _run(
        tmp_path, digit_root, ratio=None, target_saving=0.3, max_ratio=0.5)
    assert text.count('cannot be reached') == 1
    warning = re.search(
        r'target_saving 30\.0% cannot be reached with policy \'mean\' and '
        r'max_ratio 0\.5: .* expected to save (\d+\.\d)%', text)
    assert warning, text[-3000:]
    reached = (BUDGET - runner.iter) / BUDGET
    assert reached < 0.3
    assert re.search(
        r'target_saving 30\.0%: the run saved '
        rf'{100 * reached:.1f}% \(-\d+\.\d points\); max_ratio 0\.5 stopped '
        'it short', text)
    logged = [
        float(r) for r in re.findall(
            r'InfoBatch pass \d+ \(\d+/\d+\): r (\d\.\d+),', text)
    ]
    assert 0.5 in logged[1:7]


def test_a_target_out_of_reach_is_logged_once_at_the_start(
        digit_root, tmp_path):
    """60% is more than pruning every sample at r 0.5 in every pruning
    pass saves: said once, before pass 0, instead of the cap warning."""
    runner, text, _ = _run(
        tmp_path, digit_root, ratio=None, target_saving=0.6, max_ratio=0.5)
    assert text.count('cannot be reached') == 1
    warned = text.index('target_saving 60.0% cannot be reached. Only')
    assert warned < text.index('InfoBatch pass 0 ')
    reached = (BUDGET - runner.iter) / BUDGET
    assert re.search(
        rf'target_saving 60\.0%: the run saved {100 * reached:.1f}% '
        r'\(-\d+\.\d points\); it was out of reach', text)


def test_report_state_round_trips_with_weights_only(tmp_path):
    import numpy as np

    from mmseg_infobatch.hook.report import SavingReport
    report = SavingReport()
    report.add_batch(0, np.array([1.0, 1.0, 1.0, 5.0]))
    report.add_batch(1, np.array([1.0, 9.0]))  # past pass 0: not counted
    report.estimate = dict(pass_idx=1, ratio=0.5, saving=0.2)
    report.cap_warned = True
    torch.save(report.state_dict(), tmp_path / 'report.pth')
    back = SavingReport()
    back.load_state_dict(
        torch.load(tmp_path / 'report.pth', weights_only=True))
    assert back.estimate == report.estimate and back.cap_warned
    assert back.relative.share_below_mean() == pytest.approx(0.75)
    back.load_state_dict({})  # a checkpoint without it: a fresh report
    assert back.estimate is None and not back.cap_warned
