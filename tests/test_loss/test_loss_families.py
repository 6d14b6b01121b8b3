"""InfoBatchLoss against every loss that mmseg registers.

Each exact case must equal its inner loss at unit weights, in value and in
gradient; the weighted loss must be linear in the image weights; scores must
be means over valid pixels whatever the loss's 'none' shape.
"""
import pytest
import torch
from helpers.loss_cases import build_wrapped, call_weighted, case_ids
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS

from mmseg_infobatch import InfoBatchLoss

N, C, H, W = 3, 5, 6, 7
IGNORE = 255


def _logits(c=C, seed=0, n=N):
    g = torch.Generator().manual_seed(seed)
    return (2 * torch.randn(n, c, H, W, generator=g)).requires_grad_()


def _labels(c=C, seed=1, ignore_frac=0.3, n=N):
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, c, (n, H, W), generator=g)
    label[torch.rand(n, H, W, generator=g) < ignore_frac] = IGNORE
    return label


def _seg(c=C, ignore_frac=0.3, **kwargs):
    """A decode head's call: logits, labels, ignore_index keyword."""
    return (_logits(c), _labels(c, ignore_frac=ignore_frac)), dict(
        ignore_index=IGNORE, **kwargs)


def _pixel_weight():
    # What OHEMPixelSampler hands the loss: 0/1 per pixel.
    g = torch.Generator().manual_seed(7)
    return (torch.rand(N, H, W, generator=g) > 0.4).float()


def _onehot():
    # FocalLoss's CPU path only works with one-hot targets (mmseg 1.2.2
    # indexes a column that does not exist for class labels).
    (logits, label), kwargs = _seg(ignore_frac=0)
    onehot = torch.nn.functional.one_hot(label, C).permute(0, 3, 1, 2)
    return (logits, onehot.float()), kwargs


def _depth():
    g = torch.Generator().manual_seed(3)
    pred = (torch.rand(N, 1, H, W, generator=g) + 0.1).requires_grad_()
    target = torch.rand(N, 1, H, W, generator=g) * 5
    target[:, :, :2] = 0  # no depth there: SiLog skips it
    return (pred, target), {}


def _mask_ce():
    # mmdet's per-mask form: the third positional argument is class labels.
    g = torch.Generator().manual_seed(4)
    target = (torch.rand(N, H, W, generator=g) > 0.5).float()
    return (_logits(), target, torch.tensor([0, 3,
                                             1])), dict(ignore_index=None)


# (id, inner loss config, call) for every option that has its own reduction
# path in mmseg; class_weight with ignored labels crashes inside mmseg's CE,
# so those cases have none.
EXACT = [
    ('ce', dict(type='CrossEntropyLoss'), _seg),
    ('ce_loss_weight', dict(type='CrossEntropyLoss', loss_weight=0.4), _seg),
    ('ce_avg_non_ignore', dict(type='CrossEntropyLoss',
                               avg_non_ignore=True), _seg),
    ('ce_class_weight',
     dict(type='CrossEntropyLoss',
          class_weight=[1, 2, 1, .5, 1]), lambda: _seg(ignore_frac=0)),
    ('ce_class_weight_avg_non_ignore',
     dict(
         type='CrossEntropyLoss',
         class_weight=[1, 2, 1, .5, 1],
         avg_non_ignore=True), lambda: _seg(ignore_frac=0)),
    ('ce_pixel_weight', dict(type='CrossEntropyLoss'),
     lambda: _seg(weight=_pixel_weight())),
    ('ce_avg_factor', dict(type='CrossEntropyLoss'),
     lambda: _seg(avg_factor=50.0)),
    ('ce_sum', dict(type='CrossEntropyLoss', reduction='sum'), _seg),
    ('ce_use_mask', dict(type='CrossEntropyLoss', use_mask=True), _mask_ce),
    ('sigmoid_ce_19', dict(type='CrossEntropyLoss',
                           use_sigmoid=True), lambda: _seg(c=19)),
    ('sigmoid_ce_19_avg_non_ignore',
     dict(type='CrossEntropyLoss', use_sigmoid=True,
          avg_non_ignore=True), lambda: _seg(c=19)),
    ('sigmoid_ce_19_pixel_weight',
     dict(type='CrossEntropyLoss', use_sigmoid=True,
          loss_weight=0.4), lambda: _seg(c=19, weight=_pixel_weight())),
    ('sigmoid_ce_1', dict(type='CrossEntropyLoss', use_sigmoid=True), lambda:
     ((_logits(1), _labels(2)), dict(ignore_index=IGNORE))),
    ('focal', dict(type='FocalLoss'), _onehot),
    ('focal_class_weight',
     dict(type='FocalLoss', class_weight=[1, 2, 1, .5, 1],
          loss_weight=2.0), _onehot),
    ('dice', dict(type='DiceLoss'), _seg),
    ('dice_naive_softmax',
     dict(type='DiceLoss', naive_dice=True, use_sigmoid=False), _seg),
    ('dice_pixel_weight_sum', dict(type='DiceLoss', reduction='sum'),
     lambda: _seg(weight=torch.tensor([1.0, 0.5, 2.0]))),
    ('silog', dict(type='SiLogLoss'), _depth),
    ('lovasz_per_image',
     dict(type='LovaszLoss', per_image=True, loss_weight=0.5), _seg),
    ('tversky', dict(type='TverskyLoss', loss_weight=0.7), _seg),
    ('hausdorff', dict(type='HuasdorffDisstanceLoss'), _seg),
]

