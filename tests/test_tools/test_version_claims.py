"""The versions the project claims are the versions that were tested.

``.dev_scripts/version_matrix.py --record`` builds each version set, runs
the whole suite in it and writes docs/version_matrix.md. A set is tested
when that record shows it passing, or when CI runs its whole suite at
every change (both sets, .ci/run). These tests hold pyproject.toml's lower
bounds, the README's "Tested with" line and docs/compat.md to that, and
fail when pyproject.toml's dependency bounds changed after the record:
then the matrix must run again (docs/compat.md, "Versions").
"""
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / '.dev_scripts'))
import version_matrix  # noqa: E402

RECORD = REPO / 'docs' / 'version_matrix.md'
COLUMNS = ('set', 'python', 'torch', 'numpy', 'mmcv', 'mmengine', 'mmseg',
           'passed', 'failed', 'skipped', 'minutes')


def recorded_sets():
    rows = re.findall(r'^\| (\w+) \| (.+) \|$', RECORD.read_text(), re.M)
    return {
        name: dict(zip(COLUMNS, [name] + rest.split(' | ')))
        for name, rest in rows if name in version_matrix.SETS
    }


def ci_sets():
    """The sets whose whole suite .ci/run runs: .venv's (newest) and each
    ``version_matrix.py --set NAME``."""
    ci = (REPO / '.ci' / 'run').read_text()
    named = re.findall(r'version_matrix\.py --set (\w+)', ci)
    assert 'bash tools/run_tests.sh' in ci
    return {'newest', *named}


def tested_sets():
    return {
        name: row
        for name, row in recorded_sets().items()
        if row['torch'] != '-' and (row['failed'] == '0' or name in ci_sets())
    }


def release(version):
    """'2.1.2+cu121' -> (2, 1, 2)."""
    return tuple(
        int(p) for p in re.match(r'\d+(\.\d+)*', version).group().split('.'))


def test_the_record_covers_every_set_and_the_whole_suite():
    sets = recorded_sets()
    assert sorted(sets) == sorted(version_matrix.SETS)
    for name, row in sets.items():
        # The whole suite ran, not a part of it.
        total = sum(int(row[k]) for k in ('passed', 'failed', 'skipped'))
        assert total > 500, (name, row)
        pin = version_matrix.SETS[name][0].split('==')[1]
        assert row['torch'].split('+')[0] == pin, (name, row)


def test_ci_runs_the_oldest_set():
    assert 'oldest' in ci_sets()


def test_the_record_is_newer_than_the_dependency_bounds():
    listed = re.findall(r'^- `(.+)`$', RECORD.read_text(), re.M)
    assert listed == version_matrix.dependency_bounds(), (
        "pyproject.toml's dependencies changed after the version matrix "
        'ran: run python3.11 .dev_scripts/version_matrix.py --record')


def test_the_oldest_set_passed_and_is_the_lower_bound():
    oldest = recorded_sets()['oldest']
    assert oldest['failed'] == '0', 'the oldest set must pass the suite'
    bounds = dict(
        re.match(r'([\w-]+)>=([\d.]+)', dep).groups()
        for dep in version_matrix.dependency_bounds()
        if re.match(r'[\w-]+>=', dep))
    expected = dict(
        torch=oldest['torch'],
        numpy=oldest['numpy'],
        mmcv=oldest['mmcv'],
        mmengine=oldest['mmengine'],
        mmsegmentation=oldest['mmseg'])
    for name, version in expected.items():
        bound = release(bounds[name])
        # The bound is the tested release, or its minor series.
        assert release(version)[:len(bound)] == bound, (name, bound, version)


@pytest.mark.parametrize('doc', ['README.md', 'docs/compat.md'])
def test_the_docs_claim_exactly_the_tested_sets(doc):
    text = (REPO / doc).read_text()
    paragraph = re.search(r'^Tested with .*?(?=\n\n)', text, re.M | re.S)
    assert paragraph, f'{doc} has no "Tested with" paragraph'
    claim = ' '.join(paragraph.group().split())
    for name, row in recorded_sets().items():
        torch = row['torch'].split('+')[0]
        said = f'torch {torch} with numpy {row["numpy"]}' in claim
        assert said == (name in tested_sets()), (doc, name)
        python = '.'.join(row['python'].split('.')[:2])
        assert f'Python {python}' in claim, (doc, name)
        assert (f'mmcv {row["mmcv"]}, mmengine {row["mmengine"]} and '
                f'mmsegmentation {row["mmseg"]}') in claim, (doc, name)
