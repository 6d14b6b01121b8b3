"""InfoBatch (ICLR 2024) unbiased dynamic data pruning for MMSegmentation.

Importing the package registers, into mmseg's registries:

- ``InfoBatchSampler`` (DATA_SAMPLERS): prunes each pass;
- ``InfoBatchHook`` (HOOKS): anneals, tracks scores, aligns the schedule;
- ``InfoBatchLoss`` (MODELS): per-image scores and rescaling;
- ``NoPauseIterBasedTrainLoop`` (LOOPS): passes without mmengine's 2 s pause;
- ``DigitScenesDataset`` (DATASETS): the embedded demo data.

It also allow-lists the few types mmengine checkpoints hold, so ``--resume``
works under torch >= 2.6 with safe loading left on (see checkpoint_types).
"""
from .checkpoint_types import allow_mmengine_checkpoint_types
from .digit_scenes import DigitScenesDataset
from .hook import InfoBatchHook
from .loops import NoPauseIterBasedTrainLoop
from .loss import InfoBatchLoss
from .sampler import InfoBatchSampler

__version__ = '0.1.0'
__all__ = [
    'InfoBatchSampler', 'InfoBatchHook', 'InfoBatchLoss',
    'NoPauseIterBasedTrainLoop', 'DigitScenesDataset',
    'allow_mmengine_checkpoint_types'
]

allow_mmengine_checkpoint_types()
