from unittest import mock

import pytest
import torch

from mmseg_infobatch.sampler import InfoBatchSampler


def _sampler(n=50, rank=0, world=1, **kwargs):
    with mock.patch('mmseg_infobatch.sampler.get_dist_info',
                    return_value=(rank, world)):
        sampler = InfoBatchSampler(list(range(n)), seed=3, **kwargs)
    sampler.hook_attached = True
    return sampler


def _score_all(sampler, seed=0):
    g = torch.Generator().manual_seed(seed)
    sampler.update_scores(torch.arange(sampler.num_samples),
                          torch.rand(sampler.num_samples, generator=g))


def test_first_pass_full_then_prunes_into_full_batches():
    s = _sampler(100, rank=1, world=2)
    s.batch_size = 8
    first = list(iter(s))
    assert sorted(first) == list(range(1, 100, 2)) or len(first) == 50
    assert s.pass_idx == 0 and s.pass_indices.numel() == 100
    _score_all(s)
    second = list(iter(s))
    assert s.pass_idx == 1
    assert len(second) == len(s) < 50
    kept = 100 - s.pass_stats['pruned']
    # Padded to whole batches on every rank: world 2 x batch 8.
    assert s.pass_indices.numel() == -(-kept // 16) * 16
    assert set(s.pass_indices.tolist()) == set(s.pass_indices[:kept].tolist())


def test_annealing_resets_weights_at_fractional_stop():
    s = _sampler(100)
    s.prune_stop = 2.6  # delta * C fractional: passes 0, 1, 2 may prune
    list(iter(s))
    for expected_pass in (1, 2):
        _score_all(s, expected_pass)
        list(iter(s))
        assert s.pass_idx == expected_pass and s.prunes_now
        assert (s.weights == 2).any()
    _score_all(s, 3)
    assert sorted(iter(s)) == list(range(100))
    assert s.pass_idx == 3 and not s.prunes_now
    assert (s.weights == 1).all()


def test_all_ranks_decide_identically_and_split_disjointly():
    world = 3
    samplers = [_sampler(101, rank=r, world=world) for r in range(world)]
    for pass_no in range(4):
        for s in samplers:
            if pass_no:
                _score_all(s, pass_no)
            list(iter(s))
        full = [s.pass_indices for s in samplers]
        assert all(torch.equal(full[0], f) for f in full)
        assert all(torch.equal(samplers[0].weights, s.weights)
                   for s in samplers)
        shares = [s.rank_indices() for s in samplers]
        assert len({x.numel() for x in shares}) == 1
        kept = set(samplers[0].pass_indices.tolist())
        union = set(torch.cat(shares).tolist())
        assert union == kept
        # Disjoint apart from padding (< world extra slots).
        assert sum(x.numel() for x in shares) - len(kept) < world


def test_state_round_trip_and_weights_only_load(tmp_path):
    s = _sampler(40)
    list(iter(s))
    _score_all(s)
    list(iter(s))
    path = tmp_path / 'state.pth'
    torch.save(s.state_dict(), path)
    state = torch.load(path, weights_only=True)
    t = _sampler(40)
    t.load_state_dict(state)
    for key in ('scores', 'seen', 'weights', 'pass_indices'):
        assert torch.equal(getattr(s, key), getattr(t, key)), key
    assert t.pass_idx == s.pass_idx
    _score_all(s, 5)
    _score_all(t, 5)
    assert list(iter(s)) == list(iter(t))


def test_replay_filler_lands_on_saved_pass():
    s = _sampler(40)
    list(iter(s))
    _score_all(s)
    saved = list(iter(s))
    t = _sampler(40)
    t.load_state_dict(s.state_dict())
    t.prepare_replay(12)
    replay = list(iter(t))
    assert len(replay) == 12 + len(saved)
    assert replay[12:] == saved
    assert t.pass_idx == s.pass_idx
    # The replay is one-shot: the next pass is a fresh decision.
    list(iter(t))
    assert t.pass_idx == s.pass_idx + 1


def test_resume_rejects_other_dataset_size():
    s = _sampler(40)
    with pytest.raises(ValueError, match='dataset of 40 samples.*has 41'):
        _sampler(41).load_state_dict(s.state_dict())


def test_without_hook_pruning_pass_raises_with_fix():
    s = _sampler(10)
    s.hook_attached = False
    list(iter(s))
    with pytest.raises(RuntimeError, match="custom_hooks = \\[dict\\(type='InfoBatchHook'"):
        list(iter(s))


def test_nonfinite_scores_never_enter_table():
    s = _sampler(4)
    skipped = s.update_scores(
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([1.0, float('nan'), float('inf'), 2.0]))
    assert skipped == 2
    assert s.seen.tolist() == [True, False, False, True]
    assert torch.isfinite(s.scores).all()


@pytest.mark.parametrize('kwargs,match', [
    (dict(ratio=1.0), r'ratio .* must be in \[0, 1\), but got 1.0'),
    (dict(ratio=-1), 'but got -1'),
    (dict(policy='sorted'), "policy must be one of"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfoBatchSampler(list(range(4)), seed=0, **kwargs)


def test_empty_dataset_is_named():
    with pytest.raises(ValueError, match='empty dataset'):
        InfoBatchSampler([], seed=0)
