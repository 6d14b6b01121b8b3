"""Add InfoBatch to an mmengine config: ``add_infobatch(cfg, **knobs)``.

What a user would write by hand (README, "Adding InfoBatch to a config"),
done from the config itself: ``custom_imports``, ``InfoBatchSampler`` in
place of the train sampler, ``InfoBatchHook``, and every loss term of every
head wrapped in ``InfoBatchLoss`` with its options as they are. The result
is an ordinary config: dumped, it trains on its own.
"""
import copy
import inspect
import logging
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import import_modules_from_strings

from .hook import InfoBatchHook
from .hook.checks import UNSERVED_HEADS
from .loss.loss_kinds import exact_mode, mmseg_loss_name
from .sampler import InfoBatchSampler

PACKAGE = 'mmseg_infobatch'
# The train sampler's settings that InfoBatchSampler takes over.
KEPT_SAMPLER_KEYS = ('shuffle', 'seed')
# Knobs of which a sampler takes one: the one given replaces the other.
EXCLUSIVE_KNOBS = ('ratio', 'target_saving')


def _parameters(cls, skip: Tuple[str, ...]) -> Tuple[str, ...]:
    params = inspect.signature(cls.__init__).parameters
    return tuple(name for name in params if name not in ('self', ) + skip)


# The knobs are the components' own arguments; their defaults live there.
SAMPLER_KNOBS = _parameters(InfoBatchSampler, skip=('dataset', ))
HOOK_KNOBS = _parameters(InfoBatchHook, skip=())


