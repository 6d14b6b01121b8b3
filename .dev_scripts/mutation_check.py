#!/usr/bin/env python
"""Mutation check: do the tests catch plausible bugs in InfoBatch's rules?

Each mutant below is one small, named edit of ``mmseg_infobatch`` that
breaks one rule of the algorithm (docs: DESIGN section 2; the reliability
page lists them). For each, the package is copied to a temporary folder,
the edit is applied to the copy, and a fast test subset runs with the copy
first on ``PYTHONPATH``, where it shadows the editable install. A mutant is
killed when a test fails. Before that, the check proves the shadowing (a
deliberately broken copy must make the subset fail) and that the subset
passes on an unmodified copy.

The last line printed is ``mutation score: K/N killed (P%)``. Mutants
argued to be equivalent (no test can tell them from the original; each
says why) are run too but left out of N. The exit status is non-zero when
the score is below 95%, when a mutant's snippet is not found exactly once
(the list must follow the code), or when the baseline fails.

Example::

    .venv/bin/python .dev_scripts/mutation_check.py            # all, one job
    .venv/bin/python .dev_scripts/mutation_check.py --list
    .venv/bin/python .dev_scripts/mutation_check.py --only rank_contiguous \
        --jobs 2
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'mmseg_infobatch'
MIN_SCORE = 0.95
TIMEOUT_S = 600  # a mutant that hangs the subset counts as killed

# Unit-level tests (no runner training), one 2-process probe of the
# sampler's seed (test_rank_seed.py, about 20 s of it) and one import in a
# subprocess (test_guards.py): together they kill every non-equivalent
# mutant below.
# The rank check's unit tests, without the file's two-node training run.
RANK_CHECK_TESTS = [
    'tests/test_distributed/test_rank_consistency.py::'
    'test_rank_check_compares_the_weight_table',
    'tests/test_distributed/test_rank_consistency.py::'
    'test_rank_check_compares_each_samples_weight_code',
    'tests/test_distributed/test_rank_consistency.py::'
    'test_the_rank_check_runs_at_every_pass_start',
]
FAST_TESTS = [
    'tests/test_sampler/test_infobatch_sampler.py',
    'tests/test_pruning/test_decide_pass.py',
    'tests/test_pruning/test_streamed_decision.py',
    'tests/test_pruning/test_random_draws.py',
    'tests/test_hook/test_progress.py',
    'tests/test_hook/test_hook_methods.py',
    'tests/test_hook/test_gather.py',
    'tests/test_loss/test_infobatch_loss.py',
    'tests/test_loss/test_loss_families.py',
    'tests/test_rules/test_rules.py',
    'tests/test_distributed/test_rank_seed.py',
    'tests/test_pruning/test_target.py',
    'tests/test_sampler/test_target_saving.py',
    'tests/test_hook/test_guards.py',
    'tests/test_config/test_add_infobatch.py',
    'tests/test_sampler/test_memory_layout.py',
    'tests/test_engine/test_safe_checkpoint.py',
    RANK_CHECK_TESTS[0],
    RANK_CHECK_TESTS[1],
    RANK_CHECK_TESTS[2],
]
# The tests of a mutated file run first: with -x, a killed mutant stops at
# its first failure, so most of them cost little more than start-up.
# yapf: disable
FIRST_FOR = {
    'sampler/decision.py': ['tests/test_pruning/test_decide_pass.py',
                            'tests/test_rules/test_rules.py'],
    'sampler/prune_rule.py': ['tests/test_pruning/test_decide_pass.py',
                              'tests/test_rules/test_rules.py',
                              'tests/test_pruning/test_target.py'],
    'sampler/random_draws.py': ['tests/test_pruning/test_random_draws.py',
                                'tests/test_pruning/test_decide_pass.py',
                                'tests/test_rules/test_rules.py'],
    'sampler/layout.py': ['tests/test_pruning/test_decide_pass.py',
                          'tests/test_sampler/test_infobatch_sampler.py'],
    'sampler/run_plan.py': ['tests/test_hook/test_progress.py',
                            'tests/test_pruning/test_target.py'],
    'sampler/served_pass.py': [
        'tests/test_sampler/test_infobatch_sampler.py'],
    'sampler/target.py': ['tests/test_pruning/test_target.py'],
    'sampler/state.py': ['tests/test_hook/test_guards.py',
                         'tests/test_sampler/test_infobatch_sampler.py',
                         'tests/test_sampler/test_target_saving.py'],
    'hook/infobatch_hook.py': ['tests/test_hook/test_hook_methods.py',
                               'tests/test_hook/test_gather.py',
                               'tests/test_rules/test_rules.py'],
    'hook/checks.py': ['tests/test_hook/test_guards.py'],
    'hook/report.py': ['tests/test_hook/test_guards.py'],
    'hook/consistency.py': RANK_CHECK_TESTS,
    'engine/compat.py': ['tests/test_rules/test_rules.py',
                         'tests/test_hook/test_hook_methods.py'],
    'engine/resumable_fsdp_strategy.py': ['tests/test_hook/test_guards.py'],
    'loss/infobatch_loss.py': ['tests/test_loss/test_infobatch_loss.py',
                               'tests/test_loss/test_loss_families.py',
                               'tests/test_rules/test_rules.py'],
    'loss/loss_kinds.py': ['tests/test_loss/test_loss_families.py',
                           'tests/test_loss/test_infobatch_loss.py'],
    'config.py': ['tests/test_config/test_add_infobatch.py'],
}
# yapf: enable


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``original`` (found exactly once in ``file``)
    becomes ``replacement``; ``rule`` is what it breaks. ``equivalent``
    says why no test can tell it from the original, for those argued to be
    equivalent."""
    name: str
    file: str
    original: str
    replacement: str
    rule: str
    equivalent: str = ''


