"""A few-millisecond segmentor config for tests that train many runs."""
from pathlib import Path

import infobatch_recorder  # noqa: F401  (custom_imports run only at load)
from conftest import unique_names

from mmseg_infobatch.sampler.run_plan import batches_per_pass

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
            imports=['mmseg_infobatch', 'infobatch_recorder'],
            allow_failed_imports=False),
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


def train(cfg, resume_from=None):
    """Build and train a runner (resumed from a checkpoint if given), then
    stop its persistent dataloader workers: left to the garbage collector,
    each takes seconds to exit, which would dominate tiny runs."""
    from mmengine.runner import Runner
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = str(resume_from)
    runner = Runner.from_cfg(cfg)
    try:
        runner.train()
    finally:
        iterator = getattr(runner.train_loop.dataloader, '_iterator', None)
        if hasattr(iterator, '_shutdown_workers'):
            iterator._shutdown_workers()
    return runner


def train_counting_steps(cfg):
    """:func:`train`, and how many optimizer steps the run made."""
    from unittest import mock

    import torch
    steps = []
    step = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return step(self, *args, **kwargs)

    with mock.patch.object(torch.optim.SGD, 'step', counted):
        runner = train(cfg)
    return runner, len(steps)
