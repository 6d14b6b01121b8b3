"""Check InfoBatch against every config that the installed mmseg ships.

Configs are grouped by segmentor, backbone, heads and losses (with the loss
options that change a reduction); the lightest of each group is checked, as
a user would set it up: the stock config through
``mmseg_infobatch.add_infobatch`` (as ``tools/train.py --infobatch`` does),
which wraps every loss term of every head in ``InfoBatchLoss``, with
``mode='per_image'`` where the default refuses at build, as its message
says. On CPU (SyncBN as BN, no pretrained checkpoint, ``--size`` inputs)
the plain and the wrapped model, with the same weights and random state,
run a training step on generated images of the config's classes: at image
weights 1 every loss term and gradient must match; at other weights the
loss must be ``sum_i w_i * loss(e_i)``; then a few steps must train.
Results: ``equal``, ``per-image``, ``refused`` (by ``add_infobatch`` or
when built, with the reason), ``not buildable`` (here, without InfoBatch;
reason named), ``no loss_decode`` (MaskFormer), and ``DIFFERENT`` /
``ERROR``, which make the exit status 1.

Example::

    OMP_NUM_THREADS=1 python tools/analysis_tools/check_compat.py \\
        --markdown docs/compat.md
"""
import argparse
import copy
import glob
import logging
import os
import os.path as osp
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from mmseg_infobatch import add_infobatch
from mmseg_infobatch.config import loss_terms, walk, with_default_losses
from mmseg_infobatch.engine.cpu_runtime import sync_bn_to_bn

STATUSES = ('equal', 'per-image', 'refused', 'not buildable', 'no loss_decode',
            'DIFFERENT', 'ERROR')
NUM_IMAGES = 2
TRAIN_WEIGHTS = (2.0, 1.0)  # a kept low-score image (r=0.5) and a plain one


@dataclass
class Result:
    """What the check found for one config (standing for ``group``)."""
    config: str
    group: List[str] = field(default_factory=list)
    status: str = 'ERROR'
    losses: str = ''
    detail: str = ''
    seconds: float = 0.0


def config_root() -> str:
    import mmseg
    return osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')


def find_configs(root: str, only: Optional[str] = None) -> List[str]:
    files = glob.glob(osp.join(root, '**', '*.py'), recursive=True)
    files = sorted(
        osp.relpath(f, root) for f in files if '_base_' not in f.split(os.sep))
    if only:
        files = [f for f in files if re.search(only, f)]
    return files


def _dicts(node) -> List[dict]:
    found = []
    walk(node, lambda d, path: found.append(d))
    return found


def signature(model: dict) -> tuple:
    """What decides how InfoBatch meets a model: segmentor, backbone, and
    each head with its pixel sampler and its losses' reduction options."""
    heads = []

    def visit(node, path):
        terms = loss_terms(node)
        if terms:
            sampler = (node.get('sampler') or {}).get('type')
            heads.append((node.get('type'), sampler,
                          tuple((key, t['type'], bool(t.get('use_sigmoid')),
                                 bool(t.get('avg_non_ignore')),
                                 t.get('class_weight') is not None,
                                 t.get('per_image'), t.get('reduction'))
                                for key in sorted(terms) for t in terms[key])))

    walk(model, visit)
    backbone = model.get('backbone') or {}
    # Heads without loss terms (MaskFormer's) count by their type.
    top_heads = []
    for key in ('decode_head', 'auxiliary_head'):
        value = model.get(key) or []
        for head in value if isinstance(value, list) else [value]:
            top_heads.append(head.get('type'))
    return (model.get('type'), backbone.get('type'), tuple(top_heads),
            tuple(heads))


def weight_of(path: str, model: dict) -> tuple:
    """Rank a group's configs: the lightest backbone first."""
    backbone = model.get('backbone') or {}
    size = [backbone.get(k) for k in ('depth', 'embed_dims', 'num_layers')]
    return tuple(v if isinstance(v, int) else 0 for v in size) + (path, )


