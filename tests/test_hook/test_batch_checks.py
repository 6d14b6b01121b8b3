"""Which batches the per-batch check compares, and by what: a packed
``img_path`` against the dataset's, else a packed ``sample_idx`` against the
chosen index, except under a dataset wrapper (whose samples carry their
inner index); a batch that packs neither is not compared."""
import pytest
import torch
from mmengine.structures import BaseDataElement

from mmseg_infobatch.hook.checks import check_batch

CHOSEN = torch.tensor([3, 1])
SWAPPED = torch.tensor([1, 3])


def _batch(**fields_per_image):
    """A batch of two images whose data samples carry ``fields``: each a
    pair of values, image 0's and image 1's."""
    names = list(fields_per_image)
    samples = [
        BaseDataElement(metainfo={n: fields_per_image[n][j]
                                  for n in names}) for j in range(2)
    ]
    return dict(inputs=[torch.zeros(1), torch.zeros(1)], data_samples=samples)


class _Wrapper:
    """A dataset wrapper as mmengine's carry theirs: ``datasets``
    (ConcatDataset), ``times`` (RepeatDataset) or ``dataset`` (its inner
    one, as ClassBalancedDataset)."""

    def __init__(self, attribute):
        setattr(self, attribute, object())

    def __len__(self):
        return 12


def _refused(batch, indices, dataset):
    with pytest.raises(RuntimeError, match='sample indices cannot reach'):
        check_batch(batch, indices, dataset, (0, 0))


def test_sample_idx_is_compared_on_a_plain_dataset():
    batch = _batch(sample_idx=(3, 1))
    check_batch(batch, CHOSEN, list(range(12)), (0, 0))
    _refused(batch, SWAPPED, list(range(12)))


@pytest.mark.parametrize('attribute', ['datasets', 'times', 'dataset'])
def test_sample_idx_is_not_compared_under_a_dataset_wrapper(attribute):
    """A wrapper's samples carry the inner dataset's index: sample 13 of a
    RepeatDataset of 12 packs sample_idx 1."""
    batch = _batch(sample_idx=(3, 1))
    check_batch(batch, torch.tensor([3, 13]), _Wrapper(attribute), (0, 0))
    check_batch(batch, SWAPPED, _Wrapper(attribute), (0, 0))


def test_img_path_is_compared_where_the_dataset_gives_paths():

    class Paths(list):

        def get_data_info(self, index):
            return dict(img_path=f'img_{index}.png')

    dataset = Paths(range(12))
    # The sample_idx agrees either way: the paths decide.
    batch = _batch(img_path=('img_3.png', 'img_1.png'), sample_idx=(1, 3))
    check_batch(batch, CHOSEN, dataset, (0, 0))
    _refused(batch, SWAPPED, dataset)
    # Without img_path packed: the sample_idx decides.
    check_batch(_batch(sample_idx=(3, 1)), CHOSEN, dataset, (0, 0))
    _refused(_batch(sample_idx=(3, 1)), SWAPPED, dataset)


def test_img_path_without_paths_in_the_dataset_falls_back_to_sample_idx():
    batch = _batch(img_path=('a.png', 'b.png'), sample_idx=(3, 1))
    check_batch(batch, CHOSEN, list(range(12)), (0, 0))
    _refused(batch, SWAPPED, list(range(12)))


@pytest.mark.parametrize('batch', [
    _batch(seg_map_path=('a.png', 'b.png')),
    dict(inputs=[torch.zeros(1), torch.zeros(1)]),
    [torch.zeros(1), torch.zeros(1)],
])
def test_a_batch_that_packs_no_identity_is_not_compared(batch):
    check_batch(batch, SWAPPED, list(range(12)), (0, 0))


def test_a_batch_of_one_image_is_checked():
    one = torch.tensor([4])

    class Paths(list):

        def get_data_info(self, index):
            return dict(img_path=f'img_{index}.png')

    by_path = dict(
        inputs=[torch.zeros(1)],
        data_samples=[BaseDataElement(metainfo=dict(img_path='img_4.png'))])
    check_batch(by_path, one, Paths(range(12)), (0, 0))
    _refused(by_path, torch.tensor([5]), Paths(range(12)))
    by_index = dict(
        inputs=[torch.zeros(1)],
        data_samples=[BaseDataElement(metainfo=dict(sample_idx=4))])
    check_batch(by_index, one, list(range(12)), (0, 0))
    _refused(by_index, torch.tensor([5]), list(range(12)))
