"""The sampler's checkpoint state around the sampler (sampler/state.py):
the dataset fingerprint of the layout, the upgrade of older formats (format
2's plain tables; the saving before the current pass, from the history),
and the tables as plain tensors for analysis."""
import math
import zlib

import pytest
import torch
from helpers import refusal

from mmseg_infobatch.sampler.history import PassRecord
from mmseg_infobatch.sampler.layout import pack_bits
from mmseg_infobatch.sampler.run_plan import RunPlan
from mmseg_infobatch.sampler.state import (FINGERPRINT_VERSION,
                                           dataset_fingerprint, sample_tables,
                                           saved_before, upgrade_state)


class Listed(list):
    """A dataset as mmengine's BaseDataset holds it unserialized: its
    ``data_list`` of infos, its ``data_root`` and ``data_prefix``."""

    def __init__(self, infos, data_root=None, data_prefix=None):
        super().__init__(range(len(infos)))
        self.data_list = infos
        self.data_root = data_root
        self.data_prefix = data_prefix


class Serialized:
    """A dataset as BaseDataset holds it serialized: no ``data_list``,
    one info at a time from ``get_data_info``."""

    def __init__(self, infos, data_root=None):
        self._infos = infos
        self.data_root = data_root

    def __len__(self):
        return len(self._infos)

    def get_data_info(self, index):
        return dict(self._infos[index])


class Concat:
    """mmengine's ConcatDataset: its parts in ``datasets``."""

    def __init__(self, *parts):
        self.datasets = list(parts)

    def __len__(self):
        return sum(len(p) for p in self.datasets)


class Repeat:
    """mmengine's RepeatDataset: its one part in ``dataset``."""

    def __init__(self, part, times):
        self.dataset, self.times = part, times

    def __len__(self):
        return self.times * len(self.dataset)


def _infos(root, names, sep='/'):
    return [
        dict(
            img_path=f'{root}{sep}img{sep}{n}.jpg',
            seg_map_path=f'{root}{sep}ann{sep}{n}.png',
            label_map=None,
            reduce_zero_label=False,
            seg_fields=[]) for n in names
    ]


def _fp(dataset):
    return dataset_fingerprint(dataset)


# -- the dataset fingerprint ---------------------------------------------
def test_the_fingerprint_is_a_versioned_crc32():
    fingerprint = _fp(Listed(_infos('/data/ade', 'abc'), '/data/ade'))
    assert set(fingerprint) == {'version', 'crc'}
    assert fingerprint['version'] == FINGERPRINT_VERSION == 2
    assert 0 <= fingerprint['crc'] < 2**32


def test_the_fingerprint_of_a_dataset_without_paths_is_its_size():
    # No sample has a file path: what is left is the sample count, the
    # CRC32 of its decimal digits.
    assert _fp(list(range(12)))['crc'] == zlib.crc32(b'12')
    assert _fp(list(range(5))) != _fp(list(range(6)))


@pytest.mark.parametrize('sep', ['/', '\\'])
def test_a_copy_of_the_data_at_another_place_has_the_same_fingerprint(sep):
    here = Listed(
        _infos(f'{sep}data{sep}ade', 'abc', sep), f'{sep}data'
        f'{sep}ade')
    # The copy's root is written with a trailing separator.
    there = Listed(
        _infos(f'{sep}mnt{sep}copy', 'abc', sep), f'{sep}mnt{sep}copy{sep}')
    assert _fp(here) == _fp(there)
    assert _fp(here) != _fp(
        Listed(_infos(f'{sep}mnt{sep}copy', 'abd', sep), f'{sep}mnt{sep}copy'))


