"""Target saving: the prune ratio of each pass that makes a run save a share.

With a fixed ratio r, InfoBatch saves about r x (share of candidates) x
(share of passes that prune) of the full-data iterations, and the share of
candidates (samples below the mean score) depends on the data. Given a
target share T instead, the sampler sets each pruning pass's r_t at the
pass start, from the scores at that moment, so that the run as a whole
saves T:

    r_t solves  saved_before + W_t * g(r_t) = T * budget

- ``saved_before``: iterations the passes before t actually saved;
- ``W_t``: the pruning passes left from t on (annealing passes and passes
  beyond the budget count 0, the budget's last partial pass its share);
- ``g(r)``: the iterations one pass saves at ratio r, in expectation over
  the draw, with the pass cut into whole batches, assuming the passes left
  look like this one (the best guess the scores at hand allow).

Each pass corrects the error of the ones before, so the run ends close to
T. r_t is capped at ``max_ratio``; the cap binding means that the target
cannot be reached with this policy. Everything here is a pure function of
counts from the score table (the :class:`.prune_rule.Profile` of a pass)
and the :class:`.run_plan.RunPlan`, so every rank computes the same r_t.
"""
import math
from typing import NamedTuple, Optional, Sequence

from .prune_rule import Profile, max_bucket_ratio
from .run_plan import RunPlan

# Bisection steps: the ratio to within 2**-40 of max_ratio.
STEPS = 40
# Normal tails beyond this many standard deviations count as 0 or 1.
TAIL = 8.0


def expected_pass_iters(plan: RunPlan, pruned_mean: float,
                        pruned_var: float) -> float:
    """Expected per-rank iterations of a pass whose pruned count has this
    mean and variance (normal, with continuity correction), cut into whole
    batches as the sampler cuts it.

    A pass keeping K samples takes ``1 + #{j >= 2: K >= c_j}`` iterations
    with ``c_j = (j - 1) B + 1`` (padded up) or ``j B`` (``drop_last``),
    j up to F; the expectation sums ``P(K >= c_j)``. Only the few j within
    ``TAIL`` standard deviations of the mean take a term each.
    """
    full = plan.full_pass_batches
    batch = plan.global_batch
    kept = plan.num_samples - pruned_mean
    sd = math.sqrt(max(pruned_var, 0.0))
    if sd < 1e-9:
        return float(plan.pass_iters(round(kept)))
    first_step = batch if plan.drop_last else 1

    def step(j):  # c_j - 0.5 - E[K], in samples
        return (j - 1) * batch + first_step - 0.5 - kept

    # Steps far below the mean count whole, far above it not at all.
    low = max(2, math.floor(1 + (kept + 0.5 - first_step - TAIL * sd) / batch))
    high = min(full,
               math.ceil(1 + (kept + 0.5 - first_step + TAIL * sd) / batch))
    # The first step, and steps 2 .. low - 1, whole (2 <= low <= F, as at
    # most N samples are kept).
    total = float(low - 1)
    for j in range(low, high + 1):
        total += 0.5 * math.erfc(step(j) / (sd * math.sqrt(2.0)))
    return total


def pass_saving(plan: RunPlan, profile: Profile, ratio: float) -> float:
    """g(r): expected iterations a pass with this profile saves at r."""
    mean = ratio * profile.first
    var = ratio * profile.first - ratio * ratio * profile.second
    return plan.full_pass_batches - expected_pass_iters(plan, mean, var)


class PassRatio(NamedTuple):
    """What :func:`solve_pass_ratio` found.

    Args:
        ratio (float): r_t, in [0, max_ratio].
        capped (bool): The target needed more than ``max_ratio``.
        expected (float): The share of the budget the run is expected to
            save at r_t, if the pruning passes left look like this one.
    """
    ratio: float
    capped: bool
    expected: float


def expected_saving(ratio: float,
                    profile: Profile,
                    plan: RunPlan,
                    pass_idx: int,
                    saved_iters: float = 0.0,
                    later: Optional[Profile] = None) -> float:
    """The share of the budget a run saves if pass ``pass_idx`` prunes
    with ``profile`` at ``ratio``, and every later pruning pass with
    ``later`` (the same profile if None), after the passes before saved
    ``saved_iters``."""
    if later is None:
        left = plan.pruning_share(pass_idx) * pass_saving(plan, profile, ratio)
    else:
        now = plan.pruning_share(pass_idx) - plan.pruning_share(pass_idx + 1)
        left = now * pass_saving(plan, profile, ratio) + \
            plan.pruning_share(pass_idx + 1) * pass_saving(
                plan, later, ratio)
    return (saved_iters + left) / plan.budget_iters


