"""InfoBatchSampler: soft-prunes each pass over the data from loss scores."""
import math
from typing import Iterator, Optional, Sequence, Sized

import numpy as np
import torch
from mmengine.dist import get_dist_info, sync_random_seed
from mmengine.logging import print_log
from mmseg.registry import DATA_SAMPLERS
from torch.utils.data import Sampler

from .pruning import (decide_pass, pad_to_multiple, rank_share,
                      validate_policy)


@DATA_SAMPLERS.register_module()
class InfoBatchSampler(Sampler):
    """A finite, per-pass sampler that prunes well-learned samples.

    Each ``__iter__`` is one pass over the dataset. At the start of pass t
    the sampler soft-prunes from the score table: a sample scored below the
    mean is dropped with probability ``ratio``, and the survivors below the
    mean get loss weight ``1 / (1 - ratio)``. Samples never scored are never
    pruned, so the first pass is full. ``InfoBatchHook`` fills the scores,
    routes the weights to ``InfoBatchLoss`` and ends pruning for annealing.

    The pass number is counted here, not taken from ``set_epoch``: mmengine's
    infinite iterator restarts its epoch count after a resume.

    Args:
        dataset (Sized): The dataset.
        shuffle (bool): Whether to shuffle each pass. Defaults to True.
        seed (int, optional): Seed shared by all ranks. If None, a synced
            random seed is used. Defaults to None.
        ratio (float): Prune probability r for the 'mean' and 'random'
            policies, in [0, 1). Defaults to 0.5.
        policy (str): 'mean' (paper: prune below the mean score),
            'quantile' (buckets of cut points, each with its own ratio) or
            'random' (Random*: drop any sample with probability r).
            Defaults to 'mean'.
        prune_high (bool): Prune high-score samples instead of low ones
            (paper Tab. 4). Defaults to False.
        buckets (Sequence[tuple], optional): For ``policy='quantile'``,
            increasing ``(quantile, ratio)`` pairs, e.g.
            ``[(0.3, 0.8), (0.7, 0.4)]``: the lowest 30% of scores are pruned
            with probability 0.8, the next 40% with 0.4. Defaults to None.
        rescale (bool): Give survivors weight ``1 / (1 - r)``. False is the
            paper's "no rescaling" ablation. Defaults to True.
    """

    def __init__(self,
                 dataset: Sized,
                 shuffle: bool = True,
                 seed: Optional[int] = None,
                 ratio: float = 0.5,
                 policy: str = 'mean',
                 prune_high: bool = False,
                 buckets: Optional[Sequence[Sequence[float]]] = None,
                 rescale: bool = True) -> None:
        validate_policy(policy, ratio, buckets)
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.ratio = float(ratio)
        self.policy = policy
        self.prune_high = prune_high
        self.buckets = [tuple(b) for b in buckets] if buckets else None
        self.rescale = rescale
        self.rank, self.world_size = get_dist_info()

        self.num_samples = len(dataset)
        if self.num_samples == 0:
            raise ValueError('InfoBatchSampler got an empty dataset: check '
                             'the data_root and ann_file of train_dataloader')
        self.scores = torch.zeros(self.num_samples, dtype=torch.float32)
        self.seen = torch.zeros(self.num_samples, dtype=torch.bool)
        self.weights = torch.ones(self.num_samples, dtype=torch.float32)
        # Passes t >= prune_stop are full (annealing). The hook sets both.
        self.prune_stop = math.inf
        self.batch_size = 1
        self.hook_attached = False
        self.epoch = 0
        self.pass_idx = -1
        self.pass_indices: Optional[torch.Tensor] = None  # padded, all ranks
        self.pass_stats = dict(threshold=math.nan, candidates=0, pruned=0)
        self._replay_filler = 0

    # -- mmengine sampler interface ------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Store the epoch; the pass number is counted by ``__iter__``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self._replay_filler:
            # Resume: mmengine advances the dataloader by the iterations
            # already run. Feed it filler first so that it lands at the
            # saved offset of the saved pass, instead of re-deciding the
            # past passes from today's scores.
            if self.pass_indices is None:
                self._start_next_pass()
            share = self.rank_indices()
            filler = share.repeat(math.ceil(self._replay_filler /
                                            share.numel()))
            share = torch.cat([filler[:self._replay_filler], share])
            self._replay_filler = 0
            return iter(share.tolist())
        self._start_next_pass()
        return iter(self.rank_indices().tolist())

    def __len__(self) -> int:
        """Per-rank length of the current pass (a full pass before any)."""
        if self.pass_indices is None:
            return math.ceil(self.num_samples / self.world_size)
        return self.pass_indices.numel() // self.world_size

    # -- the pass --------------------------------------------------------
    @property
    def prunes_now(self) -> bool:
        """Whether the current pass was allowed to prune (before annealing)."""
        return self.pass_idx < self.prune_stop

    def _start_next_pass(self) -> None:
        if self.pass_idx >= 0 and not self.hook_attached:
            raise RuntimeError(
                'InfoBatchSampler has no InfoBatchHook, so it has no scores '
                'to prune from. Add it to the config: custom_hooks = '
                "[dict(type='InfoBatchHook')]")
        self.pass_idx += 1
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.pass_idx)
        decision = decide_pass(
            self.scores,
            self.seen,
            self.ratio,
            generator,
            prune=self.prunes_now,
            policy=self.policy,
            prune_high=self.prune_high,
            buckets=self.buckets,
            rescale=self.rescale,
            shuffle=self.shuffle)
        # Fresh weights every pass: nothing leaks into annealing passes.
        self.weights = decision.weights
        # A pruned pass has a random length: pad it to full batches, as
        # mmseg's InfiniteSampler always gives, since a last batch of one
        # image breaks BatchNorm. A full pass is padded like DefaultSampler.
        multiple = self.world_size * (
            self.batch_size if decision.num_pruned else 1)
        self.pass_indices = pad_to_multiple(decision.indices, multiple)
        self.pass_stats = dict(
            threshold=decision.threshold,
            candidates=decision.num_candidates,
            pruned=decision.num_pruned)

    def rank_indices(self) -> torch.Tensor:
        """This rank's indices of the current pass, in training order."""
        assert self.pass_indices is not None, 'no pass has started yet'
        share = rank_share(self.pass_indices, self.rank, self.world_size)
        assert share.numel() * self.world_size == self.pass_indices.numel()
        return share

    def batch_indices(self, position: int, batch_size: int) -> torch.Tensor:
        """Sample indices of this rank's ``position``-th batch of the pass."""
        share = self.rank_indices()
        return share[position * batch_size:(position + 1) * batch_size]

    def prepare_replay(self, num_filler: int) -> None:
        """Prefix the next ``__iter__`` with ``num_filler`` filler samples."""
        self._replay_filler = int(num_filler)

    def update_scores(self, indices: torch.Tensor,
                      scores: torch.Tensor) -> int:
        """Write trained samples' scores; skip non-finite ones.

        Returns:
            int: How many non-finite scores were skipped.
        """
        # numpy views of the tables: a batch's few values cost microseconds
        # there, against tens per torch op.
        index, value = indices.numpy(), scores.numpy()
        finite = np.isfinite(value)
        if not finite.all():
            index, value = index[finite], value[finite]
        self.scores.numpy()[index] = value
        self.seen.numpy()[index] = True
        return int(finite.size - index.size)

    # -- checkpoint ------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain tensors and ints, loadable with ``weights_only=True``."""
        return dict(
            num_samples=self.num_samples,
            world_size=self.world_size,
            seed=self.seed,
            pass_idx=self.pass_idx,
            scores=self.scores.clone(),
            seen=self.seen.clone(),
            weights=self.weights.clone(),
            pass_indices=(None if self.pass_indices is None else
                          self.pass_indices.clone()),
            pass_stats=dict(self.pass_stats))

    def load_state_dict(self, state: dict) -> None:
        if state['num_samples'] != self.num_samples:
            raise ValueError(
                'The checkpoint holds InfoBatch state for a dataset of '
                f"{state['num_samples']} samples, but the train dataset has "
                f'{self.num_samples}. Resume with the same dataset, or start '
                'a fresh run with load_from=CHECKPOINT instead of --resume.')
        if state['world_size'] != self.world_size:
            raise ValueError(
                'The checkpoint holds InfoBatch state saved with world size '
                f"{state['world_size']}, but this run has {self.world_size}. "
                'Resume on the same number of processes: the saved pass is '
                'split per rank.')
        if state['seed'] != self.seed:
            print_log(
                f"InfoBatchSampler seed {self.seed} differs from the "
                f"checkpoint's {state['seed']}; the checkpoint's is used.",
                logger='current',
                level='WARNING')
        self.seed = state['seed']
        self.pass_idx = state['pass_idx']
        self.scores = state['scores'].clone().float()
        self.seen = state['seen'].clone().bool()
        self.weights = state['weights'].clone().float()
        self.pass_indices = state['pass_indices']
        self.pass_stats = dict(state['pass_stats'])
