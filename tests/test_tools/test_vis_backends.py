"""The InfoBatch scalars reach every vis backend, TensorBoard's included."""
import json

import pytest
from helpers.configs import demo_config, run_config


def test_tensorboard_backend_receives_infobatch_scalars(digit_root, tmp_path):
    # The `tensorboard` extra; the `tests` extra installs it too.
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    cfg = demo_config(tmp_path, digit_root, passes=3, delta=0.5, record=False)
    cfg.visualizer.vis_backends = [
        dict(type='LocalVisBackend'),
        dict(type='TensorboardVisBackend')
    ]
    runner = run_config(cfg)
    vis_dir = runner.log_dir + '/vis_data'
    events = EventAccumulator(vis_dir)
    events.Reload()
    tags = events.Tags()['scalars']
    assert 'infobatch/saved_ratio' in tags
    assert {'infobatch/kept', 'infobatch/pruned', 'loss'} <= set(tags)
    board = [(e.step, e.value)
             for e in events.Scalars('infobatch/saved_ratio')]
    # The same values, at the same steps, as the local backend's log.
    with open(vis_dir + '/scalars.json') as f:
        local = [(r['step'], r['infobatch/saved_ratio'])
                 for r in map(json.loads, f) if 'infobatch/saved_ratio' in r]
    assert len(board) == len(local) >= 3
    assert [step for step, _ in board] == [step for step, _ in local]
    assert [value for _, value in board
            ] == pytest.approx([value for _, value in local], rel=1e-6)
    # Pruning saved iterations by the end of the run.
    assert board[-1][1] > 0
