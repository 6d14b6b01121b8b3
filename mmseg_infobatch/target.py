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
counts from the score table (the :mod:`.target_profile` of a pass) and the
schedule, so every rank computes the same r_t.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

from .progress import batches_per_pass
from .target_profile import Profile, max_bucket_ratio

# Bisection steps: the ratio to within 2**-40 of max_ratio.
STEPS = 40
# Normal tails beyond this many standard deviations count as 0 or 1.
TAIL = 8.0


@dataclass(frozen=True)
class Schedule:
    """The passes of a run, as the solver needs them.

    Args:
        num_samples (int): Samples in the dataset (N).
        global_batch (int): Samples one iteration takes on all ranks
            (world size x batch size).
        budget_iters (int): Full-data iterations of the whole schedule
            (per rank; the config's ``max_iters``).
        drop_last (bool): Passes are cut down to whole batches instead of
            padded up. Defaults to False.
        offset (int): Iterations run before the run had InfoBatch state
            (a resume from a checkpoint without it). Defaults to 0.
        prune_stop (float): Passes ``t < prune_stop`` may prune.
            Defaults to inf.
    """
    num_samples: int
    global_batch: int
    budget_iters: int
    drop_last: bool = False
    offset: int = 0
    prune_stop: float = math.inf

    def __post_init__(self) -> None:
        for name in ('num_samples', 'global_batch', 'budget_iters'):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f'Schedule {name} must be a positive int, '
                                 f'but got {value!r}')

    def pass_iters(self, kept: int) -> int:
        """Per-rank iterations of a pass that keeps ``kept`` samples: whole
        batches, and at least one (the sampler refills a shorter pass)."""
        return batches_per_pass(
            max(int(kept), self.global_batch), 1, self.global_batch,
            self.drop_last)

    @property
    def full_pass_batches(self) -> int:
        """Per-rank iterations of a full pass (F)."""
        return self.pass_iters(self.num_samples)

    def pass_share(self, pass_idx: int) -> float:
        """How much of pass ``pass_idx`` the budget holds: 1 for a whole
        pass, a fraction for the last one of a fractional schedule, 0
        beyond it."""
        full = self.full_pass_batches
        left = self.budget_iters - self.offset - pass_idx * full
        return min(max(left / full, 0.0), 1.0)

    def pruning_share(self, pass_idx: int) -> float:
        """W: the summed shares of the passes from ``pass_idx`` on that may
        prune (annealing passes and passes beyond the budget count 0)."""
        end = math.ceil(
            (self.budget_iters - self.offset) / self.full_pass_batches)
        if math.isfinite(self.prune_stop):
            # Pass p prunes iff p < prune_stop, i.e. p < ceil(prune_stop).
            end = min(end, math.ceil(self.prune_stop))
        return sum(self.pass_share(p) for p in range(max(pass_idx, 0), end))


def expected_pass_iters(schedule: Schedule, pruned_mean: float,
                        pruned_var: float) -> float:
    """Expected per-rank iterations of a pass whose pruned count has this
    mean and variance (normal, with continuity correction), cut into whole
    batches as the sampler cuts it.

    A pass keeping K samples takes ``1 + #{j >= 2: K >= c_j}`` iterations
    with ``c_j = (j - 1) B + 1`` (padded up) or ``j B`` (``drop_last``),
    j up to F; the expectation sums ``P(K >= c_j)``. Only the few j within
    ``TAIL`` standard deviations of the mean take a term each.
    """
    full = schedule.full_pass_batches
    batch = schedule.global_batch
    kept = schedule.num_samples - pruned_mean
    sd = math.sqrt(max(pruned_var, 0.0))
    if sd < 1e-9:
        return float(schedule.pass_iters(round(kept)))
    first_step = batch if schedule.drop_last else 1

    def step(j):  # c_j - 0.5 - E[K], in samples
        return (j - 1) * batch + first_step - 0.5 - kept

    # Steps far below the mean count whole, far above it not at all.
    low = max(2, math.floor(1 + (kept + 0.5 - first_step - TAIL * sd) / batch))
    high = min(full,
               math.ceil(1 + (kept + 0.5 - first_step + TAIL * sd) / batch))
    total = 1.0 + max(min(low, full + 1) - 2, 0)
    for j in range(low, high + 1):
        total += 0.5 * math.erfc(step(j) / (sd * math.sqrt(2.0)))
    return total


