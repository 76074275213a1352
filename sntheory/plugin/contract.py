"""The plug-in contract: how a user's weight normalizer is named, loaded, checked and applied.

A normalizer reaches sntheory in one of three forms, all wrapped in one :class:`PluginNormalizer`
(``.normalize(weight, **geometry)`` and ``.attach(module)``), so that the battery treats built-ins
and plug-ins alike:

``function``        ``f(weight, **options) -> effective weight``, the plain form. It may also accept
                    layer geometry as keyword arguments, chosen by name from
                    :data:`GEOMETRY_KEYWORDS` (``kind="conv"|"linear"``, ``stride``, ``padding``,
                    ``input_size``, ``dilation``, ``groups``, ``padding_mode``, ``kernel_size``)
                    or all of them through ``**kwargs``. Only keywords the function names are
                    passed, and only when known (a dense layer has no ``stride``), so every one but
                    ``kind`` must have a default.
``parametrization`` a ``torch.nn.Module`` subclass whose ``forward(W)`` returns the effective weight
                    -- the contract of sntheory's built-ins (``sntheory.normalizers.base``) and of
                    ``torch.nn.utils.parametrize``. Its constructor takes the weight as its first
                    positional argument (as ``SpectralNormW(weight, ...)``) or nothing (as torch's
                    tutorial parametrizations), plus options and geometry keywords as for functions.
                    ``normalize`` builds a fresh instance on the weight and applies it (training
                    mode: stateful estimators take their warm-up and one update step).
                    A module *instance* is accepted too; it is deep-copied for every use.
``builtin``         a name of :data:`sntheory.normalizers.NORMALIZERS` (``"snw"``, ``"bssn"`` ...):
                    its exact pure function and its attach function.

Specs (:func:`load_normalizer`): a built-in name, a name given to :func:`register_normalizer`, an
import path ``"mypkg.norms:my_norm"`` (dotted attributes allowed after the colon), a file path
``"path/to/file.py:my_norm"``, or the object itself.

Validation (:func:`validate_normalizer`, run by :func:`load_normalizer` and
:func:`register_normalizer` unless told not to) applies the normalizer to small random float64
weights -- a 3x3/s1 and a 4x4/s2 conv kernel and a dense matrix, each with its geometry -- and
back-propagates a random cotangent through it; parametrizations are also attached to a real
``Conv2d`` / ``Linear`` and run forward and backward. Each failure raises
:class:`NormalizerContractError` (a ``ValueError``; :class:`NormalizerContractTypeError` is also a
``TypeError``) whose ``failure`` attribute names it:

================  ===========================================================================
failure           meaning
================  ===========================================================================
not-found         no such module, file attribute or registered name (a missing *file* raises
                  ``FileNotFoundError``)
import-error      importing the module or file raised
not-callable      the object is neither callable nor a torch Module (TypeError)
signature         the signature cannot be called as ``f(weight, **geometry)``
raised            calling it on a valid weight raised (the original exception is chained)
not-a-tensor      the output is not a floating-point torch.Tensor (TypeError)
shape             the output's shape differs from the weight's
non-finite-output the output holds NaN or infinity
no-gradient       the output does not depend differentiably on the weight (detached)
non-finite-grad   the weight's gradient holds NaN or infinity
attach            attaching it to a module with ``register_parametrization`` failed
================  ===========================================================================
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import inspect
import math
import numbers
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..conv.geometry import ConvGeometry
from ..normalizers import NORMALIZERS
from ..normalizers.base import Normalizer, check_weight, module_weight

__all__ = ["GEOMETRY_KEYWORDS", "PluginNormalizer", "NormalizerContractError",
           "NormalizerContractTypeError", "FunctionParametrization", "load_normalizer",
           "register_normalizer", "unregister_normalizer", "registered_normalizers",
           "validate_normalizer", "module_geometry"]

GEOMETRY_KEYWORDS = ("kind", "stride", "padding", "input_size", "dilation", "groups",
                     "padding_mode", "kernel_size")
KINDS = ("conv", "linear")
FORMS = ("builtin", "function", "parametrization")


class NormalizerContractError(ValueError):
    """A normalizer that breaks the plug-in contract; ``failure`` names the broken rule."""

    def __init__(self, message: str, failure: str) -> None:
        super().__init__(message)
        self.failure = failure


class NormalizerContractTypeError(NormalizerContractError, TypeError):
    """A contract failure of the wrong-type kind (not callable, output not a tensor)."""


# ---- geometry ----------------------------------------------------------------------------------

def _check_geometry(weight: torch.Tensor, geometry: Mapping) -> dict:
    """Validated geometry keywords: known names, ``kind`` set (inferred from ``weight.ndim``:
    4 -> conv, 2 -> linear) and consistent with the weight; ``None`` values dropped."""
    unknown = sorted(set(geometry) - set(GEOMETRY_KEYWORDS))
    if unknown:
        raise TypeError(f"unknown geometry keyword(s) {unknown}; accepted: "
                        f"{list(GEOMETRY_KEYWORDS)}")
    out = {k: v for k, v in geometry.items() if v is not None}
    kind = out.get("kind")
    if kind is None:
        if weight.ndim not in (2, 4):
            raise ValueError(f"cannot infer `kind` for a weight of shape {tuple(weight.shape)}: "
                             f"pass kind='conv' (4-D kernels) or kind='linear' (matrices)")
        kind = "conv" if weight.ndim == 4 else "linear"
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {list(KINDS)}, got {kind!r}")
    if kind == "conv" and weight.ndim != 4:
        raise ValueError(f"kind='conv' needs a 4-D kernel (c_out, c_in, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if kind == "linear" and weight.ndim != 2:
        raise ValueError(f"kind='linear' needs a 2-D weight (out, in), got shape "
                         f"{tuple(weight.shape)}")
    out["kind"] = kind
    if kind == "conv":
        out.setdefault("kernel_size", tuple(int(s) for s in weight.shape[2:]))
    return out


def module_geometry(module: nn.Module, input_size=None) -> dict:
    """Geometry keywords of a ``Conv2d`` (torch's stride, padding, dilation, groups, padding mode;
    ``padding='same'/'valid'`` resolved) or a ``Linear`` (``kind='linear'``)."""
    if isinstance(module, nn.Linear):
        return {"kind": "linear"}
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"`module` must be an nn.Conv2d or nn.Linear, got "
                        f"{type(module).__name__}")
    padding = module.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size, module.dilation))
    geometry = {"kind": "conv", "stride": tuple(module.stride), "padding": tuple(padding),
                "dilation": tuple(module.dilation), "groups": module.groups,
                "padding_mode": module.padding_mode, "kernel_size": tuple(module.kernel_size)}
    if input_size is not None:
        geometry["input_size"] = tuple(int(s) for s in ConvGeometry(input_size).input_size)
    return geometry


# ---- signatures --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Signature:
    takes_weight: bool          # first positional parameter receives the weight
    accepted: frozenset         # keyword names it accepts (GEOMETRY_KEYWORDS or options)
    var_keyword: bool           # has **kwargs
    required: tuple             # required keyword names beyond the weight


def _parameters(fn: Callable, *, drop_self: bool = False):
    """``(signature, parameters)`` of ``fn``; ``None`` when Python cannot tell (some builtins)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None, None
    params = list(sig.parameters.values())
    return sig, params[1:] if drop_self else params


