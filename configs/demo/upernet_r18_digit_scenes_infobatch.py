# The embedded demo: UperNet on a slim ResNet-18, trained from scratch on
# digit scenes (32x32, 1-2 digits of 16-26 px, 11 classes) with InfoBatch.
# Full-data training converges (val mIoU plateaus near 90) in about 1,800
# iterations, a few minutes on a 2-core CPU; see tools/misc/run_study.py.
# Generate the data first:
#   python tools/dataset_converters/make_digit_scenes.py data/digit_scenes
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(
    imports=['mmseg_infobatch', 'mmseg_infobatch.demo'],
    allow_failed_imports=False)

data_root = 'data/digit_scenes'
crop_size = (32, 32)
num_classes = 11
passes = 28  # full-data passes the schedule is sized for
batch_size = 16
iters_per_pass = 63  # ceil(1000 training scenes / batch 16)

norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[40.0, 40.0, 40.0],
        std=[60.0, 60.0, 60.0],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    pretrained=None,
    backbone=dict(
        type='ResNet',
        depth=18,
        stem_channels=32,
        base_channels=32,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        strides=(1, 2, 2, 2),
        dilations=(1, 1, 1, 1),
        norm_cfg=norm_cfg,
        norm_eval=False,
        style='pytorch'),
    decode_head=dict(
        type='UPerHead',
        in_channels=[32, 64, 128, 256],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='InfoBatchLoss',
            loss=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=128,
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='InfoBatchLoss',
            loss=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# No random augmentation: digits are not flip-invariant, and a run is then
# reproducible end to end.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
test_pipeline = train_pipeline
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    sampler=dict(type='InfoBatchSampler', shuffle=True, ratio=0.5),
    dataset=dict(
        type='DigitScenesDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='DigitScenesDataset',
        data_root=data_root,
        data_prefix=dict(
            img_path='images/validation',
            seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

custom_hooks = [dict(type='InfoBatchHook', delta=0.875)]

max_iters = passes * iters_per_pass
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-3, weight_decay=1e-4))
warmup_iters = 100
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        begin=0,
        end=warmup_iters,
        by_epoch=False),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=warmup_iters,
        end=max_iters,
        by_epoch=False)
]
# The stock IterBasedTrainLoop, minus its 2 s pause at every pass end (a
# quarter of this demo's wall time); see mmseg_infobatch/loops.py.
train_cfg = dict(
    type='NoPauseIterBasedTrainLoop',
    max_iters=max_iters,
    val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1),
    visualization=dict(type='SegVisualizationHook', draw=False))
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
