""".dev_scripts/mutation_check.py: its mutant list follows the code and covers
every rule, and its verdict is the score line."""
import re
import sys

import pytest
from helpers import REPO

sys.path.insert(0, str(REPO / '.dev_scripts'))
import mutation_check as mc  # noqa: E402

# One word of each rule of the mutation list in docs/reliability.md.
RULES = ('threshold', 'probability', 'weight:', 'annealing', 'weight reset',
         'score:', 'rescale', 'reduction', 'rank slice', 'padding', 'gather',
         'progress', 'scheduler steps', 'checkpoint', 'resume', 'seeding',
         'shuffling', 'losses get', 'refill', 'accumulation', 'start-up log',
         'target:')


@pytest.mark.parametrize('mutant', mc.MUTANTS, ids=lambda m: m.name)
def test_every_snippet_is_found_exactly_once(mutant):
    text = (REPO / mc.PACKAGE / mutant.file).read_text()
    assert text.count(mutant.original) == 1, (
        f'{mutant.name}: update .dev_scripts/mutation_check.py to the code')
    assert mutant.replacement != mutant.original


def test_at_least_30_named_mutants_cover_every_rule():
    names = [m.name for m in mc.MUTANTS]
    assert len(set(names)) == len(names)
    counted = [m for m in mc.MUTANTS if not m.equivalent]
    assert len(counted) >= 30
    for rule in RULES:
        assert any(rule in m.rule for m in counted), rule
    for test in mc.FAST_TESTS + sum(mc.FIRST_FOR.values(), []):
        # A file, or one test of it (file::name).
        path, _, name = test.partition('::')
        assert (REPO / path).is_file(), test
        assert not name or re.search(rf'^def {name}\(',
                                     (REPO / path).read_text(), re.M), test


def test_a_snippet_not_found_is_an_error(tmp_path):
    missing = mc.Mutant('missing', 'sampler/decision.py', 'no such code', 'x',
                        'r')
    twice = mc.Mutant('twice', 'sampler/decision.py', 'import', 'x', 'r')
    package_dir = mc.copy_package(tmp_path)
    with pytest.raises(ValueError, match='not found in mmseg_infobatch/'):
        mc.apply_mutant(package_dir, missing)
    with pytest.raises(ValueError, match='found [0-9]+ times'):
        mc.apply_mutant(package_dir, twice)
    result = mc.run_mutant(tmp_path / 'work', missing)
    assert result.status == 'error' and 'not found' in result.detail


def test_apply_changes_only_the_copy(tmp_path):
    mutant = next(m for m in mc.MUTANTS if m.name == 'rank_contiguous')
    package_dir = mc.copy_package(tmp_path)
    mc.apply_mutant(package_dir, mutant)
    copied = (package_dir / mutant.file).read_text()
    assert mutant.replacement in copied and mutant.original not in copied
    assert mutant.original in (REPO / mc.PACKAGE / mutant.file).read_text()
    assert not (package_dir / '__pycache__').exists()


def _result(name, status, equivalent=''):
    mutant = mc.Mutant(name, 'sampler/decision.py', 'a', 'b', 'rule',
                       equivalent)
    return mc.Result(mutant, status)


@pytest.mark.parametrize(
    'killed,survived,errors,rc',
    [
        (19, 1, 0, 0),  # 95%: passes
        (18, 2, 0, 1),  # 90%: fails
        (20, 0, 1, 1),  # a snippet out of sync fails whatever the score
    ])
def test_score_line_is_last_and_sets_the_exit_status(killed, survived, errors,
                                                     rc, capsys):
    results = ([_result(f'k{i}', 'killed') for i in range(killed)] +
               [_result(f's{i}', 'survived') for i in range(survived)] +
               [_result(f'e{i}', 'error') for i in range(errors)] +
               [_result('eq', 'survived', equivalent='because')])
    assert mc.summarize(results) == rc
    lines = capsys.readouterr().out.strip().splitlines()
    total = killed + survived
    assert re.fullmatch(
        rf'mutation score: {killed}/{total} killed \([0-9.]+%\)', lines[-1])
    assert '  eq: because' in lines
