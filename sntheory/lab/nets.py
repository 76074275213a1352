"""Discriminators and generators for the lab, built with any normalizer of the family.

A :class:`Discriminator` is the paper's ``D(x) = a_L(w_L a_{L-1}(... a_1(w_1 x)))``: an ordered list
of weight layers (``nn.Conv2d`` / ``nn.Linear``), one internal activation between consecutive layers,
and a flatten before the first dense layer. ``forward`` returns the **pre-activation** ``z`` of the
output, shape ``(B,)``; the output activation ``a_L`` (identity for WGAN/hinge, sigmoid for the
non-saturating loss) belongs to the loss. Nothing else sits in the discriminator (no batch norm, no
dropout), so the gradient and Hessian bounds of THEORY.md (P1, P3) apply to it verbatim.

:meth:`Discriminator.functional_forward` evaluates ``z`` with *explicit* weights and biases, the form
``torch.func`` needs for per-sample gradients with respect to the effective weights (the
normalization held constant, as P1 states) and for the rescaled networks of P2 / T1.

Architectures (``NetConfig.arch``):

* ``"cifar-cnn"`` — Miyato's CNN from the paper's CIFAR10 experiments: conv3x3/s1 64, conv4x4/s2 64,
  conv3x3/s1 128, conv4x4/s2 128, conv3x3/s1 256, conv4x4/s2 256, conv3x3/s1 512, dense to 1, 'same'
  zero padding (pad 1 everywhere, so 4x4/s2 halves the size), leaky ReLU 0.1. ``width`` scales the
  channel counts (``width=64`` is the paper's; channels are ``width * (1, 1, 2, 2, 4, 4, 8)``).
  Generator: dense to 4x4x(8 width'), deconv4x4/s2 to 4, 2, 1 times ``width'`` each with batch norm
  and ReLU, conv3x3/s1 to the image channels and tanh (``width'`` = ``gen_width``, 64 in the paper).
* ``"dcgan"`` — a DCGAN-style pair for MNIST-like images: ``depth`` conv4x4/s2 layers (pad 1) with
  ``width * 2**i`` channels, then dense to 1; the generator mirrors it with transposed convolutions.
* ``"mlp"`` — flatten, ``depth`` hidden dense layers of ``width`` units, dense to 1; MLP generator.

Activations (``NetConfig.activation``), with the facts the checks need (:class:`Activation`):
``relu``, ``leaky_relu:<slope>`` (Lipschitz ``max(1, slope)``, positively homogeneous),
``scaled_relu:<c>`` (``c * relu``: Lipschitz ``c`` — the negative control for P1), ``tanh``, ``elu``,
``softplus`` and ``gelu`` (smooth, not homogeneous: negative controls for P2 / P3).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import require_choice, require_positive_int
from ..conv.geometry import ConvGeometry

__all__ = ["Activation", "parse_activation", "ACTIVATION_NAMES", "NetConfig", "LayerInfo",
           "Discriminator", "build_discriminator", "build_generator", "ARCHITECTURES"]

ARCHITECTURES = ("cifar-cnn", "dcgan", "mlp")


# --------------------------------------------------------------------------------------------------
# activations


@dataclass(frozen=True)
class Activation:
    """An internal activation and the properties THEORY.md's hypotheses refer to."""

    name: str                      # canonical text, e.g. "leaky_relu:0.1"
    fn: Callable[[torch.Tensor], torch.Tensor] = field(repr=False, compare=False)
    lipschitz: float               # Lipschitz constant
    homogeneous: bool              # a(c x) = c a(x) for c > 0 (ReLU family)
    piecewise_linear: bool         # second derivative zero almost everywhere
    zero_at_zero: bool             # a(0) = 0

    @property
    def meets_p1_hypotheses(self) -> bool:
        """P1 needs Lipschitz <= 1 and a(0) = 0."""
        return self.lipschitz <= 1.0 and self.zero_at_zero

    def module(self) -> nn.Module:
        return _ActivationModule(self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class _ActivationModule(nn.Module):
    def __init__(self, activation: Activation):
        super().__init__()
        self.activation = activation

    def forward(self, x):
        return self.activation.fn(x)

    def extra_repr(self) -> str:
        return self.activation.name


def _with_param(text: str, default: float | None) -> tuple[str, float | None]:
    if ":" not in text:
        return text, default
    name, _, value = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"`activation` parameter must be a number, got {text!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"`activation` parameter must be finite and >= 0, got {text!r}")
    return name, number


ACTIVATION_NAMES = ("relu", "leaky_relu[:slope]", "scaled_relu:<c>", "tanh", "elu", "softplus",
                    "gelu")


def parse_activation(text: str | Activation) -> Activation:
    """``"relu"``, ``"leaky_relu:0.1"``, ``"scaled_relu:2"``, ``"tanh"``, ``"elu"``,
    ``"softplus"``, ``"gelu"`` -> :class:`Activation`."""
    if isinstance(text, Activation):
        return text
    if not isinstance(text, str):
        raise TypeError(f"`activation` must be a string such as 'leaky_relu:0.1', got "
                        f"{type(text).__name__}")
    name, param = _with_param(text.strip(), None)
    if name == "relu" and param is None:
        return Activation("relu", F.relu, 1.0, True, True, True)
    if name == "leaky_relu":
        slope = 0.01 if param is None else param
        return Activation(f"leaky_relu:{slope:g}", lambda x: F.leaky_relu(x, slope),
                          max(1.0, slope), True, True, True)
    if name == "scaled_relu":
        if param is None:
            raise ValueError("`activation` 'scaled_relu' needs its scale, e.g. 'scaled_relu:2'")
        c = param
        return Activation(f"scaled_relu:{c:g}", lambda x: c * F.relu(x), c, True, True, True)
    if param is None:
        smooth = {"tanh": (torch.tanh, 1.0), "elu": (F.elu, 1.0),
                  "softplus": (F.softplus, 1.0), "gelu": (F.gelu, 1.13)}
        if name in smooth:
            fn, lip = smooth[name]
            # softplus(0) = log 2; gelu's Lipschitz constant is ~1.129
            return Activation(name, fn, lip, False, False, name != "softplus")
    raise ValueError(f"`activation` must be one of {list(ACTIVATION_NAMES)}, got {text!r}")


# --------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class NetConfig:
    """Architecture of a discriminator / generator pair.

    ``width``: base channel count (conv) or hidden units (mlp). ``depth``: number of stride-2 convs
    (dcgan) or hidden layers (mlp); ignored by cifar-cnn (fixed at 7 convs). ``gen_width``: the
    generator's base width (defaults to ``width``).
    """

    arch: str = "dcgan"
    image_size: int = 16
    channels: int = 1
    width: int = 32
    depth: int = 2
    activation: str = "leaky_relu:0.1"
    bias: bool = True
    latent_dim: int = 64
    gen_width: int | None = None

    def __post_init__(self) -> None:
        require_choice("arch", self.arch, ARCHITECTURES)
        for name in ("image_size", "channels", "width", "depth", "latent_dim"):
            require_positive_int(name, getattr(self, name))
        if self.gen_width is not None:
            require_positive_int("gen_width", self.gen_width)
        if not isinstance(self.bias, bool):
            raise TypeError(f"`bias` must be true or false, got {self.bias!r}")
        parse_activation(self.activation)
        if self.arch == "cifar-cnn" and (self.image_size % 8 or self.image_size < 8):
            raise ValueError(f"`image_size` must be a multiple of 8 (>= 8) for arch 'cifar-cnn' "
                             f"(three stride-2 convs, 4x4 generator seed), got {self.image_size}")
        if self.arch == "dcgan":
            factor = 2 ** self.depth
            if self.image_size % factor or self.image_size // factor < 1:
                raise ValueError(f"`image_size` must be a multiple of 2**depth = {factor} for arch "
                                 f"'dcgan' with depth {self.depth} (each conv4x4/s2 halves the "
                                 f"size), got {self.image_size}")

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "net") -> "NetConfig":
        """Strict: unknown keys are an error that names them and the valid ones."""
        if not isinstance(data, dict):
            raise TypeError(f"[{where}] must be a table, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"[{where}] has unknown keys {unknown}; valid keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


# --------------------------------------------------------------------------------------------------
# discriminator


@dataclass(frozen=True)
class LayerInfo:
    """One weight layer of a discriminator, in forward order."""

    index: int
    name: str                         # qualified module name, e.g. "layers.3"
    kind: str                         # "conv" or "linear"
    input_shape: tuple[int, ...]      # (C, H, W) or (n,)
    output_shape: tuple[int, ...]
    geometry: ConvGeometry | None     # conv only: input size, stride, padding
    label: str                        # e.g. "conv4x4/s2 64"


class Discriminator(nn.Module):
    """``z = w_L a(... a(w_1 x))`` with ordered weight layers; ``forward`` returns ``z`` (B,)."""

    def __init__(self, layers: Sequence[nn.Module], activation: Activation | str,
                 input_shape: Sequence[int]):
        super().__init__()
        if not layers:
            raise ValueError("`layers` must contain at least one Conv2d or Linear layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, (nn.Conv2d, nn.Linear)):
                raise TypeError(f"`layers[{i}]` must be nn.Conv2d or nn.Linear, got "
                                f"{type(layer).__name__}")
        kinds = ["conv" if isinstance(m, nn.Conv2d) else "linear" for m in layers]
        first_dense = kinds.index("linear") if "linear" in kinds else len(kinds)
        if "conv" in kinds[first_dense:]:
            raise ValueError("conv layers must all come before the dense layers")
        if not isinstance(layers[-1], nn.Linear) or layers[-1].out_features != 1:
            raise ValueError("the last layer must be nn.Linear(..., 1): D(x) is a scalar")
        self.layers = nn.ModuleList(layers)
        self.activation = parse_activation(activation)
        self.input_shape = tuple(int(s) for s in input_shape)
        self._info = self._trace()

    # ---- structure --------------------------------------------------------------------------
    def _trace(self) -> tuple[LayerInfo, ...]:
        infos = []
        shape = self.input_shape
        for i, layer in enumerate(self.layers):
            name = f"layers.{i}"
            if isinstance(layer, nn.Conv2d):
                if len(shape) != 3:
                    raise ValueError(f"layer {i} is a conv but receives a flat input {shape}")
                if shape[0] != layer.in_channels:
                    raise ValueError(f"layer {i} expects {layer.in_channels} channels, gets "
                                     f"{shape[0]}")
                try:
                    geometry = ConvGeometry.from_module(layer, shape[1:])
                    out_hw = geometry.output_size(layer.kernel_size)
                except ValueError as exc:
                    raise ValueError(f"layer {i} (conv{layer.kernel_size[0]}x"
                                     f"{layer.kernel_size[1]}/s{layer.stride[0]}) cannot take an "
                                     f"input of shape {shape}: {exc}") from exc
                if min(out_hw) < 1:
                    raise ValueError(f"input {shape} is too small for layer {i} "
                                     f"(conv{layer.kernel_size[0]}x{layer.kernel_size[1]}"
                                     f"/s{layer.stride[0]}): output would be {out_hw}")
                out = (layer.out_channels, *out_hw)
                label = (f"conv{layer.kernel_size[0]}x{layer.kernel_size[1]}/s{layer.stride[0]} "
                         f"{layer.out_channels}")
                infos.append(LayerInfo(i, name, "conv", shape, out, geometry, label))
            else:
                flat = math.prod(shape)
                if flat != layer.in_features:
                    raise ValueError(f"layer {i} (dense) expects {layer.in_features} inputs, gets "
                                     f"{flat} (= prod {shape})")
                out = (layer.out_features,)
                infos.append(LayerInfo(i, name, "linear", (flat,), out, None,
                                       f"dense {layer.out_features}"))
            shape = out
        return tuple(infos)

    @property
    def layer_info(self) -> tuple[LayerInfo, ...]:
        return self._info

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def has_bias(self) -> bool:
        return any(layer.bias is not None for layer in self.layers)

    def effective_weights(self) -> list[torch.Tensor]:
        """The weights the forward pass uses (after normalization), in layer order."""
        return [layer.weight for layer in self.layers]

    def biases(self) -> list[torch.Tensor | None]:
        return [layer.bias for layer in self.layers]

    def raw_weights(self) -> list[torch.Tensor]:
        """The trainable tensors before normalization (``parametrizations.weight.original``)."""
        out = []
        for layer in self.layers:
            param = getattr(layer, "parametrizations", None)
            out.append(param.weight.original if param is not None and "weight" in param
                       else layer.weight)
        return out

    def input_sizes(self) -> dict[str, tuple[int, int]]:
        """Conv layer name -> input (H, W) (what SNConv needs)."""
        return {i.name: i.geometry.input_size for i in self._info if i.kind == "conv"}

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.functional_forward(x, self.effective_weights(), self.biases())

    def functional_forward(self, x: torch.Tensor, weights: Sequence[torch.Tensor],
                           biases: Sequence[torch.Tensor | None] | None = None,
                           activation: Activation | str | None = None) -> torch.Tensor:
        """``z`` computed with the given weights / biases (same geometry as the layers).

        Accepts a batch ``(B, *input_shape)`` -> ``(B,)`` or one sample ``input_shape`` -> ``()``
        (the form ``torch.func.vmap`` passes).
        """
        if len(weights) != len(self.layers):
            raise ValueError(f"`weights` must have one tensor per layer ({len(self.layers)}), got "
                             f"{len(weights)}")
        if biases is None:
            biases = [None] * len(self.layers)
        act = self.activation if activation is None else parse_activation(activation)
        single = x.dim() == len(self.input_shape)
        h = x.unsqueeze(0) if single else x
        last = len(self.layers) - 1
        for i, (layer, w, b) in enumerate(zip(self.layers, weights, biases)):
            if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
                ph, pw = layer.padding
                h = F.conv2d(F.pad(h, (pw, pw, ph, ph), mode=layer.padding_mode), w, b,
                             stride=layer.stride, dilation=layer.dilation, groups=layer.groups)
            elif isinstance(layer, nn.Conv2d):
                h = F.conv2d(h, w, b, stride=layer.stride, padding=layer.padding,
                             dilation=layer.dilation, groups=layer.groups)
            else:
                h = F.linear(h.flatten(1), w, b)
            if i < last:
                h = act(h)
        z = h.reshape(h.shape[0])
        return z[0] if single else z

    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``o_{t-1}`` for every layer t (the input each weight layer sees), no grad."""
        outs = []
        with torch.no_grad():
            h = x
            for i, layer in enumerate(self.layers):
                outs.append(h)
                h = layer(h if isinstance(layer, nn.Conv2d) else h.flatten(1))
                if i < len(self.layers) - 1:
                    h = self.activation(h)
        return outs


def _conv(c_in, c_out, k, s, bias):
    return nn.Conv2d(c_in, c_out, k, stride=s, padding=1, bias=bias)


def _discriminator_layers(cfg: NetConfig) -> list[nn.Module]:
    c, n, w = cfg.channels, cfg.image_size, cfg.width
    if cfg.arch == "cifar-cnn":
        plan = [(3, 1, w), (4, 2, w), (3, 1, 2 * w), (4, 2, 2 * w), (3, 1, 4 * w), (4, 2, 4 * w),
                (3, 1, 8 * w)]
        layers, ch = [], c
        for k, s, out in plan:
            layers.append(_conv(ch, out, k, s, cfg.bias))
            ch = out
        layers.append(nn.Linear(ch * (n // 8) ** 2, 1, bias=cfg.bias))
        return layers
    if cfg.arch == "dcgan":
        layers, ch, size = [], c, n
        for i in range(cfg.depth):
            out = w * 2 ** i
            layers.append(_conv(ch, out, 4, 2, cfg.bias))
            ch, size = out, size // 2
        layers.append(nn.Linear(ch * size * size, 1, bias=cfg.bias))
        return layers
    layers, fan_in = [], c * n * n
    for _ in range(cfg.depth):
        layers.append(nn.Linear(fan_in, w, bias=cfg.bias))
        fan_in = w
    layers.append(nn.Linear(fan_in, 1, bias=cfg.bias))
    return layers


def build_discriminator(cfg: NetConfig, normalizer="none", *,
                        normalizer_kwargs: dict | None = None,
                        seed: int | None = None) -> Discriminator:
    """A :class:`Discriminator` for ``cfg`` with normalizer ``normalizer`` attached to every layer.

    ``normalizer``: a name of :data:`sntheory.normalizers.NORMALIZERS` (SNConv gets the true input
    sizes; ``normalizer_kwargs`` go to its attach function), ``"plugin:<spec>"`` (a spec of
    :func:`sntheory.plugin.load_normalizer`: ``pkg.mod:attr``, ``path/file.py:attr``, a registered
    or built-in name; ``normalizer_kwargs`` are its options), or a normalizer object with
    ``.attach(module, name="weight", *, input_size=None)`` (a
    :class:`~sntheory.plugin.contract.PluginNormalizer`), attached to each layer with its input
    ``(H, W)`` (conv layers).

    ``seed`` (optional) seeds torch's default initialization for this build only.
    """
    from ..normalizers import apply_normalizer

    if not isinstance(cfg, NetConfig):
        raise TypeError(f"`cfg` must be a NetConfig, got {type(cfg).__name__}")
    plugin = None
    if isinstance(normalizer, str) and normalizer.startswith("plugin:"):
        from ..plugin.contract import load_normalizer
        plugin = load_normalizer(normalizer[len("plugin:"):], options=normalizer_kwargs or None)
    elif not isinstance(normalizer, str):
        if not callable(getattr(normalizer, "attach", None)):
            raise TypeError(f"`normalizer` must be a name of sntheory.normalizers.NORMALIZERS, "
                            f"'plugin:<spec>' or an object with .attach(module, name, *, "
                            f"input_size=None), got {type(normalizer).__name__}")
        if normalizer_kwargs:
            raise ValueError(f"`normalizer_kwargs` {sorted(normalizer_kwargs)} cannot be passed "
                             f"to a normalizer object; load it with its options instead")
        plugin = normalizer
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        disc = Discriminator(_discriminator_layers(cfg), cfg.activation, cfg.input_shape)
        if plugin is not None:
            for layer, info in zip(disc.layers, disc.layer_info):
                plugin.attach(layer, "weight", input_size=None if info.geometry is None
                              else info.geometry.input_size)
            return disc
        kwargs = dict(normalizer_kwargs or {})
        if normalizer == "snconv":
            kwargs["input_sizes"] = disc.input_sizes()
        apply_normalizer(disc, normalizer, **kwargs)
    return disc


# --------------------------------------------------------------------------------------------------
# generators (never normalized)


class _Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def build_generator(cfg: NetConfig, *, seed: int | None = None) -> nn.Module:
    """The generator paired with ``cfg.arch`` (latent ``(B, latent_dim)`` -> images in [-1, 1])."""
    if not isinstance(cfg, NetConfig):
        raise TypeError(f"`cfg` must be a NetConfig, got {type(cfg).__name__}")
    g = cfg.gen_width or cfg.width
    c, n, z = cfg.channels, cfg.image_size, cfg.latent_dim
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if cfg.arch == "mlp":
            hidden = []
            fan = z
            for _ in range(cfg.depth):
                hidden += [nn.Linear(fan, g), nn.BatchNorm1d(g), nn.ReLU()]
                fan = g
            return nn.Sequential(*hidden, nn.Linear(fan, c * n * n), nn.Tanh(),
                                 _Reshape((c, n, n)))
        if cfg.arch == "cifar-cnn":
            s0, chans = n // 8, [8 * g, 4 * g, 2 * g, g]
        else:
            s0 = n // 2 ** cfg.depth
            chans = [g * 2 ** i for i in reversed(range(cfg.depth))]
        mods: list[nn.Module] = [nn.Linear(z, chans[0] * s0 * s0), _Reshape((chans[0], s0, s0)),
                                 nn.BatchNorm2d(chans[0]), nn.ReLU()]
        if cfg.arch == "cifar-cnn":
            for a, b in zip(chans[:-1], chans[1:]):
                mods += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.BatchNorm2d(b),
                         nn.ReLU()]
            mods += [nn.Conv2d(chans[-1], c, 3, padding=1), nn.Tanh()]
        else:
            for i, a in enumerate(chans):
                last = i == len(chans) - 1
                b = c if last else chans[i + 1]
                mods.append(nn.ConvTranspose2d(a, b, 4, stride=2, padding=1))
                mods += [nn.Tanh()] if last else [nn.BatchNorm2d(b), nn.ReLU()]
        return nn.Sequential(*mods)
