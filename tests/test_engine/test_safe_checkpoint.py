"""Safe loading stays on: mmengine's types are allowed, nothing else is."""
import os
import pickle

import pytest
import torch

from mmseg_infobatch.engine import checkpoint_types
from mmseg_infobatch.engine.checkpoint_types import (
    allow_mmengine_checkpoint_types, can_load_mmengine_checkpoints_safely)

needs_allow_list = pytest.mark.skipif(
    not can_load_mmengine_checkpoints_safely(),
    reason='torch < 2.4 has no safe-load allow-list '
    '(torch.serialization.add_safe_globals)')

allow_mmengine_checkpoint_types()


class _Exploit:

    def __reduce__(self):
        return (os.system, ('echo pwned', ))


def _message_hub_checkpoint(path):
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('safe_ckpt_test')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_info('eta', np.float64(3.0))
    torch.save(dict(message_hub=hub.state_dict()), path)


@needs_allow_list
def test_mmengine_message_hub_round_trips_with_weights_only(tmp_path):
    _message_hub_checkpoint(tmp_path / 'ckpt.pth')
    loaded = torch.load(tmp_path / 'ckpt.pth', weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5


@needs_allow_list
def test_the_hook_allows_the_types_before_flexible_runner_loads(tmp_path):
    """FlexibleRunner builds its hooks, then loads the checkpoint (safely,
    by torch's default), and only then calls before_run: building
    InfoBatchHook must already have allowed mmengine's types."""
    from mmseg.registry import HOOKS
    path = tmp_path / 'ckpt.pth'
    _message_hub_checkpoint(path)
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(path, weights_only=True)
        HOOKS.build(dict(type='InfoBatchHook'))
        loaded = torch.load(path, weights_only=True)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(allowed)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5


@pytest.mark.parametrize('allow_list', [True, False])
def test_a_trusted_checkpoint_loads_on_every_torch(tmp_path, monkeypatch,
                                                   allow_list):
    """The analysis tool reads a whole run's checkpoint: safely where
    torch has the allow-list, as mmengine does where it has none."""
    if allow_list and not can_load_mmengine_checkpoints_safely():
        pytest.skip('torch < 2.4 has no safe-load allow-list')
    monkeypatch.setattr(checkpoint_types,
                        'can_load_mmengine_checkpoints_safely',
                        lambda: allow_list)
    calls = []
    load = torch.load
    monkeypatch.setattr(torch, 'load',
                        lambda *a, **k: calls.append(k) or load(*a, **k))
    _message_hub_checkpoint(tmp_path / 'ckpt.pth')
    loaded = checkpoint_types.load_trusted_checkpoint(tmp_path / 'ckpt.pth')
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5
    assert calls[-1].get('weights_only', False) is allow_list


@needs_allow_list
def test_arbitrary_callables_are_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save(dict(payload=_Exploit()), path)
    with pytest.raises(pickle.UnpicklingError, match='system'):
        torch.load(path, weights_only=True)
    # getattr is allowed for HistoryBuffer's bound methods, but what it
    # fetches can't be called.
    import numpy as np

    class _CallsFetchedMethod:

        def __reduce__(self):
            return (np.dtype('float32').newbyteorder, ('>', ))

    torch.save(dict(payload=_CallsFetchedMethod()), path)
    with pytest.raises(pickle.UnpicklingError, match='unrecognized function'):
        torch.load(path, weights_only=True)
