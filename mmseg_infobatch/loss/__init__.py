"""The loss wrapper: per-image scores and rescaling around mmseg's losses
(``loss_kinds`` is what it knows of them)."""
from .infobatch_loss import InfoBatchLoss

__all__ = ['InfoBatchLoss']