def _inspect(fn: Callable, what: str, *, weight_first: str = "always",
             drop_self: bool = False) -> _Signature:
    """Read ``fn``'s signature; raise ``signature`` failures for shapes the battery cannot call.

    ``weight_first``: ``"always"`` (functions: the first positional parameter is the weight, and
    there must be one) or ``"if-required"`` (constructors: the first positional parameter is the
    weight only when it has no default -- ``__init__(self, scale=2.0)`` takes no weight).
    """
    sig, params = _parameters(fn, drop_self=drop_self)
    if sig is None:  # no signature to read: call as f(weight)
        return _Signature(True, frozenset(), False, ())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind == p.VAR_POSITIONAL for p in params)
    if weight_first == "always":
        takes_weight = bool(positional) or var_positional
        if not takes_weight:
            raise NormalizerContractError(
                f"{what} has signature {sig} but must accept the weight as its first positional "
                f"argument, as in `def my_norm(weight, *, kind='conv'): ...`", "signature")
    else:
        takes_weight = bool(positional) and positional[0].default is positional[0].empty
    rest = positional[1:] if takes_weight and positional else positional
    rest = rest + [p for p in params if p.kind == p.KEYWORD_ONLY]
    positional_only = [p.name for p in rest if p.kind == p.POSITIONAL_ONLY]
    if positional_only:
        raise NormalizerContractError(
            f"{what} has signature {sig}: parameters {positional_only} are positional-only "
            f"beyond the weight; the battery passes only the weight positionally and the rest by "
            f"keyword", "signature")
    return _Signature(takes_weight, frozenset(p.name for p in rest),
                      any(p.kind == p.VAR_KEYWORD for p in params),
                      tuple(p.name for p in rest if p.default is p.empty))


