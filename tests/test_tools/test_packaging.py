"""What importing the package does, its version, and the declared Python."""
import ast
import json
import re
import subprocess
import sys

from conftest import REPO

import mmseg_infobatch

# Snapshot every mmseg and mmengine registry after mmseg registered its own
# modules, import the given module, and print what it added.
_REGISTRATIONS = r'''
import json, sys
import mmengine.registry as root
import mmseg.registry as seg
from mmengine.registry import Registry
from mmseg.utils import register_all_modules
import torch

register_all_modules(init_default_scope=False)
registries = {f'{module.__name__}.{name}': registry
              for module in (root, seg)
              for name, registry in vars(module).items()
              if isinstance(registry, Registry)}
before = {name: set(r.module_dict) for name, r in registries.items()}
safe = getattr(torch.serialization, 'get_safe_globals', list)
safe_before = len(safe())
__import__(sys.argv[1])
print(json.dumps(dict(
    added={name.split('.')[-1]: sorted(set(r.module_dict) - before[name])
           for name, r in registries.items()
           if set(r.module_dict) != before[name]},
    safe_globals_added=len(safe()) - safe_before)))
'''


def _registered_by(module):
    result = subprocess.run([sys.executable, '-c', _REGISTRATIONS, module],
                            capture_output=True,
                            text=True,
                            cwd=REPO,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


def test_import_registers_only_the_infobatch_components():
    found = _registered_by('mmseg_infobatch')
    assert found['added'] == {
        'DATA_SAMPLERS': ['InfoBatchSampler'],
        'HOOKS': ['InfoBatchHook'],
        'LOOPS': ['NoPauseIterBasedTrainLoop'],
        'MODELS': ['InfoBatchLoss'],
        'STRATEGIES': ['ResumableFSDPStrategy'],
    }
    # The safe-load allow-list is installed where a checkpoint loads, not
    # as a side effect of import.
    assert found['safe_globals_added'] == 0


def test_demo_subpackage_registers_the_demo_dataset():
    found = _registered_by('mmseg_infobatch.demo')
    assert found['added']['DATASETS'] == ['DigitScenesDataset']


def test_version_is_single_sourced():
    from importlib.metadata import version

    from mmseg_infobatch.version import __version__
    assert re.fullmatch(r'\d+\.\d+\.\d+', mmseg_infobatch.__version__)
    assert mmseg_infobatch.__version__ == __version__
    # pyproject.toml reads version.py; the installed metadata agrees.
    assert version('mmseg-infobatch') == __version__
    assert 'attr = "mmseg_infobatch.version.__version__"' in (
        REPO / 'pyproject.toml').read_text()
    citation = (REPO / 'CITATION.cff').read_text()
    assert re.search(r'^version: (.+)$', citation, re.M).group(1) == \
        __version__
    assert f'## {__version__} - ' in (REPO / 'CHANGELOG.md').read_text()


def _newer_than_python39(tree):
    """Constructs of the package that Python 3.9 cannot run."""
    future_annotations = any(
        isinstance(node, ast.ImportFrom) and node.module == '__future__'
        and any(alias.name == 'annotations' for alias in node.names)
        for node in tree.body)
    if future_annotations:
        return []
    # Evaluated at run time: those of signatures, and of variables at
    # module and class level (a local variable's annotation never is).
    annotations = []
    scopes = [tree
              ] + [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    for scope in scopes:
        annotations += [
            n.annotation for n in scope.body if isinstance(n, ast.AnnAssign)
        ]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            annotations += [
                a.annotation for a in args.posonlyargs + args.args +
                args.kwonlyargs + [args.vararg, args.kwarg] if a is not None
            ]
            annotations.append(node.returns)
    return [
        f'X | Y at line {node.lineno}'
        for annotation in filter(None, annotations)
        for node in ast.walk(annotation)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr)
    ]


def test_package_runs_on_the_declared_python():
    """pyproject declares Python >= 3.9 (numpy 1.26's): the package
    parses with 3.9's grammar and evaluates no 3.10 annotation (X | None).
    Only 3.11 runs the suite (docs/version_matrix.md)."""
    assert 'requires-python = ">=3.9"' in (REPO / 'pyproject.toml').read_text()
    problems = {}
    for path in sorted((REPO / 'mmseg_infobatch').rglob('*.py')):
        source = path.read_text()
        try:
            tree = ast.parse(source, feature_version=(3, 9))
        except SyntaxError as err:
            problems[str(path)] = [f'syntax: {err}']
            continue
        if _newer_than_python39(tree):
            problems[str(path)] = _newer_than_python39(tree)
    assert not problems, problems
