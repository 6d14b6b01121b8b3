"""compat.open_group_size: the divisor mmengine's gradient accumulation
applies to the group in progress, by mmengine's rule: groups of
``accumulative_counts`` iterations from the start, the last one cut at the
end of training."""
import torch
from mmengine.optim import OptimWrapper, OptimWrapperDict

from mmseg_infobatch.engine.compat import open_group_size, set_accumulation_end


def _group_sizes(accumulative_counts, max_iters=None, iters=10):
    """``open_group_size`` before each of ``iters`` iterations."""
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(
        torch.optim.SGD([param], lr=0.1),
        accumulative_counts=accumulative_counts)
    if max_iters is not None:
        wrapper.initialize_count_status(torch.nn.Module(), 0, max_iters)
    sizes = []
    for _ in range(iters):
        sizes.append(open_group_size(wrapper))
        wrapper.update_params(param.sum())
    return sizes


def test_a_group_in_progress_has_its_size_and_none_holds_between_groups():
    # Groups of 4 from iteration 0; before 0, 4 and 8 no group is open.
    assert _group_sizes(4) == [None, 4, 4, 4, None, 4, 4, 4, None, 4]


def test_the_last_group_is_cut_at_the_end_of_training():
    # 10 iterations in groups of 4: 0-3, 4-7 and the last, 8-9, of 2.
    assert _group_sizes(
        4, max_iters=10) == [None, 4, 4, 4, None, 4, 4, 4, None, 2]
    # Of 3: 0-2, 3-5 and 6-7, of 2.
    assert _group_sizes(
        3, max_iters=8, iters=8) == [None, 3, 3, None, 3, 3, None, 2]


def test_without_accumulation_no_group_is_ever_open():
    assert _group_sizes(1, max_iters=10) == [None] * 10
    assert _group_sizes(2, iters=4) == [None, 2, None, 2]


def _accumulating(max_iters, done):
    """A wrapper of groups of 4 with ``done`` iterations of loss gradient
    1 run toward the end ``max_iters``, and its parameter."""
    param = torch.nn.Parameter(torch.zeros(1))
    wrapper = OptimWrapper(
        torch.optim.SGD([param], lr=0.1), accumulative_counts=4)
    wrapper.initialize_count_status(torch.nn.Module(), 0, max_iters)
    for _ in range(done):
        wrapper.update_params(param.sum())
    return wrapper, param


def test_an_end_moved_into_the_open_group_rescales_its_gradient():
    """5 of 10 iterations: the group 4-7 holds one iteration's 1/4. Ending
    at 6 makes 4-5 the last group, of 2: its iteration counts 1/2, and the
    step at the new end applies a gradient of exactly 1."""
    wrapper, param = _accumulating(max_iters=10, done=5)
    assert float(param.grad) == 0.25
    set_accumulation_end(wrapper, 6)
    assert wrapper._max_counts == 6 and wrapper._remainder_counts == 2
    assert float(param.grad) == 0.5
    applied = []
    step = wrapper.optimizer.step
    wrapper.optimizer.step = lambda: applied.append(float(param.grad)) or (
        step())
    wrapper.update_params(param.sum())
    assert applied == [1.0]


def test_every_wrapper_of_a_wrapper_dict_gets_the_new_end():
    (first, first_param), (second, second_param) = (_accumulating(10, 5),
                                                    _accumulating(10, 5))
    set_accumulation_end(OptimWrapperDict(a=first, b=second), 6)
    for wrapper, param in ((first, first_param), (second, second_param)):
        assert wrapper._max_counts == 6 and wrapper._remainder_counts == 2
        assert float(param.grad) == 0.5


def test_an_end_training_has_passed_leaves_the_gradient_as_it_is():
    """9 iterations in groups of 4: an end moved back to 8 opens no group
    toward it, so the iteration accumulated since is not rescaled."""
    wrapper, param = _accumulating(max_iters=12, done=9)
    assert float(param.grad) == 0.25
    set_accumulation_end(wrapper, 8)
    assert wrapper._max_counts == 8
    assert float(param.grad) == 0.25


def test_a_wrapper_without_accumulation_is_skipped_not_the_rest():
    plain, _ = _accumulating(10, 5)
    del plain._accumulative_counts
    wrapper, param = _accumulating(10, 5)
    set_accumulation_end(OptimWrapperDict(plain=plain, wrapper=wrapper), 6)
    assert plain._max_counts == 10
    assert wrapper._max_counts == 6 and float(param.grad) == 0.5
