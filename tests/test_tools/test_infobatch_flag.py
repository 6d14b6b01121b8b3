"""``tools/train.py CONFIG --infobatch`` on mmseg's stock PSPNet config,
shrunk to tiny data: it prunes, resumes exactly, and the config it dumps
trains the same on its own."""
import importlib.util
import re
import shutil

import pytest
import torch
from helpers import REPO, TOOLS
from helpers.configs import train_subprocess
from mmengine.config import Config

from mmseg_infobatch.engine.checkpoint_types import load_trusted_checkpoint

ITERS_PER_PASS = 6  # 12 training images, batch 2
BUDGET = 2 * ITERS_PER_PASS  # delta 0.875 x 2 passes: pass 1 prunes
# The stock config with a ResNet-18 (as mmseg's pspnet_r18-d8 configs),
# 64x64 images of the tiny data, a two-pass schedule and nothing random
# but the data order and first weights (no dropout, no augmentation), so
# that runs can be compared exactly. No InfoBatch in it.
TINY_PSPNET = """
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py']
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(64, 64)),
    backbone=dict(depth=18),
    decode_head=dict(in_channels=512, channels=32, dropout_ratio=0),
    auxiliary_head=dict(in_channels=256, channels=16, dropout_ratio=0))
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root='{data_root}',
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='Resize', scale=(64, 64), keep_ratio=False),
            dict(type='PackSegInputs')
        ]))
val_dataloader = None
val_evaluator = None
val_cfg = None
test_dataloader = None
test_evaluator = None
test_cfg = None
train_cfg = dict(max_iters={budget}, val_interval={budget})
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end={budget},
         by_epoch=False)
]
default_hooks = dict(
    checkpoint=dict(interval=2), logger=dict(interval=1))
randomness = dict(seed=0)
"""
RUN_KEYS = ('work_dir', 'resume', 'load_from')


def _final(work_dir):
    iters = [
        int(m.group(1)) for p in work_dir.glob('iter_*.pth')
        if (m := re.fullmatch(r'iter_(\d+)\.pth', p.name))
    ]
    final = max(iters)
    return final, load_trusted_checkpoint(work_dir / f'iter_{final}.pth')


def _run_config(work_dir, name='tiny_pspnet.py'):
    """The config a run dumped into its work_dir, but for the keys that
    name the run itself."""
    cfg = Config.fromfile(str(work_dir / name)).to_dict()
    return {k: v for k, v in cfg.items() if k not in RUN_KEYS}


def _assert_same_training(ckpt, ref):
    assert ckpt['meta']['iter'] == ref['meta']['iter']
    assert ckpt['state_dict'].keys() == ref['state_dict'].keys()
    for key, value in ref['state_dict'].items():
        assert torch.equal(ckpt['state_dict'][key], value), key
    for key, column in ref['infobatch']['history'].items():
        torch.testing.assert_close(
            ckpt['infobatch']['history'][key],
            column,
            rtol=0,
            atol=0,
            equal_nan=True)


@pytest.fixture(scope='module')
def flag_run(ade_root, tmp_path_factory):
    """One run with --infobatch; its work_dir and log."""
    tmp = tmp_path_factory.mktemp('flag')
    config = tmp / 'tiny_pspnet.py'
    config.write_text(TINY_PSPNET.format(data_root=ade_root, budget=BUDGET))
    work_dir = tmp / 'infobatch'
    result = train_subprocess(None, config, '--infobatch', '--work-dir',
                              str(work_dir))
    return config, work_dir, result.stdout + result.stderr


def test_flag_trains_the_stock_config_with_pruning(flag_run):
    _, work_dir, log = flag_run
    final, ckpt = _final(work_dir)
    assert final < BUDGET, log[-3000:]
    assert f'InfoBatch finished: {final} iterations instead of {BUDGET}' \
        in log
    history = ckpt['infobatch']['history']
    assert history['pruned'][1] > 0
    assert 'add_infobatch added to the config' in log
    # Both heads' losses were wrapped: each counts in the log.
    assert re.search(r'decode\.loss_ce: [\d.]+ .*aux\.loss_ce: [\d.]+', log)
    # The dumped config shows what was added.
    dumped = Config.fromfile(str(work_dir / 'tiny_pspnet.py'))
    assert dumped.train_dataloader.sampler.type == 'InfoBatchSampler'
    assert [h.type for h in dumped.custom_hooks] == ['InfoBatchHook']
    assert 'mmseg_infobatch' in dumped.custom_imports.imports
    assert dumped.model.decode_head.loss_decode.type == 'InfoBatchLoss'
    assert dumped.model.auxiliary_head.loss_decode.loss.loss_weight == 0.4


def test_flag_with_resume_continues_exactly(flag_run, tmp_path):
    """Resumed mid-way through the pruned pass, with the flag again: the
    same config, the same end, the same weights and history."""
    config, work_dir, _ = flag_run
    _, ref = _final(work_dir)
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(work_dir / 'iter_8.pth', resumed / 'iter_8.pth')
    result = train_subprocess(None, config, '--infobatch', '--work-dir',
                              str(resumed), '--resume',
                              str(resumed / 'iter_8.pth'))
    log = result.stdout + result.stderr
    assert 'resumed epoch: 0, iter: 8' in log
    assert 'InfoBatch resumed in pass 1' in log
    _assert_same_training(_final(resumed)[1], ref)
    assert _run_config(resumed) == _run_config(work_dir)


def test_dumped_config_trains_the_same_without_the_flag(flag_run, tmp_path):
    _, work_dir, _ = flag_run
    _, ref = _final(work_dir)
    again = tmp_path / 'dumped'
    train_subprocess(None, work_dir / 'tiny_pspnet.py', '--work-dir',
                     str(again))
    _assert_same_training(_final(again)[1], ref)
    assert _run_config(again) == _run_config(work_dir)


@pytest.fixture(scope='module')
def train_tool():
    spec = importlib.util.spec_from_file_location('tool_train',
                                                  TOOLS / 'train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flag_options_and_default_work_dir(train_tool, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    flagship = str(REPO / 'configs' / 'upernet_r50_ade20k_infobatch.py')
    args = train_tool.parse_args([
        flagship, '--infobatch', '--infobatch-options', 'ratio=0.3',
        'delta=0.9', 'policy=random'
    ])
    assert args.infobatch_options == dict(
        ratio=0.3, delta=0.9, policy='random')
    cfg = train_tool.build_config(args)
    assert cfg.train_dataloader.sampler.ratio == 0.3
    assert cfg.train_dataloader.sampler.policy == 'random'
    assert cfg.custom_hooks[0].delta == 0.9
    # A run of its own: the plain run's work_dir stays apart.
    assert cfg.work_dir == \
        './work_dirs/upernet_r50_ade20k_infobatch_infobatch'
    plain = train_tool.build_config(train_tool.parse_args([flagship]))
    assert plain.work_dir == './work_dirs/upernet_r50_ade20k_infobatch'


def test_flag_options_need_the_flag(train_tool, capsys, monkeypatch):
    monkeypatch.setenv('LOCAL_RANK', '0')
    with pytest.raises(SystemExit):
        train_tool.parse_args(['c.py', '--infobatch-options', 'ratio=0.3'])
    assert 'add --infobatch' in capsys.readouterr().err
