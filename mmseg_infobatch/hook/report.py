"""What a run is told: the start-up lines, each pass's line and scalars,
and about its saving the pre-flight estimate after the first scored pass,
the cap on ``target_saving``'s ratio, and at the end how close both came
(the log lines around the sampler's target solver), with the spread of
pass 0's losses that the estimate reads (:class:`RelativeLosses`)."""
import math
import os.path as osp
import re
from typing import Optional, Tuple

import numpy as np
import torch

from ..sampler.history import PassRecord
from ..sampler.prune_rule import Profile
from ..sampler.target import (expected_saving, max_expected_saving,
                              ratio_for_saving)

# The savings the estimate names a ratio for.
ESTIMATE_TARGETS = (0.2, 0.3, 0.4)
# RelativeLosses: bins of log(loss / the batch's geometric mean loss),
# LOG_STEP wide within +-LOG_RANGE (a loss 1e7 times its batch's is
# counted in the edge bin).
LOG_RANGE, LOG_STEP = 16.0, 0.02


class SavingReport:
    """The estimate (made once) and whether the cap was reported, with
    their checkpoint state, so a resumed run reports as the uninterrupted
    one would."""

    def __init__(self) -> None:
        self.estimate: Optional[dict] = None  # pass_idx, ratio, saving
        self.cap_warned = False
        # The most target_saving's run could save, where that is below the
        # target (said once, before the first pass that could prune).
        self.out_of_reach = math.nan
        # Pass 0's losses relative to their batch, until the estimate.
        self.relative = RelativeLosses()

    def add_batch(self, pass_idx: int, scores: np.ndarray) -> None:
        """Count a trained batch's scores (all ranks') while the first
        pass runs."""
        if pass_idx == 0 and self.estimate is None:
            self.relative.add(scores)

    def check_reachable(self, logger, sampler) -> None:
        """Say once, before the first pass that could prune, that the
        passes allowed to prune cannot save ``target_saving`` at all:
        not even if every sample were pruned at ``max_ratio``."""
        target, plan = sampler.target_saving, sampler.plan
        if target is None or not plan.budget_iters or \
                not math.isnan(self.out_of_reach):
            return
        # The next pass decided from scores: pass 0 has none.
        first = max(sampler.pass_idx + 1, 1)
        saved = sampler.saved_iters + sampler.pass_saving()
        most = max_expected_saving(plan, first, saved, sampler.max_ratio)
        if most >= target:
            return
        self.out_of_reach = most
        passes = plan.pruning_share(first)
        stop = sampler.prune_stop
        limit = f'passes t < {stop:.2f}' if math.isfinite(stop) else \
            'every pass'
        logger.warning(
            f'InfoBatch: target_saving {target:.1%} cannot be reached. '
            f'Only {limit} may prune' +
            (' and pass 0 has no scores' if first == 1 else '') +
            f', which leaves {passes:.2f} pruning passes from pass {first} '
            'on: even pruning every sample at max_ratio '
            f'{sampler.max_ratio} in them, the run would save {most:.1%} '
            f'of its {plan.budget_iters} full-data iterations. Raise '
            "InfoBatchHook's delta (more passes prune) or the number of "
            'passes, lower target_saving or raise max_ratio.')

    def after_pass_start(self, logger, sampler, record: PassRecord) -> None:
        """Say once that ``max_ratio`` stops ``target_saving`` short, and
        estimate the run's saving at the first pass with candidates.

        Called at the pass's first iteration, when the score table is the
        one the pass was decided from.
        """
        # Not where the start already said the target is out of reach.
        if record.capped and not self.cap_warned and math.isnan(
                self.out_of_reach):
            self.cap_warned = True
            logger.warning(
                f'InfoBatch: target_saving {sampler.target_saving:.1%} '
                f'cannot be reached with policy {sampler.policy!r} and '
                f'max_ratio {sampler.max_ratio}: pass {record.pass_idx} '
                f'prunes at r {sampler.max_ratio}, and the run is expected '
                f'to save {record.expected:.1%}. Raise max_ratio, lower '
                "target_saving or raise InfoBatchHook's delta (more passes "
                'prune).')
        if self.estimate is not None or not record.may_prune:
            return
        profile = sampler.profile()
        if profile.candidates == 0:
            return  # nothing scored yet
        plan, start = sampler.plan, record.pass_idx
        saved = sampler.saved_iters
        later, share = self._later_profile(sampler)
        if sampler.target_saving is not None:
            # What the solver planned: it solves each pass again, so it
            # holds no pass's ratio fixed.
            saving = record.expected
        else:
            saving = expected_saving(record.ratio, profile, plan, start, saved,
                                     later)
        self.estimate = dict(pass_idx=start, ratio=record.ratio, saving=saving)
        wants = []
        for target in ESTIMATE_TARGETS:
            ratio = ratio_for_saving(target, profile, plan, start, saved,
                                     sampler.max_ratio, later)
            wants.append(f'{target:.0%}: ' +
                         (f'{ratio:.3f}' if ratio is not None else
                          f'above max_ratio {sampler.max_ratio}'))
        if later is None:
            assumed = 'later passes are assumed to have as many'
        else:
            side = 'above' if sampler.prune_high else 'below'
            assumed = (f'relative to their own batch, pass 0\'s losses put '
                       f'{share:.1%} {side} the mean, which later passes are '
                       'assumed to have')
        if sampler.target_saving is None:
            planned = f'Ratio {record.ratio:.3g} is expected to save'
        else:
            planned = (
                f'target_saving solved ratio {record.ratio:.3g} for this '
                'pass (and solves each pass again), planning to save')
        logger.info(
            f'InfoBatch estimate at the start of pass {start}: '
            f'{profile.candidates} of {sampler.num_samples} samples are '
            f'candidates ({profile.candidates / sampler.num_samples:.1%}); '
            f'{assumed}. {planned} {saving:.1%} of the '
            f'{plan.budget_iters} full-data iterations over the run. '
            'One ratio for every pass that saves ' + ', '.join(wants) + '.')

    def _later_profile(self, sampler):
        """The candidates assumed for the passes after the first pruning
        one under policy 'mean', from pass 0's relative losses, and their
        share; (None, nan) where they are those of the pass itself (other
        policies, or no batch of two scores counted)."""
        share = self.relative.share_below_mean()
        if sampler.policy != 'mean' or math.isnan(share):
            return None, math.nan
        if sampler.prune_high:
            share = 1.0 - share
        count = int(round(share * int(sampler.seen.sum())))
        return Profile(count, float(count), float(count)), share

    def at_end(self, logger, sampler, reached: float) -> None:
        """The share of the budget the run saved (``reached``) against
        the target and the estimate."""
        if sampler.target_saving is not None:
            target = sampler.target_saving
            if not math.isnan(self.out_of_reach):
                short = ('; it was out of reach of the passes that may prune '
                         f'(at most {self.out_of_reach:.1%}).')
            elif self.cap_warned:
                short = f'; max_ratio {sampler.max_ratio} stopped it short.'
            else:
                short = '.'
            logger.info(f'InfoBatch target_saving {target:.1%}: the run saved '
                        f'{reached:.1%} ({_points(reached - target)} points)'
                        f'{short}')
        if self.estimate is not None:
            estimate = self.estimate['saving']
            logger.info(
                'InfoBatch estimate at the start of pass '
                f"{self.estimate['pass_idx']}: {estimate:.1%}; the run saved "
                f'{reached:.1%} ({_points(reached - estimate)} points).')

    def state_dict(self) -> dict:
        """Plain ints, floats, a bool and a tensor of bin counts."""
        estimate = self.estimate or dict(
            pass_idx=-1, ratio=math.nan, saving=math.nan)
        return dict(
            estimate_pass=int(estimate['pass_idx']),
            estimate_ratio=float(estimate['ratio']),
            estimate_saving=float(estimate['saving']),
            cap_warned=self.cap_warned,
            out_of_reach=self.out_of_reach,
            relative=self.relative.state_dict())

    def load_state_dict(self, state: dict) -> None:
        """Restore; an empty state (older checkpoints) is a fresh report."""
        self.estimate = None
        if state.get('estimate_pass', -1) >= 0:
            self.estimate = dict(
                pass_idx=int(state['estimate_pass']),
                ratio=float(state['estimate_ratio']),
                saving=float(state['estimate_saving']))
        self.cap_warned = bool(state.get('cap_warned'))
        self.out_of_reach = float(state.get('out_of_reach', math.nan))
        self.relative.load_state_dict(state.get('relative') or {})


