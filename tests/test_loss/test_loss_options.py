"""InfoBatchLoss on the options and call forms the families' cases leave
out: ``avg_factor`` and pixel weights of DiceLoss and SiLogLoss, a head
that passes no ``ignore_index`` (the loss's own default applies), class
weights with an ignored class, sigmoid CE on two classes, a call with
``reduction='none'``, a loss of the user's own in ``mode='weight'`` called
with keywords the wrapper does not know, and weights of another dtype.

Each case is held to the wrapper's promises: at weights 1 the inner loss
bit for bit (value and dtype), each image's share scaled by its weight,
and one score per image, the mean of the loss's 'none' values over the
image's valid pixels."""
import pytest
import torch
import torch.nn.functional as F
from helpers.loss_cases import build_wrapped, call_weighted, case_ids
from mmseg.registry import MODELS

from mmseg_infobatch import InfoBatchLoss
from mmseg_infobatch.loss.infobatch_loss import _valid_mean

N, C, H, W = 3, 5, 6, 7
IGNORE = 255


def _logits(c=C, h=H, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(N, c, h, W, generator=g)).requires_grad_()


def _labels(c=C, h=H, seed=1, ignore=IGNORE, ignore_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, c, (N, h, W), generator=g)
    label[torch.rand(N, h, W, generator=g) < ignore_frac] = ignore
    return label


def _depth(**kwargs):
    g = torch.Generator().manual_seed(3)
    pred = (torch.rand(N, 1, H, W, generator=g) + 0.1).requires_grad_()
    target = torch.rand(N, 1, H, W, generator=g) * 5
    target[:, :, :2] = 0  # no depth there: SiLog skips it
    return (pred, target), kwargs


def _multi_label():
    g = torch.Generator().manual_seed(5)
    return (torch.rand(N, C, H, W, generator=g) > 0.6).float()


class UserLossForLossOptions(torch.nn.Module):
    """A user's loss outside mmseg, for ``mode='weight'``: per-pixel CE
    times its own ``valid`` mask and the ``weight=`` it is given, summed
    and divided by ``avg_factor`` (else the pixel count); its 'none'
    output takes no batch-wide ``avg_factor``. It ignores label 255 unless
    told otherwise."""

    loss_name = 'loss_user'

    def forward(self,
                pred,
                target,
                weight=None,
                avg_factor=None,
                reduction_override=None,
                ignore_index=255,
                valid=None):
        loss = F.cross_entropy(
            pred, target, ignore_index=ignore_index, reduction='none')
        if valid is not None:
            loss = loss * valid
        if weight is not None:
            loss = loss * weight
        if reduction_override == 'none':
            if avg_factor is not None:
                raise ValueError('avg_factor needs a reduced loss')
            return loss
        return loss.sum() / (
            loss.numel() if avg_factor is None else avg_factor)


class UserLossWithoutIgnoreForLossOptions(torch.nn.Module):
    """A user's loss outside mmseg that ignores no label: the mean of its
    per-pixel CE times the ``weight=`` it is given."""

    loss_name = 'loss_user_all'

    def forward(self, pred, target, weight=None, reduction_override=None):
        loss = F.cross_entropy(pred, target, reduction='none')
        if weight is not None:
            loss = loss * weight
        return loss if reduction_override == 'none' else loss.mean()


def _valid_mask():
    g = torch.Generator().manual_seed(9)
    return (torch.rand(N, H, W, generator=g) > 0.3).float()


# (id, inner loss config, wrapper options, the call: args and keywords, the
# label the scores leave out)
# yapf: disable
CASES = [
    ('dice_avg_factor', dict(type='DiceLoss'), {},
     lambda: ((_logits(), _labels()), dict(ignore_index=IGNORE,
                                           avg_factor=7.0)), IGNORE),
    ('dice_none', dict(type='DiceLoss', reduction='none'), {},
     lambda: ((_logits(), _labels()), dict(ignore_index=IGNORE)), IGNORE),
    ('silog_pixel_weight_avg_factor', dict(type='SiLogLoss'), {},
     lambda: _depth(weight=torch.tensor([1.0, 0.5, 2.0]), avg_factor=4.0),
     None),
    # No ignore_index keyword: CrossEntropyLoss's own default, -100.
    ('ce_avg_non_ignore_default_ignore',
     dict(type='CrossEntropyLoss', avg_non_ignore=True), {},
     lambda: ((_logits(), _labels(ignore=-100)), {}), -100),
    # An ignored label that indexes the class weights (mmseg's CE looks
    # up every label's class weight).
    ('ce_class_weight_avg_non_ignore_ignored_class',
     dict(type='CrossEntropyLoss', class_weight=[1, 2, 1, .5, 1],
          avg_non_ignore=True), {},
     lambda: ((_logits(), _labels(ignore=2)), dict(ignore_index=2)), 2),
    ('sigmoid_ce_2_avg_non_ignore_one_row',
     dict(type='CrossEntropyLoss', use_sigmoid=True, avg_non_ignore=True),
     {}, lambda: ((_logits(c=2, h=1), _labels(c=2, h=1)),
                  dict(ignore_index=IGNORE)), IGNORE),
    # Multi-label targets shaped like the logits.
    ('sigmoid_ce_multi_label_avg_non_ignore',
     dict(type='CrossEntropyLoss', use_sigmoid=True, avg_non_ignore=True),
     {}, lambda: ((_logits(), _multi_label()), {}), None),
    ('user_loss_unknown_keywords', dict(type=UserLossForLossOptions),
     dict(mode='weight'),
     lambda: ((_logits(), _labels()), dict(avg_factor=40.0,
                                           valid=_valid_mask())), IGNORE),
    ('user_loss_scalar_keyword', dict(type=UserLossForLossOptions),
     dict(mode='weight'),
     lambda: ((_logits(), _labels()), dict(valid=torch.tensor(0.5))),
     IGNORE),
    ('user_loss_without_ignore_index',
     dict(type=UserLossWithoutIgnoreForLossOptions), dict(mode='weight'),
     lambda: ((_logits(), _labels(ignore_frac=0)), {}), None),
]
# yapf: enable


