"""The loss tests' way to build and call an InfoBatchLoss, written once."""


def case_ids(cases):
    """The names (first entries) of parametrized cases, as test ids."""
    return [case[0] for case in cases]


def build_wrapped(inner, **kwargs):
    """An InfoBatchLoss around ``inner`` (a config), built by mmseg."""
    from mmseg.registry import MODELS
    return MODELS.build(dict(type='InfoBatchLoss', loss=inner, **kwargs))


def call_weighted(loss, args, kwargs, weights=None):
    """``loss(*args, **kwargs)`` with these batch weights set first."""
    loss.set_batch_weights(weights)
    return loss(*args, **kwargs)