def describe_losses(model: dict) -> str:
    names = []

    def visit(node, path):
        for terms in loss_terms(node).values():
            for t in terms:
                name = t['type'].split('.')[-1]
                if t.get('use_sigmoid') and name == 'CrossEntropyLoss':
                    name = 'CrossEntropyLoss(sigmoid)'
                names.append(name)

    walk(model, visit)
    return '+'.join(sorted(set(names))) or '-'


def group_configs(root: str, files: List[str]):
    """(representative, members, model cfg) per group; unreadable configs
    come back as results of their own."""
    groups, unreadable = defaultdict(list), []
    for path in files:
        try:
            model = Config.fromfile(osp.join(root, path)).model.to_dict()
            model = with_default_losses(model)
        except Exception as e:  # a config needing a missing package
            unreadable.append(
                Result(path, [path], 'not buildable', '', _reason(e)))
            continue
        groups[signature(model)].append((weight_of(path, model), path, model))
    picked = []
    for members in groups.values():
        members.sort(key=lambda m: m[0])
        picked.append((members[0][1], [m[1] for m in members], members[0][2]))
    picked.sort(key=lambda p: p[0])
    return picked, unreadable


def prepare_for_cpu(model: dict, size: int) -> dict:
    """No SyncBN, no pretrained checkpoint, ``size`` x ``size`` inputs."""
    model = copy.deepcopy(model)
    sync_bn_to_bn(model)

    def visit(node, path):
        if 'pretrained' in node and isinstance(node['pretrained'], str):
            node['pretrained'] = None
        init_cfg = node.get('init_cfg')
        inits = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        if any(isinstance(i, dict) and 'checkpoint' in i for i in inits):
            node['init_cfg'] = None

    walk(model, visit)
    backbone = model.get('backbone') or {}
    if 'img_size' in backbone:  # position tables sized for the input
        img_size = backbone['img_size']
        backbone['img_size'] = size if isinstance(img_size, int) else \
            (size, size)
    preprocessor = model.get('data_preprocessor')
    if preprocessor and preprocessor.get('size') is not None:
        preprocessor['size'] = (size, size)
    return model


def with_infobatch(path: str, model: dict) -> dict:
    """The model of the stock config ``path`` with ``model`` in it, through
    ``add_infobatch``: what ``tools/train.py --infobatch`` trains."""
    cfg = Config.fromfile(osp.join(config_root(), path))
    cfg.model = model
    return add_infobatch(cfg).model.to_dict()


def per_image_terms(model: dict) -> List[dict]:
    """The inner loss configs that the wrapping gave ``mode='per_image'``."""
    return [
        d['loss'] for d in _dicts(model)
        if d.get('type') == 'InfoBatchLoss' and d.get('mode') == 'per_image'
    ]


def refusal(loss: dict) -> str:
    """Why ``InfoBatchLoss`` in its default mode refuses ``loss``; ''
    where it serves it."""
    from mmseg.registry import MODELS
    try:
        MODELS.build(dict(type='InfoBatchLoss', loss=loss))
    except ValueError as e:
        return str(e)
    return ''


def build(model_cfg: dict):
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    # ConfigDict: heads read train_cfg.num_points and the like by attribute.
    model = MODELS.build(ConfigDict(model_cfg))
    try:
        model.init_weights()
    except Exception as e:  # SAN's needs the checkpoint we switched off
        raise RuntimeError('init_weights needs the pretrained checkpoint, '
                           f'a download: {_reason(e)}') from e
    return revert_sync_batchnorm(model).train()


def num_classes(model: dict) -> int:
    """The classes of the first head that names them."""
    found = [n['num_classes'] for n in _dicts(model) if 'num_classes' in n]
    return found[0] if found else 2  # a depth head