M = Mutant
# One row per mutant, kept as a table (the snippets are exact source).
# yapf: disable
MUTANTS = [
    # -- threshold and its side (sampler/prune_rule.py)
    M('threshold_le', 'sampler/prune_rule.py',
      'values > bound if prune_high else values < bound',
      'values > bound if prune_high else values <= bound',
      'threshold: strictly below the mean (ties kept)'),
    M('threshold_side_flipped', 'sampler/prune_rule.py',
      'values > bound if prune_high else values < bound',
      'values < bound if prune_high else values > bound',
      'threshold side: low scores pruned'),
    M('threshold_rounded_to_float32', 'sampler/prune_rule.py',
      'bound = float32_bound(self.threshold, prune_high)',
      'bound = np.float32(self.threshold)',
      "threshold: compared in float64, not rounded to the scores' float32"),
    M('threshold_bound_high_side_rounded', 'sampler/prune_rule.py',
      'if float(bound) > threshold if prune_high else',
      'if False if prune_high else',
      'threshold: compared in float64 under numpy 1.x and 2.x'),
    M('threshold_median', 'sampler/prune_rule.py',
      'return float(total / num_seen)',
      'return float(np.median(np.concatenate([values[a:b][seen.chunk(a, b)]'
      ' for a, b in chunks(values.size)])))',
      'threshold is the mean'),
    M('threshold_counts_unscored', 'sampler/prune_rule.py',
      'part, dtype=np.float64, where=mask, initial=total)',
      'part, dtype=np.float64, initial=total)',
      'threshold: mean of scored samples only'),
    M('threshold_float32_sum', 'sampler/prune_rule.py',
      'total = np.add.reduce(part, dtype=np.float64, initial=total)',
      'total = np.add.reduce(part, dtype=np.float32, initial=total)',
      'threshold: float64 mean'),
    M('threshold_float32_masked_sum', 'sampler/prune_rule.py',
      'part, dtype=np.float64, where=mask, initial=total)',
      'part, dtype=np.float32, where=mask, initial=total)',
      'threshold: float64 mean'),
    M('unscored_are_candidates', 'sampler/prune_rule.py',
      '    if not all_seen:\n        candidates &= seen_np\n', '',
      'unscored samples never pruned'),
    M('quantile_unscored_bucketed', 'sampler/prune_rule.py',
      '        bucket[~seen.chunk(start, stop)] = cuts.size\n',
      '        pass\n',
      'unscored samples never pruned (quantile)'),
    # -- the one rule: its profile and its threshold at ratio 0 ----------
    M('profile_counts_non_candidates', 'sampler/prune_rule.py',
      'counts = self.counts[1:]',
      'counts = self.counts',
      'one rule: the profile counts the candidates only'),
    M('profile_quantile_not_relative', 'sampler/prune_rule.py',
      'first = float(np.dot(counts, probs)) / top',
      'first = float(np.dot(counts, probs))',
      'one rule: quantile profile in units of the largest ratio'),
    M('threshold_kept_at_ratio_zero', 'sampler/prune_rule.py',
      "if self.policy != 'quantile' and ratio == 0:",
      'if False:',
      'ratio 0: no candidate and no threshold'),
    M('quantile_count_in_floats', 'sampler/prune_rule.py',
      'math.ceil(Fraction(str(float(q))) * num_seen)',
      'math.ceil(q * num_seen)',
      'threshold: quantile of q as written'),
    M('quantile_cuts_count_unscored', 'sampler/prune_rule.py',
      '            part = part[seen.chunk(start, stop)]\n',
      '            pass\n',
      'threshold: quantile cuts of scored only'),
    M('initial_scores_count_as_seen', 'sampler/infobatch_sampler.py',
      'self.seen_bits = torch.zeros(\n'
      '            packed_size(self.num_samples), dtype=torch.uint8)',
      'self.seen_bits = torch.full(\n'
      '            (packed_size(self.num_samples), ), 255, dtype=torch.uint8)',
      'initial scores are not scores'),
    # -- probability and weight ----------------------------------------
    M('prob_is_keep_prob', 'sampler/decision.py',
      'keep = ~bernoulli(stop - start, probs[1], generator)',
      'keep = ~bernoulli(stop - start, 1 - probs[1], generator)',
      'probability: drop with probability r'),
    M('weight_one_over_r', 'sampler/decision.py',
      'scale = 1.0 / (1.0 - ratio) if rescale else 1.0',
      'scale = 1.0 / ratio if rescale else 1.0',
      'weight: 1/(1-r)'),
    M('rescale_flag_ignored', 'sampler/decision.py',
      'scale = 1.0 / (1.0 - ratio) if rescale else 1.0',
      'scale = 1.0 / (1.0 - ratio)',
      'weight: rescale=False gives 1'),
    M('weight_on_pruned_candidates', 'sampler/decision.py',
      'code[~survivors] = 0',
      'code[~candidates] = 0',
      'weight: survivors only, others 1'),
    M('quantile_weight_global_ratio', 'sampler/decision.py',
      'table[1:] = (1.0 / (1.0 - torch.from_numpy(probs[1:]))).numpy()',
      'table[1:] = 1.0 / (1.0 - ratio)',
      'weight: 1/(1-p) of its bucket'),
    # -- annealing boundary and weight reset ---------------------------
    M('prune_flag_ignored', 'sampler/decision.py',
      '    if not prune:\n', '    if False:\n',
      'annealing: full pass, weights 1'),
    M('anneal_boundary_le', 'sampler/infobatch_sampler.py',
      'return self.pass_idx < self.prune_stop',
      'return self.pass_idx <= self.prune_stop',
      'annealing: t < delta*C (whole-number stop)'),
    M('prune_stop_truncated', 'sampler/run_plan.py',
      'return self.delta * self.num_passes - \\\n',
      'return int(self.delta * self.num_passes) - \\\n',
      'annealing: delta*C not rounded'),
    M('num_passes_floor', 'sampler/run_plan.py',
      'return self.budget_iters / self.full_pass_batches',
      'return self.budget_iters // self.full_pass_batches',
      'annealing: C may be fractional'),
    M('weights_kept_in_annealing', 'sampler/served_pass.py',
      '        self.weight_codes, self.weight_table = codes, table\n',
      '        if self.prunes_now:\n'
      '            self.weight_codes, self.weight_table = codes, table\n',
      'weight reset in annealing'),
    M('anneal_flag_ignored', 'hook/infobatch_hook.py',
      'self.delta if self.anneal else None)',
      'self.delta)',
      'annealing: anneal=False prunes always'),
    # -- score update and skip rules -----------------------------------
    M('nonfinite_overwrites_score', 'sampler/infobatch_sampler.py',
      '        if not finite.all():\n'
      '            index, value = index[finite], value[finite]\n'
      '        self.scores.numpy()[index] = value\n',
      '        self.scores.numpy()[index] = value\n'
      '        if not finite.all():\n'
      '            index, value = index[finite], value[finite]\n',
      'score: non-finite loss skipped'),
    M('nonfinite_marked_seen', 'sampler/infobatch_sampler.py',
      'set_bits(self.seen_bits.numpy(), index)',
      'set_bits(self.seen_bits.numpy(), indices.numpy())',
      'score: non-finite loss skipped'),
    M('score_to_wrong_sample', 'sampler/infobatch_sampler.py',
      'self.scores.numpy()[index] = value',
      'self.scores.numpy()[np.sort(index)] = value',
      'score: each to its own sample'),
    M('pruned_scores_reset', 'sampler/infobatch_sampler.py',
      '            pruned -= refill.numel()\n',
      '            pruned -= refill.numel()\n'
      '        stale = torch.ones(self.num_samples, dtype=torch.bool)\n'
      '        stale[buffer[:kept]] = False\n'
      '        self.scores[stale] = self.scores[~stale].mean()\n',
      'score: pruned samples untouched'),
    M('score_last_term_only', 'hook/infobatch_hook.py',
      'scores = term if scores is None else scores + term',
      'scores = term',
      'score: sum over wrapped loss terms'),
    # -- per-image score and rescale, reduction (loss/infobatch_loss.py)
    M('per_image_default_ignore_index', 'loss/infobatch_loss.py',
      "        ignore_index = kwargs.get('ignore_index', self._ignore_index)\n"
      '        scores = losses.detach().float()\n',
      '        ignore_index = self._ignore_index\n'
      '        scores = losses.detach().float()\n',
      "score: the head's ignore_index"),
    M('pixel_weight_in_scores', 'loss/infobatch_loss.py',
      "        kwargs['reduction_override'] = 'none'\n"
      "        ignore_index = kwargs.get('ignore_index', self._ignore_index)\n"
      '        num_images',
      "        kwargs['reduction_override'] = 'none'\n"
      "        kwargs['weight'] = weight\n"
      "        ignore_index = kwargs.get('ignore_index', self._ignore_index)\n"
      '        num_images',
      'score: pixel weights left out (two calls)'),
    M('pixel_weight_in_scores_one_call', 'loss/infobatch_loss.py',
      "        kwargs['reduction_override'] = 'none'\n"
      '        values = self._unit_loss(',
      "        kwargs['reduction_override'] = 'none'\n"
      "        kwargs['weight'] = weight\n"
      '        values = self._unit_loss(',
      'score: pixel weights left out (one call)'),
    M('score_over_all_pixels', 'loss/infobatch_loss.py',
      '    return total / count  #',
      '    return values.flatten(1).mean(1)  #',
      'score: mean over valid pixels'),
    M('empty_image_scores_zero', 'loss/infobatch_loss.py',
      '    return total / count  #',
      '    return total / count.clamp(min=1)  #',
      'score: no valid pixel keeps old'),
    # -- the one-call reduction (loss/infobatch_loss.py, loss_kinds.py)
    M('one_call_weighted_scores', 'loss/infobatch_loss.py',
      '_valid_mean(values, target, ignore_index))',
      '_valid_mean(values * weights.to(values).view(\n'
      '            (-1, ) + (1, ) * (values.dim() - 1)), target, '
      'ignore_index))',
      'score: unweighted by the image weights'),
    M('one_call_weights_twice', 'loss/infobatch_loss.py',
      '        return loss_weight * weight_reduce_loss(\n'
      '            values,',
      '        return loss_weight * weight_reduce_loss(\n'
      '            values * image_weight,',
      'rescale: each image weight applied once'),
    M('one_call_loss_weight_twice', 'loss/infobatch_loss.py',
      'values = self._unit_loss(pred, target, **kwargs)',
      'values = self.loss(pred, target, **kwargs)',
      'reduction: loss_weight applied once, after the reduction'),
    M('one_call_avg_factor_dropped', 'loss/infobatch_loss.py',
      'avg_factor=reduction.avg_factor)',
      'avg_factor=None)',
      'reduction: the inner loss\'s divisor'),
    M('divisor_ignores_avg_non_ignore', 'loss/loss_kinds.py',
      '            if loss.avg_non_ignore else 0',
      '            if False else 0',
      'reduction: avg_non_ignore divides by the valid pixels'),
    M('divisor_without_class_weights', 'loss/loss_kinds.py',
      '    if loss.class_weight is None:',
      '    if True:',
      'reduction: class weights enter the divisor'),
    M('sigmoid_divisor_per_pixel', 'loss/loss_kinds.py',
      '            valid = valid.unsqueeze(1).expand(pred.shape)\n',
      '            pass\n',
      'reduction: sigmoid divisor counts classes'),
    M('sigmoid_pixel_weight_one_call', 'loss/loss_kinds.py',
      '    if loss.use_mask or loss.use_sigmoid and weight is not None:',
      '    if loss.use_mask:',
      'reduction: sigmoid folds a pixel weight into its mask'),
    M('per_image_empty_scored', 'loss/infobatch_loss.py',
      "            scores = torch.where(has_valid, scores, float('nan'))\n",
      '', 'score: no valid pixel keeps old'),
    M('rescale_after_reduction', 'loss/infobatch_loss.py',
      'loss = self.loss(pred, target, weight=image_weight, **kwargs)',
      'loss = self.loss(pred, target, weight=weight, **kwargs) * '
      'weights.mean()',
      'rescale per image before reduction'),
    M('pixel_weight_dropped', 'loss/infobatch_loss.py',
      '            image_weight = image_weight * weight\n',
      '            pass\n', 'rescale keeps the pixel weight'),
    M('flat_weights_interleaved', 'loss/infobatch_loss.py',
      'return pixels.expand((-1, ) + pred.shape[2:]).reshape(-1)',
      'return weights.repeat(pred.shape[2:].numel())',
      'rescale: weight of its own image'),
    M('normalised_by_mean_weight', 'loss/infobatch_loss.py',
      'loss = self.loss(pred, target, weight=image_weight, **kwargs)',
      'loss = self.loss(pred, target, weight=image_weight, **kwargs) / '
      'image_weight.mean()',
      'reduction: divisor independent of w'),
    M('per_image_sum', 'loss/infobatch_loss.py',
      'return (losses * weights.to(losses)).mean()',
      'return (losses * weights.to(losses)).sum()',
      'reduction: per-image mode averages'),
    M('per_image_unweighted', 'loss/infobatch_loss.py',
      'return (losses * weights.to(losses)).mean()',
      'return losses.mean()',
      'rescale in per-image mode'),
    # -- rank slicing and padding --------------------------------------
    M('rank_contiguous', 'sampler/layout.py',
      'return padded[rank::world_size]',
      'return padded.chunk(world_size)[rank]',
      'rank slice: interleaved r::world'),
    M('pad_truncates', 'sampler/layout.py',
      'repeats = math.ceil(total / indices.numel())',
      'repeats = total // indices.numel()',
      'padding: repeat the head, drop none'),
    M('pad_to_world_only', 'sampler/served_pass.py',
      'total = plan.global_batch * plan.pass_iters(self.order.numel())',
      'total = self.world_size * -(-self.order.numel() // self.world_size)',
      'padding: whole batches'),
    M('batches_per_pass_floor', 'sampler/run_plan.py',
      'return math.ceil(num_samples / multiple)',
      'return num_samples // multiple',
      'padding: full pass padded up'),
    M('full_pass_ignores_drop_last', 'sampler/run_plan.py',
      '1, self.global_batch,\n'
      '            self.drop_last)',
      '1, self.global_batch,\n'
      '            False)',
      'padding: full pass follows drop_last'),
    M('refill_takes_kept', 'sampler/infobatch_sampler.py',
      '            dropped[buffer[:kept]] = False\n', '',
      'refill: only dropped samples'),
    M('batch_start_unscaled', 'sampler/served_pass.py',
      'start = self.trained_batches * self.batch_size',
      'start = self.trained_batches',
      'batch: the sampler\'s next batch'),
    # -- gather dtypes --------------------------------------------------
    M('gather_indices_float32', 'hook/infobatch_hook.py',
      'indices = torch.cat(all_gather(indices.to(torch.int64)))',
      'indices = torch.cat(all_gather(indices.float())).long()',
      'gather: int64 indices (> 2**24)'),
    M('gather_scores_half', 'hook/infobatch_hook.py',
      'scores = torch.cat(all_gather(scores.float()))',
      'scores = torch.cat(all_gather(scores.half())).float()',
      'gather: float32 scores'),
    M('scores_not_gathered', 'hook/infobatch_hook.py',
      'scores = torch.cat(all_gather(scores.float()))',
      'scores = scores.float().repeat(sampler.world_size)',
      'gather: every rank\'s scores'),
    # -- progress arithmetic and scheduler steps ------------------------
    M('virtual_iter_unscaled', 'sampler/run_plan.py',
      'within = position.trained_batches * full // position.pass_batches',
      'within = position.trained_batches',
      'progress: virtual iterations'),
    M('end_iter_ignores_saving', 'sampler/run_plan.py',
      'return pass_start_iter + pass_batches + remaining - full',
      'return pass_start_iter + remaining',
      'progress: end iteration'),
    M('end_iter_last_pass_floor', 'sampler/run_plan.py',
      'return pass_start_iter + math.ceil(',
      'return pass_start_iter + math.floor(',
      'progress: end inside the last pass'),
    M('end_from_current_iter', 'sampler/run_plan.py',
      'pass_start_iter = now - position.trained_batches',
      'pass_start_iter = now',
      'progress: end from the pass start'),
    M('train_end_not_moved', 'engine/compat.py',
      '    loop._max_iters = max_iters\n', '    pass\n',
      'progress: the loop ends early'),
    M('epoch_budget_in_epochs', 'hook/infobatch_hook.py',
      'loop.max_epochs * sampler.full_pass_batches',
      'loop.max_epochs',
      'progress: epoch budget in iterations'),
    M('scheduler_steps_uncapped', 'sampler/run_plan.py',
      'after = min(self.virtual_iter(done), self.budget_iters)',
      'after = self.virtual_iter(done)',
      'scheduler steps: stop at budget'),
    M('scheduler_steps_off_by_one', 'sampler/run_plan.py',
      'return max(after - before - 1, 0)',
      'return max(after - before, 0)',
      'scheduler steps: beyond mmengine\'s'),
    M('no_extra_scheduler_steps', 'hook/infobatch_hook.py',
      '_step_iter_schedulers(runner.param_schedulers, extra)',
      '_step_iter_schedulers(runner.param_schedulers, 0)',
      'scheduler steps: by data progress'),
    M('adjust_schedule_ignored', 'hook/infobatch_hook.py',
      'if self.adjust_schedule and runner.param_schedulers:',
      'if runner.param_schedulers:',
      'scheduler steps: none if not adjusting'),
    M('accumulation_remainder_stale', 'engine/compat.py',
      '        wrapper._remainder_counts = max_counts % '
      'wrapper._accumulative_counts\n', '',
      'accumulation: last group over its size'),
    M('setup_log_floors_anneal_pass', 'hook/report.py',
      'max(math.ceil(stop), 0) if math.isfinite(stop)',
      'max(int(stop), 0) if math.isfinite(stop)',
      'start-up log: the first annealing pass'),
    M('epoch_schedulers_stepped', 'hook/infobatch_hook.py',
      'if not scheduler.by_epoch:', 'if True:',
      'scheduler steps: iteration-based only'),
    # -- checkpoint state ----------------------------------------------
    M('state_seed_not_restored', 'sampler/infobatch_sampler.py',
      "        self.seed = int(state['seed'])\n", '',
      'checkpoint: seed'),
    M('state_position_not_restored', 'sampler/served_pass.py',
      "        self.trained_batches = int(state['position'])\n", '',
      'checkpoint: position'),
    M('state_scores_not_saved', 'sampler/infobatch_sampler.py',
      'scores=self.scores.clone(),',
      'scores=torch.zeros_like(self.scores),',
      'checkpoint: scores'),
    M('state_seen_not_restored', 'sampler/infobatch_sampler.py',
      "        self.seen_bits = state['seen_bits'].clone()\n", '',
      'checkpoint: seen'),
    M('state_weights_not_restored', 'sampler/served_pass.py',
      "        self.weight_codes = state['weight_codes'].clone()\n"
      "        self.weight_table = state['weight_table'].clone().float()\n",
      '',
      'checkpoint: weights'),
    M('state_history_not_restored', 'hook/infobatch_hook.py',
      "        self.history = history_from_state(state['history'])\n", '',
      'checkpoint: pass history'),
    M('state_offset_not_saved', 'sampler/run_plan.py',
      'offset=self.offset)', 'offset=0)',
      'checkpoint: progress offset'),
    # -- resume offset --------------------------------------------------
    M('replay_ignores_position', 'hook/infobatch_hook.py',
      'sampler.prepare_replay(runner.iter - sampler.trained_batches)',
      'sampler.prepare_replay(runner.iter)',
      'resume: replay filler count'),
    M('replay_filler_in_samples', 'sampler/served_pass.py',
      'filler = self.replay_batches * self.batch_size',
      'filler = self.replay_batches',
      'resume: replay filler count'),
    M('stateless_offset_zero', 'hook/infobatch_hook.py',
      'offset = runner.iter if state is None else',
      'offset = 0 if state is None else',
      'resume: state-less offset'),
    M('prune_stop_ignores_offset', 'sampler/run_plan.py',
      'return self.delta * self.num_passes - \\\n'
      '            self.offset / self.full_pass_batches',
      'return self.delta * self.num_passes',
      'resume: state-less offset in prune_stop'),
    M('load_from_restores_state', 'hook/infobatch_hook.py',
      'state = self._pending_state if resumed_iter > 0 else None',
      'state = self._pending_state',
      'resume: load_from starts InfoBatch fresh'),
    M('offset_from_resume_iter', 'hook/infobatch_hook.py',
      "int(state['progress']['offset'])",
      'runner.iter',
      'resume: offset from the checkpoint'),
    # -- seeding and shuffling -----------------------------------------
    M('same_seed_every_pass', 'sampler/infobatch_sampler.py',
      'generator.manual_seed(self.seed + self.pass_idx)',
      'generator.manual_seed(self.seed)',
      'seeding: seed + pass'),
    M('seed_ignored', 'sampler/infobatch_sampler.py',
      'generator.manual_seed(self.seed + self.pass_idx)',
      'generator.manual_seed(self.pass_idx)',
      'seeding: the sampler\'s seed'),
    M('seed_from_rank_rng', 'sampler/infobatch_sampler.py',
      'self.seed = sync_random_seed() if seed is None else seed',
      'self.seed = int(np.random.randint(2**31)) if seed is None else seed',
      'seeding: one seed on every rank'),
    M('sampler_shuffle_ignored', 'sampler/infobatch_sampler.py',
      'shuffle=self.shuffle,', 'shuffle=True,',
      'shuffling: shuffle=False ascending'),
    M('pass_shuffle_ignored', 'sampler/decision.py',
      '    if shuffle:\n', '    if True:\n',
      'shuffling: shuffle=False ascending'),
    # -- epoch-based resume (the hook, sampler/served_pass.py)
    M('epoch_rerun_serves_whole_pass', 'sampler/served_pass.py',
      'trained = self.trained_batches * self.batch_size',
      'trained = 0',
      'epoch resume: a re-run epoch serves the untrained rest'),
    M('epoch_rerun_not_detected', 'hook/infobatch_hook.py',
      '    return runner.train_loop.epoch == int(saved_epoch)',
      '    return False',
      'epoch resume: an iteration checkpoint re-runs its epoch'),
    M('epoch_checkpoint_taken_as_rerun', 'hook/infobatch_hook.py',
      '    return runner.train_loop.epoch == int(saved_epoch)',
      '    return runner.train_loop.epoch >= int(saved_epoch)',
      'epoch resume: an epoch checkpoint starts the next pass'),
    M('epoch_not_checkpointed', 'hook/infobatch_hook.py',
      '            epoch=runner.train_loop.epoch,\n', '',
      'epoch resume: the checkpoint says which epoch it was in'),
    M('epoch_loop_end_not_moved', 'hook/infobatch_hook.py',
      '        set_train_end(loop, end)\n',
      '        if isinstance(loop, IterBasedTrainLoop):\n'
      '            set_train_end(loop, end)\n',
      'epoch-based max_iters follows the end'),
    M('decision_pending_not_saved', 'sampler/infobatch_sampler.py',
      'if self._decision_pending else None)',
      'if False else None)',
      'a checkpoint before a pass\'s first batch keeps its decision'),
    # -- accumulation at a moved end (engine/compat.py)
    M('open_group_not_rescaled', 'engine/compat.py',
      '            _scale_gradients(wrapper, size_before / size_after)',
      '            pass',
      'accumulation: a group counts 1 / its final size'),
    M('open_group_rescaled_inverted', 'engine/compat.py',
      '            _scale_gradients(wrapper, size_before / size_after)',
      '            _scale_gradients(wrapper, size_after / size_before)',
      'accumulation: a group counts 1 / its final size'),
    # -- target out of reach, the estimate (hook/report.py) -----------------
    M('out_of_reach_not_said', 'hook/report.py',
      '        if most >= target:\n',
      '        if True:\n',
      'target: an unreachable target is said at the start'),
    M('out_of_reach_counts_pass_zero', 'hook/report.py',
      'first = max(sampler.pass_idx + 1, 1)',
      'first = max(sampler.pass_idx + 1, 0)',
      'target: pass 0 has no scores to prune from'),
    M('estimate_not_the_solvers_plan', 'hook/report.py',
      '            saving = record.expected\n',
      '            saving = expected_saving(record.ratio, profile, schedule,'
      ' start, saved, later)\n',
      'estimate: under target_saving, the solver\'s plan'),
    # -- weights handed to the losses ----------------------------------
    M('hook_hands_ones', 'hook/infobatch_hook.py',
      'weights = sampler.weights_of(indices)',
      'weights = torch.ones(indices.numel())',
      'losses get the pass weights'),
    M('weights_not_cleared', 'hook/infobatch_hook.py',
      '            loss.set_batch_weights(None)\n', '',
      'losses unweighted after the iter'),
    # -- target saving: the per-pass ratio (sampler/target.py and the sampler)
    M('target_per_pass_not_per_run', 'sampler/target.py',
      '    weight = plan.pruning_share(pass_idx)\n'
      '    needed = target * plan.budget_iters - saved_iters\n',
      '    weight = 1.0\n'
      '    needed = target * plan.full_pass_batches\n',
      'target: a share of the run, not of each pass'),
    M('target_annealing_counted', 'sampler/run_plan.py',
      '        if math.isfinite(self.prune_stop):\n',
      '        if False:\n',
      'target: annealing passes save nothing'),
    M('target_earlier_saving_ignored', 'sampler/target.py',
      'needed = target * plan.budget_iters - saved_iters',
      'needed = target * plan.budget_iters',
      'target: what earlier passes saved counts'),
    M('target_last_pass_whole', 'sampler/run_plan.py',
      '        return min(max(left / full, 0.0), 1.0)',
      '        return 1.0 if left > 0 else 0.0',
      'target: the last partial pass by its share'),
    M('target_rounding_ignored', 'sampler/target.py',
      '    return plan.full_pass_batches - '
      'expected_pass_iters(plan, mean, var)',
      '    return mean / plan.global_batch',
      'target: whole-batch rounding of a pass'),
    M('target_spread_ignored', 'sampler/target.py',
      '    var = ratio * profile.first - ratio * ratio * profile.second\n',
      '    var = 0.0\n',
      'target: expected iterations over the draw'),
    M('target_cap_not_applied', 'sampler/target.py',
      '    if weight * pass_saving(plan, profile, max_ratio) < needed:',
      '    if False:',
      'target: r_t capped at max_ratio, and said'),
    M('target_solved_from_pass_zero', 'sampler/infobatch_sampler.py',
      'self.pass_idx, self.saved_iters,',
      '0, self.saved_iters,',
      'target: passes left from the current one'),
    M('target_saving_not_accumulated', 'sampler/infobatch_sampler.py',
      '        self.saved_iters += self.pass_saving()\n', '',
      'target: what earlier passes saved counts'),
    M('target_saving_not_checkpointed', 'sampler/infobatch_sampler.py',
      'saved_iters=self.saved_iters,\n',
      'saved_iters=0.0,\n',
      'target: resume continues the account'),
    M('target_quantile_not_scaled', 'sampler/infobatch_sampler.py',
      '            buckets = scale_buckets(self.buckets, solved.ratio)\n',
      '            pass\n',
      'target: quantile buckets scaled together'),
    # -- guards on stock set-ups (hook/checks.py and report.py, sampler/state)
    M('batch_identity_img_path_skipped', 'hook/checks.py',
      "    if 'img_path' in samples[0] and hasattr(dataset, 'get_data_info'):",
      '    if False:',
      'each batch holds the images the sampler chose (stock PackSegInputs)'),
    M('recipe_batch_auto_scale_lr_ignored', 'hook/report.py',
      "    if scale.get('base_batch_size') is not None:",
      '    if False:',
      'start-up log: the recipe\'s total batch of the shipped configs'),
    M('quantile_setup_names_ratio', 'hook/report.py',
      "    if sampler.policy == 'quantile':", '    if False:',
      'start-up log: the buckets decide under policy \'quantile\''),
    M('fingerprint_absolute_paths', 'sampler/state.py',
      "f'{key}={_relative(value, root, prefixes.get(key))}'",
      "f'{key}={value}'",
      'resume: a moved copy of the data is the same data'),
    M('old_fingerprint_compared', 'sampler/state.py',
      "if key == 'fingerprint' and not isinstance(saved[key], dict):",
      'if False:',
      'resume: older checkpoints\' fingerprints of absolute paths'),
    M('fsdp_imported_unguarded', 'engine/resumable_fsdp_strategy.py',
      'if FSDPStrategy is not None:\n'
      '    from torch.distributed.fsdp import FullyShardedDataParallel\n',
      'from torch.distributed.fsdp import FullyShardedDataParallel\n'
      'if FSDPStrategy is not None:\n',
      'import: where mmengine has no FSDPStrategy'),
    # -- adding InfoBatch to a config (config.py) ------------------------
    M('wrap_drops_loss_options', 'config.py',
      "wrapped = dict(type='InfoBatchLoss', loss=copy.deepcopy(term))",
      "wrapped = dict(type='InfoBatchLoss', loss=dict(type=term['type']))",
      'add_infobatch: inner loss options kept exactly'),
    M('per_image_mode_not_set', 'config.py',
      "                wrapped['mode'] = mode\n", '',
      'add_infobatch: per_image where the default mode refuses'),
    M('sampler_seed_dropped', 'config.py',
      'sampler.update({k: old[k] for k in KEPT_SAMPLER_KEYS if k in old})',
      'sampler.update({})',
      'add_infobatch: the train sampler\'s shuffle and seed kept'),
    M('hook_added_again', 'config.py',
      "found = [h for h in hooks if _is_type(h, 'InfoBatchHook')]",
      'found = []',
      'add_infobatch: a second call changes nothing'),
    # -- promises the docs make (an independent set) --------------------
    M('target_nearly_full_pass_last_term', 'sampler/target.py',
      '    high = min(full,\n',
      '    high = min(full - 1,\n',
      "target solver: a nearly full pass's last term"),
    M('target_sum_stops_early', 'sampler/target.py',
      '    for j in range(low, high + 1):\n',
      '    for j in range(low, high):\n',
      'target solver: the sum runs to its last term'),
    M('progress_end_rounded_to_nearest', 'sampler/run_plan.py',
      'return pass_start_iter + math.ceil(',
      'return pass_start_iter + round(',
      'progress end: a partial last pass rounds up'),
    M('progress_end_rounded_down', 'sampler/run_plan.py',
      'return pass_start_iter + math.ceil(',
      'return pass_start_iter + math.floor(',
      'progress end: a partial last pass rounds up'),
    M('saved_before_counts_current_pass', 'sampler/state.py',
      'for r in history if r.pass_idx < pass_idx',
      'for r in history if r.pass_idx <= pass_idx',
      'saving before the current pass, restored from an older checkpoint'),
    M('saved_before_not_restored', 'sampler/state.py',
      "saved_iters=saved_before(history, int(state['pass_idx']), plan))",
      'saved_iters=0.0)',
      'saving before the current pass, restored from an older checkpoint'),
    M('format_2_not_read', 'hook/infobatch_hook.py',
      'READ_FORMATS = (2, 3, 4)',
      'READ_FORMATS = (3, 4)',
      'formats 2 and 3 still resume'),
    M('format_3_not_read', 'hook/infobatch_hook.py',
      'READ_FORMATS = (2, 3, 4)',
      'READ_FORMATS = (2, 4)',
      'formats 2 and 3 still resume'),
    M('rank_check_skips_weight_table', 'hook/consistency.py',
      '        order = _crc32(sampler.served.weight_table, order)\n',
      '',
      'the rank check compares the weight table'),
    M('rank_check_skips_weight_codes', 'hook/consistency.py',
      'order = _crc32(sampler.served.weight_codes, _crc32(sampler.order))',
      'order = _crc32(sampler.order)',
      "the rank check compares each sample's weight code"),
    M('rank_check_only_at_start', 'hook/infobatch_hook.py',
      "        self._check_ranks_agree(runner, f'at the start of pass '\n"
      "                                f'{record.pass_idx}')\n",
      '',
      'the rank check runs at every pass start'),
    M('safe_types_allowed_late', 'hook/infobatch_hook.py',
      '        # checkpoint before calling before_run.\n'
      '        allow_mmengine_checkpoint_types()\n',
      '        # checkpoint before calling before_run.\n',
      'safe-load types allowed before FlexibleRunner loads'),
    M('refill_one_rank_batch', 'sampler/infobatch_sampler.py',
      'short = self.global_batch - kept',
      'short = self.batch_size - kept',
      'refill: a whole batch on every rank'),
    M('refill_with_repeats', 'sampler/infobatch_sampler.py',
      'refill = dropped[torch.randperm(\n'
      '                dropped.numel(), generator=generator)[:short]]',
      'refill = dropped[torch.randint(\n'
      '                dropped.numel(), (short, ), generator=generator)]',
      'refill: distinct samples'),
    M('loss_subclass_served', 'loss/loss_kinds.py',
      "    cls = type(loss)\n"
      "    if cls.__module__.startswith('mmseg.models.losses.'):\n"
      "        return cls.__name__\n",
      "    for cls in type(loss).__mro__:\n"
      "        if cls.__module__.startswith('mmseg.models.losses.'):\n"
      "            return cls.__name__\n",
      'a subclass of an mmseg loss is refused'),
    M('scores_whole_batch_call', 'loss/infobatch_loss.py',
      '                    self.loss(\n'
      '                        pred[i:i + 1].detach(), target[i:i + 1], **{\n'
      '                            k: _image_slice(v, i, num_images)\n'
      '                            for k, v in kwargs.items()\n'
      '                        }), target[i:i + 1], ignore_index)\n'
      '                for i in range(num_images)\n',
      '                    self.loss(pred.detach(), target, **kwargs),\n'
      '                    target, ignore_index)\n'
      '                for i in range(1)\n',
      'the scoring call runs one image at a time'),
    M('estimate_prune_high_below_share', 'hook/report.py',
      '        if sampler.prune_high:\n            share = 1.0 - share\n',
      '',
      'pre-flight estimate under prune_high'),
    M('report_no_adjust_drops_pass_saving', 'hook/infobatch_hook.py',
      '            saved = sampler.saved_iters + sampler.pass_saving()\n'
      '        self.report',
      '            saved = sampler.saved_iters\n        self.report',
      'end report with adjust_schedule=False'),
    M('report_no_adjust_as_adjusted', 'hook/infobatch_hook.py',
      '        if self._keeps_schedule(runner):\n'
      '            # The loop kept its end',
      '        if False:\n            # The loop kept its end',
      'end report with adjust_schedule=False'),
    M('int32_up_to_2_32', 'sampler/layout.py',
      'return torch.int32 if num_samples <= 2**31 else torch.int64',
      'return torch.int32 if num_samples <= 2**32 else torch.int64',
      'int32 indices only below 2**31 samples'),
    M('int32_below_2_31_exclusive', 'sampler/layout.py',
      'return torch.int32 if num_samples <= 2**31 else torch.int64',
      'return torch.int32 if num_samples < 2**31 else torch.int64',
      'int32 indices up to 2**31 samples'),
    M('estimate_side_word_fixed', 'hook/report.py',
      "side = 'above' if sampler.prune_high else 'below'",
      "side = 'below'",
      'pre-flight estimate under prune_high names its side'),
    M('mmengine_0_11_accepted', 'engine/compat.py',
      'version < digit_version(', 'version <= digit_version(',
      'other mmengine versions are refused'),
    M('lovasz_sum_served', 'loss/loss_kinds.py',
      "        if loss.reduction == 'sum':\n", '        if False:\n',
      "LovaszLoss(per_image=True, reduction='sum') is refused"),
    M('pass_saving_share_ignored', 'sampler/run_plan.py',
      'share = self.pass_share(pass_idx) if self.budget_iters else 1.0',
      'share = 1.0',
      'a pass saves its share of the budget (the last one, part of it)'),
    # -- argued equivalent ----------------------------------------------
    M('pad_without_early_return', 'sampler/layout.py',
      '    if total == indices.numel():\n        return indices\n', '',
      'padding', equivalent='with nothing to pad, repeat(1)[:total] is '
      'a copy of the same indices, and nothing writes to either; the 0/0 '
      'the early return avoids needs an empty pass, which the sampler '
      'never makes'),
    M('always_filter_finite', 'sampler/infobatch_sampler.py',
      '        if not finite.all():\n', '        if True:\n',
      'score skip rules', equivalent='when every score is finite the '
      'filter keeps them all; the if only saves a copy'),
    M('refill_when_not_short', 'sampler/infobatch_sampler.py',
      'if short > 0:', 'if short >= 0:', 'no empty pass',
      equivalent='at short == 0 the refill adds no sample, and the '
      'generator it draws from is discarded after the pass'),
    M('refill_weight_not_reset', 'sampler/infobatch_sampler.py',
      '            decision.codes[refill] = 0  # weight 1\n', '',
      'weights of refilled samples', equivalent='refilled samples were '
      'dropped, and the decision already gives every dropped sample '
      'code 0, weight 1'),
    M('scheduler_steps_unclamped', 'sampler/run_plan.py',
      'return max(after - before - 1, 0)',
      'return after - before - 1',
      'scheduler steps', equivalent='its one caller, the hook\'s '
      '_step_iter_schedulers, steps nothing for any count <= 0, so a '
      'negative count acts as 0'),
]
# yapf: enable
del M