def _points(share: float) -> str:
    """A difference of shares in signed percentage points, without a
    -0.0."""
    return f'{round(100 * share, 1) + 0.0:+.1f}'


class RelativeLosses:
    """How the losses of one model state spread: a histogram of each
    sample's loss relative to the geometric mean of its batch.

    The scores at the start of pass 1 were made by every model state of
    pass 0, one batch each, and early in training the loss falls fast:
    below their mean lie mostly the samples trained late, not the easy
    ones, so their share below the mean says little about later passes.
    A sample's loss over its batch's geometric mean takes that trend out
    (a batch is one model state; a loss is a sample's difficulty times
    the model's level). The share of those ratios below their mean is
    the share of candidates one model state would give, which the
    estimate assumes for the passes after pass 1.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(
            int(round(2 * LOG_RANGE / LOG_STEP)), dtype=np.int64)

    def add(self, scores: np.ndarray) -> None:
        """Count one batch's scores, at double precision (non-finite
        ones skipped; a batch of fewer than two scores has no spread and
        is skipped)."""
        scores = np.asarray(scores, dtype=np.float64)
        scores = scores[np.isfinite(scores)]
        if scores.size < 2:
            return
        logs = np.log(np.maximum(scores, 1e-30))
        logs -= logs.mean()
        bins = np.floor((logs + LOG_RANGE) / LOG_STEP).astype(np.int64)
        np.add.at(self.counts, np.clip(bins, 0, self.counts.size - 1), 1)

    def share_below_mean(self) -> float:
        """The share of the ratios below their mean (NaN if none)."""
        total = int(self.counts.sum())
        if total == 0:
            return math.nan
        edges = np.arange(self.counts.size + 1) * LOG_STEP - LOG_RANGE
        centers = 0.5 * (edges[:-1] + edges[1:])
        mean = float(np.dot(self.counts, np.exp(centers))) / total
        cut = math.log(mean)
        below = float(self.counts[edges[1:] <= cut].sum())
        # The bin the mean falls in (between the lowest and the highest
        # bin counted), split linearly.
        inside = int(np.searchsorted(edges, cut, side='right')) - 1
        below += self.counts[inside] * (cut - edges[inside]) / LOG_STEP
        return below / total

    def state_dict(self) -> dict:
        return dict(counts=torch.from_numpy(self.counts.copy()))

    def load_state_dict(self, state: dict) -> None:
        counts = state.get('counts')
        self.counts[:] = 0 if counts is None else counts.numpy()


def log_setup(runner, sampler) -> None:
    """The start-up lines: the layout, the passes, where pruning stops,
    and a warning when the total batch differs from the recipe's."""
    total_batch = sampler.world_size * sampler.batch_size
    plan = sampler.plan
    stop = plan.prune_stop
    runner.logger.info(
        f'InfoBatch: {sampler.num_samples} samples, total batch '
        f'{total_batch} ({sampler.world_size} x {sampler.batch_size}), '
        f'{plan.full_pass_batches} iterations per full pass, '
        f'{plan.num_passes:.2f} passes; pruning in passes t < '
        f'{stop:.2f} ({_ratio_text(sampler)}, policy '
        f'{sampler.policy!r}), full-data annealing from pass '
        f'{max(math.ceil(stop), 0) if math.isfinite(stop) else "never"}.')
    recipe, source = _recipe_total_batch(runner.cfg)
    if recipe is not None and recipe != total_batch:
        runner.logger.warning(
            f'InfoBatch: the config\'s {source} says a total batch of '
            f'{recipe}, but this run trains with {total_batch}: the same '
            f'max_iters '
            f'now make {plan.num_passes:.2f} passes over the data, '
            'so the annealing point and the LR per sample change. Scale '
            'max_iters (and the schedule) with the batch, or use '
            'auto_scale_lr.')


