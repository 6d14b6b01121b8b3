"""Guards that must fire on stock set-ups, without a runner: the recipe's
total batch of the shipped configs, the identity of each batch's images
under mmseg's stock ``PackSegInputs`` (dataset wrappers included), the
set-up line under ``policy='quantile'``, the dataset fingerprint of a
moved copy of the data, and the import where mmengine has no
FSDPStrategy."""
import logging
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from helpers import REPO, make_sampler
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from mmseg_infobatch.hook.checks import check_batch
from mmseg_infobatch.hook.report import log_setup
from mmseg_infobatch.sampler.state import dataset_fingerprint

FLAGSHIPS = [
    REPO / 'configs' / 'upernet_r50_ade20k_infobatch.py',
    REPO / 'configs' / 'upernet_r50_ade20k_80k_infobatch.py'
]
STOCK_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


def _sampler(dataset, world_size=1, **kwargs):
    kwargs.setdefault('seed', 0)
    return make_sampler(dataset, world=world_size, **kwargs)


def _setup_log(cfg, sampler, batch_size, caplog, max_iters=160000):
    """The hook's start-up lines for ``sampler`` configured at
    ``batch_size`` under ``cfg``."""
    sampler.configure(batch_size)
    sampler.set_plan(max_iters, 0, 0.875)
    runner = SimpleNamespace(cfg=cfg, logger=logging.getLogger('test_guards'))
    with caplog.at_level(logging.INFO, logger='test_guards'):
        log_setup(runner, sampler)
    return caplog.text


@pytest.mark.parametrize('config', FLAGSHIPS, ids=['160k', '80k'])
@pytest.mark.parametrize('world_size,batch_size', [(4, 4), (8, 4), (1, 2)])
def test_shipped_configs_warn_of_a_total_batch_other_than_the_recipe(
        config, world_size, batch_size, caplog):
    # `dist_train.sh CONFIG 8`, one GPU, and the recipe's 4 x 4.
    cfg = Config.fromfile(str(config))
    sampler = _sampler(list(range(2000)), world_size)
    text = _setup_log(cfg, sampler, batch_size, caplog)
    total = world_size * batch_size
    assert f'total batch {total} ({world_size} x {batch_size})' in text
    warning = ("the config's auto_scale_lr.base_batch_size says a total "
               f'batch of 16, but this run trains with {total}')
    assert (warning in text) == (total != 16)


def test_a_config_name_states_the_recipe_where_auto_scale_lr_does_not(
        caplog, tmp_path):
    named = tmp_path / 'fcn_r50-d8_4xb4-80k_ade20k-512x512.py'
    named.write_text('train_cfg = dict(max_iters=80000)\n')
    text = _setup_log(
        Config.fromfile(str(named)), _sampler(list(range(100))), 2, caplog)
    assert "the config's name says a total batch of 16" in text
    # auto_scale_lr, which the config states outright, comes first.
    named.write_text('auto_scale_lr = dict(base_batch_size=2)\n')
    caplog.clear()
    text = _setup_log(
        Config.fromfile(str(named)), _sampler(list(range(100))), 2, caplog)
    assert 'says a total batch' not in text


def test_quantile_setup_line_names_the_buckets(caplog):
    sampler = _sampler(
        list(range(100)),
        policy='quantile',
        ratio=0.0,
        buckets=[(0.3, 0.8), (0.7, 0.4)])
    text = _setup_log({}, sampler, 4, caplog, max_iters=250)
    assert "(buckets (q 0.3, r 0.8), (q 0.7, r 0.4), policy 'quantile')" \
        in text
    assert 'ratio 0' not in text


