"""The hook's two-rank gather of scores, with mmengine's all_gather mocked.

float32 holds every integer only up to 2**24 (16.7M): a dataset larger than
that (a 20M-image pre-training set) would have its odd indices rounded to
their neighbours if they were gathered as floats, so each score would land
on another sample.
"""
from unittest import mock

import torch
from helpers import make_sampler

from mmseg_infobatch import InfoBatchHook

BASE = 2**24
OWN_SCORES = torch.tensor([0.3333333, 0.1234567])
OTHER_INDICES = torch.tensor([BASE + 8, BASE + 10])
OTHER_SCORES = torch.tensor([0.7654321, 0.0987654])


class _Sized:
    """A dataset of ``n`` samples without the samples."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


class _Term:
    """What the hook asks of an InfoBatchLoss after an iteration."""

    def __init__(self, scores):
        self.scores = scores
        self.batch_weights = None

    def set_batch_weights(self, weights):
        self.batch_weights = weights

    def pop_scores(self):
        scores, self.scores = self.scores, None
        return scores


def test_two_rank_gather_keeps_indices_above_2_24_exact():
    # Rank 1 of 2, batch 2, one ascending full pass: rank 1 takes the odd
    # indices, so its batch at position p holds 4p + 1 and 4p + 3.
    sampler = make_sampler(
        _Sized(BASE + 16),
        rank=1,
        world=2,
        batch_size=2,
        prune_stop=0,  # a full pass, all weights 1
        seed=0,
        shuffle=False)
    iter(sampler)
    sampler.served.trained_batches = BASE // 4 + 2
    hook = InfoBatchHook()
    hook.sampler = sampler
    hook.losses = [_Term(OWN_SCORES.clone())]
    runner = mock.MagicMock(param_schedulers=None)
    hook.before_train_iter(runner, 0)
    own = sampler.batch_indices()
    assert own.tolist() == [BASE + 9, BASE + 11]
    # Neither index is a float32: it would round to an even neighbour.
    assert own.float().long().tolist() != own.tolist()

    dtypes = []
    other_rank = iter([OTHER_INDICES, OTHER_SCORES])

    def all_gather(tensor):
        # Rank 0 makes the same calls in the same order with its own batch.
        dtypes.append(tensor.dtype)
        return [next(other_rank).to(tensor.dtype), tensor.clone()]

    with mock.patch('mmseg_infobatch.hook.infobatch_hook.all_gather',
                    all_gather):
        hook.after_train_iter(runner, 0)
    assert dtypes == [torch.int64, torch.float32]
    scored = sampler.seen.nonzero().squeeze(1).tolist()
    assert scored == [BASE + 8, BASE + 9, BASE + 10, BASE + 11]
    # Each score is exactly the float32 its rank computed, at its index.
    assert torch.equal(sampler.scores[OTHER_INDICES], OTHER_SCORES)
    assert torch.equal(sampler.scores[own], OWN_SCORES)
    assert int(sampler.scores.count_nonzero()) == 4
    assert sampler.trained_batches == BASE // 4 + 3