def max_expected_saving(plan: RunPlan, pass_idx: int, saved_iters: float,
                        max_ratio: float) -> float:
    """The most a run can be expected to save when the passes from
    ``pass_idx`` on may prune: every sample a candidate at ``max_ratio``
    in every pruning pass (no policy makes more candidates)."""
    everyone = Profile(plan.num_samples, float(plan.num_samples),
                       float(plan.num_samples))
    return expected_saving(max_ratio, everyone, plan, pass_idx, saved_iters)


def solve_pass_ratio(target: float,
                     profile: Profile,
                     plan: RunPlan,
                     pass_idx: int,
                     saved_iters: float,
                     max_ratio: float = 0.8) -> PassRatio:
    """r_t of pass ``pass_idx``: the ratio at which the run as a whole is
    expected to save ``target`` of its budget (see the module docstring).

    Args:
        target (float): Share of the full-data iterations to save.
        profile (Profile): The pass's candidates, from the scores now.
        plan (RunPlan): The run's passes.
        pass_idx (int): The pass being decided.
        saved_iters (float): Iterations the passes before it saved.
        max_ratio (float): The largest r_t allowed. Defaults to 0.8.

    Returns:
        PassRatio: r_t, whether the cap bound, the expected saving.
    """
    weight = plan.pruning_share(pass_idx)
    needed = target * plan.budget_iters - saved_iters

    def reach(ratio):
        return PassRatio(
            ratio, False,
            expected_saving(ratio, profile, plan, pass_idx, saved_iters))

    if weight <= 0 or profile.candidates == 0 or needed <= 0:
        # Nothing to prune, or the passes before saved enough already.
        return reach(0.0)
    if weight * pass_saving(plan, profile, max_ratio) < needed:
        return reach(max_ratio)._replace(capped=True)
    low, high = 0.0, float(max_ratio)
    for _ in range(STEPS):
        mid = 0.5 * (low + high)
        if weight * pass_saving(plan, profile, mid) < needed:
            low = mid
        else:
            high = mid
    return reach(high)


def ratio_for_saving(target: float,
                     profile: Profile,
                     plan: RunPlan,
                     pass_idx: int,
                     saved_iters: float = 0.0,
                     max_ratio: float = 0.8,
                     later: Optional[Profile] = None) -> Optional[float]:
    """The one ratio for all pruning passes from ``pass_idx`` on that is
    expected to save ``target`` (with ``later`` as in
    :func:`expected_saving`); None if it lies above ``max_ratio``."""

    def saving(ratio):
        return expected_saving(ratio, profile, plan, pass_idx, saved_iters,
                               later)

    if saving(max_ratio) < target:
        return None
    low, high = 0.0, float(max_ratio)
    for _ in range(STEPS):
        mid = 0.5 * (low + high)
        if saving(mid) < target:
            low = mid
        else:
            high = mid
    return high


def validate_target(target_saving: Optional[float], max_ratio: float,
                    ratio: Optional[float], policy: str,
                    buckets: Optional[Sequence[Sequence[float]]]) -> None:
    """Raise a ValueError that names the fix for a bad target set-up."""
    if not (isinstance(max_ratio, (int, float)) and 0 < max_ratio < 1):
        raise ValueError('InfoBatchSampler max_ratio (the largest prune '
                         'ratio target_saving may set) must be in (0, 1), '
                         f'but got {max_ratio!r}')
    if target_saving is None:
        return
    if ratio is not None:
        raise ValueError(
            f'InfoBatchSampler got both ratio={ratio!r} and target_saving='
            f'{target_saving!r}: give one of them. With target_saving the '
            'ratio of each pass is solved for; set ratio=None (a config '
            'that inherits a ratio overrides it with '
            '--cfg-options train_dataloader.sampler.ratio=None).')
    if isinstance(
            target_saving,
            bool) or not (isinstance(target_saving,
                                     (int, float)) and 0 < target_saving < 1):
        raise ValueError(
            'InfoBatchSampler target_saving (share of the full-data '
            'iterations to save) must be in (0, 1), e.g. 0.3, but got '
            f'{target_saving!r}')
    if policy == 'quantile' and buckets and max_bucket_ratio(buckets) <= 0:
        raise ValueError(
            'InfoBatchSampler target_saving scales the quantile buckets\' '
            'ratios, but every ratio in buckets is 0, so no scale saves '
            f'anything: {list(buckets)!r}. Give the buckets to prune a '
            'nonzero ratio.')