def pass_saving(schedule: Schedule, profile: Profile, ratio: float) -> float:
    """g(r): expected iterations a pass with this profile saves at r."""
    mean = ratio * profile.first
    var = ratio * profile.first - ratio * ratio * profile.second
    return schedule.full_pass_batches - expected_pass_iters(
        schedule, mean, var)


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
                    schedule: Schedule,
                    pass_idx: int,
                    saved_iters: float = 0.0,
                    later: Optional[Profile] = None) -> float:
    """The share of the budget a run saves if pass ``pass_idx`` prunes
    with ``profile`` at ``ratio``, and every later pruning pass with
    ``later`` (the same profile if None), after the passes before saved
    ``saved_iters``."""
    if later is None:
        left = schedule.pruning_share(pass_idx) * pass_saving(
            schedule, profile, ratio)
    else:
        now = schedule.pruning_share(pass_idx) - schedule.pruning_share(
            pass_idx + 1)
        left = now * pass_saving(schedule, profile, ratio) + \
            schedule.pruning_share(pass_idx + 1) * pass_saving(
                schedule, later, ratio)
    return (saved_iters + left) / schedule.budget_iters


def max_expected_saving(schedule: Schedule, pass_idx: int, saved_iters: float,
                        max_ratio: float) -> float:
    """The most a run can be expected to save when the passes from
    ``pass_idx`` on may prune: every sample a candidate at ``max_ratio``
    in every pruning pass (no policy makes more candidates)."""
    everyone = Profile(schedule.num_samples, float(schedule.num_samples),
                       float(schedule.num_samples))
    return expected_saving(max_ratio, everyone, schedule, pass_idx,
                           saved_iters)


def solve_pass_ratio(target: float,
                     profile: Profile,
                     schedule: Schedule,
                     pass_idx: int,
                     saved_iters: float,
                     max_ratio: float = 0.8) -> PassRatio:
    """r_t of pass ``pass_idx``: the ratio at which the run as a whole is
    expected to save ``target`` of its budget (see the module docstring).

    Args:
        target (float): Share of the full-data iterations to save.
        profile (Profile): The pass's candidates, from the scores now.
        schedule (Schedule): The run's passes.
        pass_idx (int): The pass being decided.
        saved_iters (float): Iterations the passes before it saved.
        max_ratio (float): The largest r_t allowed. Defaults to 0.8.

    Returns:
        PassRatio: r_t, whether the cap bound, the expected saving.
    """
    weight = schedule.pruning_share(pass_idx)
    needed = target * schedule.budget_iters - saved_iters

    def reach(ratio):
        return PassRatio(
            ratio, False,
            expected_saving(ratio, profile, schedule, pass_idx, saved_iters))

    if weight <= 0 or profile.candidates == 0 or needed <= 0:
        # Nothing to prune, or the passes before saved enough already.
        return reach(0.0)
    if weight * pass_saving(schedule, profile, max_ratio) < needed:
        return reach(max_ratio)._replace(capped=True)
    low, high = 0.0, float(max_ratio)
    for _ in range(STEPS):
        mid = 0.5 * (low + high)
        if weight * pass_saving(schedule, profile, mid) < needed:
            low = mid
        else:
            high = mid
    return reach(high)


def ratio_for_saving(target: float,
                     profile: Profile,
                     schedule: Schedule,
                     pass_idx: int,
                     saved_iters: float = 0.0,
                     max_ratio: float = 0.8,
                     later: Optional[Profile] = None) -> Optional[float]:
    """The one ratio for all pruning passes from ``pass_idx`` on that is
    expected to save ``target`` (with ``later`` as in
    :func:`expected_saving`); None if it lies above ``max_ratio``."""

    def saving(ratio):
        return expected_saving(ratio, profile, schedule, pass_idx, saved_iters,
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