@dataclass
class Result:
    mutant: Mutant
    status: str  # 'killed', 'survived', 'error'
    seconds: float = 0.0
    detail: str = ''


def apply_mutant(package_dir: Path, mutant: Mutant) -> None:
    """Apply ``mutant`` to the package copy; ValueError unless its snippet
    occurs exactly once."""
    path = package_dir / mutant.file
    text = path.read_text()
    count = text.count(mutant.original)
    if count != 1:
        where = 'not found' if count == 0 else f'found {count} times'
        raise ValueError(f'snippet {where} in {PACKAGE}/{mutant.file}: '
                         f'{mutant.original!r}')
    path.write_text(text.replace(mutant.original, mutant.replacement))


def copy_package(dest: Path) -> Path:
    package_dir = dest / PACKAGE
    shutil.copytree(
        REPO / PACKAGE,
        package_dir,
        ignore=shutil.ignore_patterns('__pycache__'))
    return package_dir


def ordered_tests(mutant: Optional[Mutant]) -> List[str]:
    first = FIRST_FOR.get(mutant.file, []) if mutant else []
    return first + [t for t in FAST_TESTS if t not in first]


def run_subset(copy_root: Path, tests: List[str], *extra: str):
    """Run pytest on ``tests`` with the package copy under ``copy_root``
    shadowing the editable install; returns (returncode, output, secs)."""
    env = dict(os.environ)
    # First on the path: PYTHONPATH entries precede site-packages, whose
    # editable-install finder only answers what the path does not.
    env['PYTHONPATH'] = os.pathsep.join(
        [str(copy_root)] + [p for p in [env.get('PYTHONPATH')] if p])
    # The property tests' fixed examples: a verdict must not depend on
    # the draw.
    env.update(
        OMP_NUM_THREADS='1',
        MKL_NUM_THREADS='1',
        PYTHONDONTWRITEBYTECODE='1',
        HYPOTHESIS_PROFILE='ci')
    cmd = [
        sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-x', '-q',
        '--tb=no', '-rfE', '-W', 'ignore', f'--rootdir={REPO}',
        f'--basetemp={copy_root / "pytest"}', *extra
    ] + [str(REPO / t) for t in tests]
    start = time.monotonic()
    try:
        # cwd is the copy too: `python -m` puts the cwd first on sys.path,
        # and the repository root there would shadow the copy.
        proc = subprocess.run(
            cmd,
            cwd=copy_root,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TIMEOUT_S)
        return proc.returncode, proc.stdout, time.monotonic() - start
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ''
        if isinstance(out, bytes):
            out = out.decode(errors='replace')
        return None, out, time.monotonic() - start


