"""InfoBatch in stock mmseg configs of other families, dataset wrappers,
workers, AMP and gradient accumulation."""
import pytest
from helpers import DEMO_CONFIG, REPO
from helpers.configs import (demo_config, load_record, run_config,
                             tiny_ade_options, unique_names)
from mmengine.config import Config

from mmseg_infobatch import InfoBatchHook
from mmseg_infobatch.engine.cpu_runtime import prepare_cpu_config

WRAPPED_CE = "dict(type='InfoBatchLoss', loss=dict(type='CrossEntropyLoss', " \
    "use_sigmoid=False, loss_weight={w}))"

# The recipe from the README, applied to stock configs of four families.
STOCK = {
    'fcn': ('mmseg::fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py', True),
    'pspnet': ('mmseg::pspnet/pspnet_r50-d8_4xb4-80k_ade20k-512x512.py', True),
    'deeplabv3plus': ('mmseg::deeplabv3plus/'
                      'deeplabv3plus_r50-d8_4xb4-80k_ade20k-512x512.py', True),
    'segformer': ('mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-'
                  '512x512.py', False),
}


def _infobatch_config(path, base, aux):
    heads = f'decode_head=dict(loss_decode={WRAPPED_CE.format(w=1.0)})'
    if aux:
        heads += (', auxiliary_head=dict(loss_decode='
                  f'{WRAPPED_CE.format(w=0.4)})')
    path.write_text('\n'.join([
        f"_base_ = ['{base}']",
        "custom_imports = dict(imports=['mmseg_infobatch'], "
        'allow_failed_imports=False)',
        "train_dataloader = dict(sampler=dict(type='InfoBatchSampler'))",
        "custom_hooks = [dict(type='InfoBatchHook')]",
        f'model = dict({heads})', ''
    ]))
    return path


def _tiny(cfg, data_root, work_dir, max_iters):
    cfg.merge_from_dict(
        {
            **tiny_ade_options(data_root),
            'train_cfg.max_iters': max_iters,
            'train_cfg.val_interval': 10**6,
            'default_hooks.checkpoint.interval': max_iters,
            'log_level': 'WARNING',
        },
        allow_list_keys=True)
    if 'init_cfg' in cfg.model.backbone:
        cfg.model.backbone.init_cfg = None  # no download offline
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'PolyLR':
            scheduler.end = max_iters
            scheduler.begin = min(scheduler.begin, 2)
        else:
            scheduler.end = min(scheduler.end, 2)
    cfg.work_dir = str(work_dir)
    return unique_names(prepare_cpu_config(cfg, 'none'))


@pytest.mark.parametrize('family', sorted(STOCK))
def test_stock_configs_gain_infobatch(family, ade_root, tmp_path):
    base, aux = STOCK[family]
    cfg = Config.fromfile(
        str(_infobatch_config(tmp_path / f'{family}_ib.py', base, aux)))
    # 12 images, batch 2: 6 iterations a pass; a budget of 2 passes prunes
    # pass 1 (delta * C = 1.75).
    runner = run_config(_tiny(cfg, ade_root, tmp_path, max_iters=12))
    hook = next(h for h in runner.hooks if isinstance(h, InfoBatchHook))
    assert len(hook.losses) == (2 if aux else 1)
    assert [r.pass_idx for r in hook.history] == [0, 1]
    assert hook.history[1].pruned > 0  # pass 1 pruned samples
    # The loop ended after the pruned pass, padded to whole batches.
    assert runner.iter == 6 + hook.history[1].iters <= 12
    assert hook.sampler.seen.all()


def _check_paths(record, dataset):
    """Scores land on the right samples: the index InfoBatch used for each
    image is the index of the image the model saw."""
    assert record['batches']
    for batch, paths in zip(record['batches'], record['img_paths']):
        assert [dataset.get_data_info(i)['img_path'] for i in batch] == paths


def _digit_dataset(root, split='training'):
    return dict(
        type='DigitScenesDataset',
        data_root=str(root),
        data_prefix=dict(
            img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')
        ])


@pytest.mark.parametrize('wrapper', ['repeat', 'concat', 'workers'])
def test_indices_reach_the_right_images(wrapper, digit_root, tmp_path):
    from mmseg.registry import DATASETS
    inner = _digit_dataset(digit_root)
    loader = {}
    if wrapper == 'repeat':
        dataset = dict(type='RepeatDataset', times=2, dataset=inner)
        num_train = 80
    elif wrapper == 'concat':
        dataset = dict(
            type='ConcatDataset',
            datasets=[inner, _digit_dataset(digit_root, 'validation')])
        num_train = 48
    else:
        # Also carry mmengine's sample_idx, which the hook then cross-checks.
        dataset = dict(
            inner,
            pipeline=inner['pipeline'][:-1] + [
                dict(
                    type='PackSegInputs',
                    meta_keys=('img_path', 'seg_map_path', 'ori_shape',
                               'img_shape', 'sample_idx'))
            ])
        num_train = 40
        loader = dict(num_workers=2, persistent_workers=True)
    cfg = demo_config(
        tmp_path, digit_root, passes=3, num_train=num_train, delta=0.5)
    cfg.train_dataloader.dataset = dataset
    cfg.train_dataloader.update(loader)
    run_config(cfg)
    record = load_record(tmp_path)
    assert len(record['passes']) >= 2
    assert record['passes'][1]['padded_order'].numel() < num_train
    _check_paths(record, DATASETS.build(dataset))


def test_amp_optimizer_wrapper_runs(digit_root, tmp_path):
    """mmengine's AmpOptimWrapper refuses CPUs, so a test-only subclass of
    OptimWrapper autocasts to bfloat16 on CPU the same way; the CUDA AMP
    runs (fp16 and bf16) are in benchmarks/gpu_check.sh."""
    import helpers.cpu_amp_optim_wrapper  # noqa: F401
    cfg = demo_config(tmp_path, digit_root, passes=3, delta=0.5)
    cfg.optim_wrapper.type = 'CpuAmpOptimWrapper'
    runner = run_config(cfg)
    record = load_record(tmp_path)
    assert runner.optim_wrapper.autocast_calls > 0
    assert runner.iter < 30
    assert record['final_seen'].all()
    assert record['final_scores'].isfinite().all()


def test_train_tool_amp_flag_selects_amp_wrapper():
    import sys
    sys.path.insert(0, str(REPO / 'tools'))
    from train import build_config, parse_args
    cfg = build_config(parse_args([str(DEMO_CONFIG), '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_gradient_accumulation(digit_root, tmp_path):
    cfg = demo_config(tmp_path, digit_root, passes=3, delta=0.5)
    cfg.optim_wrapper.accumulative_counts = 2
    runner = run_config(cfg)
    record = load_record(tmp_path)
    assert runner.iter < 30
    assert record['final_lr'] == pytest.approx(1e-4, rel=1e-3)
