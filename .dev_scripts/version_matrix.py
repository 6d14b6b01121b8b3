"""Build the supported version sets side by side and run the suite in each.

Usage (from a clean clone, with python3.11 and pip; no GPU)::

    python3.11 .dev_scripts/version_matrix.py                # every set
    python3.11 .dev_scripts/version_matrix.py --set oldest   # one set
    python3.11 .dev_scripts/version_matrix.py --build-only   # venvs only
    python3.11 .dev_scripts/version_matrix.py --record       # and write
                                                             # docs/version_matrix.md

Each set is built by tools/bootstrap_env.sh, the script behind the
README's two commands, with the set's torch and pins: 'newest' is .venv
itself, 'oldest' gets a venv under ``.matrix/oldest/`` (ignored by git).
mmcv 2.1.0 has no CPU wheel with compiled ops on PyPI, so that script
builds it once per torch version into a wheel folder keyed by the torch
version and installs it from there later: a wheel built against one torch
is never offered to another (its ops would fail to load with an undefined
symbol), and ``import mmcv.ops`` is checked after every install.

The table printed at the end gives, per set, the versions that were really
installed and the suite's passed, failed and skipped counts, with each skip
reason. ``--record`` writes the same table, with the date and the
dependency bounds of pyproject.toml it was run against, to
docs/version_matrix.md, which tests/test_tools/test_version_claims.py holds
the README, pyproject.toml and docs/compat.md to.
"""
import argparse
import datetime
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / '.matrix'
RECORD = REPO / 'docs' / 'version_matrix.md'

# name -> (torch pin, further pins) of each set; tools/bootstrap_env.sh
# builds every set as it builds .venv, so mmcv's wheel is built once per
# torch version and kept in that script's wheel folder. 'oldest' is what
# mim serves prebuilt mmcv 2.1.0 for (torch <= 2.1) with the numpy 1.x that
# goes with it; PyPI's torch 2.1.2 for Linux is the CUDA 12.1 build, so it
# downloads torch and its nvidia-* libraries (5.4 GB installed), though the
# suite runs on the CPU. 'newest' is the newest torch this index offers
# that mmcv 2.1.0 builds against, with numpy 2: .venv's own set, as the
# README's commands build it. torch 2.14.1's headers need C++20, and mmcv
# 2.1.0's build compiles with C++17 ("C++20 or later compatible compiler is
# required to use ATen").
BOOTSTRAP = REPO / 'tools' / 'bootstrap_env.sh'
SETS = {
    'oldest': ('torch==2.1.2', 'numpy==1.26.4'),
    # .venv's torch, as tools/bootstrap_env.sh pins it.
    'newest': (re.search(r'INFOBATCH_TORCH:-(torch==[\d.]+)',
                         BOOTSTRAP.read_text()).group(1), ''),
}


def sh(args, log, check=True, **env):
    """Run a command with its output appended to ``log``."""
    print('  $', ' '.join(str(a) for a in args), flush=True)
    with open(log, 'a') as out:
        result = subprocess.run([str(a) for a in args],
                                cwd=REPO,
                                env=dict(os.environ, **env),
                                stdout=out,
                                stderr=subprocess.STDOUT)
    if check and result.returncode:
        raise SystemExit(f'failed ({result.returncode}): '
                         f'{" ".join(map(str, args))}; see {log}')
    return result.returncode


def output(venv, code):
    return subprocess.run([f'{venv}/bin/python', '-c', code],
                          capture_output=True,
                          text=True,
                          check=True).stdout.strip()


def build(name, python, log):
    """Create or update the set's venv with tools/bootstrap_env.sh."""
    venv = REPO / '.venv' if name == 'newest' else MATRIX / name / 'venv'
    torch, pins = SETS[name]
    sh(['bash', 'tools/bootstrap_env.sh'],
       log,
       INFOBATCH_VENV=str(venv),
       INFOBATCH_TORCH=torch,
       INFOBATCH_PINS=pins,
       PYTHON=python)
    return venv


def versions(venv):
    return output(
        venv, 'import sys, torch, numpy, mmcv, mmengine, mmseg; '
        'print(f"{sys.version.split()[0]} {torch.__version__} '
        '{numpy.__version__} {mmcv.__version__} {mmengine.__version__} '
        '{mmseg.__version__}")').split()