def first_failure(output: str) -> str:
    match = re.search(r'^(?:FAILED|ERROR) (\S+)', output, re.M)
    if not match:
        return ''
    # pytest names it relative to the copy's folder: keep from tests/ on.
    return re.sub(r'^.*?\btests/', '', match.group(1))


def check_shadowing(work: Path) -> None:
    """A copy that cannot be imported must break the subset; otherwise the
    tests would be reading the editable install, not the mutants."""
    root = work / '_broken'
    package_dir = copy_package(root)
    init = package_dir / '__init__.py'
    marker = 'mutation_check: deliberately broken copy'
    init.write_text(f'raise ImportError({marker!r})\n' + init.read_text())
    rc, out, _ = run_subset(root, FAST_TESTS, '--collect-only', '--tb=short')
    if rc == 0 or marker not in out:
        raise SystemExit(
            'mutation_check: a broken copy of the package did not break the '
            'tests, so they import another copy (the editable install?). '
            f'pytest said:\n{out[-3000:]}')
    shutil.rmtree(root, ignore_errors=True)


def run_baseline(work: Path) -> float:
    root = work / '_baseline'
    copy_package(root)
    rc, out, secs = run_subset(root, FAST_TESTS)
    if rc != 0:
        raise SystemExit('mutation_check: the fast subset fails without any '
                         f'mutant (exit {rc}):\n{out[-4000:]}')
    shutil.rmtree(root, ignore_errors=True)
    return secs