def test_paths_not_below_the_data_root_are_taken_below_their_prefix():
    # The images and labels lie apart, each below its data_prefix.
    def dataset(images, labels, names='abc'):
        infos = [
            dict(
                img_path=f'{images}/{n}.jpg', seg_map_path=f'{labels}/{n}.png')
            for n in names
        ]
        return Listed(
            infos,
            data_root='/elsewhere',
            data_prefix=dict(img_path=images, seg_map_path=labels))

    here = dataset('/disk1/images', '/disk2/labels')
    there = dataset('/mnt/a/images', '/mnt/b/labels')
    assert _fp(here) == _fp(there)
    assert _fp(here) != _fp(dataset('/mnt/a/images', '/mnt/b/labels', 'abd'))
    # Without a root or prefix, the paths are compared as they are.
    assert _fp(Listed(here.data_list)) != _fp(Listed(there.data_list))
    assert _fp(Listed(here.data_list, data_root='')) != \
        _fp(Listed(there.data_list, data_root=''))
    assert _fp(Listed(here.data_list, data_root='/elsewhere')) != \
        _fp(Listed(there.data_list, data_root='/elsewhere'))


def test_below_the_root_only_the_separators_are_stripped():
    # Images whose names differ in a leading letter are other images.
    one = [dict(img_path='/d/Xray.jpg', seg_map_path='/d/Xray.png')]
    other = [dict(img_path='/d/ray.jpg', seg_map_path='/d/ray.png')]
    assert _fp(Listed(one, '/d')) != _fp(Listed(other, '/d'))


def test_without_a_data_root_paths_are_taken_as_they_are():
    absolute = [dict(img_path='/a/1.jpg', seg_map_path='/a/1.png')]
    relative = [dict(img_path='a/1.jpg', seg_map_path='a/1.png')]
    for root in (None, ''):
        assert _fp(Listed(absolute, root)) != _fp(Listed(relative, root))
        assert _fp(Listed([dict(img_path='XXXXa.jpg')], root)) != \
            _fp(Listed([dict(img_path='a.jpg')], root))


def test_the_fingerprint_of_format_2_is_unchanged():
    # A checkpoint's fingerprint must equal the one this version makes of
    # the same data: the CRC32 of the sample count, then of each sample's
    # 'key=path' pairs below data_root, in key order, joined by '|'.
    infos = _infos('/d', 'ab')
    crc = zlib.crc32(b'2')
    for n in 'ab':
        crc = zlib.crc32(
            f'img_path=img/{n}.jpg|seg_map_path=ann/{n}.png'.encode(), crc)
    assert _fp(Listed(infos, '/d')) == dict(version=2, crc=crc)


def test_the_fingerprint_changes_with_any_sample_path():
    base = _fp(Listed(_infos('/d', 'abc'), '/d'))
    for key in ('img_path', 'seg_map_path'):
        infos = _infos('/d', 'abc')
        infos[2][key] = infos[2][key].replace('c.', 'z.')
        assert _fp(Listed(infos, '/d')) != base, key
    # The order of the samples is part of the list.
    assert _fp(Listed(_infos('/d', 'acb'), '/d')) != base


def test_the_fingerprint_reads_only_the_file_paths():
    infos = _infos('/d', 'abc')
    base = _fp(Listed(infos, '/d'))
    other = [
        dict(
            reversed(
                list(
                    dict(
                        info,
                        reduce_zero_label=True,
                        seg_fields=['x'],
                        sample_idx=i,
                        category=f'other {i}',
                        extra_path=None).items())))
        for i, info in enumerate(infos)
    ]
    assert _fp(Listed(other, '/d')) == base


def test_a_serialized_dataset_has_the_fingerprint_of_its_data_list():
    infos = _infos('/d', 'abcd')
    assert _fp(Serialized(infos, '/d')) == _fp(Listed(infos, '/d'))
    assert _fp(Serialized(infos, '/d')) != _fp(
        Serialized(_infos('/d', 'abce'), '/d'))


def test_the_fingerprint_looks_through_dataset_wrappers():
    a, b = _infos('/d', 'ab'), _infos('/d', 'cde')
    # A ConcatDataset holds the samples of its parts, in order.
    assert _fp(Concat(Listed(a, '/d'), Listed(b, '/d'))) == \
        _fp(Listed(a + b, '/d'))
    moved = Concat(
        Listed(_infos('/m', 'ab'), '/m'), Listed(_infos('/m', 'cde'), '/m'))
    assert _fp(moved) == _fp(Concat(Listed(a, '/d'), Listed(b, '/d')))
    # A RepeatDataset: its part's samples, and its own length.
    repeated = Repeat(Listed(a, '/d'), 3)
    assert _fp(repeated) == _fp(Repeat(Listed(_infos('/m', 'ab'), '/m'), 3))
    assert _fp(repeated) != _fp(Repeat(Listed(_infos('/d', 'ax'), '/d'), 3))
    assert _fp(Repeat(Listed(a, '/d'), 1)) == _fp(Listed(a, '/d'))
    assert _fp(repeated) != _fp(Repeat(Listed(a, '/d'), 2))
    # An empty ConcatDataset has no samples to read.
    assert _fp(Concat()) == dict(version=2, crc=zlib.crc32(b'0'))


