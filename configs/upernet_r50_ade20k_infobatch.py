# UperNet-R50 on ADE20K (160k) with InfoBatch. Only the InfoBatch pieces
# differ from the stock config; max_iters stays the full-data budget and the
# hook ends training once that many iterations' worth of passes is done.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py']

custom_imports = dict(imports=['mmseg_infobatch'], allow_failed_imports=False)
train_dataloader = dict(
    sampler=dict(type='InfoBatchSampler', shuffle=True, ratio=0.5))
custom_hooks = [dict(type='InfoBatchHook', delta=0.875)]
# The recipe's total batch (4 GPUs x 4 images), which mmseg's config states
# only in its name: InfoBatchHook warns when a run trains with another, and
# --cfg-options auto_scale_lr.enable=True scales the LR to it.
auto_scale_lr = dict(enable=False, base_batch_size=16)
model = dict(
    decode_head=dict(
        loss_decode=dict(
            type='InfoBatchLoss',
            loss=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0))),
    auxiliary_head=dict(
        loss_decode=dict(
            type='InfoBatchLoss',
            loss=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4))))