# Batch-coupled losses, with the call their heads make (DDRNet and PIDNet
# pass only logits and labels).
COUPLED = [
    ('ohem', dict(type='OhemCrossEntropy', thres=0.9, min_kept=20), lambda:
     ((_logits(), _labels()), {})),
    ('boundary', dict(type='BoundaryLoss', loss_weight=20.0), lambda:
     ((_logits(1), _labels(2, ignore_frac=0)), {})),
    ('lovasz_batch', dict(type='LovaszLoss', reduction='none'), _seg),
]


def _grad(value, pred):
    pred.grad = None
    value.mean().backward()
    return pred.grad.clone()


def test_every_registered_mmseg_loss_has_a_case():
    # Every module of mmseg's losses, whether or not its package imports
    # it (KLDivLoss's does not): the same set in any test order.
    import importlib
    import pkgutil

    import mmseg.models.losses as losses
    for module in pkgutil.iter_modules(losses.__path__):
        importlib.import_module(f'{losses.__name__}.{module.name}')
    registered = {
        name
        for name, cls in MODELS.module_dict.items()
        if cls.__module__.startswith('mmseg.models.losses.')
    }
    covered = {case[1]['type'] for case in EXACT + COUPLED}
    covered.add('KLDivLoss')  # test_kldiv_loss_is_exact_per_image
    assert registered and registered <= covered, registered - covered


# The 'weight'-mode cases that take two evaluations of the inner loss: one
# weighted, one for the scores (loss.py's table says why).
TWO_CALLS = ('sigmoid_ce_19_pixel_weight', 'focal', 'focal_class_weight')


def _inner_calls(wrapped):
    """A list that grows by one at each evaluation of an mmseg loss module
    inside ``wrapped``."""
    calls = []
    for module in (wrapped.loss, wrapped._unit_loss):
        if module is not None:
            module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize('name,inner,make', EXACT, ids=case_ids(EXACT))
def test_unit_weights_equal_inner_loss(name, inner, make):
    """At weights 1 the 'weight' mode is the inner loss bit for bit, value
    and gradient, in one evaluation where the table says so; the per-image
    mode (a mean of image losses) to float rounding."""
    args, kwargs = make()
    plain = MODELS.build(inner)
    wrapped = build_wrapped(inner)
    expected = plain(*args, **kwargs)
    expected_grad = _grad(expected, args[0])
    calls = _inner_calls(wrapped)
    got = call_weighted(wrapped, args, kwargs, torch.ones(N))
    grad = _grad(got, args[0])
    if wrapped.mode == 'weight':
        assert len(calls) == (N + 1 if name in TWO_CALLS else 1)
        assert got.dtype == expected.dtype and torch.equal(got, expected)
        assert torch.equal(grad, expected_grad)
    else:
        # Values as the runner sums them (parse_losses takes the mean).
        torch.testing.assert_close(
            got.mean(), expected.mean(), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-8)
    scores = wrapped.pop_scores()
    assert scores.shape == (N, ) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert wrapped.loss_name == plain.loss_name
    # Without weights (no hook) it is the inner loss, bit for bit.
    assert torch.equal(call_weighted(wrapped, args, kwargs), expected)
    assert wrapped.pop_scores() is None


