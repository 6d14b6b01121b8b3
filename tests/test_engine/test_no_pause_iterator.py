"""NoPauseDataloaderIterator and NoPauseIterBasedTrainLoop, in process and
without training: the passes, set_epoch, the pause, and the pass the stock
loop already started."""
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from mmseg_infobatch.engine import no_pause_loop as loops


class EpochSampler(torch.utils.data.Sampler):
    """A sampler over ``n`` items that records set_epoch and each pass it
    starts (its ``__iter__``)."""

    def __init__(self, n):
        self.n = n
        self.epochs = []
        self.passes = 0

    def set_epoch(self, epoch):
        self.epochs.append(epoch)

    def __iter__(self):
        self.passes += 1
        return iter(range(self.n))

    def __len__(self):
        return self.n


@pytest.fixture
def sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr(loops.time, 'sleep', slept.append)
    return slept


def test_set_epoch_reaches_a_batch_samplers_sampler(sleeps):
    """Like mmengine's iterator: where the loader's sampler has no
    set_epoch (a batch sampler's loader), its batch sampler's has."""
    sampler = EpochSampler(3)
    batches = torch.utils.data.BatchSampler(sampler, 2, drop_last=False)
    loader = DataLoader(list(range(10, 13)), batch_sampler=batches)
    iterator = loops.NoPauseDataloaderIterator(loader)
    items = [next(iterator).tolist() for _ in range(5)]
    assert items == [[10, 11], [12], [10, 11], [12], [10, 11]]
    assert sampler.epochs == [1, 2]
    assert iter(iterator) is iterator
    assert sleeps == []


def test_set_epoch_reaches_the_sampler_of_an_unbatched_loader(sleeps):
    """A loader without automatic batching has no batch sampler: its
    sampler is told each new pass."""
    sampler = EpochSampler(2)
    loader = DataLoader([10, 11], batch_size=None, sampler=sampler)
    assert loader.batch_sampler is None
    iterator = loops.NoPauseDataloaderIterator(loader)
    assert [next(iterator) for _ in range(5)] == [10, 11, 10, 11, 10]
    assert sampler.epochs == [1, 2]


def test_a_loader_without_sampler_or_workers_restarts_at_once(sleeps):
    iterator = loops.NoPauseDataloaderIterator([1, 2])
    assert [next(iterator) for _ in range(5)] == [1, 2, 1, 2, 1]
    assert sleeps == []


class CountingLoader(DataLoader):
    """A DataLoader that counts the passes started on it."""

    starts = 0

    def __iter__(self):
        self.starts += 1
        return super().__iter__()


class WorkerLoader(list):
    """A loader of the given items whose passes run in worker
    processes."""

    num_workers = 1


def test_a_single_worker_process_keeps_mmengines_two_second_pause(sleeps):
    iterator = loops.NoPauseDataloaderIterator(WorkerLoader([0, 1]))
    items = [next(iterator) for _ in range(5)]
    assert items == [0, 1, 0, 1, 0]
    assert sleeps == [2, 2]


def test_a_started_first_pass_is_continued_not_restarted(sleeps):
    sampler = EpochSampler(3)
    loader = CountingLoader(list(range(3)), sampler=sampler)
    first_pass = iter(loader)
    assert next(first_pass).item() == 0
    iterator = loops.NoPauseDataloaderIterator(loader, first_pass)
    assert loader.starts == 1
    items = [next(iterator).item() for _ in range(4)]
    assert items == [1, 2, 0, 1]
    assert loader.starts == sampler.passes == 2
    assert sampler.epochs == [1]


def test_the_loop_takes_over_the_pass_the_stock_loop_started(sleeps):
    """Building the loop runs the sampler's ``__iter__`` once (the stock
    iterator's pass, continued), so it draws nothing more from the global
    RNG before the model's weights are initialised."""
    sampler = EpochSampler(3)
    loader = CountingLoader(list(range(3)), sampler=sampler)
    runner = SimpleNamespace(visualizer=SimpleNamespace())
    loop = loops.NoPauseIterBasedTrainLoop(
        runner, loader, max_iters=7, val_interval=5)
    assert loader.starts == 1
    assert isinstance(loop.dataloader_iterator,
                      loops.NoPauseDataloaderIterator)
    assert loop.max_iters == 7 and loop.val_interval == 5
    items = [next(loop.dataloader_iterator).item() for _ in range(7)]
    assert items == [0, 1, 2, 0, 1, 2, 0]
    assert loader.starts == sampler.passes == 3
    assert sampler.epochs == [1, 2]
    assert sleeps == []
