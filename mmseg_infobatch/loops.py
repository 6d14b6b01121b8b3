"""An iteration-based train loop that starts each pass without a pause.

mmengine's ``IterBasedTrainLoop`` restarts a finite sampler at every pass end
and then sleeps 2 s, against a possible deadlock of worker processes. A
pruned InfoBatch pass is finite by design, so on a small dataset that pause
is a large part of the wall time (about a quarter of the CPU demo) and hides
the iterations InfoBatch saves. ``NoPauseIterBasedTrainLoop`` pauses only
where the deadlock can arise, when the dataloader has worker processes.
"""
import time

from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop


class NoPauseDataloaderIterator:
    """Iterates a finite dataloader forever, one pass after another.

    At each pass end it calls the sampler's ``set_epoch`` with the pass
    number, as mmengine's iterator does, and starts the next pass at once
    unless the dataloader has worker processes.

    Args:
        dataloader (DataLoader): The train dataloader.
        first_pass (Iterator, optional): An iterator of ``dataloader``
            already started for the first pass. Defaults to None: start one.
    """

    def __init__(self, dataloader, first_pass=None) -> None:
        self._dataloader = dataloader
        self._iterator = iter(dataloader) if first_pass is None else first_pass
        self._epoch = 0

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._iterator)
        except StopIteration:
            self._epoch += 1
            sampler = getattr(self._dataloader, 'sampler', None)
            if not hasattr(sampler, 'set_epoch'):
                batch_sampler = getattr(self._dataloader, 'batch_sampler',
                                        None)
                sampler = getattr(batch_sampler, 'sampler', None)
            if hasattr(sampler, 'set_epoch'):
                sampler.set_epoch(self._epoch)
            if getattr(self._dataloader, 'num_workers', 0) > 0:
                time.sleep(2)  # mmengine's guard, kept where it applies
            self._iterator = iter(self._dataloader)
            return next(self._iterator)


@LOOPS.register_module()
class NoPauseIterBasedTrainLoop(IterBasedTrainLoop):
    """``IterBasedTrainLoop`` whose passes follow each other without the
    2 s pause when the dataloader runs in the main process.

    Takes the same arguments as ``IterBasedTrainLoop``; everything else,
    resume included, is unchanged.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Take over the pass the stock iterator already started. Starting
        # another would run the sampler's __iter__ again (a pass decided
        # and dropped: worker processes prefetch at once) and draw from the
        # global RNG before the runner initialises the model weights.
        first_pass = getattr(self.dataloader_iterator, '_iterator', None)
        if first_pass is None:
            raise RuntimeError(
                'NoPauseIterBasedTrainLoop expects the iterator of '
                "mmengine 0.10's IterBasedTrainLoop; with this mmengine use "
                "train_cfg = dict(type='IterBasedTrainLoop', ...).")
        self.dataloader_iterator = NoPauseDataloaderIterator(
            self.dataloader, first_pass)
