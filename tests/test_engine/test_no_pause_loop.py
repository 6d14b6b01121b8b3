"""NoPauseIterBasedTrainLoop: the stock loop's passes, without the pause."""
import pytest
import torch
from helpers.configs import demo_config, load_record, run_config

from mmseg_infobatch.engine import no_pause_loop as loops


class PassLoader:
    """A finite loader of ``length`` items per pass, with a set_epoch
    sampler, like a DataLoader over InfoBatchSampler."""

    class Sampler:

        def __init__(self):
            self.epochs = []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

    def __init__(self, length, num_workers=0):
        self.length = length
        self.num_workers = num_workers
        self.sampler = self.Sampler()

    def __iter__(self):
        pass_idx = len(self.sampler.epochs)
        return iter([(pass_idx, i) for i in range(self.length)])


def test_iterator_restarts_passes_and_sets_epoch(monkeypatch):
    sleeps = []
    monkeypatch.setattr(loops.time, 'sleep', sleeps.append)
    loader = PassLoader(3)
    iterator = loops.NoPauseDataloaderIterator(loader)
    items = [next(iterator) for _ in range(8)]
    assert items == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0),
                     (2, 1)]
    assert loader.sampler.epochs == [1, 2]
    assert sleeps == []


def test_iterator_keeps_mmengine_pause_with_workers(monkeypatch):
    sleeps = []
    monkeypatch.setattr(loops.time, 'sleep', sleeps.append)
    iterator = loops.NoPauseDataloaderIterator(PassLoader(2, num_workers=2))
    [next(iterator) for _ in range(5)]
    assert sleeps == [2, 2]


@pytest.mark.parametrize('workers', [0, 2])
def test_same_training_as_the_stock_loop(workers, digit_root, tmp_path):
    """Only the pause differs: every batch, weight, score and LR match, with
    and without (persistent) worker processes, which start a pass at once."""
    records = {}
    for loop in ('IterBasedTrainLoop', 'NoPauseIterBasedTrainLoop'):
        work_dir = tmp_path / loop
        cfg = demo_config(work_dir, digit_root, passes=3, loop=loop)
        if workers:
            cfg.train_dataloader.update(
                num_workers=workers, persistent_workers=True)
        runner = run_config(cfg)
        assert type(runner.train_loop).__name__ == loop
        records[loop] = load_record(work_dir)
    stock, no_pause = records.values()
    assert stock['batches'] == no_pause['batches']
    assert stock['iters'] == no_pause['iters']
    assert torch.equal(stock['final_scores'], no_pause['final_scores'])
    for a, b in zip(stock['passes'], no_pause['passes']):
        assert torch.equal(a['padded_order'], b['padded_order'])
        assert torch.equal(a['weights'], b['weights'])
