"""Every script the docs tell users about, run as the docs show it.

Each script in ``benchmarks/`` and ``tools/`` (its subfolders included) runs
in a subprocess in a small form, and its test checks what it prints or
writes. ``SCRIPT_TESTS`` names the test that runs each script, here or
elsewhere in the suite, and ``test_every_script_has_a_test_that_runs_it``
fails when a script is added without one.
"""
import json
import os
import re
import subprocess
import sys

import pytest
from helpers import REPO, TESTS

# Script (relative to the repository) -> (test file under tests/, test).
SCRIPT_TESTS = {
    'benchmarks/gpu_check.py': ('test_tools/test_shipped_scripts.py',
                                'test_gpu_check_smoke_prints_the_table'),
    'benchmarks/gpu_check.sh': ('test_tools/test_shipped_scripts.py',
                                'test_gpu_check_sh_dispatches'),
    'benchmarks/gpu_bundle.sh': ('test_tools/test_shipped_scripts.py',
                                 'test_gpu_bundle_and_offline_check'),
    'benchmarks/gpu_offline_check.sh': ('test_tools/test_shipped_scripts.py',
                                        'test_gpu_bundle_and_offline_check'),
    'benchmarks/benchmark_scale.py':
    ('test_tools/test_benchmark_scale.py',
     'test_benchmark_scale_quick_prints_the_table'),
    'benchmarks/benchmark_overhead.py':
    ('test_tools/test_shipped_scripts.py',
     'test_benchmark_overhead_quick_prints_both_tables'),
    'benchmarks/peak_rss.py':
    ('test_tools/test_shipped_scripts.py',
     'test_benchmark_overhead_quick_prints_both_tables'),
    'tools/misc/run_study.py': ('test_tools/test_shipped_scripts.py',
                                'test_study_smoke_writes_the_table'),
    'tools/dataset_converters/make_digit_scenes.py':
    ('test_tools/test_shipped_scripts.py',
     'test_study_smoke_writes_the_table'),
    'tools/analysis_tools/analyze_infobatch.py':
    ('test_tools/test_shipped_scripts.py',
     'test_analyze_draws_the_smoke_study'),
    'tools/dataset_converters/make_tiny_ade.py':
    ('test_tools/test_shipped_scripts.py', 'test_make_tiny_ade_as_documented'),
    'tools/analysis_tools/check_compat.py':
    ('test_tools/test_shipped_scripts.py', 'test_check_compat_subset'),
    'tools/demo.sh': ('test_tools/test_shipped_scripts.py',
                      'test_demo_and_test_commands_dispatch'),
    'tools/run_tests.sh': ('test_tools/test_shipped_scripts.py',
                           'test_demo_and_test_commands_dispatch'),
    'tools/bootstrap_env.sh': ('test_tools/test_shipped_scripts.py',
                               'test_demo_and_test_commands_dispatch'),
    'tools/misc/demo.py': ('test_tools/test_demo.py',
                           'test_demo_summary_matches_the_run'),
    'tools/train.py': ('test_tools/test_flagship.py',
                       'test_flagship_trains_shortened_to_eta_min'),
    'tools/test.py': ('test_tools/test_flagship.py',
                      'test_test_tool_evaluates_a_checkpoint'),
    'tools/dist_train.sh': ('test_tools/test_scripts.py',
                            'test_dist_train_dispatches_through_torchrun'),
    'tools/dist_test.sh': ('test_tools/test_scripts.py',
                           'test_dist_test_dispatches_through_torchrun'),
    'tools/slurm_train.sh': ('test_tools/test_scripts.py',
                             'test_slurm_train_dispatches_to_train_py'),
    'tools/slurm_test.sh': ('test_tools/test_scripts.py',
                            'test_slurm_test_dispatches_to_test_py'),
}


def _scripts():
    return sorted(
        str(path.relative_to(REPO)) for folder in ('benchmarks', 'tools')
        for pattern in ('*.py', '*.sh')
        for path in (REPO / folder).rglob(pattern))


def test_every_script_has_a_test_that_runs_it():
    missing = sorted(set(_scripts()) - set(SCRIPT_TESTS))
    assert not missing, (
        f'{missing} have no test that runs them: add one and name it in '
        'SCRIPT_TESTS of tests/test_tools/test_shipped_scripts.py')
    stale = sorted(set(SCRIPT_TESTS) - set(_scripts()))
    assert not stale, f'SCRIPT_TESTS names scripts that are gone: {stale}'
    for script, (test_file, test_name) in SCRIPT_TESTS.items():
        source = (TESTS / test_file).read_text()
        match = re.search(rf'^def {test_name}\(.*?(?=^def |\Z)', source,
                          re.M | re.S)
        assert match, f'{test_file} has no {test_name} (for {script})'
        # The test, or a fixture or helper of its file, names the script
        # (a helper module of the tools by its module name).
        name = os.path.basename(script)
        assert name in source or name[:-3] in source, (
            f'{test_file} never names {script}')


