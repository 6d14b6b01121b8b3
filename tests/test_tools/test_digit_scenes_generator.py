"""The digit-scenes generator's promises, on stand-in scans whose ink is
known (a scan of constant ink stays constant when upscaled): the label
rule, the digits' number, size and placement, the background and tint,
the 80/20 split of the scans, the files and meta.json, and their reuse."""
import functools
import json

import cv2
import numpy as np
import pytest

from mmseg_infobatch.demo import digit_scenes
from mmseg_infobatch.demo.digit_scenes import (ensure_digit_scenes,
                                               generate_digit_scenes)


def _stand_in_scans(monkeypatch, inks, digits):
    """Replace the UCI scans by 8x8 scans of constant ``inks`` showing
    ``digits``."""
    images = np.stack([np.full((8, 8), ink, np.float32) for ink in inks])
    labels = np.asarray(digits)
    monkeypatch.setattr(digit_scenes, '_load_digits', lambda: (images, labels))


def _recorded_generator(monkeypatch):
    """Record the settings ``generate_digit_scenes`` is called with
    (keeping its signature) instead of generating."""
    calls = []

    @functools.wraps(generate_digit_scenes)
    def record(root, **kwargs):
        calls.append(kwargs)
        return kwargs

    monkeypatch.setattr(digit_scenes, 'generate_digit_scenes', record)
    return calls


def _read(root, split):
    """The (RGB image, label map) pairs of ``split``, in file order."""
    pairs = []
    for img in sorted((root / 'images' / split).glob('*.png')):
        ann = root / 'annotations' / split / img.name
        pairs.append((cv2.imread(str(img))[..., ::-1],
                      cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)))
    return pairs


def _squares(label):
    """The bounding boxes (top, left, bottom, right) of the labelled
    pixels of each value."""
    boxes = {}
    for value in np.unique(label):
        if value:
            ys, xs = np.nonzero(label == value)
            boxes[int(value)] = (ys.min(), xs.min(), ys.max() + 1,
                                 xs.max() + 1)
    return boxes


@pytest.mark.parametrize('ink,label', [(1.0, 5), (0.6, 5), (0.5, 255),
                                       (0.3, 255), (0.2, 0), (0.1, 0)])
def test_ink_above_half_is_the_digit_class_and_the_rim_is_ignored(
        monkeypatch, tmp_path, ink, label):
    """Digit 4 is class 5; a pixel of (0.2, 0.5] ink is the rim (255)."""
    _stand_in_scans(monkeypatch, [ink] * 5, [4] * 5)
    generate_digit_scenes(
        str(tmp_path),
        num_train=4,
        num_val=2,
        size=16,
        digit_size=(4, 6),
        max_digits=1)
    for split in ('training', 'validation'):
        for _, ann in _read(tmp_path, split):
            assert ann.shape == (16, 16) and ann.dtype == np.uint8
            assert set(np.unique(ann).tolist()) == {0} | {label}
            if label:
                # One square of the digit's side.
                (top, left, bottom, right), = _squares(ann).values()
                assert bottom - top == right - left
                assert 4 <= bottom - top <= 6
                assert (ann[top:bottom, left:right] == label).all()