def walk(node, visit: Callable, path: str = '') -> None:
    """Call ``visit(node, path)`` on every dict of a config tree, parents
    first; ``path`` reads like ``decode_head[1].loss_decode``."""
    if isinstance(node, dict):
        visit(node, path)
        for key, value in list(node.items()):
            walk(value, visit, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            walk(value, visit, f'{path}[{i}]')


def loss_terms(head: dict) -> Dict[str, list]:
    """A head's loss configs by key: ``loss_decode`` and others such as
    EncHead's ``loss_se_decode``."""
    terms = {}
    for key, value in head.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if key.startswith('loss_') and key.endswith('_decode') and all(
                isinstance(v, dict) and 'type' in v for v in values):
            terms[key] = list(values)
    return terms


def default_loss_decode(cls, node: dict) -> Optional[dict]:
    """The ``loss_decode`` a head of class ``cls`` gets when its config
    ``node`` names none: the default of the first ``__init__`` in the MRO
    that takes it, if the ones before pass their keywords on."""
    from mmseg.models.decode_heads.decode_head import BaseDecodeHead
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if 'loss_decode' in params:
            # KNet's IterativeDecodeHead skips BaseDecodeHead's __init__,
            # which needs num_classes: no num_classes, no loss of its own.
            if klass is BaseDecodeHead and 'num_classes' not in node:
                return None
            return copy.deepcopy(params['loss_decode'].default)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return None
    return None


def with_default_losses(model: dict) -> dict:
    """Write out the loss of heads that use their class's default
    (BiSeNetV1's auxiliary heads): a config can only wrap what it names."""
    from mmseg.registry import MODELS
    model = copy.deepcopy(model)

    def visit(node, path):
        if 'loss_decode' in node or not isinstance(node.get('type'), str):
            return
        try:
            cls = MODELS.get(node['type'])
        except Exception:  # e.g. a type of a package not installed
            return
        default = default_loss_decode(cls, node) \
            if isinstance(cls, type) else None
        if isinstance(default, dict):
            node['loss_decode'] = default

    walk(model, visit)
    return model


def choose_mode(term: dict, where: str) -> Tuple[Optional[str], str]:
    """The ``mode`` that ``InfoBatchLoss`` needs for the loss config
    ``term``: None where its default ``'auto'`` serves the loss exactly,
    else ``'per_image'`` and why (an mmseg loss that couples the images of
    a batch, as ``'auto'``'s refusal says). A loss outside mmseg, whose
    reduction InfoBatch cannot know, is refused."""
    from mmseg.registry import MODELS
    loss = MODELS.build(copy.deepcopy(term))
    exact, why = exact_mode(loss)
    if exact is not None:
        return None, ''
    if mmseg_loss_name(loss) is None:
        raise ValueError(
            f"add_infobatch cannot wrap {where} ({term['type']}), a loss "
            'from outside mmseg: InfoBatchLoss does not know how it '
            'reduces, so it cannot choose a mode. Wrap it in the config '
            'yourself, with '
            "mode='weight' if its forward takes weight= shaped like the "
            'label and divides by a count that does not depend on it, else '
            "mode='per_image': dict(type='InfoBatchLoss', mode=..., "
            f"loss=dict(type='{term['type']}', ...)). add_infobatch leaves "
            'wrapped terms as they are.')
    return 'per_image', why


def wrap_losses(model: dict) -> Tuple[dict, List[str]]:
    """``model`` with every loss term of every head wrapped in
    ``InfoBatchLoss`` (terms already wrapped stay as they are), and a line
    per wrapped term. The inner loss configs are kept exactly."""
    model = with_default_losses(model)
    unserved = []
    found = []

    def visit(node, path):
        if node.get('type') in UNSERVED_HEADS:
            unserved.append(f"{path} ({node['type']})")
        for key, terms in loss_terms(node).items():
            found.append((node, key, f'{path}.{key}'))

    walk(model, visit, 'model')
    if unserved:
        raise TypeError(
            f'InfoBatch cannot serve {", ".join(unserved)}: its losses match '
            'queries to masks, so their inputs have no per-image rows to '
            'score or rescale. Train this model without InfoBatch '
            '(docs/compat.md lists what is served).')
    if not found:
        raise TypeError(
            'add_infobatch found no head loss to wrap in model (no '
            '`loss_decode` in any head), so InfoBatch could score and '
            'rescale no image. It serves mmseg decode heads with '
            "loss_decode=dict(type=...); train this model without InfoBatch.")
    lines = []
    for node, key, where in found:
        single = isinstance(node[key], dict)
        terms = [node[key]] if single else list(node[key])
        for i, term in enumerate(terms):
            if _is_type(term, 'InfoBatchLoss'):
                continue
            name = where if single else f'{where}[{i}]'
            mode, why = choose_mode(term, name)
            wrapped = dict(type='InfoBatchLoss', loss=copy.deepcopy(term))
            if mode is not None:
                wrapped['mode'] = mode
                print_log(
                    f"add_infobatch: {name} ({term['type']}) gets "
                    f"mode='per_image': {why}. Image by image, that "
                    'coupling becomes per image (docs/compat.md).',
                    logger='current',
                    level=logging.WARNING)
            terms[i] = wrapped
            lines.append(f"{name}: InfoBatchLoss({term['type']}"
                         f"{', per_image' if mode else ''})")
        node[key] = terms[0] if single else type(node[key])(terms)
    return model, lines


def _check_knobs(knobs: dict) -> None:
    unknown = sorted(set(knobs) - set(SAMPLER_KNOBS) - set(HOOK_KNOBS))
    if unknown:
        raise TypeError(
            f'add_infobatch got unknown knobs {unknown}. Valid are '
            f'InfoBatchSampler\'s {list(SAMPLER_KNOBS)} and InfoBatchHook\'s '
            f'{list(HOOK_KNOBS)}.')


def _is_type(node, name: str) -> bool:
    return isinstance(node,
                      dict) and node.get('type') in (name, f'{PACKAGE}.{name}')


def _add_sampler(cfg: Config, knobs: dict) -> str:
    loader = cfg.get('train_dataloader')
    if not isinstance(loader, dict):
        raise TypeError('add_infobatch needs a config that trains: it has no '
                        'train_dataloader, whose sampler InfoBatch replaces.')
    if loader.get('batch_sampler') is not None:
        raise TypeError(
            'InfoBatch finds each batch\'s sample indices from the sampler\'s '
            'pass order, which needs the default torch BatchSampler, but '
            f"train_dataloader sets batch_sampler={loader['batch_sampler']}. "
            'Remove batch_sampler from train_dataloader.')
    old = dict(loader.get('sampler') or {})
    dropped = []
    if _is_type(old, 'InfoBatchSampler'):
        sampler = dict(old)
        for key in EXCLUSIVE_KNOBS:
            if key in knobs:
                for other in set(EXCLUSIVE_KNOBS) - {key} - set(knobs):
                    sampler.pop(other, None)
    else:
        sampler = dict(type='InfoBatchSampler')
        sampler.update({k: old[k] for k in KEPT_SAMPLER_KEYS if k in old})
        dropped = sorted(set(old) - set(KEPT_SAMPLER_KEYS) - {'type'})
    sampler.update(knobs)
    if sampler == old:
        return ''
    loader.sampler = sampler
    return (f"train_dataloader.sampler: {old.get('type')} -> {sampler}" +
            (f" (not kept: {', '.join(dropped)})" if dropped else ''))


def _add_hook(cfg: Config, knobs: dict) -> str:
    hooks = list(cfg.get('custom_hooks') or [])
    found = [h for h in hooks if _is_type(h, 'InfoBatchHook')]
    if found:
        hook = found[0]
        if all(hook.get(k) == v and k in hook for k, v in knobs.items()):
            return ''
        hook.update(knobs)
    else:
        hook = dict(type='InfoBatchHook', **knobs)
        hooks.append(hook)
    cfg.custom_hooks = hooks
    return f'custom_hooks: {dict(hook)}'


def _add_import(cfg: Config) -> str:
    custom = dict(cfg.get('custom_imports') or {})
    imports = custom.get('imports', [])
    imports = [imports] if isinstance(imports, str) else list(imports)
    if PACKAGE in imports:
        return ''
    cfg.custom_imports = dict(
        imports=imports + [PACKAGE],
        allow_failed_imports=custom.get('allow_failed_imports', False))
    return f'custom_imports: {cfg.custom_imports.imports}'


def add_infobatch(cfg: Config, **knobs) -> Config:
    """Return a copy of ``cfg`` that trains with InfoBatch.

    What it adds is what a config written by hand holds
    (``configs/upernet_r50_ade20k_infobatch.py``), and nothing else:

    - ``custom_imports`` gains ``mmseg_infobatch``, so that the config,
      dumped, builds on its own;
    - ``train_dataloader.sampler`` becomes ``InfoBatchSampler``, keeping the
      old sampler's ``shuffle`` and ``seed``;
    - ``custom_hooks`` gains ``InfoBatchHook`` unless it has one;
    - every loss term of every head (cascade and auxiliary heads, lists of
      terms, heads that use their class's default ``loss_decode``) is
      wrapped in ``InfoBatchLoss`` with its options exactly as they were.
      Where the wrapper's default mode refuses an mmseg loss that couples
      the images of a batch (OHEM, BoundaryLoss, batch-wide Lovasz), it
      gets ``mode='per_image'``, with a warning in the log.

    ``train_cfg`` stays as it is: the hook ends an iteration-based run when
    its passes are done. Parts that are there already are kept, so a
    second call changes nothing; knobs given to it update the sampler and
    the hook. A model InfoBatch cannot serve (query-based heads, no head
    loss, a loss from outside mmseg not wrapped yet) or a custom
    ``batch_sampler`` is refused with the reason and the fix.

    Args:
        cfg (Config): A training config, e.g. a stock mmseg one.
        **knobs: Arguments of ``InfoBatchSampler`` (``ratio``,
            ``target_saving``, ``max_ratio``, ``policy``, ...) and of
            ``InfoBatchHook`` (``delta``, ``anneal``, ``adjust_schedule``);
            the components' defaults apply to those not given. ``ratio`` and
            ``target_saving`` each replace the other in a sampler that has
            it.

    Returns:
        Config: The config with InfoBatch; ``cfg`` is left unchanged.

    Example:
        >>> cfg = Config.fromfile('pspnet_r50-d8_4xb4-80k_ade20k-512x512.py')
        >>> cfg = add_infobatch(cfg, ratio=0.3, delta=0.9)
    """
    _check_knobs(knobs)
    cfg = copy.deepcopy(cfg)
    # The config's own imports may register the losses to be wrapped.
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg.custom_imports)
    if not isinstance(cfg.get('model'), dict):
        raise TypeError('add_infobatch needs a config with a model dict.')
    model, losses = wrap_losses(cfg.model.to_dict())
    changes = [
        _add_import(cfg),
        _add_sampler(cfg, {
            k: v
            for k, v in knobs.items() if k in SAMPLER_KNOBS
        }),
        _add_hook(cfg, {
            k: v
            for k, v in knobs.items() if k in HOOK_KNOBS
        }),
    ] + losses
    if losses:
        cfg.model = model
    changes = [c for c in changes if c]
    if changes:
        print_log(
            'add_infobatch added to the config:\n  ' + '\n  '.join(changes),
            logger='current')
    return cfg
