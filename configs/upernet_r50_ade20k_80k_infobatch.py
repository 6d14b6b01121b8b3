# UperNet-R50 on ADE20K with InfoBatch, on mmseg's 80k schedule
# (upernet_r50_4xb4-80k_ade20k-512x512.py differs from the 160k config in
# exactly these schedule entries).
_base_ = ['./upernet_r50_ade20k_infobatch.py']

param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))