def make_batch(classes: int,
               size: int,
               seed: int = 0,
               ignore: bool = True) -> dict:
    """Random images; labels in blocks of 8 px, some ignored (255)."""
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(seed)
    cells = size // 8
    samples = []
    for _ in range(NUM_IMAGES):
        label = torch.randint(0, classes, (1, cells, cells), generator=g)
        if ignore:
            label[torch.rand(1, cells, cells, generator=g) < 0.1] = 255
        label = label.repeat_interleave(8, 1).repeat_interleave(8, 2)
        edge = (torch.rand(1, size, size, generator=g) < 0.1).long()
        sample = SegDataSample(
            metainfo=dict(
                img_shape=(size, size),
                ori_shape=(size, size),
                pad_shape=(size, size),
                img_path='',
                seg_map_path=''))
        sample.gt_sem_seg = PixelData(data=label)
        sample.gt_edge_map = PixelData(data=edge)  # PIDNet's boundaries
        samples.append(sample)
    inputs = [
        torch.randint(0, 256, (3, size, size), generator=g).to(torch.uint8)
        for _ in range(NUM_IMAGES)
    ]
    return dict(inputs=inputs, data_samples=samples)


def infobatch_losses(model):
    from mmseg_infobatch import InfoBatchLoss
    return [m for m in model.modules() if isinstance(m, InfoBatchLoss)]


