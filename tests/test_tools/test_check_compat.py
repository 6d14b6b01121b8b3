"""tools/analysis_tools/check_compat.py on one stock config per loss
family."""
import os.path as osp
import re
import sys

import pytest
import torch
from helpers import REPO
from mmengine.config import Config
from mmengine.registry import init_default_scope

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
import check_compat  # noqa: E402

ROOT = check_compat.config_root()
FCN = 'fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'


@pytest.fixture(scope='module', autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')
    check_compat.quiet()


def _model(path):
    return Config.fromfile(osp.join(ROOT, path)).model.to_dict()


def _with_decode_loss(loss):
    model = _model(FCN)
    model['decode_head']['loss_decode'] = loss
    return model


@pytest.mark.parametrize('path,status,detail', [
    (FCN, 'equal', ''),
    ('fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py', 'equal', ''),
    ('unet/unet-s5-d16_fcn_4xb4-ce-1.0-dice-3.0-40k_chase-db1-128x128.py',
     'equal', ''),
    ('stdc/stdc1_4xb12-80k_cityscapes-512x1024.py', 'equal', ''),
    ('ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py',
     'per-image', "mode='per_image' for OhemCrossEntropy"),
    ('pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py', 'per-image',
     "mode='per_image' for BoundaryLoss, OhemCrossEntropy"),
])
def test_stock_config_per_loss_family(path, status, detail):
    """CE, sigmoid CE (Fast-SCNN), CE+Dice (UNet), sigmoid CE+Dice (STDC),
    OHEM (DDRNet), OHEM+Boundary+class-weighted CE (PIDNet)."""
    result = check_compat.check(path, _model(path), size=64, steps=1)
    assert result.status == status, result.detail
    assert detail in result.detail


@pytest.mark.parametrize('loss,status', [
    (dict(type='LovaszLoss', reduction='none'), 'per-image'),
    (dict(type='LovaszLoss', per_image=True), 'equal'),
    (dict(type='TverskyLoss'), 'equal'),
    ([
        dict(type='CrossEntropyLoss', avg_non_ignore=True),
        dict(type='DiceLoss', loss_weight=3.0)
    ], 'equal'),
])
def test_losses_no_stock_config_uses(loss, status):
    result = check_compat.check(FCN, _with_decode_loss(loss), size=64, steps=1)
    assert result.status == status, result.detail


def test_a_wrong_rescale_is_reported_different(monkeypatch):
    """The sweep must catch what the old wrapper did: C times the loss."""
    from mmseg_infobatch import InfoBatchLoss
    forward = InfoBatchLoss.forward

    def times_classes(self, *args, **kwargs):
        loss = forward(self, *args, **kwargs)
        return loss if self.batch_weights is None else 19 * loss

    monkeypatch.setattr(InfoBatchLoss, 'forward', times_classes)
    result = check_compat.check(FCN, _model(FCN), size=64, steps=1)
    assert result.status == 'DIFFERENT'
    assert 'decode.loss_ce' in result.detail


def test_heads_without_loss_decode_are_named():
    model = dict(
        type='EncoderDecoder',
        decode_head=dict(type='MaskFormerHead', num_classes=3))
    assert check_compat.check('x.py', model, 64, 1).status == \
        'no loss_decode'


def test_signature_groups_by_model_heads_and_losses():
    fcn = check_compat.signature(_model(FCN))
    same = check_compat.signature(
        _model('fcn/fcn_r18-d8_4xb2-80k_cityscapes-769x769.py'))
    sigmoid = _model(FCN)
    sigmoid['decode_head']['loss_decode']['use_sigmoid'] = True
    assert fcn == same
    assert check_compat.signature(sigmoid) != fcn


def test_prepare_and_wrap_as_a_user_config_would():
    path = 'encnet/encnet_r50-d8_4xb2-40k_cityscapes-512x1024.py'
    model = _model(path)
    cpu = check_compat.prepare_for_cpu(model, 64)
    assert 'SyncBN' not in str(cpu) and 'SyncBN' in str(model)
    assert cpu['pretrained'] is None
    assert cpu['data_preprocessor']['size'] == (64, 64)
    # The package's add_infobatch, as tools/train.py --infobatch runs it.
    wrapped = check_compat.with_infobatch(path, cpu)
    head = wrapped['decode_head']
    for key in ('loss_decode', 'loss_se_decode'):
        assert head[key] == dict(
            type='InfoBatchLoss', loss=cpu['decode_head'][key])
    assert wrapped['auxiliary_head']['loss_decode']['type'] == 'InfoBatchLoss'
    assert check_compat.per_image_terms(wrapped) == []


def test_a_config_add_infobatch_refuses_is_reported_refused():
    """A loss from outside mmseg: the plain model trains, add_infobatch
    refuses it with the fix, and the sweep reports that refusal."""
    from mmseg.models.losses import CrossEntropyLoss
    from mmseg.registry import MODELS

    @MODELS.register_module(force=True)
    class UserLossForCheckCompat(CrossEntropyLoss):
        pass

    model = _with_decode_loss(dict(type='UserLossForCheckCompat'))
    result = check_compat.check(FCN, model, size=64, steps=1)
    assert result.status == 'refused', result.detail
    assert 'a loss from outside mmseg' in result.detail


def test_markdown_section_is_replaced(tmp_path):
    path = tmp_path / 'compat.md'
    path.write_text('# Title\n\n<!-- check_compat:begin -->\nold\n'
                    '<!-- check_compat:end -->\n\nkept\n')
    results = [check_compat.Result('a.py', ['a.py', 'b.py'], 'equal', 'CE')]
    check_compat.write_markdown(str(path), results, 60.0)
    text = path.read_text()
    assert 'old' not in text and text.startswith('# Title')
    assert text.endswith('kept\n')
    assert '| equal | 1 | 2 |' in text and '| a.py (2) | CE | equal |' in text


def test_bad_size_is_named(capsys):
    with pytest.raises(SystemExit):
        check_compat.parse_args(['--size', '50'])
    assert 'multiple of 32, but got 50' in capsys.readouterr().err


def test_batch_has_the_config_classes_and_ignored_pixels():
    batch = check_compat.make_batch(classes=3, size=64)
    labels = torch.stack([s.gt_sem_seg.data for s in batch['data_samples']])
    assert labels.shape == (2, 1, 64, 64)
    assert set(labels.unique().tolist()) == {0, 1, 2, 255}


def _doc_snippets():
    text = (REPO / 'docs' / 'compat.md').read_text()
    common, *snippets = re.findall(r'```python\n(.*?)```', text, re.S)
    return common, snippets


def _unwrap(node):
    """The config with every InfoBatchLoss replaced by its inner loss (and
    without the ``_scope_`` keys that a ``mmseg::`` base adds)."""
    if isinstance(node, dict):
        if node.get('type') == 'InfoBatchLoss':
            return _unwrap(node['loss'])
        return {k: _unwrap(v) for k, v in node.items() if k != '_scope_'}
    if isinstance(node, (list, tuple)):
        return type(node)(_unwrap(v) for v in node)
    return node


@pytest.mark.parametrize('index', range(5))
def test_doc_snippets_wrap_every_term_of_the_stock_config(index, tmp_path):
    """Each copy-paste snippet of docs/compat.md builds, wraps every loss
    term, and (but for Lovasz) changes nothing else in the stock model."""
    from mmseg.registry import MODELS

    from mmseg_infobatch import InfoBatchLoss
    common, snippets = _doc_snippets()
    assert len(snippets) == 5
    path = tmp_path / 'snippet.py'
    path.write_text(snippets[index] + common)
    cfg = Config.fromfile(str(path))
    assert cfg.train_dataloader.sampler.type == 'InfoBatchSampler'
    assert cfg.custom_hooks[0].type == 'InfoBatchHook'
    base = re.search(r"mmseg::([\w/.-]+\.py)", snippets[index]).group(1)
    if 'Lovasz' not in snippets[index]:
        assert _unwrap(cfg.model.to_dict()) == _model(base)
    model = MODELS.build(check_compat.prepare_for_cpu(cfg.model, 64))
    heads = [m for m in model.modules() if hasattr(m, 'loss_decode')]
    assert heads
    for head in heads:
        terms = head.loss_decode
        terms = terms if isinstance(terms, torch.nn.ModuleList) else [terms]
        assert all(isinstance(t, InfoBatchLoss) for t in terms), head