def test_a_scene_holds_one_to_max_digits_that_never_overlap(
        monkeypatch, tmp_path):
    """Each of the 10 scans shows another digit: a digit partly covered by
    another would leave less than a whole square of its class."""
    _stand_in_scans(monkeypatch, [1.0] * 10, range(10))
    generate_digit_scenes(
        str(tmp_path),
        num_train=40,
        num_val=0,
        size=16,
        digit_size=(4, 4),
        max_digits=3)
    counts = set()
    for _, ann in _read(tmp_path, 'training'):
        areas = [int((ann == value).sum()) for value in np.unique(ann)[1:]]
        assert all(area % 16 == 0 for area in areas)
        counts.add(sum(areas) // 16)
    assert counts == {1, 2, 3}


def test_digits_take_every_side_of_digit_size_and_reach_every_border(
        monkeypatch, tmp_path):
    _stand_in_scans(monkeypatch, [1.0] * 5, [2] * 5)
    generate_digit_scenes(
        str(tmp_path),
        num_train=60,
        num_val=0,
        size=10,
        digit_size=(3, 6),
        max_digits=1)
    sides, tops, lefts, bottoms, rights = set(), set(), set(), set(), set()
    for _, ann in _read(tmp_path, 'training'):
        (top, left, bottom, right), = _squares(ann).values()
        assert bottom - top == right - left
        sides.add(bottom - top)
        tops.add(top)
        lefts.add(left)
        bottoms.add(bottom)
        rights.add(right)
    assert sides == {3, 4, 5, 6}
    assert 0 in tops and 0 in lefts
    assert 10 in bottoms and 10 in rights


def test_a_digit_without_a_free_place_is_left_out_not_the_next(
        monkeypatch, tmp_path):
    """On a 9x9 canvas two 5-pixel digits never fit: the second one finds
    no free place, whatever the draws, and the scene keeps the first."""
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    generate_digit_scenes(
        str(tmp_path),
        num_train=30,
        num_val=0,
        size=9,
        digit_size=(5, 5),
        max_digits=3)
    for _, ann in _read(tmp_path, 'training'):
        assert int((ann == 1).sum()) == 25


def test_train_and_validation_scans_are_disjoint_and_split_80_20(
        monkeypatch, tmp_path):
    """20 scans of 20 stand-in classes: 16 reach training, the other 4
    validation."""
    _stand_in_scans(monkeypatch, [1.0] * 20, range(20))
    generate_digit_scenes(
        str(tmp_path),
        num_train=80,
        num_val=40,
        size=16,
        digit_size=(4, 4),
        max_digits=2)
    seen = {
        split: set().union(*(np.unique(ann).tolist()
                             for _, ann in _read(tmp_path, split))) - {0}
        for split in ('training', 'validation')
    }
    assert len(seen['training']) == 16 and len(seen['validation']) == 4
    assert seen['training'] | seen['validation'] == set(range(1, 21))


def test_the_background_is_dark_noise_and_the_scene_tinted(
        monkeypatch, tmp_path):
    """Full ink shows the scene's tint (each channel 50-100%); the
    background is noise of mean 0.15 and s.d. 0.05 of it."""
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    generate_digit_scenes(
        str(tmp_path),
        num_train=30,
        num_val=0,
        size=32,
        digit_size=(4, 4),
        max_digits=1)
    ratios, tints = [], []
    for rgb, ann in _read(tmp_path, 'training'):
        colour = rgb[ann == 1].astype(float)
        assert (colour == colour[0]).all()  # one colour per scene
        tints.append(colour[0] / 255)
        ratios.append(rgb[ann == 0] / colour[0])
    tints, ratios = np.array(tints), np.concatenate(ratios)
    assert (tints >= 0.49).all() and (tints <= 1).all()
    assert tints.min() < 0.6 and tints.max() > 0.9
    assert not (tints == tints[:, :1]).all()  # a colour, not a grey
    assert abs(ratios.mean() - 0.15) < 0.01
    assert abs(ratios.std() - 0.05) < 0.01
    assert ratios.min() >= 0


def test_the_settings_are_returned_and_written_to_meta_json(
        monkeypatch, tmp_path):
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    meta = generate_digit_scenes(
        str(tmp_path),
        num_train=3,
        num_val=2,
        size=12,
        digit_size=(4, 5),
        max_digits=1,
        seed=7)
    assert meta == dict(
        num_train=3,
        num_val=2,
        size=12,
        digit_size=[4, 5],
        max_digits=1,
        seed=7,
        classes=['background'] + [f'digit_{d}' for d in range(10)])
    assert json.loads((tmp_path / 'meta.json').read_text()) == meta
    for split, count in (('training', 3), ('validation', 2)):
        names = [f'{i:05d}.png' for i in range(count)]
        for folder in ('images', 'annotations'):
            assert sorted(
                p.name for p in (tmp_path / folder / split).iterdir()) == names
        for rgb, ann in _read(tmp_path, split):
            assert rgb.shape == (12, 12, 3) and ann.shape == (12, 12)
        # RGB files, without an alpha channel.
        for img in (tmp_path / 'images' / split).iterdir():
            assert cv2.imread(str(img),
                              cv2.IMREAD_UNCHANGED).shape == (12, 12, 3)


def test_each_split_has_its_own_draws(monkeypatch, tmp_path):
    """Validation is not a copy of training's first scenes."""
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    generate_digit_scenes(
        str(tmp_path),
        num_train=2,
        num_val=2,
        size=12,
        digit_size=(4, 5),
        max_digits=1)
    train, val = _read(tmp_path, 'training'), _read(tmp_path, 'validation')
    assert not np.array_equal(train[0][0], val[0][0])


def test_matching_data_is_reused_and_other_settings_regenerate(
        monkeypatch, tmp_path):
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    settings = dict(
        num_train=2, num_val=1, size=12, digit_size=(4, 5), max_digits=1)
    made = ensure_digit_scenes(str(tmp_path), **settings)
    assert made == json.loads((tmp_path / 'meta.json').read_text())
    generated = _recorded_generator(monkeypatch)
    assert ensure_digit_scenes(str(tmp_path), **settings) == made
    assert generated == []
    ensure_digit_scenes(str(tmp_path), **dict(settings, seed=1))
    assert generated == [dict(settings, seed=1)]


def test_the_tool_generates_with_the_generators_defaults(
        monkeypatch, tmp_path, capsys):
    """The tool passes every setting; its defaults are the generator's, the
    README's 1000 train / 200 val scenes of 32x32 and the demo config's
    1-2 digits of 16-26 px, so ``ensure_digit_scenes(root)`` reuses what
    it made."""
    import make_digit_scenes
    asked = []
    monkeypatch.setattr(
        make_digit_scenes, 'ensure_digit_scenes',
        lambda root, **kw: asked.append(kw) or dict(
            num_train=0, num_val=0, size=0))
    make_digit_scenes.main([str(tmp_path)])
    readme = dict(
        num_train=1000,
        num_val=200,
        size=32,
        digit_size=(16, 26),
        max_digits=2,
        seed=0)
    assert asked == [readme]
    made = _recorded_generator(monkeypatch)
    ensure_digit_scenes(str(tmp_path))
    assert made == [readme]


def test_the_uci_scans_are_read_with_ink_in_zero_to_one():
    images, labels = digit_scenes._load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.float32
    assert images.min() == 0 and images.max() == 1
    assert sorted(set(labels.tolist())) == list(range(10))


def test_the_dataset_reads_png_pairs_with_zero_as_background(tmp_path):
    from mmseg.registry import DATASETS
    generate_digit_scenes(str(tmp_path), num_train=3, num_val=1)
    dataset = DATASETS.build(
        dict(
            type='DigitScenesDataset',
            data_root=str(tmp_path),
            data_prefix=dict(
                img_path='images/training',
                seg_map_path='annotations/training'),
            lazy_init=True))
    dataset.full_init()
    assert len(dataset) == 3
    info = dataset.get_data_info(2)
    assert info['img_path'] == str(tmp_path / 'images/training/00002.png')
    assert info['seg_map_path'] == str(tmp_path /
                                       'annotations/training/00002.png')
    assert info['reduce_zero_label'] is False
    assert dataset.metainfo['classes'] == digit_scenes.CLASSES


class ScriptedRng:
    """A stand-in ``np.random.Generator`` whose draws the test chooses: a
    black background, the ``tint``, and the integer draws in ``ints``
    (the number of digits, then per digit its side and, once placed, its
    scan). A position draw puts a 6-pixel digit in the top-left corner,
    any other in the bottom-right one."""

    def __init__(self, tint, ints):
        self.tint, self.ints = np.asarray(tint), list(ints)

    def normal(self, mean, sd, shape):
        return np.zeros(shape)

    def uniform(self, low, high, size):
        return self.tint

    def integers(self, low, high=None, size=None):
        if size == 2:  # a position: low 0, high size - side + 1
            return np.array([0, 0] if high == 10 - 6 + 1 else [high - 1] * 2)
        return self.ints.pop(0)


def test_a_digit_without_room_is_left_out_and_the_next_still_placed():
    """Three digits on a 10x10 canvas: a 6-pixel one in the corner, a
    second one that finds the same corner taken at every try, and a
    2-pixel one in the free opposite corner. Full ink, tint (0.5, 0.7,
    0.9): the digits show 255 x tint rounded down, the black background
    0."""
    images = np.ones((2, 8, 8), np.float32)
    rgb, label = digit_scenes._scene(
        ScriptedRng([0.5, 0.7, 0.9], [3, 6, 0, 6, 2, 1]),
        images,
        np.array([4, 7]),
        size=10,
        digit_size=(2, 6),
        max_digits=3)
    expected = np.zeros((10, 10), np.uint8)
    expected[:6, :6] = 5
    expected[8:, 8:] = 8
    assert label.tolist() == expected.tolist()
    assert rgb.dtype == np.uint8 and rgb.shape == (10, 10, 3)
    assert (rgb[expected > 0] == [127, 178, 229]).all()
    assert (rgb[expected == 0] == 0).all()


def test_the_image_files_hold_the_scenes_rgb_colours(monkeypatch, tmp_path):
    """A scene drawn red is red in its PNG, as an RGB reader sees it."""
    from PIL import Image
    red = np.zeros((12, 12, 3), np.uint8)
    red[..., 0] = 200
    monkeypatch.setattr(digit_scenes, '_scene', lambda *args:
                        (red, np.zeros((12, 12), np.uint8)))
    _stand_in_scans(monkeypatch, [1.0] * 5, [0] * 5)
    generate_digit_scenes(str(tmp_path), num_train=1, num_val=0, size=12)
    png = np.asarray(Image.open(tmp_path / 'images/training/00000.png'))
    assert png.tolist() == red.tolist()


def test_by_default_the_readmes_data_is_made(monkeypatch, tmp_path):
    """1000 training and 200 validation scenes of 32x32 (README), of 1-2
    digits of 16-26 px (the demo config), with seed 0."""
    _stand_in_scans(monkeypatch, [1.0] * 10, range(10))
    meta = generate_digit_scenes(str(tmp_path))
    assert {
        k: v
        for k, v in meta.items() if k != 'classes'
    } == dict(
        num_train=1000,
        num_val=200,
        size=32,
        digit_size=[16, 26],
        max_digits=2,
        seed=0)
    for split, count in (('training', 1000), ('validation', 200)):
        assert len(list((tmp_path / 'images' / split).iterdir())) == count
    assert cv2.imread(str(tmp_path / 'images/validation/00199.png')).shape \
        == (32, 32, 3)
