"""Every refusal of the sampler's set-up, compared whole: the text names
what is wrong and the fix, and a fragment would let the rest say
anything."""
import pytest
from helpers import refusal

from mmseg_infobatch.sampler.prune_rule import validate_policy
from mmseg_infobatch.sampler.target import validate_target

# (the bad set-up, the whole message)
# yapf: disable
REFUSALS = [
    (lambda: validate_policy('median', 0.5, None),
     "InfoBatchSampler policy must be one of ('mean', 'quantile', "
     "'random'), but got 'median'"),
    (lambda: validate_policy('mean', 1.0, None),
     'InfoBatchSampler ratio (prune probability r) must be in [0, 1), '
     'but got 1.0'),
    (lambda: validate_policy('mean', 0.5, [(0.5, 0.2)]),
     "InfoBatchSampler buckets are only used with policy='quantile', but "
     "policy='mean'"),
    (lambda: validate_policy('quantile', 0.5, None),
     "policy='quantile' needs buckets=[(q1, r1), (q2, r2), ...]: "
     'increasing quantiles q in (0, 1] with a prune probability r in '
     '[0, 1) each, but got None'),
    (lambda: validate_policy('quantile', 0.5,
                             [((i + 1) / 256, 0.1) for i in range(256)]),
     'InfoBatchSampler takes at most 255 buckets (one weight code each), '
     'but got 256: merge neighbouring buckets'),
    (lambda: validate_policy('quantile', 0.5, [(0.5, )]),
     'each InfoBatchSampler bucket must be a pair (quantile, ratio), but '
     'got (0.5,)'),
    (lambda: validate_policy('quantile', 0.5, [(0.5, 0.2), (0.4, 0.1)]),
     'InfoBatchSampler bucket quantiles must increase within (0, 1], but '
     'got [(0.5, 0.2), (0.4, 0.1)]'),
    (lambda: validate_policy('quantile', 0.5, [(0.5, 1.0)]),
     'InfoBatchSampler bucket ratios must be in [0, 1), but got 1.0 in '
     '[(0.5, 1.0)]'),
    (lambda: validate_target(0.3, 1.0, None, 'mean', None),
     'InfoBatchSampler max_ratio (the largest prune ratio target_saving '
     'may set) must be in (0, 1), but got 1.0'),
    (lambda: validate_target(0.3, 0.8, 0.5, 'mean', None),
     'InfoBatchSampler got both ratio=0.5 and target_saving=0.3: give one '
     'of them. With target_saving the ratio of each pass is solved for; '
     'set ratio=None (a config that inherits a ratio overrides it with '
     '--cfg-options train_dataloader.sampler.ratio=None).'),
    (lambda: validate_target(1.5, 0.8, None, 'mean', None),
     'InfoBatchSampler target_saving (share of the full-data iterations '
     'to save) must be in (0, 1), e.g. 0.3, but got 1.5'),
    (lambda: validate_target(0.3, 0.8, None, 'quantile', [(0.5, 0.0)]),
     "InfoBatchSampler target_saving scales the quantile buckets' ratios, "
     'but every ratio in buckets is 0, so no scale saves anything: '
     '[(0.5, 0.0)]. Give the buckets to prune a nonzero ratio.'),
]
# yapf: enable


@pytest.mark.parametrize('call,message', REFUSALS)
def test_a_bad_set_up_is_refused_with_its_fix(call, message):
    assert refusal(call) == message