def _check_forward(fn: Callable, what: str, *, drop_self: bool) -> None:
    """A parametrization's ``forward`` must be callable as ``forward(W)``."""
    sig = _inspect(fn, what, drop_self=drop_self)
    if sig.required:
        raise NormalizerContractError(
            f"{what} has required parameter(s) {list(sig.required)} beyond the weight; a "
            f"parametrization's forward takes only the weight", "signature")


def _check_keywords(sig: _Signature, options: Mapping, what: str, text: str) -> None:
    """Options must be accepted; required keywords must be supplied by options or be ``kind``."""
    refused = sorted(k for k in options if k not in sig.accepted and not sig.var_keyword)
    if refused:
        raise NormalizerContractError(
            f"{what} has signature {text} and does not accept the option(s) {refused}",
            "signature")
    missing = sorted(k for k in sig.required if k not in options and k != "kind")
    if missing:
        hint = ("geometry keywords other than `kind` must have defaults: a dense layer has no "
                "stride, padding or input size" if set(missing) & set(GEOMETRY_KEYWORDS)
                else "pass them as options (Python: options={...}; CLI: --option NAME=VALUE)")
        raise NormalizerContractError(
            f"{what} has signature {text} with required parameter(s) {missing} that the battery "
            f"cannot supply; {hint}", "signature")


