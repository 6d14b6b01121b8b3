"""tools/demo.py end to end, on the demo data with a short schedule."""
import importlib.util
import re

from conftest import TOOLS


def test_demo_summary_matches_the_run(tmp_path, capsys, monkeypatch):
    from mmseg_infobatch.demo import ensure_digit_scenes
    spec = importlib.util.spec_from_file_location('tool_demo',
                                                  TOOLS / 'demo.py')
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
