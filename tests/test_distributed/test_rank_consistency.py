"""Ranks that do not hold the same InfoBatch state stop, all of them, with
the same error: the fingerprint check on its own (all_gather mocked), and
the case that hung before it existed, two nodes on localhost each with its
own work dir, only one of which holds the checkpoint, both --resume."""
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch
from helpers import REPO, free_port, make_sampler
from helpers.configs import (load_record, subprocess_env, tiny_config,
                             train_subprocess)
from helpers.stand_in import (N, seg_logits_labels, stand_in_runner,
                              start_hook, train)

from mmseg_infobatch.hook import consistency
from mmseg_infobatch.hook.consistency import (ON_RANK0, TABLES,
                                              agree_on_resume,
                                              check_ranks_agree,
                                              sampler_digest)

DIGEST = {
    'iteration': 14,
    'seed': 3,
    'pass': 4,
    'position': 2,
    'layout': 0x1234,
    'order': 0xbeef,
    'scores': 0xcafe
}


def _as_ranks(*rows):
    """Mock mmengine's all_gather and get_dist_info as rank 0 of
    ``len(rows)``, the other ranks contributing ``rows[1:]``."""

    def all_gather(local):
        return [local] + [torch.tensor(r, dtype=torch.int64) for r in rows[1:]]

    return (mock.patch.object(consistency, 'all_gather', all_gather),
            mock.patch.object(
                consistency, 'get_dist_info', return_value=(0, len(rows))))


def test_agreeing_ranks_pass_and_one_rank_gathers_nothing():
    gather, info = _as_ranks(list(DIGEST.values()), list(DIGEST.values()))
    with gather, info:
        check_ranks_agree(DIGEST, 'at the start of pass 4')
    with mock.patch.object(consistency, 'all_gather') as all_gather:
        check_ranks_agree(DIGEST, 'at the start of pass 4')
    all_gather.assert_not_called()


@pytest.mark.parametrize('field,cause', [
    ('pass', 'no shared file system'),
    ('scores', 'different one per node'),
    ('layout', 'different configs or data'),
    ('order', 'same torch and numpy versions'),
])
def test_a_differing_field_is_named_with_every_rank_value(field, cause):
    other = dict(DIGEST, **{field: DIGEST[field] + 1})
    gather, info = _as_ranks(list(DIGEST.values()), list(other.values()))
    with gather, info, pytest.raises(RuntimeError) as error:
        check_ranks_agree(DIGEST, 'at the start of pass 4')
    message = str(error.value)
    assert 'differs across the 2 ranks at the start of pass 4' in message
    assert f'  {field}: rank 0: ' in message
    assert cause in message
    # Only the differing field is listed.
    assert all(f'  {name}:' not in message for name in DIGEST if name != field)


def test_resume_agreement_names_the_fix_and_hands_out_rank0_tables():
    # Rank 0 resumed at 14 from its own disk; rank 1 found no checkpoint.
    gather, info = _as_ranks([14, TABLES], [0, 0])
    with gather, info, pytest.raises(RuntimeError) as error:
        agree_on_resume(14, {'format': 3}, world_size=2)
    message = str(error.value)
    assert 'iteration: rank 0: 14, rank 1: 0' in message
    assert "checkpoint state: rank 0: tables, rank 1: none" in message
    assert '--resume PATH' in message and 'load_from=PATH' in message
    # FSDP's per-rank checkpoints: rank 1's points at rank 0's tables,
    # which rank 0 broadcasts.
    state = {'format': 3, 'sampler': 'tables'}
    gather, info = _as_ranks([14, TABLES], [14, ON_RANK0])
    with gather, info, mock.patch.object(consistency,
                                         'broadcast_object_list') as broadcast:
        assert agree_on_resume(14, state, world_size=2) is state
    assert broadcast.call_args.args[0] == [state]
    assert broadcast.call_args.kwargs == {'src': 0}


def _pruned_sampler(**kwargs):
    """A one-rank sampler in its second pass, pruned from the scores of
    every sample."""
    sampler = make_sampler(40, batch_size=4, seed=3, **kwargs)
    iter(sampler)
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    sampler.update_scores(torch.arange(40), torch.linspace(0, 1, 40))
    iter(sampler)
    assert sampler.decision.pruned > 0
    return sampler


