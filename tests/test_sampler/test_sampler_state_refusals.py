"""Every refusal and warning of the sampler, its served pass and its
checkpoint state, compared whole: the text names what is wrong and the
fix, and a fragment would let the rest say anything."""
import logging
from unittest import mock

import pytest
import torch
from helpers import make_sampler, refusal

from mmseg_infobatch.sampler.infobatch_sampler import InfoBatchSampler
from mmseg_infobatch.sampler.served_pass import ServedPass
from mmseg_infobatch.sampler.state import check_layout, upgrade_state

# The config every set-up error of the sampler names, as the README shows
# it.
HINT = """
    custom_imports = dict(
        imports=['mmseg_infobatch'], allow_failed_imports=False)
    train_dataloader = dict(sampler=dict(type='InfoBatchSampler', ratio=0.5))
    custom_hooks = [dict(type='InfoBatchHook')]
    model = dict(decode_head=dict(loss_decode=dict(
        type='InfoBatchLoss',
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0))))"""

LAYOUT = dict(
    num_samples=40,
    world_size=1,
    batch_size=2,
    drop_last=False,
    fingerprint=dict(version=2, crc=7))


def _changed(**change):
    return dict(LAYOUT, **change)


def _no_hook():
    sampler = make_sampler(10)  # never configured
    list(iter(sampler))  # the workers' draw before the hook runs
    list(iter(sampler))


def _restarted():
    sampler = make_sampler(10, batch_size=2)
    list(iter(sampler))
    sampler.finish_batch()
    list(iter(sampler))


def _target_without_budget():
    sampler = make_sampler(10, batch_size=2, target_saving=0.3)
    list(iter(sampler))
    for _ in range(sampler.pass_batches):
        sampler.finish_batch()
    sampler.update_scores(torch.arange(10), torch.arange(10).float())
    list(iter(sampler))


def _too_many_weights():
    sampler = make_sampler(300, batch_size=2)
    list(iter(sampler))
    state = sampler.state_dict()
    del state['weight_codes'], state['weight_table'], state['seen_bits']
    state.update(
        seen=torch.ones(300, dtype=torch.bool),
        weights=torch.arange(300).float() / 100 + 1)
    upgrade_state(state)


