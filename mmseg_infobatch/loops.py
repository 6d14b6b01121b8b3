"""An iteration-based train loop that starts each pass without a pause.

mmengine's ``IterBasedTrainLoop`` restarts a finite sampler at every pass end
and then sleeps 2 s, against a possible deadlock of worker processes. A
pruned InfoBatch pass is finite by design, so on a small dataset that pause
is a large part of the wall time (about a quarter of the CPU demo) and hides
the iterations InfoBatch saves. ``NoPauseIterBasedTrainLoop`` pauses only
where the deadlock can arise, when the dataloader has worker processes.
"""
from mmengine.registry import LOOPS
from mmengine.runner import IterBasedTrainLoop

from .compat import NoPauseDataloaderIterator, started_pass


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
