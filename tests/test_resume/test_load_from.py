"""``load_from`` without ``--resume``, in a real run: the run starts from
the checkpoint's weights and InfoBatch starts fresh. It is the route
InfoBatch's own resume errors name for a changed set-up ("start a fresh
run from its weights with load_from=CHECKPOINT instead of --resume").

mmengine hands the checkpoint, InfoBatch state included, to every hook's
``after_load_checkpoint`` on this path too; the run must still begin at
pass 0 with nothing scored, a full first pass and its own seed.
"""
import torch
from helpers.configs import (BATCH, NUM_TRAIN, load_record, run_config,
                             tiny_config)

from mmseg_infobatch.engine.checkpoint_types import load_trusted_checkpoint


def test_load_from_starts_infobatch_fresh_in_a_real_run(ade_root, tmp_path):
    first = tiny_config(tmp_path / 'first', ade_root, seed=0, passes=2)
    run_config(first)
    checkpoints = sorted(
        (tmp_path / 'first').glob('iter_*.pth'),
        key=lambda p: int(p.stem.split('_')[1]))
    saved = load_trusted_checkpoint(checkpoints[-1])
    assert saved['infobatch']['sampler']['pass_idx'] == 1

    loaded = tiny_config(tmp_path / 'loaded', ade_root, seed=1, passes=2)
    loaded.load_from = str(checkpoints[-1])
    run_config(loaded)
    record = load_record(tmp_path / 'loaded')
    first_pass = record['passes'][0]
    assert (first_pass['pass_idx'], first_pass['start_iter'],
            first_pass['position']) == (0, 0, 0)
    assert not first_pass['seen'].any()
    assert sorted(first_pass['padded_order'].tolist()) == list(
        range(NUM_TRAIN))
    assert (first_pass['weights'] == 1).all()
    assert record['iters'][0][:2] == [0, 0]  # iteration 0, progress 0
    # Another seed than the checkpoint's: another order.
    reference = load_record(tmp_path / 'first')['passes'][0]
    assert not torch.equal(first_pass['padded_order'],
                           reference['padded_order'])
    assert len(record['batches'][0]) == BATCH