def test_a_dataset_that_is_its_own_inner_dataset_is_read_itself():

    class SelfWrapped(Listed):

        @property
        def dataset(self):
            return self

    infos = _infos('/d', 'abc')
    assert _fp(SelfWrapped(infos, '/d')) == _fp(Listed(infos, '/d'))


# -- the upgrade of older formats ----------------------------------------
def _format_2(weights, order=None):
    """A sampler state in checkpoint format 2: plain tables."""
    n = weights.numel()
    return dict(
        pass_idx=1,
        position=0,
        scores=torch.rand(n),
        seen=torch.ones(n, dtype=torch.uint8),
        weights=weights,
        order=torch.arange(n) if order is None else order,
        saved_iters=0.0)


def test_format_2_weights_become_codes_into_a_table_that_starts_at_1():
    weights = torch.tensor([1.0, 2.5, 2.0, 1.0, 2.5, 4.0, 2.0],
                           dtype=torch.float64)
    state = _format_2(weights)
    state['seen'] = torch.tensor([1, 0, 1, 1, 0, 0, 1], dtype=torch.uint8)
    upgraded = upgrade_state(state)
    table, codes = upgraded['weight_table'], upgraded['weight_codes']
    assert codes.dtype == torch.uint8 and codes.numel() == 7
    assert table.dtype == torch.float32
    assert table.tolist() == [1.0, 2.0, 2.5, 4.0]  # 1 first, once
    assert codes.tolist() == [0, 2, 1, 0, 2, 3, 1]
    assert torch.equal(table[codes.long()], weights.float())
    assert torch.equal(upgraded['seen_bits'], pack_bits(state['seen'].bool()))
    # The rest of the state is kept.
    for key in ('pass_idx', 'position', 'scores', 'order', 'saved_iters'):
        assert upgraded[key] is state[key]


def test_format_2_weights_of_up_to_256_values_are_upgraded():
    # Weight code 0 is 1: 255 other values fit the uint8 codes.
    weights = torch.cat([torch.ones(3), 2 + torch.arange(255) / 64])
    upgraded = upgrade_state(_format_2(weights))
    assert upgraded['weight_table'].numel() == 256
    assert upgraded['weight_codes'].max() == 255
    table, codes = upgraded['weight_table'], upgraded['weight_codes']
    assert torch.equal(table[codes.long()], weights)


def test_format_2_weights_of_more_than_256_values_are_refused():
    # 1 and 256 other values: one more than the uint8 codes hold.
    weights = torch.cat([torch.ones(3), 2 + torch.arange(256) / 64])
    assert refusal(lambda: upgrade_state(_format_2(weights))) == (
        "The checkpoint's InfoBatch weights take 257 distinct values, more "
        'than 256: start a fresh run from its weights with '
        'load_from=CHECKPOINT instead of --resume.')


def test_a_state_in_this_format_is_upgraded_to_itself():
    state = dict(
        pass_idx=2,
        scores=torch.rand(4),
        seen_bits=torch.tensor([5], dtype=torch.uint8),
        weight_codes=torch.zeros(4, dtype=torch.uint8),
        weight_table=torch.ones(1),
        order=torch.arange(4),
        saved_iters=7.5)
    upgraded = upgrade_state(state, [PassRecord(0, 0, 4, 0, 0, 9, 0.0, True)],
                             RunPlan(4, 1, budget_iters=40))
    assert upgraded == state and upgraded['saved_iters'] == 7.5


def _record(pass_idx, iters):
    return PassRecord(
        pass_idx=pass_idx,
        start_iter=0,
        kept=iters,
        pruned=0,
        candidates=0,
        iters=iters,
        threshold=0.0,
        may_prune=True)


