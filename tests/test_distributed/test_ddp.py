"""Real 2-process DDP on CPU (gloo) through torchrun and tools/train.py."""
import torch
from helpers.configs import demo_config, load_record, train_subprocess


def test_two_ranks_agree_on_every_pass(digit_root, tmp_path):
    # 40 samples, 2 ranks x batch 4: 5 iterations per full pass.
    cfg = demo_config(
        tmp_path, digit_root, passes=4, batch_size=4, world_size=2, delta=0.7)
    train_subprocess(cfg, tmp_path / 'ddp.py', nproc=2)
    ranks = [load_record(tmp_path, r) for r in (0, 1)]
    assert ranks[0]['final_iter'] == ranks[1]['final_iter'] < 4 * 5
    assert len(ranks[0]['iters']) == len(ranks[1]['iters'])
    assert len(ranks[0]['passes']) == len(ranks[1]['passes']) == 4
    pruned_somewhere = False
    for p0, p1 in zip(*(r['passes'] for r in ranks)):
        assert p0['pass_idx'] == p1['pass_idx']
        assert p0['start_iter'] == p1['start_iter']
        # Same score table, same decision, same weights on both ranks.
        assert torch.equal(p0['scores'], p1['scores'])
        assert torch.equal(p0['seen'], p1['seen'])
        assert torch.equal(p0['padded_order'], p1['padded_order'])
        assert torch.equal(p0['weights'], p1['weights'])
        # Disjoint shares that cover the pass, padding aside.
        kept = p0['padded_order']
        a, b = p0['rank_indices'], p1['rank_indices']
        assert a.numel() == b.numel()
        assert set(a.tolist()) | set(b.tolist()) == set(kept.tolist())
        unique_kept = len(set(kept.tolist()))
        overlap = a.numel() + b.numel() - unique_kept
        assert 0 <= overlap < 2 * 4  # padding is less than a global batch
        pruned_somewhere |= unique_kept < 40
    assert pruned_somewhere
    # Scores gathered from both ranks land in both tables identically.
    assert torch.equal(ranks[0]['final_scores'], ranks[1]['final_scores'])
    assert ranks[0]['final_seen'].all()
    # Each rank trained exactly its own share, batch by batch.
    for rec in ranks:
        shares = {
            p['pass_idx']: p['rank_indices'].tolist()
            for p in rec['passes']
        }
        for (_, _, _, pass_idx, pos), batch in zip(rec['iters'],
                                                   rec['batches']):
            assert batch == shares[pass_idx][pos * 4:(pos + 1) * 4]
