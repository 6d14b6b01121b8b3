"""The flagship configs through tools/train.py, on tiny ADE20K-layout data."""
import os
import re
import subprocess
import sys
from pathlib import Path

import mmseg
import pytest
import torch
from helpers import REPO
from helpers.configs import as_cli_options, tiny_ade_options

from mmseg_infobatch.engine.checkpoint_types import load_trusted_checkpoint
from mmseg_infobatch.engine.cpu_runtime import sync_bn_to_bn
from mmseg_infobatch.sampler.state import sample_tables

# The checkpoints below are read with torch's safe loading where torch can
# (>= 2.4), as --resume does.
FLAGSHIP = REPO / 'configs' / 'upernet_r50_ade20k_infobatch.py'
FLAGSHIP_80K = REPO / 'configs' / 'upernet_r50_ade20k_80k_infobatch.py'
ITERS_PER_PASS = 6  # 12 training images, batch 2
BUDGET = 3 * ITERS_PER_PASS


def tiny_options(data_root, max_iters=BUDGET, ckpt_interval=4):
    """The flagship on tiny data, with a short schedule."""
    return as_cli_options({
        **tiny_ade_options(data_root),
        'train_cfg.max_iters':
        max_iters,
        'param_scheduler.0.end':
        max_iters,
        'default_hooks.checkpoint.interval':
        ckpt_interval,
        'default_hooks.logger.interval':
        1,
        'randomness.seed':
        0,
    })


def train(work_dir, data_root, *extra):
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'train.py'),
        str(FLAGSHIP), '--work-dir',
        str(work_dir), '--cfg-options'
    ] + tiny_options(data_root) + list(extra)
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def flagship_run(ade_root, tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('flagship')
    return work_dir, train(work_dir, ade_root)


def _final_iter(work_dir):
    return max(
        int(m.group(1)) for p in work_dir.glob('iter_*.pth')
        if (m := re.match(r'iter_(\d+)\.pth', p.name)))


def test_flagship_trains_shortened_to_eta_min(flagship_run):
    work_dir, log = flagship_run
    final = _final_iter(work_dir)
    assert final < BUDGET, log[-3000:]
    assert f'InfoBatch finished: {final} iterations instead of {BUDGET}' \
        in log
    ckpt = load_trusted_checkpoint(work_dir / f'iter_{final}.pth')
    assert ckpt['meta']['iter'] == final
    assert 'infobatch' in ckpt
    assert sample_tables(ckpt['infobatch']['sampler'])['seen'].all()
    # PolyLR reached its eta_min at the true last iteration.
    lr = ckpt['optimizer']['param_groups'][0]['lr']
    assert lr == pytest.approx(1e-4, rel=1e-3)
    # The final validation ran at the true last iteration.
    assert re.search(r'Iter\(val\) \[\d+/\d+\].*mIoU', log)


def test_flagship_warns_of_a_total_batch_other_than_the_recipe(flagship_run):
    # One process at batch 2 instead of the recipe's 4 x 4. The stock
    # pipeline packs img_path, by which every batch's images were checked.
    _, log = flagship_run
    assert 'total batch 2 (1 x 2)' in log
    assert ("the config's auto_scale_lr.base_batch_size says a total batch "
            'of 16, but this run trains with 2') in log


def test_flagship_resume_continues(flagship_run, ade_root):
    work_dir, _ = flagship_run
    final = _final_iter(work_dir)
    ref = load_trusted_checkpoint(work_dir / f'iter_{final}.pth')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_8.pth'))
    os.remove(work_dir / f'iter_{final}.pth')
    log = train(work_dir, ade_root, '--resume')
    assert 'resumed epoch: 0, iter: 8' in log
    assert 'InfoBatch resumed in pass 1 at batch 2/5' in log
    assert 'InfoBatch finished' in log
    again = load_trusted_checkpoint(work_dir /
                                    f'iter_{_final_iter(work_dir)}.pth')
    # The pass the resume lands in is the original's. Later passes may
    # differ: the stock pipeline's random augmentation is not restored.
    for key, column in ref['infobatch']['history'].items():
        torch.testing.assert_close(
            again['infobatch']['history'][key][:2],
            column[:2],
            rtol=0,
            atol=0,
            equal_nan=True)


def _unscoped(node):
    if isinstance(node, dict):
        return {k: _unscoped(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return [_unscoped(v) for v in node]
    return node


def test_test_tool_evaluates_a_checkpoint(flagship_run, ade_root, tmp_path):
    work_dir, _ = flagship_run
    checkpoint = work_dir / 'iter_8.pth'
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'test.py'),
        str(FLAGSHIP),
        str(checkpoint), '--work-dir',
        str(tmp_path), '--cfg-options', 'model.pretrained=None',
        f'test_dataloader.dataset.data_root={ade_root}',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        'test_dataloader.dataset.pipeline.1.scale=(128,64)'
    ]
    result = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'Iter\(test\) \[\d+/\d+\].*mIoU: \d',
                     result.stdout + result.stderr)
    missing = subprocess.run(
        cmd[:3] + [str(tmp_path / 'none.pth')],
        capture_output=True,
        text=True,
        cwd=REPO)
    assert f'Checkpoint not found: {tmp_path}/none.pth' in missing.stderr


@pytest.mark.parametrize('config', [FLAGSHIP, FLAGSHIP_80K])
def test_flagship_configs_parse_and_build(config):
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_infobatch import InfoBatchLoss
    cfg = Config.fromfile(str(config))
    assert cfg.train_dataloader.sampler.type == 'InfoBatchSampler'
    assert [h.type for h in cfg.custom_hooks] == ['InfoBatchHook']
    # The schedule is the stock one of the same length.
    length = '80k' if '80k' in config.name else '160k'
    stock = Config.fromfile(
        str(
            Path(mmseg.__file__).parent / '.mim' / 'configs' / 'upernet' /
            f'upernet_r50_4xb4-{length}_ade20k-512x512.py'))
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper'):
        assert _unscoped(cfg[key]) == _unscoped(stock[key]), key
    assert cfg.default_hooks.checkpoint.interval == \
        stock.default_hooks.checkpoint.interval
    cfg.model.pretrained = None
    model = MODELS.build(sync_bn_to_bn(cfg.model))
    assert isinstance(model.decode_head.loss_decode, InfoBatchLoss)
    assert isinstance(model.auxiliary_head.loss_decode, InfoBatchLoss)
    assert model.decode_head.loss_decode.loss.loss_weight == 1.0
    assert model.auxiliary_head.loss_decode.loss.loss_weight == 0.4
