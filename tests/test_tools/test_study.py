"""tools/misc/run_study.py and the study plot, without training."""
import json
import math
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
sys.path.insert(0, str(REPO / 'tools' / 'misc'))
import analyze_infobatch  # noqa: E402
import run_study  # noqa: E402


def test_quick_and_full_study_use_their_own_config_and_folder():
    quick = run_study.parse_args(['--quick'])
    full = run_study.parse_args([])
    assert quick.config == run_study.QUICK_CONFIG
    assert full.config == run_study.CONFIG
    assert quick.work_dir != full.work_dir
    assert quick.arms == ['full', 'infobatch'] and quick.seeds == [0, 1]
    assert full.arms == list(run_study.ARMS) and full.seeds == [0, 1, 2]
    assert run_study.load_schedule(full.config)['passes'] == 56
    assert run_study.load_schedule(quick.config)['passes'] == 28


def test_bad_jobs_is_named(capsys):
    with pytest.raises(SystemExit):
        run_study.parse_args(['--jobs', '0'])
    assert '--jobs must be at least 1' in capsys.readouterr().err


@pytest.mark.parametrize('passes', [28, 56, 20.5])
def test_random_ratio_saves_what_infobatch_saved(passes):
    saved, delta = 0.241, 0.875
    r = run_study.random_ratio(saved, passes, delta)
    pruned_passes = math.ceil(delta * passes) - 1
    assert r * pruned_passes / passes == pytest.approx(saved)


def test_arm_options():
    assert 'train_dataloader.sampler.ratio=0.0' in run_study.arm_options(
        'full', 0)
    assert 'train_dataloader.sampler.ratio=0.6' in run_study.arm_options(
        'ratio_0.6', 1)
    assert 'custom_hooks.0.anneal=False' in run_study.arm_options(
        'no_anneal', 2)
    random = run_study.arm_options('random', 3, random_r=0.28)
    assert "train_dataloader.sampler.policy='random'" in random
    assert 'train_dataloader.sampler.rescale=False' in random
    assert 'randomness.seed=3' in random


def test_target_arm_replaces_the_configs_ratio():
    import argparse

    from mmengine.config import Config, DictAction
    opts = run_study.arm_options('target_0.3', 0)
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg = Config.fromfile(str(REPO / run_study.QUICK_CONFIG))
    assert cfg.train_dataloader.sampler.ratio == 0.5
    cfg.merge_from_dict(
        parser.parse_args(['--cfg-options', *opts]).cfg_options)
    # Both given would be refused: the arm sets the ratio to None.
    assert cfg.train_dataloader.sampler.ratio is None
    assert cfg.train_dataloader.sampler.target_saving == 0.3


def test_finished_run_is_reused_only_with_the_same_settings(tmp_path):
    args = run_study.parse_args(['--work-dir', str(tmp_path)])
    schedule = dict(max_iters=100, iters_per_pass=10)
    opts = run_study.arm_options('full', 0) + ['train_cfg.val_interval=40']
    run_dir = tmp_path / 'full' / 'seed0'
    run_dir.mkdir(parents=True)
    for config, options in ((run_study.QUICK_CONFIG, opts), (run_study.CONFIG,
                                                             opts[:-1])):
        (run_dir / 'result.json').write_text(
            json.dumps(dict(config=config, options=options, miou=90.0)))
        with pytest.raises(RuntimeError, match='another --work-dir'):
            run_study.run_one(args, 'full', 0, schedule)
    (run_dir / 'result.json').write_text(
        json.dumps(dict(config=run_study.CONFIG, options=opts, miou=90.0)))
    assert run_study.run_one(args, 'full', 0, schedule)['miou'] == 90.0


def _study(tmp_path):

    def run(arm, seed, miou, iters):
        return dict(
            arm=arm,
            seed=seed,
            miou=miou,
            iters=iters,
            budget=100,
            saved=(100 - iters) / 100,
            wall_s=10.0,
            train_s=9.0)

    runs = dict(
        full=[run('full', 0, 90.0, 100),
              run('full', 1, 92.0, 100)],
        infobatch=[
            run('infobatch', 0, 89.0, 75),
            run('infobatch', 1, 90.0, 76)
        ])
    summary = {arm: run_study.summarize(r) for arm, r in runs.items()}
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(dict(summary=summary, runs=runs)))
    return summary, results


def test_table_reports_gap_to_full_data(tmp_path):
    summary, _ = _study(tmp_path)
    table = run_study.markdown(summary, dict(passes=2, max_iters=100))
    row = next(line for line in table.splitlines()
               if line.startswith('| InfoBatch'))
    cells = [c.strip() for c in row.split('|')]
    assert cells[3] == '89.50 ± 0.71'
    assert cells[4] == '-1.50'  # 89.5 - 91.0
    assert cells[6] == '24.5%'


def test_study_plot(tmp_path):
    _, results = _study(tmp_path)
    out = analyze_infobatch.plot_study(str(results), str(tmp_path))
    assert out and (tmp_path / 'study.png').stat().st_size > 5000