def _reference_scores(inner, args, kwargs):
    """Each image's mean over its valid elements of the inner loss's 'none'
    output, without the head's pixel weight, from a loss of its own."""
    kwargs = {
        k: v
        for k, v in kwargs.items() if k not in ('weight', 'avg_factor')
    }
    values = MODELS.build(inner)(
        *args, reduction_override='none', **kwargs).detach()
    if values.dim() == 1:
        return values
    target = args[1]
    if target.is_floating_point():  # one-hot (Focal) or depth: no ignore
        return values.flatten(1).mean(1)
    valid = target != IGNORE
    if values.dim() == valid.dim() + 1:
        valid = valid.unsqueeze(1).expand_as(values)
    return (values * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)


@pytest.mark.parametrize('name,inner,make', EXACT, ids=case_ids(EXACT))
def test_scores_are_unweighted_valid_means(name, inner, make):
    """Scores are the mean over valid elements of the per-element loss (to
    float32 rounding: rtol 1e-6), whatever the image weights."""
    args, kwargs = make()
    wrapped = build_wrapped(inner)
    if wrapped.mode != 'weight':
        pytest.skip('per-image mode: its scores are the image losses')
    call_weighted(wrapped, args, kwargs, torch.ones(N))
    scores = wrapped.pop_scores()
    torch.testing.assert_close(
        scores, _reference_scores(inner, args, kwargs), rtol=1e-6, atol=0)
    call_weighted(wrapped, args, kwargs, torch.tensor([2.0, 0.0, 0.5]))
    assert torch.equal(wrapped.pop_scores(), scores)


@pytest.mark.parametrize('name,inner,make', EXACT, ids=case_ids(EXACT))
def test_weights_rescale_each_image(name, inner, make):
    """L(w) = sum_i w_i * L(e_i): each image's share scales by its weight,
    and an image of weight 0 gets no gradient."""
    if 'avg_factor' in name or 'use_mask' in name:
        pytest.skip('avg_factor is refused per image; use_mask is tested '
                    'with the per-image losses')
    args, kwargs = make()
    wrapped = build_wrapped(inner)
    weights = torch.tensor([2.0, 0.0, 0.5])
    got = call_weighted(wrapped, args, kwargs, weights)
    shares = [
        call_weighted(wrapped, args, kwargs,
                      torch.eye(N)[i]).detach() for i in range(N)
    ]
    expected = sum(w * s for w, s in zip(weights, shares))
    torch.testing.assert_close(got.detach(), expected, rtol=1e-5, atol=1e-7)
    assert got.detach().abs().sum() > 0
    grad = _grad(got, args[0])
    assert grad[1].abs().sum() == 0
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0


def test_sigmoid_ce_with_19_classes_divides_like_mmseg():
    """mmseg's mean divides by the (N, C, H, W) loss size; the score is a
    mean over valid pixels and classes."""
    (logits, label), kwargs = _seg(c=19)
    wrapped = build_wrapped(dict(type='CrossEntropyLoss', use_sigmoid=True))
    weights = torch.tensor([1.0, 2.0, 0.5])
    got = call_weighted(wrapped, (logits, label), kwargs, weights)
    valid = (label != IGNORE).unsqueeze(1).expand(-1, 19, -1, -1)
    onehot = torch.nn.functional.one_hot(label.clamp(max=18), 19)
    per_elem = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, onehot.permute(0, 3, 1, 2).float(), reduction='none') * valid
    expected = (per_elem * weights.view(N, 1, 1, 1)).sum() / per_elem.numel()
    torch.testing.assert_close(got, expected)
    scores = wrapped.pop_scores()
    torch.testing.assert_close(
        scores,
        per_elem.flatten(1).sum(1) / valid.flatten(1).sum(1))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="FocalLoss takes class labels only on CUDA")
def test_focal_scores_ignore_ignored_pixels():
    (logits, label), kwargs = _seg()
    logits, label = logits.detach().cuda(), label.cuda()
    wrapped = build_wrapped(dict(type='FocalLoss'))
    call_weighted(wrapped, (logits, label), kwargs, torch.ones(N))
    scores = wrapped.pop_scores()
    moved = logits.detach().clone()
    moved.permute(0, 2, 3, 1)[label == IGNORE] = 30.0
    call_weighted(wrapped, (moved, label), kwargs, torch.ones(N))
    torch.testing.assert_close(wrapped.pop_scores(), scores)