def _signature_text(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


# ---- the wrapper -------------------------------------------------------------------------------

class FunctionParametrization(Normalizer):
    """Parametrization ``W -> fn(W, **keywords)`` for a plain-function normalizer (stateless)."""

    def __init__(self, fn: Callable, keywords: Mapping) -> None:
        super().__init__()
        self.fn = fn
        self.keywords = dict(keywords)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return self.fn(weight, **self.keywords)

    def extra_repr(self) -> str:
        return f"fn={getattr(self.fn, '__name__', self.fn)!r}, keywords={self.keywords}"


@dataclass(frozen=True, eq=False)
class PluginNormalizer:
    """A weight normalizer in one of the three forms, with one calling convention.

    Attributes
    ----------
    name : a short label (the registered / attribute / built-in name).
    source : how it was specified (the spec string, or ``<python object>``).
    form : ``"builtin"``, ``"function"`` or ``"parametrization"``.
    obj : the function, Module subclass or instance, or the built-in name.
    options : extra keyword arguments passed on every call (e.g. ``{"scale": 1.75}``).
    layer_scale : the per-layer operator-norm budget the normalizer intends (1 for SN-like
        methods; ``scale`` for SSN / BSSN, ``gamma`` for the gamma variants): the battery's
        Lipschitz budget is ``prod_l layer_scale * alpha_l``.
    """

    name: str
    source: str
    form: str
    obj: object = field(repr=False)
    options: dict = field(default_factory=dict)
    layer_scale: float = 1.0
    _sig: _Signature | None = field(default=None, repr=False)

    @property
    def accepted_geometry(self) -> tuple[str, ...]:
        """The geometry keywords this normalizer receives."""
        if self._sig is None:  # built-ins and Module instances take no geometry keywords
            return ()
        if self._sig.var_keyword:
            return GEOMETRY_KEYWORDS
        return tuple(k for k in GEOMETRY_KEYWORDS if k in self._sig.accepted)

    def describe(self) -> dict:
        """JSON-able identity: name, source, form, options, layer scale."""
        return {"name": self.name, "source": self.source, "form": self.form,
                "options": {k: (v if isinstance(v, (int, float, str, bool)) or v is None
                                else repr(v)) for k, v in self.options.items()},
                "layer_scale": self.layer_scale}

    def _keywords(self, geometry: Mapping) -> dict:
        passed = {k: v for k, v in geometry.items() if k in self.accepted_geometry}
        return {**passed, **self.options}

    def normalize(self, weight: torch.Tensor, **geometry) -> torch.Tensor:
        """The effective weight for ``weight`` in a layer of the given geometry.

        ``geometry``: keywords of :data:`GEOMETRY_KEYWORDS` (``kind`` inferred from the weight's
        dimension when omitted). Built-ins use their exact pure functions (SVD norms); a
        parametrization class is instantiated on ``weight.detach()`` and applied to ``weight``.
        """
        check_weight(weight)
        geometry = _check_geometry(weight, geometry)
        if self.form == "builtin":
            return _builtin_normalize(self.obj, weight, geometry, self.options)
        if self.form == "function":
            return self.obj(weight, **self._keywords(geometry))
        return self._instance(weight, geometry)(weight)

    def _instance(self, weight: torch.Tensor, geometry: Mapping) -> nn.Module:
        if isinstance(self.obj, nn.Module):
            return copy.deepcopy(self.obj)
        keywords = self._keywords(geometry)
        if self._sig is not None and self._sig.takes_weight:
            return self.obj(weight.detach(), **keywords)
        return self.obj(**keywords)

    def parametrization(self, weight: torch.Tensor, **geometry) -> nn.Module:
        """The ``nn.Module`` that ``attach`` registers for a weight of this geometry."""
        check_weight(weight)
        geometry = _check_geometry(weight, geometry)
        if self.form == "function":
            return FunctionParametrization(self.obj, self._keywords(geometry))
        if self.form == "parametrization":
            return self._instance(weight, geometry)
        raise TypeError("built-ins attach through their own functions: use `attach`")

    def attach(self, module: nn.Module, name: str = "weight", *, input_size=None) -> nn.Module:
        """Parametrize ``module.<name>`` (``Conv2d`` or ``Linear``) with this normalizer; returns
        ``module``. ``input_size`` (H, W) is passed to normalizers that take it (conv only)."""
        weight = module_weight(module, name)
        geometry = module_geometry(module, input_size if isinstance(module, nn.Conv2d) else None)
        if self.form == "builtin":
            kwargs = dict(self.options)
            if self.obj == "snconv" and isinstance(module, nn.Conv2d):
                kwargs["input_size"] = geometry.get("input_size")
            return NORMALIZERS[self.obj].attach(module, name, **kwargs)
        parametrize.register_parametrization(module, name,
                                             self.parametrization(weight.detach(), **geometry))
        return module


def _builtin_normalize(name: str, weight: torch.Tensor, geometry: Mapping,
                       options: Mapping) -> torch.Tensor:
    if name == "snconv" and geometry["kind"] == "conv":
        if "input_size" not in geometry:
            raise ValueError("the built-in 'snconv' needs `input_size` for conv kernels (its norm "
                             "is the operator norm of the layer at that input size)")
        g = ConvGeometry(geometry["input_size"], geometry.get("stride", 1),
                         geometry.get("padding", 0), geometry.get("padding_mode", "zeros"),
                         geometry.get("dilation", 1), geometry.get("groups", 1))
        return NORMALIZERS[name].normalize(weight, g, **options)
    return NORMALIZERS[name].normalize(weight, **options)


# ---- registry and loading ----------------------------------------------------------------------

_REGISTRY: dict[str, PluginNormalizer] = {}


def _layer_scale(form: str, obj, options: Mapping, layer_scale) -> float:
    if layer_scale is not None:
        value = layer_scale
    elif form == "builtin" and obj in ("ssn", "bssn"):
        value = options.get("scale", 1.0)
    elif form == "builtin" and obj in ("same-gamma", "diff-gamma"):
        value = options.get("gamma", 1.0)
    else:
        value = 1.0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f"`layer_scale` must be a finite number > 0, got {value!r}")
    return float(value)


