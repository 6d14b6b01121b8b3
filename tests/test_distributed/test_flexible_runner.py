"""mmengine's FlexibleRunner with DDPStrategy and FSDPStrategy: 2 ranks on
CPU (gloo) through tools/train.py, trained and resumed mid-pass exactly."""
import copy

import pytest
import torch
from helpers.configs import (assert_continues, load_record, tiny_config,
                             train_subprocess)
from mmengine.config import Config

from mmseg_infobatch.engine.cpu_runtime import (cpu_fsdp_supported,
                                                place_strategy_on_cpu)


def _flexible(work_dir, data_root, strategy):
    cfg = tiny_config(work_dir, data_root, world_size=2, seed=0)
    cfg.runner_type = 'FlexibleRunner'
    cfg.strategy = dict(type=strategy)
    return cfg


def _moved(cfg, work_dir):
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(work_dir)
    for hook in cfg.custom_hooks:
        if 'out_file' in hook:
            hook['out_file'] = str(work_dir / 'record_rank{rank}.pth')
    return cfg


CPU_FSDP = pytest.mark.skipif(
    not cpu_fsdp_supported(),
    reason='FSDP on the CPU needs torch >= 2.2 (torch.cpu.Stream with a '
    'priority)')


@pytest.mark.parametrize(
    'strategy',
    ['DDPStrategy',
     pytest.param('ResumableFSDPStrategy', marks=CPU_FSDP)])
def test_flexible_runner_trains_and_resumes_exactly(strategy, ade_root,
                                                    tmp_path):
    ref_dir = tmp_path / 'ref'
    cfg = _flexible(ref_dir, ade_root, strategy)
    train_subprocess(cfg, tmp_path / 'ref.py', nproc=2)
    refs = [load_record(ref_dir, rank) for rank in (0, 1)]
    for p0, p1 in zip(refs[0]['passes'], refs[1]['passes']):
        assert torch.equal(p0['padded_order'], p1['padded_order'])
        assert torch.equal(p0['weights'], p1['weights'])
    assert refs[0]['final_iter'] == refs[1]['final_iter']
    assert refs[0]['passes'][1]['prunes']
    assert (refs[0]['passes'][1]['weights'] == 2).any()  # it pruned
    # Resume one iteration into the first pruned pass.
    k = refs[0]['passes'][1]['start_iter'] + 1
    res_dir = tmp_path / 'resumed'
    log = train_subprocess(
        _moved(cfg, res_dir),
        tmp_path / 'resumed.py',
        '--resume',
        str(ref_dir / f'iter_{k}.pth'),
        nproc=2)
    assert f'resumed epoch: 0, iter: {k}' in log.stdout + log.stderr
    resumed = [load_record(res_dir, rank) for rank in (0, 1)]
    for rank in (0, 1):
        assert_continues(refs[rank], resumed[rank], k)
    full = resumed[0]['loaded_keys']
    assert {'format', 'sampler', 'progress', 'history'} <= set(full)
    if strategy == 'ResumableFSDPStrategy':
        # A checkpoint per rank (a folder of them), InfoBatch's state in
        # rank 0's only; rank 1 received it from rank 0.
        assert (ref_dir / f'iter_{k}.pth' / 'rank1.pth').is_file()
        assert resumed[1]['loaded_keys'] == ['format', 'on_rank0']
    else:
        assert resumed[1]['loaded_keys'] == full  # the one shared file


@pytest.mark.parametrize('supported', [True, False])
def test_cpu_fsdp_is_refused_where_torch_cannot_run_it(monkeypatch, supported):
    from mmseg_infobatch.engine import cpu_runtime
    monkeypatch.setattr(cpu_runtime, 'cpu_fsdp_supported', lambda: supported)
    cfg = Config(dict(strategy=dict(type='ResumableFSDPStrategy')))
    if supported:
        place_strategy_on_cpu(cfg)
        assert cfg.strategy['model_wrapper']['device_id'] == 'cpu'
        return
    with pytest.raises(RuntimeError, match=r'torch >= 2\.2.*DDPStrategy'):
        place_strategy_on_cpu(cfg)