def log_pass_start(runner, record: PassRecord, sampler, end: int,
                   keeps_schedule: bool) -> None:
    """A pass's log line and its ``infobatch/*`` scalars; ``end`` is the
    iteration training now ends at."""
    plan = sampler.plan
    budget = plan.budget_iters
    saved = budget - end
    if keeps_schedule:
        # The loop keeps its end; pruned passes make room for more.
        of_passes, ends = '', f'ends at {end} (schedule kept)'
    else:
        of_passes = f'/{math.ceil(plan.num_passes)}'
        ends = f'ends at {end} of {budget}'
    runner.logger.info(
        f'InfoBatch pass {record.pass_idx} ({record.pass_idx + 1}'
        f'{of_passes}): r {record.ratio:.3f}, kept {record.kept}/'
        f'{sampler.num_samples}, '
        f'pruned {record.pruned} of {record.candidates} below threshold '
        f'{record.threshold:.4f}; {record.iters} iterations (full pass '
        f'{plan.full_pass_batches}); saved so far {saved} iterations'
        f' ({saved / max(budget, 1):.1%}), {ends}' +
        ('' if record.may_prune else ' [annealing: full data]'))
    scalars = {
        'infobatch/pass': record.pass_idx,
        'infobatch/kept': record.kept,
        'infobatch/pruned': record.pruned,
        'infobatch/pass_iters': record.iters,
        'infobatch/saved_iters': saved,
        'infobatch/saved_ratio': saved / max(budget, 1),
    }
    for key in ('threshold', 'ratio'):
        if not math.isnan(getattr(record, key)):
            scalars[f'infobatch/{key}'] = getattr(record, key)
    runner.visualizer.add_scalars(scalars, step=runner.iter)