def _wrap(obj, name: str, source: str, options: Mapping, layer_scale) -> PluginNormalizer:
    """Classify ``obj`` and check that its signature can be called; no numerical checks."""
    options = dict(options or {})
    what = f"normalizer {name!r} ({source})"
    if isinstance(obj, str) and obj in NORMALIZERS:
        return PluginNormalizer(name, source, "builtin", obj, options,
                                _layer_scale("builtin", obj, options, layer_scale))
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise NormalizerContractTypeError(
                f"{what} is the class {obj.__name__}, which is not a torch.nn.Module subclass; "
                f"pass a function `weight -> weight` or a parametrization Module", "not-callable")
        if obj.__init__ is nn.Module.__init__:  # no constructor of its own: takes nothing
            sig = _Signature(False, frozenset(), False, ())
        else:
            sig = _inspect(obj.__init__, f"{what} (constructor)", weight_first="if-required",
                           drop_self=True)
        _check_keywords(sig, options, f"{what} (constructor)", _signature_text(obj))
        _check_forward(obj.forward, f"{what} (forward)", drop_self=True)
        return PluginNormalizer(name, source, "parametrization", obj, options,
                                _layer_scale("parametrization", obj, options, layer_scale), sig)
    if isinstance(obj, nn.Module):
        if options:
            raise NormalizerContractError(
                f"{what} is a Module instance: options {sorted(options)} cannot be passed to it; "
                f"pass its class instead", "signature")
        _check_forward(obj.forward, f"{what} (forward)", drop_self=False)
        return PluginNormalizer(name, source, "parametrization", obj, {},
                                _layer_scale("parametrization", obj, options, layer_scale), None)
    if not callable(obj):
        raise NormalizerContractTypeError(
            f"{what} is a {type(obj).__name__}, which is not callable: a normalizer is a function "
            f"`weight -> normalized weight` or a torch.nn.Module parametrization", "not-callable")
    sig = _inspect(obj, what)
    _check_keywords(sig, options, what, _signature_text(obj))
    return PluginNormalizer(name, source, "function", obj, options,
                            _layer_scale("function", obj, options, layer_scale), sig)


def _import_file(path_text: str, spec: str):
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"`spec` {spec!r}: no such file {str(path)!r} (resolved from "
                                f"{os.getcwd()!r})")
    resolved = path.resolve()
    digest = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    module_name = f"sntheory_plugin_{resolved.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise NormalizerContractError(f"`spec` {spec!r}: {str(resolved)!r} cannot be imported as "
                                      f"a Python module", "import-error")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise NormalizerContractError(f"`spec` {spec!r}: importing {str(resolved)!r} raised "
                                      f"{type(exc).__name__}: {exc}", "import-error") from exc
    return module