def run_mutant(work: Path, mutant: Mutant) -> Result:
    root = work / mutant.name
    try:
        package_dir = copy_package(root)
        try:
            apply_mutant(package_dir, mutant)
        except ValueError as exc:
            return Result(mutant, 'error', 0.0, str(exc))
        rc, out, secs = run_subset(root, ordered_tests(mutant))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if rc is None:
        return Result(mutant, 'killed', secs, f'timeout after {TIMEOUT_S}s')
    if rc == 0:
        return Result(mutant, 'survived', secs)
    if rc in (1, 2):  # tests failed, or collection failed on import
        return Result(mutant, 'killed', secs,
                      first_failure(out) or f'pytest exit {rc}')
    return Result(mutant, 'error', secs, f'pytest exit {rc}:\n{out[-2000:]}')


def row(name, rule, status, seconds, detail) -> str:
    return f'{name:<30} {rule:<42} {status:<10} {seconds:>7} {detail}'


def print_row(result: Result) -> None:
    status = result.status
    if result.mutant.equivalent and status == 'survived':
        status = 'equivalent'
    detail = result.detail.splitlines()[0] if result.detail else ''
    print(
        row(result.mutant.name, result.mutant.rule[:42], status,
            f'{result.seconds:.1f}', detail[:70]),
        flush=True)


