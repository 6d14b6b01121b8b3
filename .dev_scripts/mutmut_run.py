#!/usr/bin/env python
"""Automated mutation run: every mechanical mutant of mmseg_infobatch.

The hand-written check (``mutation_check.py``) plants one named bug per rule
of InfoBatch. This run lets mutmut (3.x, pinned below) generate every
mechanical change it knows (operators, comparisons, constants, strings,
removed arguments and calls) in every function of the modules asked for, and
runs, for each mutant, the tests that reach its function (mutmut records
which tests call which function in one first run). mutmut was chosen over
cosmic-ray for that per-function test selection: a mutant costs the few
tests that reach it, not the suite.

The package, the tests and what they read (tools/, configs/) are copied to a
working folder (``.mutmut/``, git-ignored), and mutmut runs there, so the
tree is never touched. The tests are the mutation check's fast subset (unit
level, no training runs but one 2-process probe).

A surviving mutant either fails a test once one is written, or is listed in
the table of equivalent mutants in docs/reliability.md, by its module and
the line it changes, with the reason no test can tell it apart. The run
prints, per module: mutants, killed, survived, equivalent, and the score
(killed / (mutants - equivalent)); then
each non-equivalent survivor as its diff line. It exits non-zero below
``--min-score``.

Examples::

    .venv/bin/python .dev_scripts/mutmut_run.py                    # all
    .venv/bin/python .dev_scripts/mutmut_run.py --slice            # CI's
    .venv/bin/python .dev_scripts/mutmut_run.py --module sampler/run_plan.py
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'mmseg_infobatch'
MUTMUT_VERSION = '3.8.1'
# The pure modules of the pass decision and the run plan: CI's slice.
SLICE = [
    'sampler/run_plan.py',
    'sampler/layout.py',
    'sampler/history.py',
]
COPIED = [
    PACKAGE, 'tests', 'tools', 'configs', 'pyproject.toml', 'setup.cfg',
    'setup.py'
]
# Mutants no test can tell from the original are listed, each with its
# reason, in this table of docs/reliability.md (read by ``equivalents``).
EQUIVALENT_DOC = REPO / 'docs' / 'reliability.md'
EQUIVALENT_TABLE = '| module | mutated line | why no test can tell it apart |'

# Beyond the mutation check's fast subset: the whole-text refusal tests,
# and the in-process tests of the parts the subset does not reach (the
# demo data, the CPU runtime, the loop).
EXTRA_TESTS = [
    'tests/test_sampler/test_sampler_refusals.py',
    'tests/test_hook/test_report_texts.py',
    'tests/test_hook/test_report_state.py',
    'tests/test_distributed/test_consistency_texts.py',
    'tests/test_hook/test_hook_refusals.py',
    'tests/test_hook/test_hook_resume.py',
    'tests/test_hook/test_hook_run_end.py',
    'tests/test_hook/test_batch_checks.py',
    'tests/test_hook/test_hook_ranks.py',
    'tests/test_engine/test_engine_refusals.py',
    'tests/test_engine/test_cpu_runtime.py',
    'tests/test_engine/test_no_pause_iterator.py',
    'tests/test_engine/test_trusted_checkpoint.py',
    'tests/test_engine/test_accumulation_group.py',
    'tests/test_tools/test_digit_scenes.py',
    'tests/test_tools/test_digit_scenes_generator.py',
    'tests/test_config/test_config_refusals.py',
    'tests/test_config/test_default_losses.py',
    'tests/test_config/test_config_tree.py',
    'tests/test_loss/test_loss_refusals.py',
    'tests/test_loss/test_loss_options.py',
    'tests/test_sampler/test_sampler_state_refusals.py',
    'tests/test_sampler/test_checkpoint_state.py',
    'tests/test_sampler/test_served_pass.py',
    'tests/test_sampler/test_sampler_interface.py',
    'tests/test_resume/test_restored_decision.py',
]


def equivalents(doc: Path = EQUIVALENT_DOC) -> Dict[Tuple[str, str], str]:
    """(module, the mutated line, stripped) -> why it is equivalent, from
    the table of ``doc`` that follows ``EQUIVALENT_TABLE``. A ``|`` in a
    cell is written ``\\|``."""
    lines = doc.read_text().splitlines()
    start = lines.index(EQUIVALENT_TABLE) + 2
    found = {}
    for row in lines[start:]:
        if not row.startswith('|'):
            break
        cells = [
            cell.strip().replace('\\|', '|')
            for cell in re.split(r'(?<!\\)\|', row.strip())[1:-1]
        ]
        module, line, why = cells
        found[module, line.strip('`')] = why
    return found


def fast_tests(extra: List[str] = ()) -> List[str]:
    """The mutation check's fast subset, ``EXTRA_TESTS`` and ``extra``,
    whole files only (mutmut selects the tests of each function among
    them)."""
    sys.path.insert(0, str(REPO / '.dev_scripts'))
    import mutation_check
    return sorted({test.split('::')[0]
                   for test in mutation_check.FAST_TESTS}
                  | set(EXTRA_TESTS) | set(extra))


def prepare(workdir: Path, modules: List[str], tests: List[str]) -> None:
    """A copy of the files mutmut needs (tracked, or new and not ignored),
    with its configuration."""
    if workdir.exists():
        shutil.rmtree(workdir)
    listed = subprocess.run(
        [
            'git', 'ls-files', '-z', '--cached', '--others',
            '--exclude-standard', '--'
        ] + COPIED,
        cwd=REPO,
        capture_output=True,
        check=True).stdout.decode().split('\0')
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = workdir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    only = [f'{PACKAGE}/{m}' for m in modules]
    config = '\n'.join([
        '', '[tool.mutmut]', f'source_paths = ["{PACKAGE}"]',
        f'only_mutate = {_toml_list(only)}',
        f'pytest_add_cli_args_test_selection = {_toml_list(tests)}',
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        'also_copy = ["tools", "configs"]', ''
    ])
    with open(workdir / 'pyproject.toml', 'a') as f:
        f.write(config)


def _toml_list(items: List[str]) -> str:
    return '[' + ', '.join(f'"{item}"' for item in items) + ']'


def run_mutmut(workdir: Path, jobs: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS='1')
    start = time.time()
    with open(workdir / 'mutmut-run.log', 'w') as log:
        code = subprocess.run([
            sys.executable, '-m', 'mutmut', 'run', '--max-children',
            str(jobs)
        ],
                              cwd=workdir,
                              env=env,
                              stdout=log,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = (workdir / 'mutmut-run.log').read_text()[-3000:]
        raise SystemExit(f'mutmut run failed (exit {code}):\n{tail}')
    return time.time() - start


def results(workdir: Path) -> Dict[str, str]:
    """Each mutant's name and status."""
    out = subprocess.run(
        [sys.executable, '-m', 'mutmut', 'results', '--all', 'true'],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True).stdout
    found = {}
    for line in out.splitlines():
        match = re.match(r'\s*(\S+): (\S[^:]*)$', line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def mutated_line(workdir: Path, name: str) -> str:
    """The first line the mutant adds, as ``mutmut show`` prints it; where
    that line is too bare to tell the mutant (``None,``, ``)``, or no line
    at all), ``'<the line it replaces> -> <the line>'``."""
    shown = subprocess.run([sys.executable, '-m', 'mutmut', 'show', name],
                           cwd=workdir,
                           capture_output=True,
                           text=True).stdout
    return _named_line(shown.splitlines())


def _named_line(diff: List[str]) -> str:
    added, removed = ([
        line[1:].strip() for line in diff
        if line.startswith(sign) and not line.startswith(sign * 3)
    ] for sign in '+-')
    first = added[0] if added else ''
    if re.search(r'\w', first.replace('None', '')):
        return first
    return f'{removed[0] if removed else ""} -> {first}'.strip()


def module_of(name: str) -> str:
    """``mmseg_infobatch.sampler.run_plan.x_f__mutmut_3`` ->
    ``sampler/run_plan.py``."""
    dotted = name.split('.x')[0] if '.x' in name else name
    return '/'.join(dotted.split('.')[1:]) + '.py'


def report(workdir: Path, statuses: Dict[str, str], seconds: float,
           min_score: float) -> int:
    rows = defaultdict(lambda: defaultdict(int))
    survivors, equivalent = [], []
    known = equivalents()
    for name, status in sorted(statuses.items()):
        module = module_of(name)
        rows[module]['mutants'] += 1
        if status == 'killed' or status == 'timeout':
            rows[module]['killed'] += 1
            continue
        line = mutated_line(workdir, name)
        if (module, line) in known:
            rows[module]['equivalent'] += 1
            equivalent.append((module, line))
            continue
        rows[module][status.replace(' ', '_')] += 1
        survivors.append((module, name, status, line))
    total = defaultdict(int)
    print(f'{"module":<34} {"mutants":>7} {"killed":>6} {"equiv.":>6} '
          f'{"left":>5} {"score":>7}')
    for module, row in sorted(rows.items()):
        for key, value in row.items():
            total[key] += value
        print(_row(module, row))
    print(_row('all', total))
    for module, line in equivalent:
        print(f'  equivalent {module}: {line}   '
              f'({known[module, line]})')
    for module, name, status, line in survivors:
        print(f'  {status:<9} {module}: {line}   [{name}]')
    counted = total['mutants'] - total['equivalent']
    score = total['killed'] / counted if counted else 1.0
    print(f'mutmut {MUTMUT_VERSION}: {total["mutants"]} mutants, '
          f'{total["killed"]} killed, {total["equivalent"]} equivalent, '
          f'{counted - total["killed"]} left, in {seconds:.0f} s')
    print(f'automated mutation score: {total["killed"]}/{counted} killed '
          f'({100 * score:.1f}%)')
    return 0 if score >= min_score else 1


def _row(module: str, row: dict) -> str:
    counted = row['mutants'] - row['equivalent']
    left = counted - row['killed']
    score = row['killed'] / counted if counted else 1.0
    return (f'{module:<34} {row["mutants"]:>7} {row["killed"]:>6} '
            f'{row["equivalent"]:>6} {left:>5} {100 * score:>6.1f}%')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--module',
        action='append',
        metavar='PATH',
        help='a module, relative to the package (repeatable); all if none')
    parser.add_argument(
        '--slice', action='store_true', help=f'CI\'s slice: {SLICE}')
    parser.add_argument(
        '--extra-tests',
        nargs='+',
        default=[],
        metavar='FILE',
        help='more test files to run (to try new tests before they join '
        'EXTRA_TESTS)')
    parser.add_argument('--jobs', type=int, default=2)
    parser.add_argument('--min-score', type=float, default=0.95)
    parser.add_argument(
        '--workdir', type=Path, default=REPO / '.mutmut', help='git-ignored')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import mutmut
    if mutmut.__version__ != MUTMUT_VERSION:
        raise SystemExit(f'mutmut {MUTMUT_VERSION} is needed (found '
                         f'{mutmut.__version__}): pip install '
                         f'mutmut=={MUTMUT_VERSION}')
    modules = args.module or (SLICE if args.slice else sorted(
        str(p.relative_to(REPO / PACKAGE))
        for p in (REPO / PACKAGE).rglob('*.py') if p.name != '__init__.py'))
    prepare(args.workdir, modules, fast_tests(args.extra_tests))
    seconds = run_mutmut(args.workdir, args.jobs)
    return report(args.workdir, results(args.workdir), seconds, args.min_score)


if __name__ == '__main__':
    sys.exit(main())
