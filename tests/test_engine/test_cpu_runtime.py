"""cpu_runtime: what a CUDA-less machine changes in a config (SyncBN, the
gloo process group, DDP's and FSDP's placement), and what it leaves."""
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import FlexibleRunner, Runner

from mmseg_infobatch.engine import cpu_runtime
from mmseg_infobatch.engine.cpu_runtime import (cpu_fsdp_supported,
                                                is_flexible_runner,
                                                place_strategy_on_cpu,
                                                prepare_cpu_config,
                                                sync_bn_to_bn)

CPU_DDP = dict(
    type='MMDistributedDataParallel', broadcast_buffers=False, device_ids=None)
CPU_FSDP = dict(type='MMFullyShardedDataParallel', device_id='cpu')


def _segmentor():
    return dict(
        type='EncoderDecoder',
        backbone=dict(type='ResNet', norm_cfg=dict(type='SyncBN')),
        decode_head=dict(
            type='UPerHead',
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_decode=[dict(type='CrossEntropyLoss')]),
        auxiliary_head=[
            dict(type='FCNHead', norm_cfg=dict(type='SyncBN')),
            (dict(type='FCNHead', norm_cfg=dict(type='GN')), ),
        ])


def test_every_sync_bn_of_a_config_tree_becomes_bn():
    tree = _segmentor()
    assert sync_bn_to_bn(tree) is tree
    assert tree['backbone']['norm_cfg'] == dict(type='BN')
    assert tree['decode_head']['norm_cfg'] == dict(
        type='BN', requires_grad=True)
    assert tree['auxiliary_head'][0]['norm_cfg'] == dict(type='BN')
    # Other types are left as they are.
    assert tree['auxiliary_head'][1][0]['norm_cfg'] == dict(type='GN')
    assert tree['type'] == 'EncoderDecoder'
    assert tree['decode_head']['loss_decode'] == [
        dict(type='CrossEntropyLoss')
    ]


@pytest.fixture
def no_cuda(monkeypatch):
    """A CUDA-less machine whose gloo group is recorded, not started."""
    started = []
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.distributed, 'is_initialized',
                        lambda: bool(started))
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda **kwargs: started.append(kwargs))
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '3')
    monkeypatch.setattr(cpu_runtime, 'print_log', lambda *a, **k: None)
    return started