def _import_module(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise NormalizerContractError(
            f"`spec` {spec!r}: cannot import module {module_name!r} ({exc}); is it installed or "
            f"on PYTHONPATH? For a file, write 'path/to/file.py:name'", "not-found") from exc
    except Exception as exc:
        raise NormalizerContractError(f"`spec` {spec!r}: importing {module_name!r} raised "
                                      f"{type(exc).__name__}: {exc}", "import-error") from exc


def _resolve_string(spec: str):
    """``(obj, name)`` for a string spec (registry and built-ins are handled by the caller)."""
    if ":" not in spec:
        known = sorted(set(NORMALIZERS) | set(_REGISTRY))
        raise NormalizerContractError(
            f"`spec` {spec!r} is neither a built-in nor a registered normalizer ({known}) nor an "
            f"import path: write 'mypkg.module:function' or 'path/to/file.py:function'",
            "not-found")
    left, attr = spec.rsplit(":", 1)
    if not left or not attr:
        raise NormalizerContractError(f"`spec` {spec!r} is malformed: expected 'module:attribute' "
                                      f"or 'path/to/file.py:attribute'", "not-found")
    is_file = left.endswith(".py") or "/" in left or os.sep in left
    module = _import_file(left, spec) if is_file else _import_module(left, spec)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise NormalizerContractError(
                f"`spec` {spec!r}: {getattr(module, '__name__', left)!r} has no attribute "
                f"{attr!r}", "not-found")
        obj = getattr(obj, part)
    return obj, attr.split(".")[-1]


def load_normalizer(spec, *, options: Mapping | None = None, name: str | None = None,
                    layer_scale: float | None = None, validate: bool = True) -> PluginNormalizer:
    """A :class:`PluginNormalizer` from a spec, checked against the contract.

    Parameters
    ----------
    spec : str, callable, Module class or instance, or PluginNormalizer
        A built-in name (``"snw"``), a registered name, ``"mypkg.norms:my_norm"``,
        ``"path/to/file.py:my_norm"``, or the object itself.
    options : keyword arguments passed on every call (built-ins: e.g. ``{"scale": 1.75}``).
    name : label to use instead of the derived one.
    layer_scale : per-layer operator-norm budget (default: 1, or the built-in's scale / gamma).
    validate : run :func:`validate_normalizer` (the numerical checks) before returning.

    Raises
    ------
    NormalizerContractError (ValueError / TypeError), FileNotFoundError, TypeError, ValueError
        With the ``failure`` of the module docstring's table.
    """
    if isinstance(spec, PluginNormalizer):
        if options or layer_scale is not None:
            raise ValueError("`options` / `layer_scale` cannot be changed on an already loaded "
                             "PluginNormalizer; load it from its spec")
        plugin = spec
    elif isinstance(spec, str):
        text = spec.strip()
        if not text:
            raise ValueError("`spec` must name a normalizer, got an empty string")
        if text in _REGISTRY and not options and layer_scale is None:
            plugin = _REGISTRY[text]
        elif text in _REGISTRY:
            registered = _REGISTRY[text]
            plugin = _wrap(registered.obj, name or text, text,
                           {**registered.options, **dict(options or {})},
                           registered.layer_scale if layer_scale is None else layer_scale)
        elif text in NORMALIZERS:
            plugin = _wrap(text, name or text, text, options or {}, layer_scale)
        else:
            obj, attr = _resolve_string(text)
            plugin = _wrap(obj, name or attr, text, options or {}, layer_scale)
    else:
        label = name or getattr(spec, "__name__", None) or type(spec).__name__
        plugin = _wrap(spec, label, "<python object>", options or {}, layer_scale)
    if name is not None and plugin.name != name:
        plugin = PluginNormalizer(name, plugin.source, plugin.form, plugin.obj, plugin.options,
                                  plugin.layer_scale, plugin._sig)
    if validate:
        validate_normalizer(plugin)
    return plugin


def register_normalizer(name: str, obj, *, options: Mapping | None = None,
                        layer_scale: float | None = None, overwrite: bool = False,
                        validate: bool = True) -> PluginNormalizer:
    """Make ``obj`` loadable by ``name`` (``load_normalizer(name)``, ``sntheory try name`` in this
    process). Built-in names cannot be shadowed; an existing registration needs ``overwrite``."""
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"`name` must be a non-empty string, got {name!r}")
    if name in NORMALIZERS:
        raise ValueError(f"`name` {name!r} is a built-in normalizer; choose another name")
    if ":" in name or "/" in name:
        raise ValueError(f"`name` {name!r} must not contain ':' or '/' (those mark import paths)")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"`name` {name!r} is already registered; pass overwrite=True to replace "
                         f"it")
    plugin = load_normalizer(obj, options=options, name=name, layer_scale=layer_scale,
                             validate=validate)
    plugin = PluginNormalizer(name, f"registered:{name}", plugin.form, plugin.obj,
                              plugin.options, plugin.layer_scale, plugin._sig)
    _REGISTRY[name] = plugin
    return plugin


def unregister_normalizer(name: str) -> None:
    """Remove a registration (KeyError-free: a ValueError names the unknown name)."""
    if name not in _REGISTRY:
        raise ValueError(f"`name` {name!r} is not registered; registered: {sorted(_REGISTRY)}")
    del _REGISTRY[name]


def registered_normalizers() -> dict[str, PluginNormalizer]:
    """A copy of the registry."""
    return dict(_REGISTRY)


# ---- validation --------------------------------------------------------------------------------

# Probe weights of the validation (float64, N(0, 1/fan_in) entries) and their geometry.
VALIDATION_PROBES = (
    ("conv3x3/s1", (8, 4, 3, 3), {"kind": "conv", "stride": (1, 1), "padding": (1, 1),
                                  "input_size": (8, 8), "dilation": (1, 1), "groups": 1,
                                  "padding_mode": "zeros"}),
    ("conv4x4/s2", (6, 5, 4, 4), {"kind": "conv", "stride": (2, 2), "padding": (1, 1),
                                  "input_size": (8, 8), "dilation": (1, 1), "groups": 1,
                                  "padding_mode": "zeros"}),
    ("linear", (6, 10), {"kind": "linear"}),
)


