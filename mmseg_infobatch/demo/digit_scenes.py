"""Digit scenes: a small real segmentation set built from the UCI digits.

scikit-learn ships the UCI handwritten digits (1,797 real 8x8 scans). A scene
places a few upscaled digits on a noisy background; every digit pixel is
labelled with its digit class (1-10 for digits 0-9), the background 0, and
the anti-aliased rim 255 (ignored). Train and validation scenes use disjoint
digit scans. The layout is ADE20K's, so mmseg's pipelines apply unchanged::

    ROOT/images/{training,validation}/00000.png
    ROOT/annotations/{training,validation}/00000.png
"""
import json
import os
import os.path as osp
from typing import Tuple

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

CLASSES = ('background', ) + tuple(f'digit_{d}' for d in range(10))
IGNORE_INDEX = 255
SPLITS = ('training', 'validation')


@DATASETS.register_module()
class DigitScenesDataset(BaseSegDataset):
    """Digit scenes in the ADE20K layout (see module docstring)."""

    METAINFO = dict(
        classes=CLASSES,
        palette=[[0, 0, 0]] + [[(37 * i) % 256, (91 * i) % 256,
                                (157 * i) % 256] for i in range(1, 11)])

    def __init__(self, **kwargs) -> None:
        # BaseSegDataset's defaults do the rest: .png label maps, and
        # label 0 (the background) kept as a class.
        super().__init__(img_suffix='.png', **kwargs)

    def load_data_list(self):
        img_dir = self.data_prefix.get('img_path', '')
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'DigitScenesDataset: no image folder {img_dir}. Generate '
                'the data with `python tools/dataset_converters/'
                f'make_digit_scenes.py {self.data_root or "DATA_ROOT"}` or '
                'fix data_root.')
        return super().load_data_list()


def _load_digits() -> Tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - install hint
        raise ImportError('Digit scenes need scikit-learn: '
                          'pip install -e ".[demo]"') from err
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import cv2
    return cv2.resize(img, (size, size))  # bilinear, cv2's default


def _scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
           size: int, digit_size: Tuple[int, int],
           max_digits: int) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: an RGB image and its label map.

    The background is Gaussian noise (mean 0.15, s.d. 0.05 of full ink);
    1 to ``max_digits`` digits, of a side drawn from ``digit_size``
    (inclusive), go where they overlap no other digit (one that finds no
    free place in a few tries is left out, the next ones are still
    tried). A pixel of more than half ink is labelled with its digit's
    class, one of (0.2, 0.5] ink (the anti-aliased rim) 255, the rest 0.
    The scene is tinted by a random colour, each channel at 50-100%, and
    stored in 8 bits: 255 x ink x tint, rounded down.
    """
    # Negative noise is clipped to black with the image, below.
    canvas = rng.normal(0.15, 0.05, (size, size))
    tint = rng.uniform(0.5, 1.0, size=3)
    label = np.zeros((size, size), dtype=np.uint8)
    occupied = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(1, max_digits + 1))):
        side = int(rng.integers(digit_size[0], digit_size[1] + 1))
        for _attempt in range(10):
            y, x = rng.integers(0, size - side + 1, size=2)
            if not occupied[y:y + side, x:x + side].any():
                break
        else:
            continue
        k = int(rng.integers(len(images)))
        glyph = _resize(images[k], side).clip(0, 1)
        patch = canvas[y:y + side, x:x + side]
        canvas[y:y + side, x:x + side] = np.maximum(patch, glyph)
        region = label[y:y + side, x:x + side]
        region[glyph > 0.5] = labels[k] + 1
        region[(glyph > 0.2) & (glyph <= 0.5)] = IGNORE_INDEX
        occupied[y:y + side, x:x + side] = True
    # At most 255: ink and tint are at most 1.
    rgb = np.maximum(canvas[..., None] * tint * 255, 0).astype(np.uint8)
    return rgb, label


def generate_digit_scenes(root: str,
                          num_train: int = 1000,
                          num_val: int = 200,
                          size: int = 32,
                          digit_size: Tuple[int, int] = (16, 26),
                          max_digits: int = 2,
                          seed: int = 0) -> dict:
    """Write digit scenes under ``root``; the same seed gives the same bytes.

    Digit scans are split 80/20 between training and validation, so the
    validation scenes show handwriting the model never trained on.

    Returns:
        dict: The generation settings, also written to ``root/meta.json``.
    """
    import cv2
    images, labels = _load_digits()
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(0.8 * len(images))
    pools = dict(training=order[:cut], validation=order[cut:])
    counts = dict(training=num_train, validation=num_val)
    meta = dict(
        num_train=num_train,
        num_val=num_val,
        size=size,
        digit_size=list(digit_size),
        max_digits=max_digits,
        seed=seed,
        classes=list(CLASSES))
    for split_id, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, split_id])
        pool = pools[split]
        img_dir = osp.join(root, 'images', split)
        ann_dir = osp.join(root, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for i in range(counts[split]):
            rgb, label = _scene(rng, images[pool], labels[pool], size,
                                digit_size, max_digits)
            cv2.imwrite(osp.join(img_dir, f'{i:05d}.png'), rgb[..., ::-1])
            cv2.imwrite(osp.join(ann_dir, f'{i:05d}.png'), label)
    with open(osp.join(root, 'meta.json'), 'w') as f:
        json.dump(meta, f, indent=2)
    return meta


def ensure_digit_scenes(root: str, **kwargs) -> dict:
    """Generate the scenes unless ``root/meta.json`` records exactly these
    settings, defaults included (data made with other defaults is redone)."""
    import inspect
    defaults = {
        name: param.default
        for name, param in inspect.signature(
            generate_digit_scenes).parameters.items() if name != 'root'
    }
    settings = dict(defaults, **kwargs)
    wanted = {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in settings.items()
    }
    wanted['classes'] = list(CLASSES)
    meta_file = osp.join(root, 'meta.json')
    if osp.isfile(meta_file):
        with open(meta_file) as f:
            if json.load(f) == wanted:
                return wanted
    return generate_digit_scenes(root, **settings)
