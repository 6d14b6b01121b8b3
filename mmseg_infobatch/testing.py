"""Synthetic data in ADE20K's layout, for tests and the GPU check."""
import os
import os.path as osp
from typing import Tuple

import numpy as np


def make_ade_layout(root: str,
                    num_train: int = 12,
                    num_val: int = 2,
                    size: Tuple[int, int] = (48, 64),
                    num_classes: int = 150,
                    seed: int = 0) -> str:
    """Write random .jpg images and .png labels (0 = 'other', as ADE20K)
    under ``root/{images,annotations}/{training,validation}``."""
    import cv2
    rng = np.random.default_rng(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(count):
            img = rng.integers(0, 255, tuple(size) + (3, ), dtype=np.uint8)
            label = rng.integers(0, num_classes + 1, size, dtype=np.uint8)
            cv2.imwrite(osp.join(root, 'images', split, f'{i:04d}.jpg'), img)
            cv2.imwrite(
                osp.join(root, 'annotations', split, f'{i:04d}.png'), label)
    return root