def test_the_saving_before_the_pass_is_made_from_the_history():
    # 20 samples, 2 a batch: a full pass is 10 iterations; a budget of 25
    # holds passes 0 and 1 whole and half of pass 2.
    plan = RunPlan(20, 2, budget_iters=25)
    history = [_record(0, 10), _record(1, 6), _record(2, 4), _record(3, 5)]
    # Pass 0 saved nothing, pass 1 saved 4 and pass 2 half of its 6.
    assert saved_before(history, 0, plan) == 0
    assert saved_before(history, 1, plan) == 0
    assert saved_before(history, 2, plan) == 4
    assert saved_before(history, 3, plan) == 4 + 3
    # Pass 3 is beyond the budget: it saves none of it.
    assert saved_before(history, 4, plan) == 4 + 3
    state = dict(_format_2(torch.ones(20)), pass_idx=3)
    del state['saved_iters']
    assert upgrade_state(state, history, plan)['saved_iters'] == 7


def test_without_a_budget_the_saving_before_the_pass_is_unknown():
    history = [_record(0, 10), _record(1, 6)]
    assert math.isnan(saved_before(history, 2, None))
    assert math.isnan(saved_before(history, 2, RunPlan(20, 2)))
    state = dict(_format_2(torch.ones(20)), pass_idx=2)
    del state['saved_iters']
    assert math.isnan(upgrade_state(state)['saved_iters'])
    assert math.isnan(upgrade_state(state, history)['saved_iters'])


# -- plain tables for analysis -------------------------------------------
def test_sample_tables_of_this_format_are_plain_tensors():
    state = dict(
        scores=torch.tensor([0.5, 1.5, 2.5], dtype=torch.float16),
        seen_bits=torch.tensor([0b101], dtype=torch.uint8),
        weight_codes=torch.tensor([0, 1, 0], dtype=torch.uint8),
        weight_table=torch.tensor([1.0, 2.0], dtype=torch.float64),
        order=torch.tensor([2, 0], dtype=torch.int32))
    tables = sample_tables(state)
    assert set(tables) == {'scores', 'seen', 'weights', 'order'}
    assert tables['scores'].dtype == torch.float32
    assert tables['scores'].tolist() == [0.5, 1.5, 2.5]
    assert tables['seen'].dtype == torch.bool
    assert tables['seen'].tolist() == [True, False, True]
    assert tables['weights'].dtype == torch.float32
    assert tables['weights'].tolist() == [1.0, 2.0, 1.0]
    assert tables['order'].dtype == torch.int64
    assert tables['order'].tolist() == [2, 0]


def test_sample_tables_of_format_2_are_plain_tensors():
    state = dict(
        scores=torch.tensor([0.5, 1.5], dtype=torch.float64),
        seen=torch.tensor([0, 1], dtype=torch.uint8),
        weights=torch.tensor([2.0, 1.0], dtype=torch.float64),
        order=torch.tensor([1], dtype=torch.int32))
    tables = sample_tables(state)
    assert tables['scores'].dtype == torch.float32
    assert tables['seen'].dtype == torch.bool
    assert tables['seen'].tolist() == [False, True]
    assert tables['weights'].dtype == torch.float32
    assert tables['weights'].tolist() == [2.0, 1.0]
    assert tables['order'].dtype == torch.int64
    assert tables['order'].tolist() == [1]


def test_sample_tables_are_none_for_what_the_state_lacks():
    tables = sample_tables(dict(scores=torch.tensor([1.0, 2.0])))
    assert tables['scores'].tolist() == [1.0, 2.0]
    assert (tables['seen'], tables['weights'], tables['order']) == \
        (None, None, None)
    # A state before any pass: no order.
    tables = sample_tables(
        dict(
            scores=torch.zeros(2),
            seen_bits=torch.zeros(1, dtype=torch.uint8),
            weight_codes=torch.zeros(2, dtype=torch.uint8),
            weight_table=torch.ones(1),
            order=None))
    assert tables['order'] is None
    assert tables['seen'].tolist() == [False, False]
    assert tables['weights'].tolist() == [1.0, 1.0]
