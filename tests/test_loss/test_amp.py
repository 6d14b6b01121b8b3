"""InfoBatchLoss under mixed precision, where a CPU can show it: bf16
autocast, and a loss scale that commutes with the per-image weights."""
import pytest
import torch
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import mmseg_infobatch  # noqa: F401

register_all_modules(init_default_scope=True)
IGNORE = 255
CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)


def _batch(num_images=3, num_classes=5, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_images, 4, size, size, generator=g)
    label = torch.randint(
        0, num_classes, (num_images, size, size), generator=g)
    label[0, :size // 2] = IGNORE  # ignored pixels must not enter scores
    conv = torch.nn.Conv2d(4, num_classes, 1)
    torch.manual_seed(seed)
    conv.reset_parameters()
    return feats, label, conv


def _loss(loss_fn, feats, label, conv, weights=None, dtype=None):
    """Head logits from a conv (bf16 under autocast, as a model's are),
    the loss, and the conv's weight gradient."""
    conv.zero_grad()
    with torch.autocast(
            'cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits = conv(feats)
        if weights is not None:
            loss_fn.set_batch_weights(weights)
        loss = loss_fn(logits, label, ignore_index=IGNORE)
    loss.backward()
    scores = None
    if weights is not None:
        loss_fn.set_batch_weights(None)
        scores = loss_fn.pop_scores()
    return loss.detach().float(), conv.weight.grad.clone(), scores, logits


def test_bf16_autocast_keeps_the_plain_loss_at_weight_one():
    feats, label, conv = _batch()
    plain = MODELS.build(CE)
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=CE))
    plain_loss, plain_grad, _, logits = _loss(
        plain, feats, label, conv, dtype=torch.bfloat16)
    assert logits.dtype == torch.bfloat16  # autocast is really on
    loss, grad, scores, _ = _loss(
        wrapped,
        feats,
        label,
        conv,
        weights=torch.ones(3),
        dtype=torch.bfloat16)
    # The same ops in the same precision: equal, not merely close.
    assert torch.equal(loss, plain_loss)
    assert torch.equal(grad, plain_grad)
    fp32_loss, _, fp32_scores, _ = _loss(
        wrapped, feats, label, conv, weights=torch.ones(3))
    assert torch.allclose(loss, fp32_loss, rtol=2e-2)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
    assert torch.allclose(scores, fp32_scores, rtol=2e-2)


def test_bf16_autocast_applies_the_weights():
    feats, label, conv = _batch()
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=CE))
    weights = torch.tensor([2.0, 1.0, 0.5])
    loss, _, scores, logits = _loss(
        wrapped, feats, label, conv, weights=weights, dtype=torch.bfloat16)
    # mmseg's CE mean divides by every pixel of the batch.
    pixels = torch.nn.functional.cross_entropy(
        logits.float(), label, ignore_index=IGNORE, reduction='none')
    expected = (pixels * weights.view(-1, 1, 1)).mean()
    assert torch.allclose(loss, expected, rtol=2e-2)
    # Scores stay unweighted: the mean over each image's valid pixels.
    valid = label != IGNORE
    per_image = (pixels * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
    assert torch.allclose(scores, per_image, rtol=2e-2)


@pytest.mark.parametrize('scale', [2.0**16, 2.0**-3])
def test_a_loss_scale_commutes_with_the_weights(scale):
    """AMP's loss scaler multiplies the total loss by S and divides the
    gradients by S: with S a power of two both steps are exact, so the
    weighted gradient is unchanged, and the scores never see S."""
    feats, label, conv = _batch()
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=CE))
    weights = torch.tensor([2.0, 1.0, 2.0])
    conv.zero_grad()
    wrapped.set_batch_weights(weights)
    loss = wrapped(conv(feats), label, ignore_index=IGNORE)
    wrapped.set_batch_weights(None)
    (loss * scale).backward()
    unscaled = conv.weight.grad / scale
    scaled_scores = wrapped.pop_scores()
    _, grad, scores, _ = _loss(wrapped, feats, label, conv, weights=weights)
    assert torch.equal(unscaled, grad)
    assert torch.equal(scaled_scores, scores)