def test_dice_scores_are_its_per_image_values():
    (logits, label), kwargs = _seg()
    inner = dict(type='DiceLoss', loss_weight=2.0)
    wrapped = build_wrapped(inner)
    call_weighted(wrapped, (logits, label), kwargs, torch.ones(N))
    per_image = MODELS.build(inner)(
        logits, label, reduction_override='none', **kwargs)
    torch.testing.assert_close(wrapped.pop_scores(), per_image.detach())


@pytest.mark.parametrize('inner,mode', [
    (dict(type='CrossEntropyLoss'), 'weight'),
    (dict(type='CrossEntropyLoss', use_sigmoid=True), 'weight'),
    (dict(type='FocalLoss'), 'weight'),
    (dict(type='DiceLoss'), 'weight'),
    (dict(type='SiLogLoss'), 'weight'),
    (dict(type='CrossEntropyLoss', use_mask=True), 'per_image'),
    (dict(type='LovaszLoss', per_image=True), 'per_image'),
    (dict(type='TverskyLoss'), 'per_image'),
    (dict(type='HuasdorffDisstanceLoss'), 'per_image'),
])
def test_auto_mode_per_loss(inner, mode):
    assert build_wrapped(inner).mode == mode


@pytest.mark.parametrize('name,inner,make', COUPLED, ids=case_ids(COUPLED))
def test_coupled_losses_are_refused_at_build(name, inner, make):
    with pytest.raises(ValueError, match="(?s)batch.*mode='per_image'"):
        build_wrapped(inner)
    with pytest.raises(ValueError, match="mode='weight'"):
        build_wrapped(inner, mode='weight')


def test_refused_when_the_model_is_built():
    head = dict(
        type='FCNHead',
        in_channels=8,
        channels=8,
        num_convs=1,
        num_classes=C,
        norm_cfg=None,
        loss_decode=[
            dict(type='InfoBatchLoss', loss=dict(type='CrossEntropyLoss')),
            dict(type='InfoBatchLoss', loss=dict(type='OhemCrossEntropy')),
        ])
    with pytest.raises(ValueError, match="OhemCrossEntropy.*mode='per_image'"):
        MODELS.build(head)
    head['loss_decode'][1]['mode'] = 'per_image'
    assert MODELS.build(head).loss_decode[1].mode == 'per_image'


@pytest.mark.parametrize('name,inner,make', COUPLED, ids=case_ids(COUPLED))
def test_per_image_mode_is_mean_of_weighted_image_losses(name, inner, make):
    args, kwargs = make()
    plain = MODELS.build(inner)
    wrapped = build_wrapped(inner, mode='per_image')
    # No weights: the plain loss, called exactly as the head called it
    # (OhemCrossEntropy and BoundaryLoss take no weight= keyword).
    assert torch.equal(
        call_weighted(wrapped, args, kwargs), plain(*args, **kwargs))
    per_image = torch.stack([
        plain(*[a[i:i + 1] for a in args], **kwargs).mean() for i in range(N)
    ])
    weights = torch.tensor([2.0, 0.0, 0.5])
    got = call_weighted(wrapped, args, kwargs, weights)
    torch.testing.assert_close(got, (weights * per_image).mean())
    torch.testing.assert_close(wrapped.pop_scores(), per_image.detach())
    grad = _grad(got, args[0])
    assert grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0


def test_per_image_mode_scores_nan_for_image_without_valid_pixel():
    logits, label = _logits(), _labels()
    label[1] = IGNORE
    wrapped = build_wrapped(
        dict(type='OhemCrossEntropy', min_kept=10), mode='per_image')
    loss = call_weighted(wrapped, (logits, label), {}, torch.ones(N))
    scores = wrapped.pop_scores()
    assert torch.isfinite(loss)
    assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2]]).all()


def test_per_image_mode_refuses_batch_avg_factor():
    (logits, label), kwargs = _seg(avg_factor=10.0)
    wrapped = build_wrapped(dict(type='CrossEntropyLoss'), mode='per_image')
    with pytest.raises(ValueError, match='avg_factor'):
        call_weighted(wrapped, (logits, label), kwargs, torch.ones(N))


