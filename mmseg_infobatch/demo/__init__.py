"""The embedded demo: a small real segmentation set from the UCI digits.

Importing this subpackage registers ``DigitScenesDataset`` into mmseg's
``DATASETS``. Only the demo configs import it (``custom_imports``), so that
``import mmseg_infobatch`` registers no dataset.
"""
from .digit_scenes import (DigitScenesDataset, ensure_digit_scenes,
                           generate_digit_scenes)

__all__ = [
    'DigitScenesDataset', 'generate_digit_scenes', 'ensure_digit_scenes'
]
