"""An iteration-based train loop that starts each pass without a pause.

mmengine's ``IterBasedTrainLoop`` restarts a finite sampler at every pass end
and then sleeps 2 s, against a possible deadlock of worker processes. A
pruned InfoBatch pass is finite by design, so on a small dataset that pause
is a large part of the wall time and hides the iterations InfoBatch saves.
``NoPauseIterBasedTrainLoop`` pauses only where the deadlock can arise, when
the dataloader has worker processes.
"""
import time

from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop

from .compat import started_pass


class NoPauseDataloaderIterator:
    """Iterates a finite dataloader forever, one pass after another.

    mmengine's ``_InfiniteDataloaderIterator`` with one change: at each pass
    end it sleeps only where the deadlock it guards against can arise, when
    the dataloader has worker processes. Like mmengine's, it calls the
    sampler's ``set_epoch`` at each pass end.

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
        # another would run the sampler's __iter__ again and draw from the
        # global RNG before the runner initialises the model weights.
        self.dataloader_iterator = NoPauseDataloaderIterator(
            self.dataloader, started_pass(self.dataloader_iterator))