def _grad(value, pred):
    pred.grad = None
    value.sum().backward()
    return pred.grad.clone()


@pytest.mark.parametrize(
    'name,inner,options,make,ignore', CASES, ids=case_ids(CASES))
def test_unit_weights_give_the_inner_loss_bit_for_bit(name, inner, options,
                                                      make, ignore):
    args, kwargs = make()
    plain = MODELS.build(inner)
    wrapped = build_wrapped(inner, **options)
    assert wrapped.mode == 'weight'
    expected = plain(*args, **kwargs)
    expected_grad = _grad(expected, args[0])
    got = call_weighted(wrapped, args, kwargs, torch.ones(N))
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    assert torch.equal(_grad(got, args[0]), expected_grad)


@pytest.mark.parametrize(
    'name,inner,options,make,ignore', CASES, ids=case_ids(CASES))
def test_weights_scale_each_images_share(name, inner, options, make, ignore):
    """L(w) = sum_i w_i * L(e_i), e_i image i alone at weight 1."""
    args, kwargs = make()
    wrapped = build_wrapped(inner, **options)
    weights = torch.tensor([2.0, 0.0, 0.5])
    got = call_weighted(wrapped, args, kwargs, weights).detach()
    shares = [
        call_weighted(wrapped, args, kwargs,
                      torch.eye(N)[i]).detach() for i in range(N)
    ]
    expected = sum(w * s for w, s in zip(weights, shares))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert got.abs().sum() > 0


@pytest.mark.parametrize(
    'name,inner,options,make,ignore', CASES, ids=case_ids(CASES))
def test_scores_are_means_over_the_valid_pixels(name, inner, options, make,
                                                ignore):
    """Each image's mean of the loss's 'none' values (without the head's
    pixel weight and batch-wide avg_factor) over its pixels whose label is
    not the ignored one, whatever the image weights."""
    args, kwargs = make()
    wrapped = build_wrapped(inner, **options)
    call_weighted(wrapped, args, kwargs, torch.tensor([2.0, 0.0, 0.5]))
    scores = wrapped.pop_scores()
    own = {
        k: v
        for k, v in kwargs.items() if k not in ('weight', 'avg_factor')
    }
    values = MODELS.build(inner)(
        *args, reduction_override='none', **own).detach()
    if values.dim() == 1:  # per image already
        expected = values
    elif ignore is None:
        expected = values.flatten(1).mean(1)
    else:
        valid = args[1] != ignore
        if values.dim() == valid.dim() + 1:
            valid = valid.unsqueeze(1).expand_as(values)
        expected = torch.stack([values[i][valid[i]].mean() for i in range(N)])
    assert scores.shape == (N, ) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize('inner,mode,make', [
    (dict(type='FocalLoss'), 'auto', lambda: ((_logits(
    ), F.one_hot(_labels(ignore_frac=0), C).permute(0, 3, 1, 2).float()), {})),
    (dict(type='CrossEntropyLoss'), 'auto', lambda:
     ((_logits(), _labels()), dict(ignore_index=IGNORE))),
    (dict(type='CrossEntropyLoss'), 'per_image', lambda:
     ((_logits(), _labels()), dict(ignore_index=IGNORE))),
])
def test_weights_of_another_dtype_leave_the_losss_dtype(inner, mode, make):
    """Weights handed in as float64 (e.g. computed in NumPy) rescale as
    the float32 weights do, and the loss keeps its own dtype."""
    args, kwargs = make()
    wrapped = build_wrapped(inner, mode=mode)
    single = call_weighted(wrapped, args, kwargs, torch.tensor([2.0, 0.0,
                                                                0.5]))
    double = call_weighted(wrapped, args, kwargs,
                           torch.tensor([2.0, 0.0, 0.5], dtype=torch.float64))
    assert double.dtype == single.dtype == torch.float32
    assert torch.equal(double, single)