def _fail(plugin: PluginNormalizer, probe: str, message: str, failure: str,
          cls=NormalizerContractError):
    return cls(f"normalizer {plugin.name!r} ({plugin.source}) on the {probe} probe weight: "
               f"{message}", failure)


def _check_output(plugin, probe, weight, out) -> None:
    if not isinstance(out, torch.Tensor):
        raise _fail(plugin, probe, f"returned a {type(out).__name__}, not a torch.Tensor",
                    "not-a-tensor", NormalizerContractTypeError)
    if not out.is_floating_point():
        raise _fail(plugin, probe, f"returned a tensor of dtype {out.dtype}; it must be "
                    f"floating point", "not-a-tensor", NormalizerContractTypeError)
    if out.shape != weight.shape:
        raise _fail(plugin, probe, f"changed the shape from {tuple(weight.shape)} to "
                    f"{tuple(out.shape)}; the effective weight must have the weight's shape",
                    "shape")
    finite = torch.isfinite(out.detach())
    if not bool(finite.all()):
        idx = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise _fail(plugin, probe, f"output{list(idx)} = {out.detach()[idx].item()!r} is not "
                    f"finite", "non-finite-output")


def _check_gradient(plugin, probe, leaf, out, generator) -> None:
    cotangent = torch.randn(out.shape, generator=generator, dtype=out.dtype)
    if not out.requires_grad:
        raise _fail(plugin, probe, "the output does not require grad: it is detached from the "
                    "weight, so no gradient reaches the raw parameter", "no-gradient")
    try:
        (out * cotangent).sum().backward()
    except Exception as exc:
        raise _fail(plugin, probe, f"backpropagating through it raised {type(exc).__name__}: "
                    f"{exc}", "raised") from exc
    grad = leaf.grad
    if grad is None:
        raise _fail(plugin, probe, "no gradient reached the weight", "no-gradient")
    finite = torch.isfinite(grad)
    if not bool(finite.all()):
        idx = tuple(int(i) for i in torch.nonzero(~finite)[0])
        raise _fail(plugin, probe, f"the weight's gradient{list(idx)} = {grad[idx].item()!r} is "
                    f"not finite", "non-finite-grad")


def validate_normalizer(plugin: PluginNormalizer, *, seed: int = 0) -> list[str]:
    """Check ``plugin`` against the contract on small random weights (see the module docstring);
    returns the names of the probes passed, raises :class:`NormalizerContractError` otherwise.

    The checks run with torch's global generator forked and seeded with ``seed``, so a plug-in
    that draws random numbers neither changes the caller's stream nor varies between runs.
    """
    if not isinstance(plugin, PluginNormalizer):
        raise TypeError(f"`plugin` must be a PluginNormalizer, got {type(plugin).__name__}")
    generator = torch.Generator().manual_seed(seed)
    passed = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for probe, shape, geometry in VALIDATION_PROBES:
            fan_in = math.prod(shape[1:])
            leaf = (torch.randn(shape, generator=generator, dtype=torch.float64)
                    / math.sqrt(fan_in)).requires_grad_()
            try:
                out = plugin.normalize(leaf, **geometry)
            except NormalizerContractError:
                raise
            except Exception as exc:
                raise _fail(plugin, probe, f"raised {type(exc).__name__}: {exc}",
                            "raised") from exc
            _check_output(plugin, probe, leaf, out)
            _check_gradient(plugin, probe, leaf, out, generator)
            passed.append(probe)
        if plugin.form == "parametrization":
            _check_attach(plugin, generator)
            passed.append("attach")
    return passed


def _check_attach(plugin: PluginNormalizer, generator: torch.Generator) -> None:
    for layer, x_shape, size in ((nn.Conv2d(4, 8, 3, padding=1, bias=False), (2, 4, 8, 8),
                                  (8, 8)), (nn.Linear(10, 6, bias=False), (2, 10), None)):
        layer = layer.double()
        probe = f"attach to {type(layer).__name__}"
        try:
            plugin.attach(layer, input_size=size)
            out = layer(torch.randn(x_shape, generator=generator, dtype=torch.float64))
        except Exception as exc:
            raise _fail(plugin, probe, f"register_parametrization or the forward pass raised "
                        f"{type(exc).__name__}: {exc}", "attach") from exc
        _check_gradient(plugin, probe, layer.parametrizations.weight.original, out, generator)
