"""Normalizers by name, and :func:`apply_normalizer` for whole models.

``NORMALIZERS[name]`` is a ``(attach, normalize)`` pair: ``attach(module, name="weight", ...)``
registers the parametrization on one layer and returns it, ``normalize(weight, ...)`` is the
stateless exact function for Monte Carlo use. Names follow THEORY.md's table.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._validation import require_choice
from .bsn import bsn, bsn_normalize
from .bssn import bssn, bssn_normalize
from .frobenius import frobenius, frobenius_normalize
from .gamma import diff_gamma, gamma_normalize, gamma_sn, make_gamma
from .none import identity, identity_normalize
from .snconv import snconv, snconv_normalize
from .snw import snw, snw_normalize
from .ssn import ssn, ssn_normalize

__all__ = ["NormalizerSpec", "NORMALIZERS", "apply_normalizer", "normalized_layers",
           "record_input_sizes"]


class NormalizerSpec(NamedTuple):
    """The attach function (one layer, returns it) and the pure function of a normalizer."""

    attach: Callable[..., nn.Module]
    normalize: Callable[..., torch.Tensor]


NORMALIZERS: Mapping[str, NormalizerSpec] = {
    "none": NormalizerSpec(identity, identity_normalize),
    "snw": NormalizerSpec(snw, snw_normalize),
    "snconv": NormalizerSpec(snconv, snconv_normalize),
    "ssn": NormalizerSpec(ssn, ssn_normalize),
    "bsn": NormalizerSpec(bsn, bsn_normalize),
    "bssn": NormalizerSpec(bssn, bssn_normalize),
    "same-gamma": NormalizerSpec(gamma_sn, gamma_normalize),
    "diff-gamma": NormalizerSpec(diff_gamma, gamma_normalize),
    "frobenius": NormalizerSpec(frobenius, frobenius_normalize),
}

_LAYERS = (nn.Conv2d, nn.Linear)


def normalized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, module)`` pairs :func:`apply_normalizer` acts on: every
    ``nn.Conv2d`` and ``nn.Linear`` (transposed convolutions and other layers are left alone)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LAYERS)]


def record_input_sizes(model: nn.Module, *sample_args, **sample_kwargs) -> dict[str, tuple[int,
                                                                                            int]]:
    """Run ``model(*sample_args, **sample_kwargs)`` once and record each Conv2d's input ``(H, W)``.

    The pass runs in eval mode under ``no_grad`` (batch-norm statistics untouched); every module's
    training flag is restored afterwards. A conv layer seen with two different sizes is an error.
    """
    sizes: dict[str, tuple[int, int]] = {}
    handles = []

    def hook_for(qualname: str):
        def hook(module, args):
            size = tuple(int(s) for s in args[0].shape[-2:])
            if sizes.setdefault(qualname, size) != size:
                raise ValueError(f"conv layer '{qualname}' is applied to inputs of two sizes, "
                                 f"{sizes[qualname]} and {size}: SNConv needs one geometry")
        return hook

    for qualname, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_pre_hook(hook_for(qualname)))
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(*sample_args, **sample_kwargs)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return sizes


def _conv_input_sizes(model, layers, input_sizes, sample_input) -> dict[str, tuple[int, int]]:
    if input_sizes is not None and sample_input is not None:
        raise ValueError("pass either `input_sizes` or `sample_input`, not both")
    if sample_input is not None:
        args = sample_input if isinstance(sample_input, tuple) else (sample_input,)
        found = record_input_sizes(model, *args)
    elif input_sizes is not None:
        if not isinstance(input_sizes, Mapping):
            raise TypeError(f"`input_sizes` must map layer names (or modules) to (H, W), got "
                            f"{type(input_sizes).__name__}")
        by_module = {id(m): n for n, m in layers}
        found = {}
        for key, size in input_sizes.items():
            qualname = by_module.get(id(key)) if isinstance(key, nn.Module) else key
            if qualname is None or qualname not in dict(layers):
                raise ValueError(f"`input_sizes` key {key!r} is not a Conv2d or Linear layer of "
                                 f"the model")
            found[qualname] = size
    else:
        found = {}
    missing = [n for n, m in layers if isinstance(m, nn.Conv2d) and n not in found]
    if missing:
        raise ValueError(f"SNConv needs the input size (H, W) of every conv layer; missing for "
                         f"{missing}. Pass `input_sizes={{name: (H, W)}}` or `sample_input=` "
                         f"(a batch the model accepts)")
    return found


def apply_normalizer(model: nn.Module, name: str, *, input_sizes: Mapping | None = None,
                     sample_input=None, **kwargs) -> nn.Module:
    """Attach normalizer ``name`` to the ``weight`` of every Conv2d and Linear layer of
    ``model``; returns ``model``.

    ``kwargs`` go to the attach function (``n_power_iterations``, ``eps``, ``dim``, ``scale``,
    ``gamma``, as it accepts). "same-gamma" creates one ``gamma`` Parameter (initial value
    ``gamma``, default 1, in the first layer's dtype) and shares it across all layers; pass an
    ``nn.Parameter`` to share your own. "snconv" needs each conv layer's input ``(H, W)``: give
    ``input_sizes`` (a dict keyed by qualified layer name or by module) or ``sample_input`` (a
    tensor, or a tuple of positional arguments, fed once through the model to record them).
    A layer whose weight is already parametrized is an error (normalizers do not stack here).
    """
    require_choice("name", name, NORMALIZERS)
    if name != "snconv" and (input_sizes is not None or sample_input is not None):
        raise ValueError(f"`input_sizes` / `sample_input` apply to 'snconv' only, not {name!r}")
    layers = normalized_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d or Linear layer to normalize")
    already = [n for n, m in layers if parametrize.is_parametrized(m, "weight")]
    if already:
        raise ValueError(f"layers {already} already have a parametrized weight; build a fresh "
                         f"model, or remove it with torch.nn.utils.parametrize."
                         f"remove_parametrizations")
    attach = NORMALIZERS[name].attach
    if name == "snconv":
        sizes = _conv_input_sizes(model, layers, input_sizes, sample_input)
        for n, m in layers:
            attach(m, "weight", input_size=sizes.get(n) if isinstance(m, nn.Conv2d) else None,
                   **kwargs)
        return model
    if name == "same-gamma":
        kwargs["gamma"] = make_gamma(kwargs.get("gamma", 1.0), layers[0][1].weight)
    for _, m in layers:
        attach(m, "weight", **kwargs)
    return model
