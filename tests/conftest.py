"""Shared fixtures: tiny real datasets and in-process runners."""
import math
import os
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TOOLS = REPO / 'tools'
DEMO_CONFIG = (
    REPO / 'configs' / 'demo' / 'upernet_r18_digit_scenes_infobatch.py')
sys.path.insert(0, str(TESTS))  # infobatch_recorder for custom_imports
# make_tiny_ade, the tiny ADE20K-layout generator (a script of the tools).
sys.path.insert(0, str(TOOLS / 'dataset_converters'))

from make_tiny_ade import make_ade_layout  # noqa: E402


def pytest_configure(config):
    # The tests train many tiny models on a shared 2-core machine, where
    # one thread per process is fastest (and faster than two contending).
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory):
    return make_ade_layout(tmp_path_factory.mktemp('ade'))


@pytest.fixture(scope='session')
def digit_root(tmp_path_factory):
    from mmseg_infobatch.demo import generate_digit_scenes
    root = tmp_path_factory.mktemp('digits')
    generate_digit_scenes(str(root), num_train=40, num_val=8, seed=0)
    return root


def tiny_ade_options(data_root):
    """Shrink a stock 512x512 ADE20K set-up to 64x64 crops of tiny data
    (12 images, batch 2: 6 iterations a pass) without workers, and switch
    off the pretrained download (nothing can be fetched offline)."""
    return {
        'model.pretrained': None,
        'model.data_preprocessor.size': (64, 64),
        'train_dataloader.dataset.data_root': str(data_root),
        'val_dataloader.dataset.data_root': str(data_root),
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'val_dataloader.num_workers': 0,
        'val_dataloader.persistent_workers': False,
        'train_dataloader.dataset.pipeline.2.scale': (128, 64),
        'train_dataloader.dataset.pipeline.3.crop_size': (64, 64),
        'val_dataloader.dataset.pipeline.1.scale': (128, 64),
    }


def as_cli_options(options):
    """``--cfg-options`` words for a dict of overrides."""
    return [
        f'{key}={str(value).replace(" ", "")}'
        for key, value in options.items()
    ]


def unique_names(cfg):
    """mmengine keys loggers and visualizers by name: keep runs apart."""
    tag = uuid.uuid4().hex[:8]
    cfg.experiment_name = f'test_{tag}'
    cfg.visualizer.name = f'vis_{tag}'
    return cfg


def demo_config(work_dir,
                data_root,
                passes=3,
                batch_size=4,
                num_train=40,
                ratio=0.5,
                delta=0.875,
                record=True,
                world_size=1,
                loop='NoPauseIterBasedTrainLoop',
                **options):
    """The demo config shrunk to a few seconds on CPU."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(DEMO_CONFIG))
    full_pass_batches = math.ceil(
        math.ceil(num_train / world_size) / batch_size)
    max_iters = int(passes * full_pass_batches)
    for loader in (cfg.train_dataloader, cfg.val_dataloader,
                   cfg.test_dataloader):
        loader.dataset.data_root = str(data_root)
    cfg.train_dataloader.batch_size = batch_size
    cfg.train_dataloader.sampler.ratio = ratio
    cfg.train_dataloader.sampler.seed = 0
    cfg.custom_hooks = [dict(type='InfoBatchHook', delta=delta)]
    if record:
        import infobatch_recorder  # noqa: F401  (custom_imports run at load)
        cfg.custom_imports.imports.append('infobatch_recorder')
        cfg.custom_hooks.append(
            dict(
                type='InfoBatchRecorderHook',
                out_file=str(Path(work_dir) / 'record_rank{rank}.pth')))
    cfg.train_cfg = dict(type=loop, max_iters=max_iters, val_interval=10**6)
    cfg.param_scheduler = [
        dict(
            type='PolyLR',
            eta_min=1e-4,
            power=0.9,
            begin=0,
            end=max_iters,
            by_epoch=False)
    ]
    cfg.optim_wrapper.optimizer.lr = 1e-2
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=False, interval=max_iters)
    cfg.log_level = 'INFO'
    cfg.work_dir = str(work_dir)
    cfg.merge_from_dict(options)
    return unique_names(cfg)


def run_config(cfg, train=True):
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    if train:
        runner.train()
    return runner


def load_record(work_dir, rank=0):
    import torch
    return torch.load(
        Path(work_dir) / f'record_rank{rank}.pth', weights_only=True)


def train_subprocess(cfg,
                     config_file,
                     *args,
                     nproc=1,
                     expect_rc=0,
                     timeout=600,
                     train_py=REPO / 'tools' / 'train.py'):
    """Run ``train_py`` (this repository's tools/train.py unless given) on
    ``cfg`` dumped to ``config_file`` (on the file as it is if ``cfg`` is
    None); torchrun when nproc > 1."""
    import socket
    import subprocess
    if cfg is not None:
        cfg.dump(str(config_file))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]),
        OMP_NUM_THREADS='1')
    train_py = str(train_py)
    if nproc > 1:
        with socket.socket() as s:
            s.bind(('127.0.0.1', 0))
            port = s.getsockname()[1]
        cmd = [
            sys.executable, '-m', 'torch.distributed.run',
            f'--nproc_per_node={nproc}', f'--master_port={port}',
            '--master_addr=127.0.0.1', train_py,
            str(config_file), '--launcher', 'pytorch'
        ]
    else:
        cmd = [sys.executable, train_py, str(config_file)]
    result = subprocess.run(
        cmd + list(args),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout)
    assert result.returncode == expect_rc, (
        f'exit {result.returncode}\nSTDERR:\n{result.stderr[-6000:]}'
        f'\nSTDOUT:\n{result.stdout[-2000:]}')
    return result


def pytest_addoption(parser):
    parser.addoption(
        '--fuzz',
        type=int,
        default=0,
        help='extra random set-ups for test_setup_fuzzer')


@pytest.fixture
def no_pass_pause(monkeypatch):
    """Skip mmengine's 2 s pause at every pass end when workers run: tests
    that train dozens of runs would sleep for minutes. The pause guards
    against a rare worker deadlock and changes no data."""
    import mmengine.runner.loops
    monkeypatch.setattr(mmengine.runner.loops.time, 'sleep', lambda s: None)