def run(args, timeout=600, check=True, **env):
    """Run a command from the repository root as a user would."""
    # The environment's python first on PATH, as in an activated venv.
    path = os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ['PATH']])
    result = subprocess.run(
        args,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, OMP_NUM_THREADS='1', PATH=path, **env))
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + \
            result.stderr[-3000:]
    return result


def test_gpu_check_smoke_prints_the_table():
    out = run([sys.executable, 'benchmarks/gpu_check.py', '--smoke']).stdout
    assert 'RESULT: PASS' in out
    header = next(line for line in out.splitlines()
                  if line.startswith('| precision'))
    fp32 = next(line for line in out.splitlines()
                if line.startswith('| fp32 |'))
    assert fp32.count('|') == header.count('|')
    cells = dict(
        zip(header.strip('| ').split(' | '),
            fp32.strip('| ').split(' | ')))
    plain_iters, ours_iters = map(int,
                                  cells['iters plain/InfoBatch'].split('/'))
    # 8 images in batches of 2 for 3 passes; the middle pass prunes (with
    # the check's fixed seed, enough for a whole batch).
    assert plain_iters == 12 and ours_iters < plain_iters
    assert float(cells['plain ms/iter']) > 0
    assert float(cells['hook ms/iter']) > 0
    assert cells['finite'].startswith('True (8 scored')
    assert 'fp16: skipped, AMP needs CUDA' in out
    assert re.search(r'target saving \(0.95\): met in \d/1', out)
    _check_loss_table(out)


def _check_loss_table(out):
    """The loss wrapper's table: each served loss timed, cross-entropy in
    one evaluation, FocalLoss in two (one weighted, one per image)."""
    rows = dict(
        re.findall(
            r'^\| ((?:\w|[()])+) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| '
            r'(\d+) \|$', out, re.M))
    assert rows['CrossEntropyLoss'] == rows['DiceLoss'] == '1'
    assert rows['CrossEntropyLoss(sigmoid)'] == rows['SiLogLoss'] == '1'
    assert rows['FocalLoss'] == '3'  # batch 2: one weighted, two scored
    assert re.search(r'CE wrapped/plain.*: [\d.]+', out)


def test_gpu_check_sh_dispatches():
    out = run(['bash', 'benchmarks/gpu_check.sh', '--help']).stdout
    assert '--smoke' in out and '--precisions' in out


def test_benchmark_overhead_quick_prints_both_tables(tmp_path):
    out = run([
        sys.executable, 'benchmarks/benchmark_overhead.py', '--quick',
        '--data-root',
        str(tmp_path / 'digits')
    ]).stdout
    rows = re.findall(r'^\| ([\d,]+) \| ([\d.]+) ms \|', out, re.M)
    assert [n for n, _ in rows] == ['20,210', '1,281,167']
    assert all(float(ms) > 0 for _, ms in rows)
    share = re.search(r'hook \+ wrapper share of an iteration \| ([\d.]+)%',
                      out)
    assert share and float(share.group(1)) > 0
    _check_loss_table(out)
    # The peak RSS behind this ratio is benchmarks/peak_rss.py's reading.
    # A step that fits in memory the process already holds grows the peak
    # by nothing, so 0 is a possible reading.
    memory = re.search(r'wrapped/plain ([\d.]+) \(target <= 1.02\)', out)
    assert memory and float(memory.group(1)) >= 0