def _ade(root, split='training', **kwargs):
    return dict(
        type='ADE20KDataset',
        data_root=str(root),
        data_prefix=dict(
            img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
        pipeline=STOCK_PIPELINE,
        **kwargs)


def _build(cfg):
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    return DATASETS.build(cfg)


@pytest.mark.parametrize('wrapper', ['plain', 'repeat', 'concat'])
def test_batch_identity_is_checked_with_stock_pack_seg_inputs(
        wrapper, ade_root):
    inner = _ade(ade_root)
    if wrapper == 'plain':
        dataset, chosen = _build(inner), [3, 1]
    elif wrapper == 'repeat':
        # 12 images twice: 13 is the second copy of image 1.
        dataset = _build(dict(type='RepeatDataset', times=2, dataset=inner))
        chosen = [13, 0]
    else:
        dataset = _build(
            dict(
                type='ConcatDataset',
                datasets=[inner, _ade(ade_root, 'validation')]))
        chosen = [12, 5]  # the first validation image, a training one
    batch = pseudo_collate([dataset[i] for i in chosen])
    # The stock pipeline packs img_path, not mmengine's sample_idx.
    assert 'sample_idx' not in batch['data_samples'][0]
    check_batch(batch, torch.tensor(chosen), dataset, (1, 0))
    with pytest.raises(
            RuntimeError,
            match=f'expected image 0 of this batch to be sample {chosen[1]}'
            '.*sample indices cannot reach the batch'):
        check_batch(batch, torch.tensor(chosen[::-1]), dataset, (1, 0))


def test_a_moved_copy_of_the_data_resumes(ade_root, tmp_path):
    copy = shutil.copytree(ade_root, tmp_path / 'moved')
    for wrap in (lambda d: d,
                 lambda d: dict(type='RepeatDataset', times=2, dataset=d)):
        here, there = _build(wrap(_ade(ade_root))), _build(wrap(_ade(copy)))
        assert here.get_data_info(0)['img_path'] != \
            there.get_data_info(0)['img_path']
        assert dataset_fingerprint(here) == dataset_fingerprint(there)
    saved = _sampler(_build(_ade(ade_root)))
    saved.configure(2)
    list(iter(saved))  # pass 0, scored
    saved.update_scores(torch.arange(12), torch.rand(12))
    resumed = _sampler(_build(_ade(copy)), seed=1)
    resumed.configure(2)
    resumed.load_state_dict(saved.state_dict())
    assert (resumed.seed, resumed.pass_idx) == (0, 0)
    assert torch.equal(resumed.scores, saved.scores)
    assert resumed.served.rank_indices().tolist() == list(iter(saved))


def test_other_images_of_the_same_count_are_refused(ade_root):
    saved = _sampler(_build(_ade(ade_root, indices=list(range(11)))))
    other = _sampler(_build(_ade(ade_root, indices=list(range(1, 12)))))
    for sampler in (saved, other):
        sampler.configure(2)
    with pytest.raises(
            ValueError,
            match='(?s)fingerprint=.*same data.*paths relative to '
            'data_root.*load_from'):
        other.load_state_dict(saved.state_dict())


def test_an_older_fingerprint_of_absolute_paths_is_not_compared(ade_root):
    saved = _sampler(_build(_ade(ade_root)))
    saved.configure(2)
    state = saved.state_dict()
    state['layout']['fingerprint'] = 123456789  # a CRC32, as 0.1.0 wrote
    resumed = _sampler(_build(_ade(ade_root)))
    resumed.configure(2)
    with mock.patch('mmseg_infobatch.sampler.state.print_log') as log:
        resumed.load_state_dict(state)
    assert 'not compared' in log.call_args.args[0]
    # Its dataset size still is.
    state['layout']['num_samples'] = 13
    with pytest.raises(ValueError, match='num_samples=13'):
        resumed.load_state_dict(state)


def test_import_where_mmengine_has_no_fsdp_strategy():
    # As on a torch without FSDP: mmengine registers no FSDPStrategy, and
    # FSDP cannot be imported. (mmengine 0.10.7 itself imports FSDP with
    # its model wrappers on torch >= 2.0, so they are imported first.)
    code = textwrap.dedent("""
        import importlib.abc
        import sys

        import mmengine.runner
        from mmengine.registry import STRATEGIES

        class NoFSDP(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[:3] == ['torch', 'distributed', 'fsdp']:
                    raise ImportError(name + ': no FSDP in this torch')

        STRATEGIES._module_dict.pop('FSDPStrategy')
        for name in [n for n in sys.modules
                     if n.startswith('torch.distributed.fsdp')]:
            del sys.modules[name]
        sys.meta_path.insert(0, NoFSDP())
        import mmseg_infobatch
        assert STRATEGIES.get('ResumableFSDPStrategy') is None
        print('imported', mmseg_infobatch.InfoBatchHook.__name__)
        """)
    result = subprocess.run([sys.executable, '-c', code],
                            capture_output=True,
                            text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'imported InfoBatchHook' in result.stdout


@pytest.mark.parametrize('version,supported', [('0.10.6', False),
                                               ('0.10.7', True),
                                               ('0.10.99', True),
                                               ('0.11.0', False)])
def test_other_mmengine_versions_are_refused(monkeypatch, version, supported):
    """The private fields compat.py writes are those of mmengine 0.10.x."""
    import mmengine

    from mmseg_infobatch.engine import compat
    monkeypatch.setattr(mmengine, '__version__', version)
    if supported:
        compat.check_mmengine_version()
        return
    with pytest.raises(
            RuntimeError,
            match=rf'>= 0\.10\.7, < 0\.11.*{version}.*pip install'):
        compat.check_mmengine_version()


def test_stock_fsdp_strategy_is_told_apart_from_the_resumable_one():
    """The hook warns of mmengine's own FSDPStrategy (its resume fails),
    not of ResumableFSDPStrategy or DDP."""
    from types import SimpleNamespace

    from mmengine.registry import STRATEGIES

    from mmseg_infobatch.engine.compat import uses_stock_fsdp

    def runner(name):
        cls = STRATEGIES.get(name)
        return SimpleNamespace(strategy=object.__new__(cls))

    assert uses_stock_fsdp(runner('FSDPStrategy'))
    assert not uses_stock_fsdp(runner('ResumableFSDPStrategy'))
    assert not uses_stock_fsdp(runner('DDPStrategy'))
    assert not uses_stock_fsdp(SimpleNamespace())  # the default Runner
