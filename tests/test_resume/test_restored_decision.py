"""A checkpoint taken after a pass was decided and before its first batch:
the resumed sampler still holds that pass's decision for InfoBatchHook to
record, from the checkpoint, or, where an older version did not save it,
what the restored pass tells of it. In process, without training."""
import math

import torch
from helpers import make_sampler

from mmseg_infobatch.sampler.history import PassRecord

N, BATCH = 40, 2


def _sampler(**kwargs):
    kwargs.setdefault('prune_stop', math.inf)
    return make_sampler(N, batch_size=BATCH, **kwargs)


def _decided_second_pass(**kwargs):
    """A sampler that trained its full first pass, scored every sample,
    and decided its second pass (untrained)."""
    s = _sampler(**kwargs)
    list(iter(s))
    for _ in range(s.pass_batches):
        s.finish_batch()
    g = torch.Generator().manual_seed(1)
    s.update_scores(torch.arange(N), torch.rand(N, generator=g))
    list(iter(s))
    return s


def _fields(record: PassRecord):
    """The record's fields, with NaN as a string (NaN equals nothing)."""
    return {
        key: 'nan' if isinstance(value, float) and math.isnan(value) else value
        for key, value in vars(record).items()
    }


def test_a_pending_decision_is_restored_from_the_checkpoint():
    s = _decided_second_pass()
    assert s.decision.pruned > 0 and s.trained_batches == 0
    state = s.state_dict()
    assert state['decision'] is not None
    t = _sampler(seed=9)
    t.load_state_dict(state)
    assert _fields(t.decision) == _fields(s.decision)


def test_a_decision_already_recorded_is_not_restored():
    s = _decided_second_pass()
    s.finish_batch()  # InfoBatchHook recorded the decision at this batch
    state = s.state_dict()
    assert state['decision'] is None
    t = _sampler()
    t.load_state_dict(state)
    assert t.decision is None


def test_an_older_checkpoint_of_an_untrained_pass_tells_what_it_kept():
    s = _decided_second_pass()
    state = s.state_dict()
    state['decision'] = None  # older versions did not save it
    t = _sampler()
    t.load_state_dict(state)
    kept = s.order.numel()
    assert kept < N
    # What the restored pass tells: its pass, the samples it kept, every
    # other one pruned (and so a candidate), its iterations; its threshold
    # is not known.
    assert _fields(t.decision) == _fields(
        PassRecord(
            pass_idx=1,
            start_iter=-1,
            kept=kept,
            pruned=N - kept,
            candidates=N - kept,
            iters=-(-kept // BATCH),
            threshold=math.nan,
            may_prune=True))
    assert t.decision.iters == s.pass_batches
    del state['decision']  # or had no such entry
    u = _sampler()
    u.load_state_dict(state)
    assert _fields(u.decision) == _fields(t.decision)


def test_an_older_checkpoint_of_an_untrained_annealing_pass_may_not_prune():
    s = _decided_second_pass(prune_stop=1)
    assert s.order.numel() == N and s.decision.may_prune is False
    state = dict(s.state_dict(), decision=None)
    t = _sampler(prune_stop=1)
    t.load_state_dict(state)
    assert (t.decision.pass_idx, t.decision.kept, t.decision.pruned,
            t.decision.may_prune) == (1, N, 0, False)


def test_an_older_checkpoint_before_any_pass_has_no_decision():
    s = _sampler()
    state = dict(s.state_dict(), decision=None)
    t = _sampler()
    t.load_state_dict(state)
    assert t.decision is None and t.pass_idx == -1


def test_an_older_checkpoint_of_a_pass_under_way_has_no_decision():
    s = _decided_second_pass()
    s.finish_batch()
    state = dict(s.state_dict(), decision=None)
    t = _sampler()
    t.load_state_dict(state)
    assert t.decision is None and t.trained_batches == 1