def log_finish(runner, budget: int, num_passes: int,
               num_skipped_scores: int) -> None:
    """The closing line: iterations run against the ``budget``, passes
    and the scores that were skipped."""
    saved = budget - runner.iter
    runner.logger.info(
        f'InfoBatch finished: {runner.iter} iterations instead of '
        f'{budget} ({saved} saved, {saved / max(budget, 1):.1%}) over '
        f'{num_passes} passes; {num_skipped_scores} image '
        'scores were skipped (no valid pixel or non-finite loss).')


def _ratio_text(sampler) -> str:
    if sampler.target_saving is not None:
        return (f'target_saving {sampler.target_saving:.1%}: a ratio per '
                f'pass, at most {sampler.max_ratio}')
    if sampler.policy == 'quantile':
        # The buckets decide; the sampler's ratio is unused.
        return 'buckets ' + ', '.join(f'(q {q:g}, r {r:g})'
                                      for q, r in sampler.buckets)
    return f'ratio {sampler.ratio}'


def _recipe_total_batch(cfg) -> Tuple[Optional[int], str]:
    """The total batch the config's recipe was made for, and where the
    config states it: ``auto_scale_lr.base_batch_size`` (mmengine's field
    for it, set by the shipped configs), else an mmseg config name's
    'NxbM' ('4xb4' -> 16); (None, '') where neither does."""
    scale = cfg.get('auto_scale_lr') or {}
    if scale.get('base_batch_size') is not None:
        return int(scale['base_batch_size']), 'auto_scale_lr.base_batch_size'
    filename = getattr(cfg, 'filename', None)
    match = re.search(r'(\d+)xb(\d+)', osp.basename(filename or ''))
    if match is None:
        return None, ''
    return int(match.group(1)) * int(match.group(2)), 'name'
