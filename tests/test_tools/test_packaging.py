"""What importing the package does, its version, and the declared Python."""
import ast
import json
import re
import subprocess
import sys

from helpers import REPO

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


def _package_imports():
    """Every import of a package module by another (module-level and
    function-level), as ``{importer: {imported, ...}}`` with dotted names
    relative to the package (``'sampler.prune_rule'``; a subpackage is
    its ``__init__``: ``'sampler'``)."""
    root = REPO / 'mmseg_infobatch'
    modules = {}
    for path in root.rglob('*.py'):
        parts = list(path.relative_to(root).with_suffix('').parts)
        if parts[-1] == '__init__':
            parts = parts[:-1]
        modules['.'.join(parts)] = path
    graph = {}
    for name, path in modules.items():
        is_package = path.name == '__init__.py'
        here = name.split('.') if name else []
        base = here if is_package else here[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[:len(base) - (node.level - 1)]
                    prefix = anchor + (
                        node.module.split('.') if node.module else [])
                elif (node.module or '').startswith('mmseg_infobatch'):
                    prefix = node.module.split('.')[1:]
                else:
                    continue
                targets.append(prefix)
                targets += [prefix + [a.name] for a in node.names]
            elif isinstance(node, ast.Import):
                targets += [
                    a.name.split('.')[1:] for a in node.names
                    if a.name.startswith('mmseg_infobatch')
                ]
            for target in targets:
                dotted = '.'.join(target)
                if dotted in modules and dotted != name:
                    found.add(dotted)
        graph[name] = found
    return graph


def _part(module):
    return module.split('.')[0] if '.' in module or module in (
        'sampler', 'loss', 'hook', 'engine') else 'top'


def test_the_package_parts_import_one_way_without_cycles():
    """docs/design.md: the hook uses the sampler, the loss and the engine
    parts; none of those imports the hook, the engine imports none of the
    others, and no module imports one that imports it back."""
    graph = _package_imports()
    assert 'sampler.prune_rule' in graph['sampler.decision']  # the walk works
    allowed = dict(
        sampler={'sampler'},
        loss={'loss'},
        engine={'engine'},
        hook={'hook', 'sampler', 'loss', 'engine'},
        demo={'demo'})
    for importer, imported in graph.items():
        part = _part(importer)
        if part in allowed:
            wrong = {m for m in imported if _part(m) not in allowed[part]}
            assert not wrong, f'{importer} imports {sorted(wrong)}'
    # No cycle: a depth-first walk finds no module on its own path.
    done, path = set(), []

    def visit(module):
        assert module not in path, ' -> '.join(path + [module])
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
