"""Every refusal and note of the engine's shims and of the demo dataset,
compared whole: the text names what is wrong and the fix, and a fragment
would let the rest say anything."""
from types import SimpleNamespace

import mmengine
import pytest
import torch
from helpers import refusal
from mmengine.config import Config

from mmseg_infobatch.engine import compat, cpu_runtime


def _old_mmengine(monkeypatch):
    monkeypatch.setattr(mmengine, '__version__', '0.10.6')
    return compat.check_mmengine_version()


def _fsdp_on_old_torch(monkeypatch):
    monkeypatch.setattr(cpu_runtime, 'cpu_fsdp_supported', lambda: False)
    monkeypatch.setattr(torch, '__version__', '2.1.0')
    cpu_runtime.place_strategy_on_cpu(
        Config(dict(strategy=dict(type='FSDPStrategy'))))


def _no_started_pass(monkeypatch):
    compat.started_pass(SimpleNamespace())


def _missing_digit_scenes(tmp_path):
    from mmseg.registry import DATASETS

    import mmseg_infobatch.demo  # noqa: F401  registers DigitScenesDataset
    DATASETS.build(
        dict(
            type='DigitScenesDataset',
            data_root=str(tmp_path / 'nowhere'),
            data_prefix=dict(
                img_path='images/training',
                seg_map_path='annotations/training')))


def _missing_digit_scenes_without_root(tmp_path):
    from mmseg.registry import DATASETS

    import mmseg_infobatch.demo  # noqa: F401  registers DigitScenesDataset
    DATASETS.build(
        dict(
            type='DigitScenesDataset',
            data_prefix=dict(
                img_path=str(tmp_path / 'nowhere'),
                seg_map_path=str(tmp_path / 'nowhere'))))


def _digit_scenes_without_img_path(tmp_path):
    from mmseg.registry import DATASETS

    import mmseg_infobatch.demo  # noqa: F401  registers DigitScenesDataset
    DATASETS.build(
        dict(
            type='DigitScenesDataset',
            data_root=str(tmp_path),
            data_prefix=dict(seg_map_path='annotations/training')))


def test_another_mmengine_is_refused_with_the_pip_line(monkeypatch):
    assert refusal(lambda: _old_mmengine(monkeypatch), RuntimeError) == (
        'mmseg_infobatch supports mmengine >= 0.10.7, < 0.11.0, but '
        'mmengine 0.10.6 is installed: pip install '
        '"mmengine>=0.10.7,<0.11.0"')


def test_fsdp_on_a_cpu_torch_without_stream_priority_is_refused(monkeypatch):
    assert refusal(
        lambda: _fsdp_on_old_torch(monkeypatch),
        RuntimeError) == ('FSDP on the CPU needs torch >= 2.2; this is torch '
                          '2.1.0, whose torch.cpu.Stream takes no priority, '
                          'which FSDP passes at set-up. Use '
                          "strategy=dict(type='DDPStrategy') on the CPU, run "
                          'FSDP on GPUs, or install torch >= 2.2.')


def test_the_no_pause_loop_names_the_stock_loop_as_the_fallback(monkeypatch):
    assert refusal(lambda: _no_started_pass(monkeypatch), RuntimeError) == (
        'NoPauseIterBasedTrainLoop expects the iterator of mmengine '
        "0.10.7's IterBasedTrainLoop; with this mmengine use "
        "train_cfg = dict(type='IterBasedTrainLoop', ...).")


def test_missing_digit_scenes_name_the_generator_command(tmp_path):
    folder = tmp_path / 'nowhere'
    assert refusal(lambda: _missing_digit_scenes(tmp_path),
                   FileNotFoundError) == (
                       'DigitScenesDataset: no image folder '
                       f'{folder}/images/training. Generate the data with '
                       '`python tools/dataset_converters/'
                       f'make_digit_scenes.py {folder}` or fix data_root.')


def test_missing_digit_scenes_without_data_root_say_data_root(tmp_path):
    folder = tmp_path / 'nowhere'
    assert refusal(lambda: _missing_digit_scenes_without_root(tmp_path),
                   FileNotFoundError) == (
                       f'DigitScenesDataset: no image folder {folder}. '
                       'Generate the data with `python tools/'
                       'dataset_converters/make_digit_scenes.py DATA_ROOT` '
                       'or fix data_root.')


@pytest.mark.parametrize('runner_type', [None, 'FlexibleRunner'])
def test_cpu_distributed_training_is_announced_in_the_log(
        monkeypatch, runner_type):
    """Without CUDA, a distributed launch logs, to the run's logger, that
    it trains on the CPU with gloo and SyncBN as BN."""
    logged = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.distributed, 'is_initialized', lambda: True)
    monkeypatch.setattr(cpu_runtime, 'print_log',
                        lambda *a, **k: logged.append((a, k)))
    cfg = Config(dict(model=dict(type='M')))
    if runner_type:
        cfg.runner_type = runner_type
    cpu_runtime.prepare_cpu_config(cfg, 'pytorch')
    assert logged == [(('No CUDA: distributed training on CPU with gloo; '
                        'SyncBN runs as BN.', ), dict(logger='current'))]


def test_the_demo_without_scikit_learn_names_the_install(monkeypatch):
    import sys

    from mmseg_infobatch.demo import digit_scenes
    monkeypatch.setitem(sys.modules, 'sklearn.datasets', None)
    assert refusal(digit_scenes._load_digits, ImportError) == (
        'Digit scenes need scikit-learn: pip install -e ".[demo]"')


def test_digit_scenes_without_an_image_path_are_refused(tmp_path):
    assert refusal(lambda: _digit_scenes_without_img_path(tmp_path),
                   FileNotFoundError) == (
                       'DigitScenesDataset: no image folder . Generate the '
                       'data with `python tools/dataset_converters/'
                       f'make_digit_scenes.py {tmp_path}` or fix data_root.')
