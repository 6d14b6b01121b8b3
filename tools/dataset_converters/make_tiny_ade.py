"""Random images and labels in ADE20K's layout, for smoke runs of ADE configs.

The flagship configs read ``data/ade/ADEChallengeData2016``; a few random
images in the same layout let them run end to end without the real data
(tests and ``benchmarks/gpu_check.py`` use it so)::

    python tools/dataset_converters/make_tiny_ade.py data/tiny_ade \\
        --num-train 12 --num-val 2
"""
import argparse
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
    """Write random .jpg images and .png labels (0 = 'other', as ADE20K).

    Args:
        root (str): Folder to write ``{images,annotations}/{training,
            validation}`` into.
        num_train (int): Training images. Defaults to 12.
        num_val (int): Validation images. Defaults to 2.
        size (tuple[int, int]): (height, width). Defaults to (48, 64).
        num_classes (int): Labels are drawn from 0..num_classes.
            Defaults to 150.
        seed (int): The same seed writes the same files. Defaults to 0.

    Returns:
        str: ``root``.
    """
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


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('root', help='folder to write the data into')
    parser.add_argument('--num-train', type=int, default=12)
    parser.add_argument('--num-val', type=int, default=2)
    parser.add_argument(
        '--size', type=int, nargs=2, default=(48, 64), metavar=('H', 'W'))
    parser.add_argument(
        '--num-classes',
        type=int,
        default=150,
        help='labels are drawn from 0..NUM_CLASSES')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    make_ade_layout(
        args.root,
        args.num_train,
        args.num_val,
        tuple(args.size),
        num_classes=args.num_classes,
        seed=args.seed)
    print(f'{args.num_train} training and {args.num_val} validation images '
          f'in {args.root}')


if __name__ == '__main__':
    main()
