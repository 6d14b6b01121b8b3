"""tools/misc/demo.py end to end: on the demo data with a short schedule, and
in full against the README's summary block."""
import importlib.util
import os
import re
import subprocess
import sys

import torch
from helpers import REPO, TOOLS


def test_demo_summary_matches_the_run(tmp_path, capsys, monkeypatch):
    from mmseg_infobatch.demo import ensure_digit_scenes
    spec = importlib.util.spec_from_file_location('tool_demo',
                                                  TOOLS / 'misc' / 'demo.py')
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    # 40 scenes instead of 1000, at batch 4: 10 iterations a pass, 4 passes.
    monkeypatch.setattr(
        demo, 'ensure_digit_scenes',
        lambda root: ensure_digit_scenes(root, num_train=40, num_val=8))
    demo.main([
        '--data-root',
        str(tmp_path / 'data'), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options',
        'train_dataloader.batch_size=4', 'train_cfg.max_iters=40',
        'train_cfg.val_interval=40', 'param_scheduler.0.end=10',
        'param_scheduler.1.begin=10', 'param_scheduler.1.end=40',
        'default_hooks.checkpoint.interval=40',
        'default_hooks.logger.interval=5'
    ])
    out = capsys.readouterr().out
    assert 'passes         : 4 (schedule of 4.00 full-data passes)' in out
    iters, budget = map(
        int,
        re.search(
            r'iterations     : (\d+) with InfoBatch vs (\d+) for full data',
            out).groups())
    # The summary's budget is the config's, and pruning saved iterations.
    assert budget == 40 and iters < budget
    saved = re.search(r'saved          : (\d+) iterations', out).group(1)
    assert int(saved) == budget - iters
    pruned, seen = map(
        int,
        re.search(r'(\d+) of (\d+) sample visits pruned', out).groups())
    # Each pass visits every scene, kept or pruned.
    assert seen == 4 * 40 and 0 < pruned < seen
    assert re.search(r'mIoU \(val\)     : \d+\.\d\d', out)


# The lines of the demo's summary that a run repeats exactly: the data's
# size, the passes, the iterations and what was saved and pruned (not the
# mIoU's last digits, the wall time or the log folder).
EXACT_LINES = ('data', 'passes', 'iterations', 'saved')


def _exact_lines(lines):
    found = {}
    for line in lines:
        key, sep, value = line.strip().partition(':')
        if sep and key.strip() in EXACT_LINES:
            # The data line ends with the data folder, which may differ.
            found[key.strip()] = value.strip().rsplit(', ', 1)[0] \
                if key.strip() == 'data' else value.strip()
    return found


def test_readme_demo_block_is_what_the_demo_prints(tmp_path):
    """The demo in full (minutes), on one thread as the README's block was
    made: its summary's exact lines are the block's, so the block cannot
    go stale."""
    readme = (REPO / 'README.md').read_text()
    block = re.search(
        r'```\n=+\nInfoBatch demo summary.*?\n```', readme, flags=re.S)
    assert block, 'README.md has no demo summary block'
    documented = _exact_lines(block.group(0).splitlines())
    assert set(documented) == set(EXACT_LINES)
    result = subprocess.run([
        sys.executable,
        str(TOOLS / 'misc' / 'demo.py'), '--data-root',
        str(tmp_path / 'data'), '--work-dir',
        str(tmp_path / 'work')
    ],
                            capture_output=True,
                            text=True,
                            cwd=REPO,
                            env=dict(
                                os.environ,
                                OMP_NUM_THREADS='1',
                                MKL_NUM_THREADS='1'),
                            timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = _exact_lines(result.stdout.splitlines())
    made_with = re.search(r'with `\.venv` in place \(torch ([\d.]+)', readme)
    assert made_with, "README.md no longer names the block's torch"
    if torch.__version__.split('+')[0] == made_with.group(1):
        assert printed == documented, result.stdout[-1500:]
        return
    # Another torch's kernels round differently, so training prunes other
    # samples: the set-up is the same, the saving within 2 points.
    for key in ('data', 'passes'):
        assert printed[key] == documented[key], result.stdout[-1500:]
    share = [
        float(re.search(r'\(([\d.]+)%\)', lines['saved']).group(1))
        for lines in (printed, documented)
    ]
    assert abs(share[0] - share[1]) <= 2, result.stdout[-1500:]
