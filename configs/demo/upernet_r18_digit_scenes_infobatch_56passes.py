# The demo on a schedule twice as long (56 full-data passes), for the
# lossless study closer to a plateau:
#   python tools/misc/run_study.py --config THIS_FILE
_base_ = ['./upernet_r18_digit_scenes_infobatch.py']

passes = 56
max_iters = 56 * 63
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=100, by_epoch=False),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=100,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
