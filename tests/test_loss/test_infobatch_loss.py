"""InfoBatchLoss on softmax CE: scores, weight routing, config keys."""
import pytest
import torch
from mmseg.registry import MODELS

import mmseg_infobatch  # noqa: F401


def _batch(n=4, c=5, h=6, w=7, seed=0, ignore_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g)
    label = torch.randint(0, c, (n, h, w), generator=g)
    label[torch.rand(n, h, w, generator=g) < ignore_frac] = 255
    return logits, label


def _pair(inner):
    wrapped = MODELS.build(dict(type='InfoBatchLoss', loss=dict(inner)))
    return wrapped, MODELS.build(dict(inner))


def test_weights_rescale_each_image_before_the_mean():
    logits, label = _batch()
    wrapped, plain = _pair(dict(type='CrossEntropyLoss'))
    weights = torch.tensor([2.0, 1.0, 0.0, 1.0])
    wrapped.batch_weights = weights
    got = wrapped(logits, label, ignore_index=255)
    per_px = plain(logits, label, reduction_override='none', ignore_index=255)
    expected = (per_px * weights.view(4, 1, 1)).mean()
    torch.testing.assert_close(got, expected)


def test_score_is_mean_over_valid_pixels_only():
    logits, label = _batch(ignore_frac=0.5)
    wrapped, plain = _pair(dict(type='CrossEntropyLoss'))
    wrapped.batch_weights = torch.ones(4)
    wrapped(logits, label, ignore_index=255)
    scores = wrapped.pop_scores()
    per_px = plain(logits, label, reduction_override='none', ignore_index=255)
    for i in range(4):
        valid = label[i] != 255
        torch.testing.assert_close(scores[i], per_px[i][valid].mean())
    # Changing what sits under ignored pixels must not move the score.
    logits2 = logits.clone()
    logits2.permute(0, 2, 3, 1)[label == 255] = 50.0
    wrapped.batch_weights = torch.ones(4)
    wrapped(logits2, label, ignore_index=255)
    torch.testing.assert_close(wrapped.pop_scores(), scores)


def test_image_without_valid_pixel_scores_nan():
    logits, label = _batch()
    label[1] = 255
    wrapped, _ = _pair(dict(type='CrossEntropyLoss'))
    wrapped.batch_weights = torch.ones(4)
    loss = wrapped(logits, label, ignore_index=255)
    scores = wrapped.pop_scores()
    assert torch.isfinite(loss)
    assert torch.isnan(scores[1]) and torch.isfinite(scores[[0, 2, 3]]).all()


def test_scores_sum_over_calls_and_pop_clears():
    logits, label = _batch()
    wrapped, _ = _pair(dict(type='CrossEntropyLoss'))
    wrapped.batch_weights = torch.ones(4)
    wrapped(logits, label, ignore_index=255)
    one = wrapped._scores.clone()
    wrapped(logits, label, ignore_index=255)
    torch.testing.assert_close(wrapped.pop_scores(), 2 * one)
    assert wrapped.pop_scores() is None


def test_weight_count_mismatch_is_explained():
    logits, label = _batch()
    wrapped, _ = _pair(dict(type='CrossEntropyLoss'))
    wrapped.batch_weights = torch.ones(3)
    with pytest.raises(RuntimeError, match='4 images but 3 weights'):
        wrapped(logits, label, ignore_index=255)


def test_gradient_follows_weights():
    logits, label = _batch()
    logits.requires_grad_(True)
    wrapped, _ = _pair(dict(type='CrossEntropyLoss'))
    wrapped.batch_weights = torch.tensor([0.0, 1.0, 1.0, 1.0])
    wrapped(logits, label, ignore_index=255).backward()
    assert logits.grad[0].abs().sum() == 0
    assert logits.grad[1].abs().sum() > 0


def test_inherited_config_keys():
    # What a config inheriting a plain CE loss merges into the wrapper.
    MODELS.build(
        dict(
            type='InfoBatchLoss',
            use_sigmoid=False,
            loss_weight=1.0,
            loss=dict(
                type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
    with pytest.raises(
            TypeError, match=r"\['avg_non_ignore'\].*_delete_=True"):
        MODELS.build(
            dict(
                type='InfoBatchLoss',
                avg_non_ignore=True,
                loss=dict(type='CrossEntropyLoss')))
    with pytest.raises(TypeError, match='must be an mmseg loss config'):
        MODELS.build(dict(type='InfoBatchLoss', loss='CrossEntropyLoss'))
