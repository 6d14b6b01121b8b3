"""Fixtures and pytest hooks; the helpers the tests import are in
``helpers/`` (this folder is on ``sys.path``).

The data fixtures, generated once a session:

- ``ade_root``: 12 training and 2 validation random images of 48x64 in
  ADE20K's layout (the shipped generator's defaults): what the flagship
  ADE20K configs read, shrunk (``helpers.configs.tiny_ade_options``), and
  what ``tiny_config`` trains on where 12 images are enough.
- ``ade40_root``: the same generator at 40 training images of 32x32, for
  ``tiny_config`` runs of up to 40 images (its first ``num_train``).
- ``digit_root``: the demo's digit scenes (40 training, 8 validation),
  which ``demo_config`` trains on.
"""
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # helpers, also for custom_imports

from helpers import TOOLS  # noqa: E402

# make_tiny_ade, the tiny ADE20K-layout generator (a script of the tools).
sys.path.insert(0, str(TOOLS / 'dataset_converters'))

from make_tiny_ade import make_ade_layout  # noqa: E402


def pytest_configure(config):
    # The tests train many tiny models on a shared 2-core machine, where
    # one thread per process is fastest (and faster than two contending).
    import torch
    torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption(
        '--fuzz',
        type=int,
        default=0,
        help='extra random set-ups for test_setup_fuzzer')


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory):
    return make_ade_layout(tmp_path_factory.mktemp('ade'))


@pytest.fixture(scope='session')
def ade40_root(tmp_path_factory):
    return make_ade_layout(
        tmp_path_factory.mktemp('ade40'),
        num_train=40,
        num_val=2,
        size=(32, 32))


@pytest.fixture(scope='session')
def digit_root(tmp_path_factory):
    from mmseg_infobatch.demo import generate_digit_scenes
    root = tmp_path_factory.mktemp('digits')
    generate_digit_scenes(str(root), num_train=40, num_val=8, seed=0)
    return root


@pytest.fixture
def no_pass_pause(monkeypatch):
    """Skip mmengine's 2 s pause at every pass end when workers run: tests
    that train dozens of runs would sleep for minutes. The pause guards
    against a rare worker deadlock and changes no data."""
    import mmengine.runner.loops
    monkeypatch.setattr(mmengine.runner.loops.time, 'sleep', lambda s: None)
