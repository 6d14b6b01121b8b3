"""The configs the tests train, and the ways they train them.

Two factories, which differ in model and data, not in purpose:

- :func:`demo_config`: the shipped digit-scenes demo config
  (``configs/demo``: UPerNet with a ResNet-18, a few seconds a run on the
  CPU) on the ``digit_root`` fixture's generated digits, shrunk to a few
  passes. For what the shipped model and its pipeline must do.
- :func:`tiny_config`: a hand-written segmentor of a few milliseconds an
  iteration on ADE20K-layout random images (the ``ade_root`` or
  ``ade40_root`` fixture), without dropout or augmentation, so that runs
  compare exactly; checkpoints every iteration or epoch. For tests that
  train dozens of runs (resume sweeps, the set-up fuzzer).

Both add the recorder hook (``helpers.infobatch_recorder``), whose record
:func:`load_record` reads. :func:`tiny_ade_options` and
:func:`as_cli_options` shrink a stock ADE20K config instead (the flagship's
tests). :func:`run_config` trains a config in this process,
:func:`train_subprocess` through ``tools/train.py`` (and ``torchrun``).
"""
import math
import os
import sys
import uuid
from pathlib import Path

from mmseg_infobatch.sampler.run_plan import batches_per_pass
from . import infobatch_recorder  # noqa: F401  (custom_imports run at load)
from . import DEMO_CONFIG, REPO, TESTS, free_port

RECORDER = 'helpers.infobatch_recorder'

NUM_TRAIN, BATCH = 12, 2
FULL_PASS_BATCHES = NUM_TRAIN // BATCH  # 6 iterations a full pass
PASSES = 4
ETA_MIN = 1e-4


def tiny_config(work_dir,
                data_root,
                seed=None,
                workers=0,
                by_epoch=False,
                world_size=1,
                num_train=NUM_TRAIN,
                batch_size=BATCH,
                passes=PASSES,
                sampler=None,
                hook=None,
                drop_last=False,
                accumulative_counts=1,
                val_interval=None,
                loop='NoPauseIterBasedTrainLoop',
                checkpoint_by_epoch=None):
    """A tiny segmentor on tiny ADE-layout data (the first ``num_train``
    images), with InfoBatch and the recorder hook. Nothing is random but
    the data order and the model's first weights: no dropout, no
    augmentation, so a resumed run can be compared exactly. A checkpoint
    is saved every epoch or iteration, as the loop counts
    (``checkpoint_by_epoch`` None) or as given."""
    from mmengine.config import Config
    norm_cfg = dict(type='BN', requires_grad=True)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='Resize', scale=(32, 32), keep_ratio=False),
        dict(type='PackSegInputs')
    ]
    full_pass_batches = batches_per_pass(num_train, world_size, batch_size,
                                         drop_last)
    max_iters = passes * full_pass_batches
    cfg = dict(
        custom_imports=dict(
            imports=['mmseg_infobatch', RECORDER], allow_failed_imports=False),
        default_scope='mmseg',
        model=dict(
            type='EncoderDecoder',
            data_preprocessor=dict(
                type='SegDataPreProcessor',
                mean=[123.7, 116.3, 103.5],
                std=[58.4, 57.1, 57.4],
                bgr_to_rgb=True,
                pad_val=0,
                seg_pad_val=255,
                size=(32, 32)),
            backbone=dict(
                type='ResNetV1c',
                depth=18,
                stem_channels=8,
                base_channels=8,
                num_stages=2,
                strides=(1, 2),
                dilations=(1, 1),
                out_indices=(1, ),
                norm_cfg=norm_cfg),
            decode_head=dict(
                type='FCNHead',
                in_channels=16,
                in_index=0,
                channels=8,
                num_convs=1,
                concat_input=False,
                dropout_ratio=0,
                num_classes=150,
                norm_cfg=norm_cfg,
                loss_decode=dict(
                    type='InfoBatchLoss',
                    loss=dict(type='CrossEntropyLoss', loss_weight=1.0))),
            train_cfg=dict(),
            test_cfg=dict(mode='whole')),
        train_dataloader=dict(
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=drop_last,
            sampler=dict(
                type='InfoBatchSampler', **{
                    'ratio': 0.5,
                    **(sampler or {})
                }),
            dataset=dict(
                type='ADE20KDataset',
                data_root=str(data_root),
                indices=num_train,
                data_prefix=dict(
                    img_path='images/training',
                    seg_map_path='annotations/training'),
                pipeline=pipeline)),
        optim_wrapper=dict(
            type='OptimWrapper',
            accumulative_counts=accumulative_counts,
            optimizer=dict(
                type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4)),
        custom_hooks=[
            dict(type='InfoBatchHook', **{
                'delta': 0.7,
                **(hook or {})
            }),
            dict(
                type='InfoBatchRecorderHook',
                out_file=str(Path(work_dir) / 'record_rank{rank}.pth'))
        ],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            checkpoint=dict(
                type='CheckpointHook',
                by_epoch=by_epoch
                if checkpoint_by_epoch is None else checkpoint_by_epoch,
                interval=1),
            sampler_seed=dict(type='DistSamplerSeedHook')),
        env_cfg=dict(
            cudnn_benchmark=False,
            mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
            dist_cfg=dict(backend='gloo')),
        log_processor=dict(by_epoch=by_epoch),
        log_level='INFO',
        visualizer=dict(
            type='Visualizer', vis_backends=[dict(type='LocalVisBackend')]),
        work_dir=str(work_dir))
    interval = val_interval or 10**6
    if by_epoch:
        cfg['train_cfg'] = dict(
            type='EpochBasedTrainLoop',
            max_epochs=passes,
            val_interval=interval)
        cfg['param_scheduler'] = [
            dict(
                type='PolyLR',
                eta_min=ETA_MIN,
                power=0.9,
                begin=0,
                end=passes,
                by_epoch=True,
                convert_to_iter_based=True)
        ]
    else:
        cfg['train_cfg'] = dict(
            type=loop, max_iters=max_iters, val_interval=interval)
        cfg['param_scheduler'] = [
            dict(
                type='PolyLR',
                eta_min=ETA_MIN,
                power=0.9,
                begin=0,
                end=max_iters,
                by_epoch=False)
        ]
    if val_interval:
        cfg['val_dataloader'] = dict(
            batch_size=1,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='ADE20KDataset',
                data_root=str(data_root),
                data_prefix=dict(
                    img_path='images/validation',
                    seg_map_path='annotations/validation'),
                pipeline=pipeline))
        cfg['val_evaluator'] = dict(type='IoUMetric', iou_metrics=['mIoU'])
        cfg['val_cfg'] = dict(type='ValLoop')
    if seed is not None:
        cfg['randomness'] = dict(seed=seed)
    return unique_names(Config(cfg))