def run_suite(name, venv, pytest_args, log):
    report = MATRIX / name / 'junit.xml'
    report.unlink(missing_ok=True)
    start = time.time()
    sh([
        venv / 'bin' / 'python', '-m', 'pytest', '-q', '-p',
        'no:cacheprovider', f'--junitxml={report}'
    ] + pytest_args,
       log=log,
       check=False,
       OMP_NUM_THREADS='1')
    minutes = (time.time() - start) / 60
    if not report.exists():
        raise SystemExit(f'[{name}] pytest wrote no report; see {log}')
    counts, skips, failures = Counter(), Counter(), []
    for case in ET.parse(report).getroot().iter('testcase'):
        test = f'{case.get("classname")}::{case.get("name")}'
        outcome = 'passed'
        for child in case:
            if child.tag in ('failure', 'error'):
                outcome = 'failed'
                failures.append(test)
            elif child.tag == 'skipped':
                outcome = 'skipped'
                reason = child.get('message', '').removeprefix('Skipped: ')
                skips[reason] += 1
        counts[outcome] += 1
    return dict(counts=counts, skips=skips, failures=failures, minutes=minutes)


def table(rows):
    lines = [
        '| set | Python | torch | numpy | mmcv | mmengine | mmseg '
        '| passed | failed | skipped | minutes |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    notes = []
    for name, found, result in rows:
        counts = result['counts']
        lines.append(f'| {name} | ' + ' | '.join(found) +
                     f' | {counts["passed"]} | {counts["failed"]} '
                     f'| {counts["skipped"]} | {result["minutes"]:.0f} |')
        for reason, count in sorted(result['skips'].items()):
            notes.append(f'- {name}: {count} skipped: {reason}')
        for test in result['failures']:
            notes.append(f'- {name}: FAILED {test}')
    return '\n'.join(lines + [''] + notes)


def dependency_bounds():
    """The dependency lines of pyproject.toml, as the record keeps them."""
    text = (REPO / 'pyproject.toml').read_text()
    deps = re.search(r'^dependencies = \[(.*?)^\]', text, re.M | re.S)
    return re.findall(r'^\s*"([^"]+)"', deps.group(1), re.M)


def commit():
    return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'],
                          cwd=REPO,
                          capture_output=True,
                          text=True).stdout.strip() or 'unknown'


def record(rows, command):
    RECORD.write_text(
        '# Version matrix\n\n'
        'Written by `.dev_scripts/version_matrix.py --record`; do not edit '
        'by hand.\n'
        'tests/test_tools/test_version_claims.py holds pyproject.toml, the '
        "README's \"Tested with\" line and docs/compat.md to this table.\n\n"
        f'Date: {datetime.date.today().isoformat()}  \n'
        f'Commit: {commit()}  \n'
        f'Command: `{command}`  \n'
        'Run on: CPU only, Python from the command above, '
        'OMP_NUM_THREADS=1.\n\n'
        '## Result\n\n' + table(rows) + '\n\n'
        '## pyproject.toml dependencies it was run against\n\n' +
        ''.join(f'- `{dep}`\n' for dep in dependency_bounds()))
    print(f'recorded in {RECORD.relative_to(REPO)}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--set',
        choices=sorted(SETS),
        action='append',
        help='run this set only (repeatable); default all')
    parser.add_argument(
        '--python',
        default='python3.11',
        help='interpreter the venvs are made with')
    parser.add_argument(
        '--build-only',
        action='store_true',
        help='build or update the venvs, run nothing')
    parser.add_argument(
        '--record',
        action='store_true',
        help='write the table to docs/version_matrix.md '
        '(needs every set)')
    parser.add_argument(
        'pytest_args',
        nargs='*',
        help='passed to pytest after --, e.g. -- tests/'
        'test_pruning (default: the whole suite)')
    args = parser.parse_args()
    names = args.set or list(SETS)
    if args.record and (sorted(names) != sorted(SETS) or args.pytest_args):
        parser.error('--record needs every set and the whole suite')
    rows = []
    for name in names:
        log = MATRIX / name / 'matrix.log'
        (MATRIX / name).mkdir(parents=True, exist_ok=True)
        print(f'[{name}] building (log: {log.relative_to(REPO)})')
        try:
            venv = build(name, args.python, log)
        except SystemExit as failure:
            # Recorded, not fatal: which torch mmcv does not build against
            # is a result too.
            print(f'[{name}] build failed: {failure}')
            rows.append((name, [SETS[name][0]] + ['-'] * 5,
                         dict(
                             counts=Counter(),
                             skips=Counter(),
                             failures=[f'build failed, see {log}'],
                             minutes=0.0)))
            continue
        found = versions(venv)
        print(f'[{name}] Python {found[0]}, torch {found[1]}, numpy '
              f'{found[2]}, mmcv {found[3]}, mmengine {found[4]}, mmseg '
              f'{found[5]}')
        if args.build_only:
            continue
        print(f'[{name}] running the suite')
        rows.append((name, found, run_suite(name, venv, args.pytest_args,
                                            log)))
    if rows:
        print(table(rows))
    if args.record:
        record(rows, 'python3.11 .dev_scripts/version_matrix.py --record')
    failed = any(result['failures'] for _, _, result in rows)
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
