"""The run's closing line names the image scores that were skipped
(design.md: an image without valid pixels, or a non-finite loss, keeps its
old score; both are counted and logged)."""
import logging
import math
from types import SimpleNamespace

from helpers import make_sampler

from mmseg_infobatch.hook import InfoBatchHook
from mmseg_infobatch.hook.report import log_finish


def test_the_closing_line_names_the_skipped_scores(caplog):
    runner = SimpleNamespace(iter=70, logger=logging.getLogger('closing'))
    with caplog.at_level(logging.INFO, logger='closing'):
        log_finish(runner, 100, 9, 2)
    assert ('InfoBatch finished: 70 iterations instead of 100 (30 saved, '
            '30.0%) over 9 passes; 2 image scores were skipped') in caplog.text


def test_the_hook_ends_the_run_with_its_count_of_skipped_scores(caplog):
    sampler = make_sampler(
        40, batch_size=4, prune_stop=math.inf, budget_iters=80, seed=0)
    hook = InfoBatchHook()
    hook.sampler, hook.num_skipped_scores = sampler, 3
    runner = SimpleNamespace(
        iter=80,
        logger=logging.getLogger('closing_hook'),
        train_loop=SimpleNamespace())
    with caplog.at_level(logging.INFO, logger='closing_hook'):
        hook.after_train(runner)
    assert 'instead of 80 (0 saved, 0.0%) over 0 passes; 3 image scores ' \
        'were skipped' in caplog.text