def summarize(results: List[Result]) -> int:
    """Print survivors, equivalents and errors, then the score line;
    returns the exit status."""
    equivalent = [
        r for r in results if r.mutant.equivalent and r.status == 'survived'
    ]
    counted = [
        r for r in results if r.status != 'error' and r not in equivalent
    ]
    killed = [r for r in counted if r.status == 'killed']
    survivors = [r for r in counted if r.status == 'survived']
    errors = [r for r in results if r.status == 'error']
    print()
    print('survivors: ' + (', '.join(r.mutant.name
                                     for r in survivors) or 'none'))
    if equivalent:
        print('equivalent (not counted in N):')
        for r in equivalent:
            print(f'  {r.mutant.name}: {r.mutant.equivalent}')
    for r in results:
        if r.mutant.equivalent and r.status == 'killed':
            print(f'note: {r.mutant.name} was argued equivalent but a test '
                  'tells it apart, so it counts in N')
    for r in errors:
        print(f'error: {r.mutant.name}: {r.detail}')
    total = len(counted)
    score = len(killed) / total if total else 0.0
    print(f'mutation score: {len(killed)}/{total} killed ({score:.1%})')
    return 0 if total and score >= MIN_SCORE and not errors else 1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Plant named bugs in a copy of mmseg_infobatch and check '
        'that the fast test subset catches each.')
    parser.add_argument(
        '--list',
        action='store_true',
        help='list the mutants (and whether each snippet is '
        'found exactly once) and exit')
    parser.add_argument(
        '--only',
        action='append',
        metavar='NAME',
        help='run only this mutant (repeatable)')
    parser.add_argument(
        '--jobs',
        type=int,
        default=1,
        help='mutants run at once. Defaults to 1.')
    return parser.parse_args(argv)