# (the bad set-up, the error's type, the whole message)
# yapf: disable
REFUSALS = [
    (lambda: InfoBatchSampler([], seed=0), ValueError,
     'InfoBatchSampler got an empty dataset: check the data_root and '
     'ann_file of train_dataloader'),
    (lambda: make_sampler(10, batch_size=0), ValueError,
     'InfoBatchSampler batch_size must be a positive int, but got 0'),
    (lambda: make_sampler(10, batch_size=True), ValueError,
     'InfoBatchSampler batch_size must be a positive int, but got True'),
    (lambda: make_sampler(10, batch_size='2'), ValueError,
     "InfoBatchSampler batch_size must be a positive int, but got '2'"),
    (lambda: make_sampler(3, world=2, batch_size=2), ValueError,
     'The train dataset has 3 samples, fewer than world size x batch size '
     '= 2 x 2, so not even one full batch per rank exists. Lower '
     'train_dataloader.batch_size or use more data.'),
    (_no_hook, RuntimeError,
     'InfoBatchSampler has no InfoBatchHook, so it has no scores to prune '
     'from. Add it to the config:' + HINT),
    (_restarted, RuntimeError,
     'The train dataloader was restarted after 1 of 5 batches of InfoBatch '
     "pass 0, outside the sampler's control. Use InfoBatchSampler only in "
     'train_dataloader, and do not iterate that dataloader elsewhere.'),
    (_target_without_budget, ValueError,
     "InfoBatchSampler target_saving needs the run's budget it is a share "
     'of, which InfoBatchHook passes to set_plan(). Add the hook to the '
     'config:' + HINT),
    (lambda: make_sampler(10).set_plan(100), AssertionError,
     'configure() the sampler before set_plan()'),
    (lambda: make_sampler(10).load_state_dict({}), AssertionError,
     'configure() the sampler before a restore'),
    (lambda: ServedPass(10, 0, 1).prepare_replay(-2), ValueError,
     "cannot replay -2 batches: the checkpoint's iteration is earlier than "
     'its InfoBatch pass position'),
    (lambda: ServedPass(10, 0, 1).prepare_rest(), AssertionError,
     'no pass has started yet'),
    (lambda: ServedPass(10, 0, 1).rank_indices(), AssertionError,
     'no pass has started yet'),
    (_too_many_weights, ValueError,
     "The checkpoint's InfoBatch weights take 300 distinct values, more "
     'than 256: start a fresh run from its weights with '
     'load_from=CHECKPOINT instead of --resume.'),
    (lambda: check_layout(LAYOUT, _changed(num_samples=41)), ValueError,
     'The checkpoint holds InfoBatch state made with num_samples=40, but '
     'this run has num_samples=41. Resume with the same dataset, or start '
     'a fresh run from its weights with load_from=CHECKPOINT instead of '
     '--resume.'),
    (lambda: check_layout(LAYOUT, _changed(world_size=2)), ValueError,
     'The checkpoint holds InfoBatch state made with world_size=1, but '
     'this run has world_size=2. Resume on the same number of processes: '
     'the saved pass is split per rank, or start a fresh run from its '
     'weights with load_from=CHECKPOINT instead of --resume.'),
    (lambda: check_layout(LAYOUT, _changed(batch_size=3)), ValueError,
     'The checkpoint holds InfoBatch state made with batch_size=2, but '
     'this run has batch_size=3. Resume with the same '
     'train_dataloader.batch_size: the saved pass is split into batches of '
     'the old size, or start a fresh run from its weights with '
     'load_from=CHECKPOINT instead of --resume.'),
    (lambda: check_layout(LAYOUT, _changed(drop_last=True)), ValueError,
     'The checkpoint holds InfoBatch state made with drop_last=False, but '
     'this run has drop_last=True. Resume with the same '
     'train_dataloader.drop_last, or start a fresh run from its weights '
     'with load_from=CHECKPOINT instead of --resume.'),
    (lambda: check_layout(LAYOUT, _changed(fingerprint=dict(version=2,
                                                            crc=8))),
     ValueError,
     "The checkpoint holds InfoBatch state made with fingerprint={'version': "
     "2, 'crc': 7}, but this run has fingerprint={'version': 2, 'crc': 8}. "
     'Resume with the same data (the train dataset holds other images or '
     'labels: their paths relative to data_root differ), or start a fresh '
     'run from its weights with load_from=CHECKPOINT instead of --resume.'),
]
# yapf: enable


@pytest.mark.parametrize('call,error,message', REFUSALS)
def test_a_bad_set_up_or_resume_is_refused_with_its_fix(call, error, message):
    assert refusal(call, error) == message


def test_the_first_changed_part_of_the_layout_is_named():
    # Every part is checked in the order of the table above: a resume on
    # another world size and batch size names the world size.
    message = refusal(lambda: check_layout(
        LAYOUT, _changed(world_size=2, batch_size=3, drop_last=True)))
    assert message.startswith('The checkpoint holds InfoBatch state made '
                              'with world_size=1, but this run has '
                              'world_size=2.')


def test_an_older_fingerprint_is_not_compared_and_says_so():
    saved = _changed(fingerprint=123456789)  # a CRC32, as 0.1.0 wrote
    with mock.patch('mmseg_infobatch.sampler.state.print_log') as log:
        check_layout(saved, LAYOUT)
    assert log.call_args_list == [
        mock.call(
            'The checkpoint holds a dataset fingerprint of an older '
            'mmseg_infobatch (of absolute paths), which is not compared: '
            'only the dataset size is checked. Resume with the same data.',
            logger='current',
            level=logging.WARNING)
    ]
    # The rest of the layout still is, after the fingerprint as before it.
    assert refusal(
        lambda: check_layout(dict(saved, num_samples=13), LAYOUT)).startswith(
            'The checkpoint holds InfoBatch state made with num_samples=13,')


def test_an_unchanged_layout_resumes_silently():
    with mock.patch('mmseg_infobatch.sampler.state.print_log') as log:
        check_layout(dict(LAYOUT), dict(LAYOUT))
    assert log.call_args_list == []
