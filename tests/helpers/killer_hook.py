"""Test-only hook: SIGKILL the training process at a given iteration."""
import os
import signal

from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class SigkillAtIterHook(Hook):
    priority = 'VERY_LOW'

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            os.kill(os.getpid(), signal.SIGKILL)
