"""The automated mutation run's wrapper (.dev_scripts/mutmut_run.py): what
it copies and configures, and how it counts (mutmut itself runs in CI's
slice and in the documented full run)."""
import sys

from helpers import REPO

sys.path.insert(0, str(REPO / '.dev_scripts'))
import mutmut_run  # noqa: E402


def test_mutant_names_map_to_their_modules():
    assert mutmut_run.module_of(
        'mmseg_infobatch.sampler.run_plan.x_batches_per_pass__mutmut_5'
    ) == 'sampler/run_plan.py'
    assert mutmut_run.module_of(
        'mmseg_infobatch.hook.infobatch_hook.xǁInfoBatchHookǁafter_train__'
        'mutmut_2') == 'hook/infobatch_hook.py'


def test_the_copy_holds_the_package_tests_and_the_configuration(tmp_path):
    work = tmp_path / 'work'
    mutmut_run.prepare(work, ['sampler/run_plan.py'],
                       ['tests/test_hook/test_progress.py'])
    assert (work / 'mmseg_infobatch/sampler/run_plan.py').read_text() == \
        (REPO / 'mmseg_infobatch/sampler/run_plan.py').read_text()
    assert (work / 'tests/test_hook/test_progress.py').is_file()
    assert (work / 'tools/dataset_converters/make_tiny_ade.py').is_file()
    config = (work / 'pyproject.toml').read_text()
    assert 'only_mutate = ["mmseg_infobatch/sampler/run_plan.py"]' in config
    assert 'pytest_add_cli_args_test_selection = ' \
        '["tests/test_hook/test_progress.py"]' in config


def test_the_score_leaves_out_the_equivalent_mutants(monkeypatch, capsys):
    (module, line), _ = next(iter(mutmut_run.equivalents().items()))
    dotted = 'mmseg_infobatch.' + module[:-3].replace('/', '.')
    lines = {f'{dotted}.x_f__mutmut_2': line, f'{dotted}.x_f__mutmut_3': 'y'}
    monkeypatch.setattr(mutmut_run, 'mutated_line',
                        lambda workdir, name: lines[name])
    statuses = {
        f'{dotted}.x_f__mutmut_1': 'killed',
        f'{dotted}.x_f__mutmut_2': 'survived',
        f'{dotted}.x_f__mutmut_3': 'survived',
    }
    assert mutmut_run.report(None, statuses, 1.0, min_score=0.5) == 0
    assert mutmut_run.report(None, statuses, 1.0, min_score=0.9) == 1
    out = capsys.readouterr().out
    assert 'automated mutation score: 1/2 killed (50.0%)' in out
    assert f'survived  {module}: y' in out


def test_the_equivalent_mutants_are_read_from_their_table(tmp_path):
    doc = tmp_path / 'doc.md'
    doc.write_text('\n'.join([
        'text', mutmut_run.EQUIVALENT_TABLE, '|---|---|---|',
        '| sampler/decision.py | `keep \\|= ~candidates` | a reason |',
        '| hook/report.py | `x = 1` | another, with `code` |', '', '| not | a '
        '| row |'
    ]))
    assert mutmut_run.equivalents(doc) == {
        ('sampler/decision.py', 'keep |= ~candidates'): 'a reason',
        ('hook/report.py', 'x = 1'): 'another, with `code`',
    }
    # The repository's own table parses, one row per mutant.
    assert len(mutmut_run.equivalents()) >= 9


def test_a_bare_mutated_line_is_named_with_the_line_it_replaces():
    diff = ['--- a/x.py', '+++ b/x.py', '-    f(a,', '+    f(b,']
    assert mutmut_run._named_line(diff) == 'f(b,'
    assert mutmut_run._named_line(
        ['-            self.seen_bits,', '+            None,']) == \
        'self.seen_bits, -> None,'
    assert mutmut_run._named_line(['-    rule=rule)', '+    )']) == \
        'rule=rule) -> )'
    assert mutmut_run._named_line(['-    prune_high=self.prune_high,']) == \
        'prune_high=self.prune_high, ->'