class _OwnLoss(torch.nn.Module):
    """A user's loss outside mmseg: mean of weighted per-pixel CE."""

    loss_name = 'loss_own'

    def forward(self,
                pred,
                target,
                weight=None,
                ignore_index=255,
                reduction_override=None,
                **kwargs):
        loss = torch.nn.functional.cross_entropy(
            pred, target, ignore_index=ignore_index, reduction='none')
        if weight is not None:
            loss = loss * weight
        return loss if reduction_override == 'none' else loss.mean()


def _refused_then_served_by_weight_mode(loss_cls, match):
    """Built without a mode, ``loss_cls`` is refused with ``match``; with
    mode='weight' it reduces itself, so at unit weights the wrapper gives
    the inner loss."""
    with pytest.raises(ValueError, match=match):
        build_wrapped(dict(type=loss_cls))
    wrapped = build_wrapped(dict(type=loss_cls), mode='weight')
    (logits, label), kwargs = _seg()
    expected = loss_cls()(logits, label, **kwargs)
    got = call_weighted(wrapped, (logits, label), kwargs, torch.ones(N))
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=0)


def test_unknown_loss_needs_a_mode():
    _refused_then_served_by_weight_mode(
        _OwnLoss, "(?s)does not know.*mode='weight'.*mode='per_image'")


class _SummedCrossEntropy(CrossEntropyLoss):
    """A user's subclass of mmseg's CrossEntropyLoss that sums where its
    parent averages: its name and parent say nothing of its reduction."""

    def forward(self,
                cls_score,
                label,
                weight=None,
                avg_factor=None,
                reduction_override=None,
                **kwargs):
        if reduction_override != 'none':
            reduction_override = 'sum'
        return super().forward(cls_score, label, weight, avg_factor,
                               reduction_override, **kwargs)


def test_a_subclass_of_an_mmseg_loss_is_refused():
    # Asked for, mode='weight' lets it reduce itself (two calls), so at
    # unit weights the wrapper gives its sum, not its parent's mean.
    _refused_then_served_by_weight_mode(
        _SummedCrossEntropy,
        "(?s)does not know how _SummedCrossEntropy reduces"
        ".*mode='weight'.*mode='per_image'")


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="'per-image'"):
        build_wrapped(dict(type='CrossEntropyLoss'), mode='per-image')
    assert isinstance(
        build_wrapped(dict(type='CrossEntropyLoss'), mode='per_image'),
        InfoBatchLoss)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
def test_kldiv_loss_is_exact_per_image(reduction):
    """KLDivLoss (defined by mmseg, registered only once its module is
    imported) returns per-image or per-element values."""
    import mmseg.models.losses.kldiv_loss  # noqa: F401
    inner = dict(type='KLDivLoss', temperature=2.0, reduction=reduction)
    student, teacher = _logits(seed=5), _logits(seed=6).detach()
    plain = MODELS.build(inner)
    wrapped = build_wrapped(inner)
    assert wrapped.mode == 'per_image'
    expected = plain(student, teacher)
    expected_grad = _grad(expected, student)
    got = call_weighted(wrapped, (student, teacher), {}, torch.ones(N))
    torch.testing.assert_close(got, expected.mean())
    torch.testing.assert_close(_grad(got, student), expected_grad)
    per_image = expected.detach().flatten(1).mean(1) if expected.dim() > 1 \
        else expected.detach()
    torch.testing.assert_close(wrapped.pop_scores(), per_image)


def test_lovasz_per_image_sum_is_refused_with_the_mode_to_set():
    """Per image, LovaszLoss with reduction='sum' adds the images' values,
    where the per-image mode averages them: refused at build."""
    inner = dict(
        type='LovaszLoss',
        per_image=True,
        reduction='sum',
        loss_type='multi_class')
    with pytest.raises(ValueError, match=r"reduction='sum'.*mode='per_image'"):
        MODELS.build(dict(type='InfoBatchLoss', loss=inner))
    # Set by hand, the mode is the user's choice and builds.
    assert MODELS.build(
        dict(type='InfoBatchLoss', mode='per_image', loss=inner)).mode == \
        'per_image'