def list_mutants(mutants: List[Mutant]) -> int:
    missing = 0
    for mutant in mutants:
        text = (REPO / PACKAGE / mutant.file).read_text()
        count = text.count(mutant.original)
        state = 'ok' if count == 1 else (
            'NOT FOUND' if count == 0 else f'FOUND {count}x')
        missing += count != 1
        kind = ' (equivalent)' if mutant.equivalent else ''
        print(f'{mutant.name:<30} {mutant.file:<12} {state:<9} '
              f'{mutant.rule}{kind}')
    print(f'{len(mutants)} mutants, '
          f'{sum(1 for m in mutants if m.equivalent)} argued equivalent')
    return 1 if missing else 0


def main(argv=None) -> int:
    args = parse_args(argv)
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), 'mutant names must be unique'
    mutants = MUTANTS
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            print(f'unknown mutant(s): {", ".join(unknown)}; see --list')
            return 2
        mutants = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        return list_mutants(mutants)
    if args.jobs < 1:
        print(f'--jobs must be at least 1, but got {args.jobs}')
        return 2

    start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix='mutation_check_', dir='/tmp'))
    try:
        check_shadowing(work)
        baseline = run_baseline(work)
        print(f'fast subset: {len(FAST_TESTS)} test files pass unmutated in '
              f'{baseline:.1f}s; the copy shadows the editable install')
        print(row('mutant', 'rule', 'result', 'seconds', 'killed by'))
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run_mutant, work, m) for m in mutants]
            results = []
            for future in futures:
                results.append(future.result())
                print_row(results[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f'whole check: {time.monotonic() - start:.0f}s for '
          f'{len(mutants)} mutants with {args.jobs} job(s)')
    return summarize(results)


if __name__ == '__main__':
    sys.exit(main())