def train_counting_steps(cfg):
    """:func:`run_config`, and how many optimizer steps the run made."""
    from unittest import mock

    import torch
    steps = []
    step = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return step(self, *args, **kwargs)

    with mock.patch.object(torch.optim.SGD, 'step', counted):
        runner = run_config(cfg)
    return runner, len(steps)


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
        cfg.custom_imports.imports.append(RECORDER)
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


def run_config(cfg, train=True, resume_from=None):
    """Build a runner from ``cfg`` (resumed from the checkpoint
    ``resume_from`` if given) and train it unless ``train`` is False; then
    stop its dataloader workers: left to the garbage collector, each takes
    seconds to exit, which would dominate tiny runs."""
    from mmengine.runner import Runner
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = str(resume_from)
    runner = Runner.from_cfg(cfg)
    if train:
        try:
            runner.train()
        finally:
            _stop_workers(runner)
    return runner


def _stop_workers(runner):
    from mmengine.runner import BaseLoop

    # The loop as built, if the run got that far (a failed build leaves
    # its config, which the train_loop property would build again).
    loop = getattr(runner, '_train_loop', None)
    if isinstance(loop, BaseLoop):
        iterator = getattr(loop.dataloader, '_iterator', None)
        if hasattr(iterator, '_shutdown_workers'):
            iterator._shutdown_workers()


def load_record(work_dir, rank=0):
    """What the recorder hook saved of rank ``rank``'s run."""
    import torch
    return torch.load(
        Path(work_dir) / f'record_rank{rank}.pth', weights_only=True)


def assert_continues(ref, res, resumed_at):
    """The resumed record ``res`` equals the reference's from
    ``resumed_at`` on: every iteration's batch, weights, LR and progress,
    the passes it landed in, the final scores, LR and model weights."""
    import torch
    rows = [i for i, row in enumerate(ref['iters']) if row[0] >= resumed_at]
    assert len(res['iters']) == len(rows), (resumed_at, len(rows))
    for j, i in enumerate(rows):
        assert res['iters'][j] == ref['iters'][i], (resumed_at, j)
        assert res['batches'][j] == ref['batches'][i], (resumed_at, j)
        for got, want in zip(res['loss_weights'][j], ref['loss_weights'][i]):
            assert torch.equal(got, want), (resumed_at, j)
    by_pass = {p['pass_idx']: p for p in ref['passes']}
    for landed in res['passes']:
        want = by_pass[landed['pass_idx']]
        for key in ('padded_order', 'rank_indices', 'weights'):
            assert torch.equal(landed[key], want[key]), (resumed_at, key)
    assert res['final_iter'] == ref['final_iter']
    assert res['final_lr'] == ref['final_lr']
    assert torch.equal(res['final_scores'], ref['final_scores'])
    assert torch.equal(res['final_seen'], ref['final_seen'])
    for got, want in zip(res['final_params'], ref['final_params']):
        assert torch.equal(got, want), resumed_at


def subprocess_env(**extra):
    """The environment of a training subprocess: this checkout's package
    and the tests' modules first on the path, one thread."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]),
        OMP_NUM_THREADS='1',
        **extra)


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
    import subprocess
    if cfg is not None:
        cfg.dump(str(config_file))
    train_py = str(train_py)
    if nproc > 1:
        cmd = [
            sys.executable, '-m', 'torch.distributed.run',
            f'--nproc_per_node={nproc}', f'--master_port={free_port()}',
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
        env=subprocess_env(),
        timeout=timeout)
    assert result.returncode == expect_rc, (
        f'exit {result.returncode}\nSTDERR:\n{result.stderr[-6000:]}'
        f'\nSTDOUT:\n{result.stdout[-2000:]}')
    return result
