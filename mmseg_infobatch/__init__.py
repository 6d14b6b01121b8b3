"""InfoBatch (ICLR 2024) unbiased dynamic data pruning for MMSegmentation.

Importing the package registers exactly:

- ``InfoBatchSampler`` (mmseg's DATA_SAMPLERS): prunes each pass;
- ``InfoBatchHook`` (mmseg's HOOKS): anneals, tracks scores, aligns the
  schedule;
- ``InfoBatchLoss`` (mmseg's MODELS): per-image scores and rescaling;
- ``NoPauseIterBasedTrainLoop`` (mmengine's LOOPS, which mmseg's LOOPS
  falls back to): passes without mmengine's 2 s pause;
- ``ResumableFSDPStrategy`` (mmengine's STRATEGIES, where torch has FSDP):
  FlexibleRunner's FSDPStrategy with a working resume.

``add_infobatch(cfg, **knobs)`` adds all of them to a config (the sampler,
the hook and every head's loss wrapped), as ``tools/train.py --infobatch``
does.

The package is laid out by kind (docs/design.md): ``sampler/``, ``loss/``,
``hook/`` (which uses the other three) and ``engine/`` (mmengine's repairs).
The demo dataset lives in :mod:`mmseg_infobatch.demo`, imported by the demo
configs only.
"""
from .config import add_infobatch
from .engine import NoPauseIterBasedTrainLoop
from .hook import InfoBatchHook
from .loss import InfoBatchLoss
from .sampler import InfoBatchSampler
from .version import __version__

__all__ = [
    'InfoBatchSampler', 'InfoBatchHook', 'InfoBatchLoss',
    'NoPauseIterBasedTrainLoop', 'add_infobatch', '__version__'
]
