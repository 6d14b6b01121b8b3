"""The sampler: prunes each pass from the score table.

``InfoBatchSampler`` holds the scores, the run plan and the pass it serves;
the rest of this subpackage is what it is made of: the pruning rule of each
policy and what the target solver sees of it (``prune_rule``), the pass
decision and its random draws (``decision``, ``random_draws``), the target
solver (``target``), the run plan (``run_plan``), the served pass
(``served_pass``), the pass history (``history``), the checkpoint state and
its upgrade (``state``) and the memory layout (``layout``).
"""
from .infobatch_sampler import InfoBatchSampler

__all__ = ['InfoBatchSampler']
