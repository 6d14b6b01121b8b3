"""load_trusted_checkpoint reads a run's checkpoint onto the CPU, wherever
its tensors were saved: the analysis tool runs on machines without a
GPU."""
import zipfile

import pytest
import torch

from mmseg_infobatch.engine import checkpoint_types


def _saved_on_a_gpu(path):
    """A checkpoint as a GPU run writes it: its tensors' storages are
    tagged ``cuda:0`` (the tag rewritten in a CPU save, so no GPU is
    needed)."""
    cpu_save = path.with_name('cpu.pth')
    torch.save(dict(state_dict=dict(weight=torch.arange(3.))), cpu_save)
    with zipfile.ZipFile(cpu_save) as src, zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('data.pkl'):
                assert data.count(b'X\x03\x00\x00\x00cpu') == 1
                data = data.replace(b'X\x03\x00\x00\x00cpu',
                                    b'X\x06\x00\x00\x00cuda:0')
            dst.writestr(info, data)


@pytest.mark.parametrize('allow_list', [True, False])
def test_a_gpu_checkpoint_loads_onto_the_cpu(tmp_path, monkeypatch,
                                             allow_list):
    safe_load = checkpoint_types.can_load_mmengine_checkpoints_safely()
    if allow_list and not safe_load:
        pytest.skip('torch < 2.4 has no safe-load allow-list')
    monkeypatch.setattr(checkpoint_types,
                        'can_load_mmengine_checkpoints_safely',
                        lambda: allow_list)
    path = tmp_path / 'iter_10.pth'
    _saved_on_a_gpu(path)
    weight = checkpoint_types.load_trusted_checkpoint(
        path)['state_dict']['weight']
    assert weight.device == torch.device('cpu')
    assert weight.tolist() == [0., 1., 2.]