@pytest.fixture(scope='module')
def smoke_study(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('study')
    result = run([
        sys.executable, 'tools/misc/run_study.py', '--smoke', '--work-dir',
        str(work_dir)
    ])
    return work_dir, result.stdout


def test_study_smoke_writes_the_table(smoke_study):
    work_dir, out = smoke_study
    # tools/dataset_converters/make_digit_scenes.py made the data the runs
    # trained on.
    assert re.search(r'digit scenes ready in .*data \(40 train, 8 val', out)
    summary = json.loads((work_dir / 'results.json').read_text())
    full, ours = summary['summary']['full'], summary['summary']['infobatch']
    assert full['budget'] == ours['budget'] == 20
    assert full['iters_mean'] == 20 and ours['iters_mean'] < 20
    assert 0 <= ours['miou_mean'] <= 100
    table = (work_dir / 'results.md').read_text()
    assert table in out
    assert re.search(
        r'\| full data \(ratio 0\) \| 1 \| [\d.]+ ± 0.00 \| '
        r'\+0.00 \| 20 / 20 \| 0.0% \|', table)


def test_analyze_draws_the_smoke_study(smoke_study):
    work_dir, _ = smoke_study
    out_dir = work_dir / 'plots'
    out = run([
        sys.executable, 'tools/analysis_tools/analyze_infobatch.py',
        str(work_dir / 'infobatch' / 'seed0'), '--compare',
        str(work_dir / 'full' / 'seed0'), '--results',
        str(work_dir / 'results.json'), '--out',
        str(out_dir)
    ]).stdout
    written = sorted(p.name for p in out_dir.glob('*.png'))
    assert written == [
        'lr_progress.png', 'miou_iters.png', 'pruning.png', 'scores.png',
        'study.png'
    ], out
    assert all((out_dir / name).stat().st_size > 5000 for name in written)


def test_make_tiny_ade_as_documented(tmp_path):
    out = run([
        sys.executable, 'tools/dataset_converters/make_tiny_ade.py',
        str(tmp_path / 'tiny_ade'), '--num-train', '3', '--num-val', '2'
    ]).stdout
    assert f'3 training and 2 validation images in {tmp_path}' in out
    assert len(
        list((tmp_path / 'tiny_ade' / 'images' /
              'training').glob('*.jpg'))) == 3
    assert len(
        list((tmp_path / 'tiny_ade' / 'annotations' /
              'validation').glob('*.png'))) == 2


def test_check_compat_subset():
    out = run([
        sys.executable, 'tools/analysis_tools/check_compat.py', '--only',
        'ddrnet', '--limit', '1'
    ]).stdout
    assert out.startswith('1 groups to check')
    line = next(line for line in out.splitlines() if 'ddrnet' in line)
    # DDRNet's OHEM loss couples the batch: served only per image.
    assert line.split()[0] == 'per-image', out


def test_demo_and_test_commands_dispatch():
    # Each sources tools/bootstrap_env.sh, which reuses .venv (or brings it
    # up to date), then hands its arguments to the tool.
    demo = run(['bash', 'tools/demo.sh', '--help'])
    assert re.search(r'^\[bootstrap\] (reusing|done)', demo.stdout, re.M)
    assert 'usage: demo.py' in demo.stdout and '--data-root' in demo.stdout
    tests = run([
        'bash', 'tools/run_tests.sh', '--collect-only', '-q',
        'tests/test_tools/test_packaging.py'
    ])
    assert '[bootstrap] reusing' in tests.stdout
    assert re.search(r'^\d+ tests collected', tests.stdout, re.M)


def test_gpu_bundle_and_offline_check(tmp_path):
    bundle = tmp_path / 'bundle'
    missing = run(['bash', 'benchmarks/gpu_offline_check.sh'],
                  check=False,
                  BUNDLE=str(bundle))
    assert missing.returncode == 2
    assert 'Run benchmarks/gpu_bundle.sh' in missing.stderr
    out = run(['bash', 'benchmarks/gpu_bundle.sh'], BUNDLE=str(bundle)).stdout
    assert '[gpu_bundle] ready' in out
    names = sorted(p.name for p in bundle.iterdir())
    assert 'mmcv-2.1.0.tar.gz' in names
    for wheel in ('mmengine-0.10.7-', 'mmsegmentation-1.2.2-',
                  'setuptools-80.9.0-'):
        assert any(n.startswith(wheel) and n.endswith('.whl') for n in names)
    # This python has mmcv with its ops, so the check skips the build; the
    # bundle's wheels are installed and the check's own options are shown.
    out = run(['bash', 'benchmarks/gpu_offline_check.sh', '--help'],
              BUNDLE=str(bundle),
              WORK=str(tmp_path / 'work'),
              OUT=str(tmp_path),
              PYTHON=sys.executable).stdout
    assert 'mmcv with ops found: no build' in out
    assert re.search(r'mmcv 2\.1\.0 \(ops\), mmengine 0\.10\.7, mmseg 1\.2\.2',
                     out)
    assert 'set-up took' in out and '--precisions' in out
    assert (tmp_path / 'work' / 'site' / 'mmseg').is_dir()
    assert (tmp_path / 'gpu_check.log').read_text() == out


def test_version_matrix_builds_a_set_and_prints_its_table():
    # The newest set is .venv itself, brought up to date by
    # tools/bootstrap_env.sh as the README's commands do; one test file
    # stands in for the suite.
    out = run([
        sys.executable, '.dev_scripts/version_matrix.py', '--set', 'newest',
        '--', 'tests/test_tools/test_packaging.py'
    ]).stdout
    row = re.search(
        r'^\| newest \| (3\.\d+\.\d+) \| (\S+) \| (\S+) \| 2\.1\.0 '
        r'\| 0\.10\.7 \| 1\.2\.2 \| (\d+) \| (\d+) \| (\d+) \|', out, re.M)
    assert row, out
    pin = re.search(r'INFOBATCH_TORCH:-torch==([\d.]+)',
                    (REPO / 'tools' / 'bootstrap_env.sh').read_text())
    assert row.group(2).split('+')[0] == pin.group(1)
    assert int(row.group(4)) >= 4 and row.group(5) == '0'