def test_per_image_mode_hands_each_image_its_rows_of_the_keywords():
    """A head's pixel weight (one row per image) goes to each image's call
    as that image's row: the batch loss is the mean over images of w_i
    times the inner loss on image i alone."""
    logits, label = _logits(), _labels()
    pixel_weight = _valid_mask()
    inner = dict(type='CrossEntropyLoss')
    wrapped = build_wrapped(inner, mode='per_image')
    assert isinstance(wrapped, InfoBatchLoss)
    weights = torch.tensor([2.0, 0.0, 0.5])
    got = call_weighted(wrapped, (logits, label),
                        dict(weight=pixel_weight, ignore_index=IGNORE),
                        weights)
    plain = MODELS.build(inner)
    per_image = torch.stack([
        plain(
            logits[i:i + 1],
            label[i:i + 1],
            weight=pixel_weight[i:i + 1],
            ignore_index=IGNORE) for i in range(N)
    ])
    torch.testing.assert_close(got, (weights * per_image).mean())
    torch.testing.assert_close(wrapped.pop_scores(), per_image.detach())


def _evaluations(wrapped):
    """A list that grows by one at each evaluation of an inner loss."""
    calls = []
    for module in (wrapped.loss, wrapped._unit_loss):
        if module is not None:
            module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize('keywords,evaluations', [
    ({}, 1),
    (dict(reduction_override='none'), N + 1),
    (dict(unknown_keyword=1), N + 1),
])
def test_a_keyword_the_wrapper_does_not_know_takes_two_calls(
        keywords, evaluations):
    """Sigmoid CE is evaluated once; a call with reduction 'none' or a
    keyword the wrapper does not know (mmseg's binary_cross_entropy takes
    and ignores any) is served by two calls: the weighted loss, then one
    score call per image."""
    inner = dict(type='CrossEntropyLoss', use_sigmoid=True)
    (logits, label), kwargs = (_logits(), _labels()), dict(
        ignore_index=IGNORE, **keywords)
    wrapped = build_wrapped(inner)
    calls = _evaluations(wrapped)
    got = call_weighted(wrapped, (logits, label), kwargs, torch.ones(N))
    assert len(calls) == evaluations
    assert torch.equal(got, MODELS.build(inner)(logits, label, **kwargs))


def test_values_not_laid_out_like_the_label_score_their_plain_mean():
    """A 'none' output that is neither shaped like the label nor the label
    with a class axis (here at another resolution) gives each image the
    mean of all its values: the label's valid mask does not apply."""
    values = torch.rand(N, 2, 3, 3)
    label = _labels()  # (N, H, W), some pixels ignored
    torch.testing.assert_close(
        _valid_mean(values, label, IGNORE),
        values.flatten(1).mean(1))


@pytest.mark.parametrize('inner', [
    dict(type='CrossEntropyLoss'),
    dict(type='CrossEntropyLoss', use_sigmoid=True),
    dict(type='FocalLoss'),
    dict(type='DiceLoss'),
    dict(type='SiLogLoss'),
])
def test_a_mode_asked_for_is_kept_where_it_serves_the_loss(inner):
    """mode='weight' set by hand on a loss it serves builds as asked, as
    does mode='per_image' on any loss."""
    assert build_wrapped(inner, mode='weight').mode == 'weight'
    assert build_wrapped(inner, mode='per_image').mode == 'per_image'


def test_per_image_scores_use_the_losss_own_ignore_index():
    """TverskyLoss takes its ignore_index at build time (no forward
    keyword): an image whose pixels all carry that label scores NaN."""
    logits, label = _logits(), _labels()
    label[1] = 7
    wrapped = build_wrapped(dict(type='TverskyLoss', ignore_index=7))
    assert wrapped.mode == 'per_image'
    call_weighted(wrapped, (logits, label), {}, torch.ones(N))
    scores = wrapped.pop_scores()
    assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2]]).all()


def test_a_wrapper_no_hook_has_given_weights_is_its_inner_loss():
    """Built and called with no weights ever set (no hook, or outside
    training), it is the inner loss and records no score."""
    logits, label = _logits(), _labels()
    inner = dict(type='CrossEntropyLoss', avg_non_ignore=True)
    wrapped = build_wrapped(inner)
    got = wrapped(logits, label, ignore_index=IGNORE)
    assert torch.equal(got,
                       MODELS.build(inner)(logits, label, ignore_index=IGNORE))
    assert wrapped.pop_scores() is None


def test_a_pixel_weight_given_by_position_is_applied():
    """The head's arguments reach the inner loss as given: a pixel weight
    passed as the third positional argument weighs the loss as it does
    passed by name."""
    logits, label, pixel_weight = _logits(), _labels(), _valid_mask()
    inner = dict(type='CrossEntropyLoss')
    wrapped = build_wrapped(inner)
    got = call_weighted(wrapped, (logits, label, pixel_weight),
                        dict(ignore_index=IGNORE), torch.ones(N))
    expected = MODELS.build(inner)(
        logits, label, weight=pixel_weight, ignore_index=IGNORE)
    assert torch.equal(got, expected)