def forward(model, batch, weights=None, seed=1):
    """One training forward; the same ``seed`` gives the same dropout and
    point sampling in the plain and the wrapped model."""
    for loss in infobatch_losses(model):
        loss.set_batch_weights(weights)
    torch.manual_seed(seed)
    data = model.data_preprocessor(copy.deepcopy(batch), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, log_vars = model.parse_losses(losses)
    scores = [loss.pop_scores() for loss in infobatch_losses(model)]
    return total, log_vars, [s for s in scores if s is not None]


def gradients(model, total) -> Dict[str, torch.Tensor]:
    model.zero_grad()
    total.backward()
    return {
        name: p.grad.clone()
        for name, p in model.named_parameters() if p.grad is not None
    }


def _close(a, b) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def compare(plain, wrapped, batch) -> str:
    """'' if equal at weights 1, else what differs."""
    total, log_vars, _ = forward(plain, batch)
    grads = gradients(plain, total)
    total_w, log_vars_w, scores = forward(wrapped, batch,
                                          torch.ones(NUM_IMAGES))
    grads_w = gradients(wrapped, total_w)
    diffs = [
        f'{k}: {log_vars[k]:.6g} vs {log_vars_w.get(k, float("nan")):.6g}'
        for k in log_vars if 'loss' in k and not _close(
            torch.tensor(log_vars[k]),
            torch.tensor(log_vars_w.get(k, float('nan'))))
    ]
    if set(grads) != set(grads_w):
        diffs.append('different parameters get gradients')
    diffs += [
        f'grad {k}' for k in grads
        if k in grads_w and not _close(grads[k], grads_w[k])
    ][:3]
    if not scores:
        diffs.append('no scores')
    return '; '.join(diffs)


def check_rescale_and_train(wrapped, batch, steps: int) -> str:
    """'' if the loss at TRAIN_WEIGHTS is sum_i w_i * loss(e_i) and a few
    steps at those weights train (finite loss, scores, moving weights)."""
    weights = torch.tensor(TRAIN_WEIGHTS)
    # Some models update buffers in a training forward (EMANet's bases):
    # start each of these forwards from the same state.
    state = copy.deepcopy(wrapped.state_dict())

    def loss_at(w):
        wrapped.load_state_dict(state)
        with torch.no_grad():
            return forward(wrapped, batch, w)[0]

    total = loss_at(weights)
    shares = [loss_at(torch.eye(NUM_IMAGES)[i]) for i in range(NUM_IMAGES)]
    expected = sum(w * s for w, s in zip(weights, shares))
    if not torch.allclose(total, expected, rtol=1e-4, atol=1e-6):
        return f'loss at weights {TRAIN_WEIGHTS} is {total.item():.6g}, ' \
               f'not sum_i w_i * loss(e_i) = {expected.item():.6g}'
    params = [p for p in wrapped.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optim = torch.optim.SGD(params, lr=1e-3)
    for step in range(steps):
        total, _, scores = forward(wrapped, batch, weights, seed=2 + step)
        score = sum(scores)
        if not torch.isfinite(total):
            return f'non-finite loss at step {step}'
        if score.shape != (NUM_IMAGES, ) or not torch.isfinite(score).all():
            return f'bad scores at step {step}: {score}'
        optim.zero_grad()
        total.backward()
        optim.step()
    if all(torch.equal(a, p) for a, p in zip(before, params)):
        return 'no parameter moved'
    return ''


def _reason(e: BaseException) -> str:
    """Why a config can't be built or run here, in a few words."""
    text = f'{type(e).__name__}: {e}'.replace('\n', ' ')
    rules = [
        (r'init_weights needs the pretrained checkpoint',
         'needs its pretrained checkpoint (a download) to initialise'),
        (r'mmdet', 'needs mmdet (not installed)'),
        (r'mmpretrain', 'needs mmpretrain (not installed)'),
        (r'No such file|not found|does not exist|urlopen|download|'
         r'HTTP|Connection', 'needs a download'),
        (r'CUDA|cuda', 'needs CUDA'),
        (r'install required packages', 'needs its optional packages'),
        (r'No module named \'?([\w.]+)', r'needs package \1'),
    ]
    for pattern, reason in rules:
        match = re.search(pattern, text)
        if match:
            return match.expand(reason)
    return text[:160]


def build_and_run_plain(model: dict, size: int):
    """The CPU model config, plain model, a batch it trains on, and a note
    on how that batch differs from the default one."""
    classes = num_classes(model)
    while True:
        cpu_model = prepare_for_cpu(model, size)
        plain = build(cpu_model)
        try:
            forward(plain, make_batch(classes, size))
            return cpu_model, plain, make_batch(classes, size), ''
        except Exception as e:
            # LRASPP pools with a 49 px kernel at 1/8 of the input.
            if 'too small' not in str(e) or size >= 512:
                error = e
                break
            size *= 2
    # mmseg's CE with class_weight can't index the ignore label (PIDNet,
    # CGNet): check such configs on labels without it.
    batch = make_batch(classes, size, ignore=False)
    try:
        forward(plain, batch)
    except Exception:
        raise error
    return cpu_model, plain, batch, \
        f'labels without 255, plain mmseg fails on them ({_reason(error)})'


def check(path: str, model: dict, size: int, steps: int) -> Result:
    """Run the checks of the module docstring on one config."""
    model = with_default_losses(model)
    result = Result(path, losses=describe_losses(model))
    if not any(loss_terms(node) for node in _dicts(model)):
        result.status = 'no loss_decode'
        result.detail = 'heads compute their losses without loss_decode'
        return result
    try:
        model, plain, batch, note = build_and_run_plain(model, size)
    except Exception as e:
        result.status, result.detail = 'not buildable', _reason(e)
        return result
    try:
        wrapped_cfg = with_infobatch(path, model)
    except (TypeError, ValueError) as e:  # refused, with the reason
        result.status, result.detail = 'refused', _reason(e)
        return result
    terms = per_image_terms(wrapped_cfg)
    # add_infobatch chose the mode that InfoBatchLoss's own refusal names:
    # a user who wraps by hand is told the same.
    if any("mode='per_image'" not in refusal(term) for term in terms):
        result.detail = 'a refusal at build does not name the option'
        return result
    try:
        wrapped = build(wrapped_cfg)
    except Exception as e:
        result.status, result.detail = 'refused', _reason(e)
        return result
    per_image = sorted({term['type'] for term in terms})
    try:
        wrapped.load_state_dict(plain.state_dict())
        differs = compare(plain, wrapped, batch)
        broken = check_rescale_and_train(wrapped, batch, steps)
    except Exception as e:
        result.detail = f'{type(e).__name__}: {e}'[:300]
        return result
    if broken:
        result.status, result.detail = 'ERROR', broken
    elif per_image:
        result.status = 'per-image'
        result.detail = (f"mode='per_image' for {', '.join(per_image)}; "
                         f'at weights 1: {differs or "equal on this data"}')
    elif differs:
        result.status, result.detail = 'DIFFERENT', differs
    else:
        result.status = 'equal'
    result.detail = '; '.join(d for d in (result.detail, note) if d)
    return result


def table(results: List[Result]) -> str:
    """Markdown table of results and counts."""
    lines = [
        '| config (configs it stands for) | losses | result | detail |',
        '|---|---|---|---|'
    ]
    for r in results:
        detail = r.detail.replace('|', '\\|')[:200]
        lines.append(f'| {r.config} ({len(r.group)}) | {r.losses} | '
                     f'{r.status} | {detail} |')
    return '\n'.join(lines)


def counts(results: List[Result]) -> str:
    groups = Counter(r.status for r in results)
    configs = Counter()
    for r in results:
        configs[r.status] += len(r.group)
    lines = ['| result | checked | stock configs |', '|---|---|---|']
    for status in STATUSES:
        lines.append(f'| {status} | {groups[status]} | {configs[status]} |')
    lines.append(f'| total | {len(results)} | {sum(configs.values())} |')
    return '\n'.join(lines)


def write_markdown(path: str, results: List[Result], seconds: float):
    """Replace the generated section of ``path`` (between the markers)."""
    begin, end = '<!-- check_compat:begin -->', '<!-- check_compat:end -->'
    import mmseg
    body = (f'{begin}\n'
            f'Generated by `tools/analysis_tools/check_compat.py` with mmseg '
            f'{mmseg.__version__}, torch {torch.__version__}, on CPU in '
            f'{seconds / 60:.1f} min.\n\n{counts(results)}\n\n'
            f'{table(results)}\n{end}')
    text = open(path).read() if osp.exists(path) else ''
    if begin in text and end in text:
        text = text[:text.index(begin)] + body + \
            text[text.index(end) + len(end):]
    else:
        text = text + ('\n' if text else '') + body + '\n'
    with open(path, 'w') as f:
        f.write(text)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', help='regex on config paths to keep')
    parser.add_argument('--limit', type=int, help='check at most N groups')
    parser.add_argument(
        '--size',
        type=int,
        default=64,
        help='image side in pixels; a multiple of 32')
    parser.add_argument(
        '--steps',
        type=int,
        default=2,
        help='training steps at non-unit weights')
    parser.add_argument('--markdown', help='write the tables into this file')
    args = parser.parse_args(argv)
    if args.size % 32:
        parser.error(f'--size must be a multiple of 32, but got {args.size}')
    return args


def quiet():
    """Keep the table readable: no init reports or mmseg warnings."""
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    warnings.filterwarnings('ignore')


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.time()
    init_default_scope('mmseg')
    quiet()
    root = config_root()
    picked, results = group_configs(root, find_configs(root, args.only))
    if args.limit is not None:
        picked = picked[:args.limit]
    print(
        f'{len(picked)} groups to check, {len(results)} configs '
        'unreadable here',
        flush=True)
    for path, members, model in picked:
        t = time.time()
        try:
            result = check(path, model, args.size, args.steps)
        except Exception as e:  # a bug of this tool: report, go on
            result = Result(path, status='ERROR', detail=f'check: {e!r}')
        result.group, result.seconds = members, time.time() - t
        results.append(result)
        print(
            f'{result.status:>14}  {result.seconds:5.1f}s  {path}  '
            f'{result.detail[:120]}',
            flush=True)
    seconds = time.time() - start
    results.sort(key=lambda r: r.config)
    print(f'\n{counts(results)}\n\nin {seconds / 60:.1f} min')
    if args.markdown:
        write_markdown(args.markdown, results, seconds)
    bad = [r for r in results if r.status in ('DIFFERENT', 'ERROR')]
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