def test_a_config_is_left_alone_where_cuda_is(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = Config(dict(model=_segmentor()))
    assert prepare_cpu_config(cfg, 'pytorch') is cfg
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN'
    assert 'model_wrapper_cfg' not in cfg


def test_a_single_process_cpu_run_only_replaces_sync_bn(no_cuda):
    cfg = Config(dict(model=_segmentor()))
    assert prepare_cpu_config(cfg, 'none') is cfg
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert 'model_wrapper_cfg' not in cfg
    assert no_cuda == []


def test_a_cpu_launch_starts_gloo_with_the_launchers_rank(no_cuda):
    cfg = Config(dict(model=_segmentor()))
    assert prepare_cpu_config(cfg, 'pytorch') is cfg
    assert no_cuda == [dict(backend='gloo', rank=1, world_size=3)]
    assert cfg.model.decode_head.norm_cfg.type == 'BN'
    # The runner's DDP gets no device_ids: it places the CPU module.
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel', device_ids=None)
    # A group already started is kept.
    prepare_cpu_config(Config(dict(model=_segmentor())), 'pytorch')
    assert len(no_cuda) == 1


def test_a_cpu_launch_of_flexible_runner_places_its_strategy(no_cuda):
    cfg = Config(dict(model=_segmentor(), runner_type='FlexibleRunner'))
    prepare_cpu_config(cfg, 'pytorch')
    assert 'model_wrapper_cfg' not in cfg
    assert cfg.strategy == dict(type='DDPStrategy', model_wrapper=CPU_DDP)


@pytest.mark.parametrize('runner_type,flexible', [
    (None, False),
    ('Runner', False),
    ('FlexibleRunner', True),
    ('NoSuchRunner', False),
    (Runner, False),
    (FlexibleRunner, True),
    (type('MyFlexibleRunner', (FlexibleRunner, ), {}), True),
])
def test_flexible_runner_and_its_subclasses_are_recognised(
        runner_type, flexible):
    cfg = Config()
    if runner_type is not None:
        cfg.runner_type = runner_type
    assert is_flexible_runner(cfg) is flexible


@pytest.fixture
def fsdp_runs_on_this_cpu(monkeypatch):
    """Placement is what these tests check: on torch < 2.2 FSDP is refused
    on the CPU before it is placed (the refusal's own test says so)."""
    monkeypatch.setattr(cpu_runtime, 'cpu_fsdp_supported', lambda: True)


@pytest.mark.parametrize('strategy,placed', [
    (None, dict(type='DDPStrategy', model_wrapper=CPU_DDP)),
    (dict(), dict(type='DDPStrategy', model_wrapper=CPU_DDP)),
    (dict(type='DDPStrategy'), dict(type='DDPStrategy',
                                    model_wrapper=CPU_DDP)),
    (dict(type='FSDPStrategy'),
     dict(type='FSDPStrategy', model_wrapper=CPU_FSDP)),
    (dict(type='ResumableFSDPStrategy'),
     dict(type='ResumableFSDPStrategy', model_wrapper=CPU_FSDP)),
    (dict(type='DDPStrategy', model_wrapper=None),
     dict(type='DDPStrategy', model_wrapper=CPU_DDP)),
])
def test_a_strategy_wraps_the_cpu_model(strategy, placed,
                                        fsdp_runs_on_this_cpu):
    cfg = Config() if strategy is None else Config(dict(strategy=strategy))
    place_strategy_on_cpu(cfg)
    assert cfg.strategy == placed


def test_a_strategy_given_as_a_class_is_placed_too(fsdp_runs_on_this_cpu):
    from mmengine._strategy import FSDPStrategy
    cfg = Config(dict(strategy=dict(type=FSDPStrategy)))
    place_strategy_on_cpu(cfg)
    assert cfg.strategy.model_wrapper == CPU_FSDP


def test_the_strategys_own_wrapper_keys_are_kept(fsdp_runs_on_this_cpu):
    cfg = Config(
        dict(
            strategy=dict(
                type='DDPStrategy',
                model_wrapper=dict(
                    type='MyDDP', broadcast_buffers=True, device_ids=[]))))
    place_strategy_on_cpu(cfg)
    assert cfg.strategy.model_wrapper == dict(
        type='MyDDP', broadcast_buffers=True, device_ids=[])
    cfg = Config(
        dict(
            strategy=dict(
                type='FSDPStrategy',
                model_wrapper=dict(type='MyFSDP', device_id='meta', sync=1))))
    place_strategy_on_cpu(cfg)
    assert cfg.strategy.model_wrapper == dict(
        type='MyFSDP', device_id='meta', sync=1)


@pytest.mark.parametrize(
    'strategy',
    [dict(type='SingleDeviceStrategy'),
     dict(type='NoSuchStrategy')])
def test_strategies_without_ddp_or_fsdp_are_left_alone(strategy):
    cfg = Config(dict(strategy=strategy))
    place_strategy_on_cpu(cfg)
    assert cfg.strategy == strategy


def test_cpu_fsdp_needs_a_stream_that_takes_a_priority(monkeypatch):
    """torch < 2.2's ``torch.cpu.Stream`` is a stub without arguments."""
    from mmengine.utils import digit_version
    assert cpu_fsdp_supported() is (digit_version(torch.__version__)
                                    >= digit_version('2.2.0'))

    class StubStream:

        def __init__(self):
            pass

    monkeypatch.setattr(torch.cpu, 'Stream', StubStream)
    assert cpu_fsdp_supported() is False
    calls = []
    monkeypatch.setattr(torch.cpu, 'Stream',
                        lambda **kwargs: calls.append(sorted(kwargs)))
    assert cpu_fsdp_supported() is True
    assert calls == [['priority']]
