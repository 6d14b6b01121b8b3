"""InfoBatchHook on real runners: the demo model on tiny digit scenes."""

import pytest
import torch
from helpers import REPO
from helpers.configs import demo_config, load_record, run_config

from mmseg_infobatch.engine.checkpoint_types import \
    can_load_mmengine_checkpoints_safely
from mmseg_infobatch.sampler.state import sample_tables


@pytest.fixture(scope='module')
def runs(digit_root, tmp_path_factory):
    """One InfoBatch run and one full-data run (ratio 0), 4 passes each;
    delta * C = 0.7 * 4 = 2.8 is fractional, so passes 1, 2 prune and
    pass 3 anneals."""
    out = {}
    for name, ratio in (('infobatch', 0.5), ('full', 0.0)):
        work_dir = tmp_path_factory.mktemp(name)
        cfg = demo_config(
            work_dir, digit_root, passes=4, ratio=ratio, delta=0.7)
        runner = run_config(cfg)
        out[name] = dict(
            work_dir=work_dir, runner=runner, record=load_record(work_dir))
    return out


def test_pruned_run_ends_early_at_eta_min(runs):
    budget = 4 * 10
    ib, full = runs['infobatch'], runs['full']
    assert full['record']['final_iter'] == budget
    assert ib['record']['final_iter'] < budget
    assert ib['runner'].train_loop.max_iters == ib['record']['final_iter']
    # The schedule ends where full-data training ends.
    assert ib['record']['final_lr'] == pytest.approx(
        full['record']['final_lr'], rel=1e-6)
    assert ib['record']['final_lr'] == pytest.approx(1e-4, rel=1e-3)


def test_lr_follows_data_progress(runs):
    full_lr = {it: lr for it, _, lr, _, _ in runs['full']['record']['iters']}
    rows = runs['infobatch']['record']['iters']
    assert any(v > it for it, v, _, _, _ in rows)  # progress runs ahead
    for it, virtual, lr, _, _ in rows:
        assert lr == pytest.approx(full_lr[virtual], rel=1e-6), (it, virtual)


def test_first_pass_full_and_later_passes_pruned(runs):
    passes = runs['infobatch']['record']['passes']
    assert [p['pass_idx'] for p in passes] == [0, 1, 2, 3]
    assert passes[0]['padded_order'].numel() == 40
    assert not passes[0]['seen'].any()
    assert all(p['padded_order'].numel() < 40 for p in passes[1:3])
    assert passes[1]['seen'].all()  # every sample scored before pruning
    assert [p['prunes'] for p in passes] == [True, True, True, False]


def test_annealing_pass_is_full_with_unit_weights(runs):
    last = runs['infobatch']['record']['passes'][3]
    assert not last['prunes']
    assert sorted(last['padded_order'].tolist()) == list(range(40))
    assert (last['weights'] == 1).all()


def test_batches_get_the_samples_the_sampler_chose(runs):
    rec = runs['infobatch']['record']
    by_pass = {
        p['pass_idx']: p['rank_indices'].tolist()
        for p in rec['passes']
    }
    assert len(rec['iters']) == len(rec['batches']) == rec['final_iter'] > 0
    for (it, _, _, pass_idx, pos), batch in zip(rec['iters'], rec['batches']):
        assert batch == by_pass[pass_idx][pos * 4:(pos + 1) * 4]


@pytest.mark.skipif(
    not can_load_mmengine_checkpoints_safely(),
    reason='torch < 2.4 has no safe-load allow-list '
    '(torch.serialization.add_safe_globals) for mmengine checkpoints')
def test_checkpoint_state_loads_with_weights_only(runs):
    ib = runs['infobatch']
    ckpt_file = ib['work_dir'] / f"iter_{ib['record']['final_iter']}.pth"
    ckpt = torch.load(ckpt_file, map_location='cpu', weights_only=True)
    state = ckpt['infobatch']
    assert state['sampler']['scores'].shape == (40, )
    assert sample_tables(state['sampler'])['seen'].all()
    history = state['history']
    assert history['pass'].tolist() == [0, 1, 2, 3]
    assert history['pruning'].tolist() == [True, True, True, False]
    assert torch.equal(state['sampler']['scores'],
                       ib['record']['final_scores'])
    saved = 40 - ib['record']['final_iter']
    assert saved == int((10 - history['iters']).sum())
    assert state['progress'] == dict(budget_iters=40, offset=0)


def test_every_wrapped_loss_gets_the_pass_weights_of_its_batch(runs):
    rec = runs['infobatch']['record']
    weights = {p['pass_idx']: p['weights'] for p in rec['passes']}
    rescaled = 0
    for row, batch, per_loss in zip(rec['iters'], rec['batches'],
                                    rec['loss_weights']):
        expected = weights[row[3]][batch]
        assert len(per_loss) == 2  # decode and auxiliary heads
        for got in per_loss:
            assert torch.equal(got, expected)
        rescaled += int((expected == 2).sum())
    assert rescaled > 0  # pruned passes did hand 1 / (1 - r) to the losses


def test_log_reports_each_pass(runs):
    log_files = list(runs['infobatch']['work_dir'].glob('*/*.log'))
    text = log_files[0].read_text()
    for t in range(4):
        assert f'InfoBatch pass {t} ' in text
    assert 'InfoBatch finished' in text


def test_no_rescale_no_anneal_switches(digit_root, tmp_path):
    cfg = demo_config(
        tmp_path,
        digit_root,
        passes=3,
        delta=0.5,
        train_dataloader=dict(sampler=dict(rescale=False)))
    cfg.custom_hooks[0]['anneal'] = False
    run_config(cfg)
    passes = load_record(tmp_path)['passes']
    assert all((p['weights'] == 1).all() for p in passes)
    # delta * C = 1.5 would anneal pass 2; anneal=False prunes it.
    assert [p['prunes'] for p in passes] == [True, True, True]
    assert passes[2]['padded_order'].numel() < 40


def test_epoch_based_loop_prunes_each_epoch(digit_root, tmp_path):
    cfg = demo_config(tmp_path, digit_root, passes=3)
    cfg.train_cfg = dict(
        type='EpochBasedTrainLoop', max_epochs=3, val_interval=10)
    cfg.param_scheduler = [
        dict(
            type='PolyLR',
            eta_min=1e-4,
            by_epoch=True,
            begin=0,
            end=3,
            convert_to_iter_based=True)
    ]
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', by_epoch=True, interval=3)
    cfg.log_processor = dict(by_epoch=True)
    runner = run_config(cfg)
    record = load_record(tmp_path)
    passes = record['passes']
    assert [p['pass_idx'] for p in passes] == [0, 1, 2]
    assert passes[0]['padded_order'].numel() == 40
    assert all(p['padded_order'].numel() < 40 for p in passes[1:])
    assert runner.epoch == 3 and record['final_iter'] < 30
    # The iteration-based LR reaches eta_min with the epochs, not later.
    assert record['final_lr'] == pytest.approx(1e-4, rel=1e-3)


def test_analysis_tool_plots_a_finished_run(runs, tmp_path):
    import sys
    sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
    import analyze_infobatch
    analyze_infobatch.main([
        str(runs['infobatch']['work_dir']), '--compare',
        str(runs['full']['work_dir']), '--out',
        str(tmp_path)
    ])
    made = {p.name for p in tmp_path.glob('*.png')}
    assert {'pruning.png', 'scores.png', 'lr_progress.png'} <= made
    assert all(p.stat().st_size > 5000 for p in tmp_path.glob('*.png'))
