"""The hook: connects the sampler and the losses to the runner. Its report
(``report``), set-up checks (``checks``) and rank check (``consistency``)
live beside it; nothing below the hook imports it."""
from .infobatch_hook import InfoBatchHook

__all__ = ['InfoBatchHook']
