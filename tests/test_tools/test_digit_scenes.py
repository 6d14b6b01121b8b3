import hashlib
import subprocess
import sys

import pytest
from helpers import REPO


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob('*.png')):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_is_deterministic_by_seed(tmp_path):
    from mmseg_infobatch.demo import generate_digit_scenes
    for name, seed in (('a', 0), ('b', 0), ('c', 1)):
        generate_digit_scenes(
            str(tmp_path / name), num_train=6, num_val=2, seed=seed)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


def test_scenes_have_ade_layout_and_real_labels(tmp_path):
    import cv2
    import numpy as np

    from mmseg_infobatch.demo import generate_digit_scenes
    generate_digit_scenes(str(tmp_path), num_train=20, num_val=4, seed=0)
    for split, count in (('training', 20), ('validation', 4)):
        assert len(list((tmp_path / 'images' / split).glob('*.png'))) == count
        assert len(list(
            (tmp_path / 'annotations' / split).glob('*.png'))) == count
    labels = np.stack([
        cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        for p in (tmp_path / 'annotations' / 'training').glob('*.png')
    ])
    values = set(np.unique(labels).tolist())
    assert values <= set(range(11)) | {255}
    assert {0, 255} < values and len(values - {0, 255}) >= 5


def test_generate_tool_reuses_existing_data(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / 'tools' / 'dataset_converters' / 'make_digit_scenes.py'),
        str(tmp_path), '--num-train', '4', '--num-val', '2'
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    first = _digest(tmp_path)
    stamp = (tmp_path / 'images' / 'training' / '00000.png').stat().st_mtime
    subprocess.run(cmd, check=True, capture_output=True)
    assert _digest(tmp_path) == first
    assert (tmp_path / 'images' / 'training' /
            '00000.png').stat().st_mtime == stamp


def test_missing_data_root_names_the_folder(tmp_path):
    from mmseg.registry import DATASETS

    import mmseg_infobatch.demo  # noqa: F401  registers DigitScenesDataset
    missing = tmp_path / 'nowhere'
    with pytest.raises(
            FileNotFoundError,
            match=f'no image folder {missing}/images/training'):
        DATASETS.build(
            dict(
                type='DigitScenesDataset',
                data_root=str(missing),
                data_prefix=dict(
                    img_path='images/training',
                    seg_map_path='annotations/training')))


def test_train_tool_names_missing_config(tmp_path):
    result = subprocess.run([
        sys.executable,
        str(REPO / 'tools' / 'train.py'),
        str(tmp_path / 'nope.py')
    ],
                            capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert f'Config file not found: {tmp_path}/nope.py' in result.stderr


def test_data_from_other_defaults_is_regenerated(tmp_path):
    from mmseg_infobatch.demo import ensure_digit_scenes, generate_digit_scenes
    generate_digit_scenes(
        str(tmp_path), num_train=4, num_val=2, size=48, digit_size=(20, 30))
    meta = ensure_digit_scenes(str(tmp_path), num_train=4, num_val=2)
    assert meta['size'] == 32
    import cv2
    img = cv2.imread(str(tmp_path / 'images' / 'training' / '00000.png'))
    assert img.shape[:2] == (32, 32)
