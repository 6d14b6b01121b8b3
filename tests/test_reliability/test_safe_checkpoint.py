"""Safe loading stays on: mmengine's types are allowed, nothing else is."""
import os
import pickle

import pytest
import torch

from mmseg_infobatch.checkpoint_types import allow_mmengine_checkpoint_types

allow_mmengine_checkpoint_types()


class _Exploit:

    def __reduce__(self):
        return (os.system, ('echo pwned', ))


def test_mmengine_message_hub_round_trips_with_weights_only(tmp_path):
    import numpy as np
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance('safe_ckpt_test')
    hub.update_scalar('train/loss', np.float64(0.5))
    hub.update_info('eta', np.float64(3.0))
    path = tmp_path / 'ckpt.pth'
    torch.save(dict(message_hub=hub.state_dict()), path)
    loaded = torch.load(path, weights_only=True)
    assert loaded['message_hub']['log_scalars']['train/loss'].current() == 0.5


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