def _refused_as_another_pass(rank0, rank1):
    """The rank check of the two samplers' digests fails, on ``order``
    (the decided pass) only."""
    digests = [list(sampler_digest(s).values()) for s in (rank0, rank1)]
    gather, info = _as_ranks(*digests)
    with gather, info, pytest.raises(RuntimeError) as error:
        check_ranks_agree(sampler_digest(rank0), 'at the start of pass 1')
    message = str(error.value)
    assert '  order: rank 0: ' in message
    assert all(f'  {name}:' not in message
               for name in ('seed', 'pass', 'position', 'layout', 'scores'))


def test_rank_check_compares_the_weight_table():
    # Nodes whose configs differ in rescale only decide the same pass
    # with the same weight codes, but rank 1 would train the survivors at
    # weight 1 where rank 0 trains them at 2.
    rank0, rank1 = _pruned_sampler(), _pruned_sampler(rescale=False)
    assert torch.equal(rank0.order, rank1.order)
    assert torch.equal(rank0.served.weight_codes, rank1.served.weight_codes)
    assert rank0.served.weight_table.tolist() == [1.0, 2.0]
    assert rank1.served.weight_table.tolist() == [1.0, 1.0]
    _refused_as_another_pass(rank0, rank1)


def test_rank_check_compares_each_samples_weight_code():
    rank0, rank1 = _pruned_sampler(), _pruned_sampler()
    survivor = int(rank1.served.weight_codes.nonzero()[0])
    rank1.served.weight_codes[survivor] = 0  # weight 1 instead of 2
    assert torch.equal(rank0.order, rank1.order)
    assert torch.equal(rank0.served.weight_table, rank1.served.weight_table)
    _refused_as_another_pass(rank0, rank1)


def test_node_local_work_dirs_are_refused_on_every_rank(ade_root, tmp_path):
    """Two nodes without a shared work dir: only node 0 holds the
    checkpoint, and both are started with --resume."""
    node0, node1 = tmp_path / 'node0', tmp_path / 'node1'
    cfg = tiny_config(node0, ade_root, world_size=2, passes=2)
    cfg.default_hooks.checkpoint.interval = 10**6  # only the last
    train_subprocess(cfg, tmp_path / 'cfg.py', nproc=2, timeout=300)
    final = load_record(node0)['final_iter']
    assert (node0 / 'last_checkpoint').exists()

    port = free_port()
    nodes = []
    for rank, work_dir in enumerate((node0, node1)):
        node_env = subprocess_env(
            NNODES='2',
            NODE_RANK=str(rank),
            PORT=str(port),
            MASTER_ADDR='127.0.0.1',
            PATH=os.pathsep.join(
                [os.path.dirname(sys.executable), os.environ['PATH']]))
        nodes.append(
            subprocess.Popen([
                'bash',
                str(REPO / 'tools' / 'dist_train.sh'),
                str(tmp_path / 'cfg.py'), '1', '--work-dir',
                str(work_dir), '--resume'
            ],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT,
                             text=True,
                             cwd=REPO,
                             env=node_env))
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, log in zip(nodes, logs):
        assert node.returncode != 0, log[-3000:]
        assert 'InfoBatch state differs across the 2 ranks' in log, \
            log[-3000:]
        assert f'iteration: rank 0: {final}, rank 1: 0' in log
        assert 'no shared file system' in log and '--resume PATH' in log
    assert f'resumed epoch: 0, iter: {final}' in logs[0]


def test_the_rank_check_runs_at_every_pass_start():
    """multi_gpu.md: the ranks check that they hold the same state at the
    start of training and at every pass start, so ranks whose tables come
    apart mid-run stop at the next pass start, with the error that names
    it, before that pass trains a batch."""
    data = seg_logits_labels(N, 0)
    runner = stand_in_runner(data, world=2, logger='rank_check_passes')
    calls = []

    def check(digest, when):
        calls.append((when, digest['pass']))
        if when == 'at the start of pass 2':
            raise RuntimeError(f'InfoBatch state differs across ranks {when}')

    with mock.patch('mmseg_infobatch.hook.infobatch_hook.check_ranks_agree',
                    check):
        hook = start_hook(runner)
        with pytest.raises(RuntimeError, match='at the start of pass 2'):
            train(hook, runner)
    assert calls == [('at the start of training', -1),
                     ('at the start of pass 0', 0),
                     ('at the start of pass 1', 1),
                     ('at the start of pass 2', 2)]
    assert hook.sampler.pass_idx == 2 and hook.sampler.trained_batches == 0
