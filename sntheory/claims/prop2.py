"""Claim P2 (Prop. 2): rescaling invariance of positively homogeneous discriminators.

Statement (THEORY.md P2). If the internal activations are positively homogeneous
(``a(c y) = c a(y)`` for ``c > 0``: ReLU, leaky ReLU) and there are no biases, then for any
``c_1, ..., c_L > 0`` with ``prod_i c_i = 1`` the network with weights ``c_i w_i`` computes the same
``D(x)`` for every ``x``. Proof: by induction the ``i``-th hidden layer of the rescaled network is
``(prod_{j<=i} c_j) h_i(x)`` (homogeneity moves each positive factor through the activation), so the
output is ``(prod_j c_j) z(x) = z(x)``. *(toolkit)* With biases the same induction goes through when
the bias of layer ``i`` is scaled by ``prod_{j<=i} c_j`` (the factor the layer's pre-activation
carries), and fails in general when it is not; smooth activations (tanh, ELU, softplus, GELU) are
not homogeneous, and the identity fails for them.

What :func:`check_prop2` measures. On a float64 deep copy of the discriminator in eval mode (so the
effective weights are deterministic: SNw's power iteration does not step), for several seeded draws
of ``c`` (log-normal with ``sum log c = 0``, plus two extreme draws spanning ``1e-3 .. 1e3``), the
deviation ``|D_c(x_j) - D(x_j)|`` on a batch, for the variants

* ``bias-free`` (the paper's form), ``biases scaled`` (invariant), ``biases unscaled`` (a negative
  control: outside the hypotheses, must deviate), with the discriminator's own activation and with
  ReLU;
* each smooth activation (tanh, elu, softplus, gelu), bias-free: negative controls.

The round-off tolerance (why invariance "holds to round-off"). Each output of layer ``l`` is a
sum of ``K_l`` products plus a bias (``K_l`` = ``c_in/groups * kh * kw``, or the fan-in), so in
float64 its rounding error is at most ``gamma_{K_l+1} (|w_l| |h_{l-1}| + |b_l|)`` elementwise,
``gamma_n = n u / (1 - n u)``, ``u = 2^-53``, whatever the summation order (BLAS, im2col); rounding
the products ``c_i w_i``, the cumulative bias factors (at most ``L`` roundings) and the activation
(``u |a(pre)| <= u |a'(pre)| |pre|`` for the ReLU family, carried to the output by
``delta_l / a'``) adds ``L + 2`` more. To first order in ``u`` (and away from exact kinks, which
the rounding does not cross for data in general position) an error ``e_l`` in the pre-activation
of layer ``l`` reaches the scalar output as ``delta_l^T e_l``, with ``delta_l = dz/dpre_l`` the
sensitivity computed by backpropagation. Hence, per sample,

    |fl(D(x)) - D(x)|  <=  R(x) = sum_l gamma_{K_l+L+3} sum_i |delta_{l,i}(x)| local_{l,i}(x),
    local_l(x) = |w_l| |h_{l-1}(x)| + |b_l|

(:func:`output_roundoff_bound`). No product of ``|w|`` matrices appears (an "absolute-value
network" bound compounds ``|| |w| ||`` over the depth and, measured on the paper's 8-layer CIFAR
CNN, was 1e15 times the observed deviation and too loose to flag the GELU control); ``R`` uses the
exact sensitivities and is, for homogeneous nets, itself invariant under the rescaling. The
draw's factors are floats whose product is ``1 + delta``, which changes ``D_c`` by ``|delta D|``;
:func:`rescaling_draws` builds them with ``|delta| <= gamma_L`` (the last factor is
``1 / prod(others)``) and the tolerance allows ``2 gamma_{L+1}``, a priori (the exact ``delta``,
computed with rational arithmetic, is recorded: a draw whose product is not 1 is caught, not
excused). The check is

    |fl(D_c(x)) - fl(D(x))|  <=  R(x) + R_c(x) + 2 gamma_{L+1} |D(x)|     for every x of the batch,

reported as ``dev_over_bound`` (the largest ratio; <= 1 passes). ``bound_rel`` is the tolerance
relative to ``|D|`` and ``condition_max`` the cancellation factor ``sum |delta| local / |D|``.
It is a worst-case bound (``gamma_K`` grows like ``K``, typical rounding like ``sqrt(K)``).
Measured: against a long-double reference (a 96-wide MLP) the true float64 error of ``D`` uses at
most 1e-3 of ``R``; in-hypothesis P2 deviations use ~1e-3 of the tolerance on the test networks and
5e-6 on the paper's CIFAR CNN (width 64, 32x32, batch 16: tolerance <= 7e-7 of ``|D|`` for every
sample); the negative controls exceed it by 1e8 .. 1e12.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import require_positive_float, require_positive_int
from ..lab.nets import Activation, Discriminator, parse_activation
from ..monte_carlo.verdicts import Verdict
from ..provenance import provenance
from ..report.rows import ClaimRow, relative_slack

__all__ = ["LabCheckResult", "Float64Snapshot", "float64_snapshot", "require_seed",
           "as_input_batch",
           "rescaling_draws", "rescaled_parameters", "ForwardTrace", "forward_trace",
           "output_roundoff_bound", "apply_layer", "layer_gammas",
           "exact_product_error", "product_allowance", "layer_dot_lengths",
           "p2_deviation", "check_prop2", "check_prop2_run",
           "load_run_batch", "SMOOTH_CONTROLS", "UNIT_ROUNDOFF"]

CLAIM = "P2"
UNIT_ROUNDOFF = 2.0 ** -53
SMOOTH_CONTROLS = ("tanh", "elu", "softplus", "gelu")
BIAS_MODES = ("free", "scaled", "unscaled")
_BIAS_LABEL = {"free": "bias-free", "scaled": "biases scaled", "unscaled": "biases unscaled"}


# --------------------------------------------------------------------------------------------------
# what P2 and T1 share


@dataclass
class LabCheckResult:
    """What a lab check returns: flat per-probe ``records`` (deterministic, JSON-able), the report's
    :class:`ClaimRow` objects, a ``summary`` and the run's ``provenance`` (outside the records, since
    it carries the wall-clock time)."""

    claim: str
    records: list[dict]
    rows: list[ClaimRow]
    summary: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"claim": self.claim, "records": [dict(r) for r in self.records],
                "rows": [r.to_dict() for r in self.rows], "summary": self.summary,
                "provenance": self.provenance}

    @classmethod
    def from_json(cls, data: dict) -> "LabCheckResult":
        return cls(data["claim"], list(data["records"]),
                   [ClaimRow.from_dict(r) for r in data["rows"]], dict(data.get("summary", {})),
                   dict(data.get("provenance", {})))


@dataclass(frozen=True)
class Float64Snapshot:
    """A float64, eval-mode deep copy of a discriminator and its effective weights / biases."""

    disc: Discriminator
    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor | None, ...]

    @property
    def activation(self) -> Activation:
        return self.disc.activation

    @property
    def depth(self) -> int:
        return len(self.weights)


def require_seed(seed: object) -> int:
    """``seed`` as an int >= 0 (what ``numpy.random.SeedSequence`` accepts), or a clear error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an integer >= 0, got {seed!r} of type "
                        f"{type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0, got {seed!r}")
    return int(seed)


def float64_snapshot(disc: Discriminator) -> Float64Snapshot:
    """Deep-copy ``disc`` to float64 in eval mode and read its effective weights once.

    Eval mode freezes the power-iteration vectors of SNw-type normalizers, so the effective
    weights are a deterministic function of the raw weights and buffers; the original ``disc`` is
    left untouched (its mode, dtype and buffers).
    """
    if not isinstance(disc, Discriminator):
        raise TypeError(f"`disc` must be a sntheory.lab.nets.Discriminator, got "
                        f"{type(disc).__name__}")
    copy64 = copy.deepcopy(disc).double().eval()
    with torch.no_grad():
        weights = tuple(w.detach().clone() for w in copy64.effective_weights())
        biases = tuple(None if b is None else b.detach().clone() for b in copy64.biases())
    for i, w in enumerate(weights):
        if not torch.isfinite(w).all():
            raise ValueError(f"`disc` layer {i} ({copy64.layer_info[i].label}) has a non-finite "
                             f"effective weight; P2/T1 need finite weights")
    return Float64Snapshot(copy64, weights, biases)


def as_input_batch(disc: Discriminator, x, name: str = "x") -> torch.Tensor:
    """``x`` as a float64 tensor ``(B, *disc.input_shape)`` with finite entries, or a clear error."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy array of shape "
                        f"(B, {', '.join(map(str, disc.input_shape))}), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must hold floating-point values, got dtype {x.dtype}")
    if x.dim() != len(disc.input_shape) + 1 or tuple(x.shape[1:]) != disc.input_shape:
        raise ValueError(f"`{name}` must have shape (B, {', '.join(map(str, disc.input_shape))}) "
                         f"for this discriminator, got {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"`{name}` must hold at least one sample, got shape {tuple(x.shape)}")
    x = x.detach().to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"`{name}` must be finite (NaN/inf inputs have no output to compare)")
    return x


def _log_factors(n_layers: int, kind: str, rng: np.random.Generator, log_sd: float,
                 decades: float) -> np.ndarray:
    if kind == "lognormal":
        logc = rng.standard_normal(n_layers) * log_sd
    elif kind == "spread":           # log c evenly over [-decades, decades] (base 10), permuted
        logc = rng.permutation(np.linspace(-1.0, 1.0, n_layers)) * decades * math.log(10)
    else:                            # "alternating": c = 10^{+-decades} (the last 1 if L is odd)
        signs = np.array([(-1.0) ** i for i in range(n_layers)])
        if n_layers % 2:
            signs[-1] = 0.0
        logc = signs * decades * math.log(10)
    return logc - logc.mean()


def _unit_product(logc: np.ndarray) -> np.ndarray:
    """``exp(logc)`` with the last factor replaced by ``1 / prod(others)``, so that the product of
    the float factors is ``1 + delta`` with ``|delta| <= gamma_L`` (``L - 1`` roundings in the
    product, one in the division), whatever the size of the factors."""
    c = np.exp(logc)
    if c.size > 1:
        c[-1] = 1.0 / np.prod(c[:-1])
    else:
        c[0] = 1.0
    return c


def product_allowance(n_layers: int) -> float:
    """``2 gamma_{L+1}``: what :func:`rescaling_draws` guarantees for ``|prod c - 1|`` (twice the
    a-priori bound ``gamma_L``; measured on 1,200 draws per depth 2..20: at most 0.49 gamma_L)."""
    return 2 * _gamma(n_layers + 1)


def rescaling_draws(n_layers: int, *, seed: int, n_draws: int,
                    log_sds: Sequence[float] = (0.5, 1.5, 3.0), extreme: bool = True,
                    extreme_decades: float = 3.0, stream: int = 0) -> list[tuple[str, np.ndarray]]:
    """Seeded factors ``c`` (positive, ``prod c = 1``): ``n_draws`` log-normal draws whose log-sd
    cycles through ``log_sds``, then (``extreme``) two draws spanning ``10^-d .. 10^d``
    (``d = extreme_decades``): ``log10 c`` evenly spread over ``[-d, d]`` in random order, and
    alternating ``10^{+d}, 10^{-d}, ...`` (the last factor 1 when ``L`` is odd). ``stream``
    selects an independent stream for the same seed (P2 uses 0, T1 1 and 2).
    Returns ``[(kind, c), ...]``."""
    seed = require_seed(seed)
    n_layers = require_positive_int("n_layers", n_layers)
    n_draws = require_positive_int("n_draws", n_draws)
    sds = [require_positive_float("log_sds", s) for s in log_sds]
    if not sds:
        raise ValueError("`log_sds` must list at least one log standard deviation")
    decades = require_positive_float("extreme_decades", extreme_decades)
    stream = require_positive_int("stream", stream, minimum=0)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5032, 0x100 + stream)))
    draws = []
    for k in range(n_draws):
        sd = sds[k % len(sds)]
        draws.append((f"lognormal sd={sd:g}",
                      _unit_product(_log_factors(n_layers, "lognormal", rng, sd, decades))))
    if extreme:
        for kind in ("spread", "alternating"):
            c = _unit_product(_log_factors(n_layers, kind, rng, 0.0, decades))
            draws.append((f"extreme {kind} 1e-{decades:g}..1e{decades:g}", c))
    return draws


def exact_product_error(c: Sequence[float]) -> float:
    """``prod_i c_i - 1`` computed exactly (the ``c_i`` are floats, so rationals)."""
    prod = Fraction(1)
    for v in c:
        prod *= Fraction(float(v))
    return float(prod - 1)


def _check_factors(c, n_layers: int) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.shape != (n_layers,):
        raise ValueError(f"`c` must hold one factor per layer ({n_layers}), got shape {c.shape}")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError(f"`c` must be finite and > 0 (P2 rescales by positive factors), got "
                         f"{c.tolist()}")
    return c


def rescaled_parameters(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor | None],
                        c, bias_mode: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """``(c_i w_i)`` and the biases for ``bias_mode``: ``"free"`` (None), ``"scaled"``
    (``b_i prod_{j<=i} c_j``: the invariant form) or ``"unscaled"`` (``b_i``)."""
    if bias_mode not in BIAS_MODES:
        raise ValueError(f"`bias_mode` must be one of {list(BIAS_MODES)}, got {bias_mode!r}")
    c = _check_factors(c, len(weights))
    new_w = [w * float(ci) for w, ci in zip(weights, c)]
    if bias_mode == "free":
        return new_w, [None] * len(weights)
    cumulative = np.cumprod(c)
    new_b = []
    for i, b in enumerate(biases):
        if b is None:
            new_b.append(None)
        else:
            new_b.append(b * float(cumulative[i]) if bias_mode == "scaled" else b.clone())
    return new_w, new_b


def _gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def layer_dot_lengths(disc: Discriminator) -> list[int]:
    """``K_l``: the number of products in one output of layer ``l`` (the forward dot product)."""
    out = []
    for layer in disc.layers:
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            out.append(layer.in_channels // layer.groups * kh * kw)
        else:
            out.append(layer.in_features)
    return out


def layer_gammas(disc: Discriminator) -> list[float]:
    """``gamma_{K_l + L + 3}`` per layer: the relative rounding allowance of one output of layer
    ``l`` against its local scale (module docstring)."""
    L = disc.depth
    return [_gamma(k + L + 3) for k in layer_dot_lengths(disc)]


def apply_layer(layer: torch.nn.Module, h: torch.Tensor, w: torch.Tensor,
                b: torch.Tensor | None) -> torch.Tensor:
    """Layer ``layer``'s operation with explicit ``w``, ``b`` -- exactly the call
    :meth:`Discriminator.functional_forward` makes (conv2d, or linear on the flattened input)."""
    if isinstance(layer, torch.nn.Conv2d):
        return F.conv2d(h, w, b, stride=layer.stride, padding=layer.padding,
                        dilation=layer.dilation, groups=layer.groups)
    return F.linear(h.flatten(1), w, b)


@dataclass
class ForwardTrace:
    """One float64 forward pass, layer by layer, with what the round-off bounds need.

    ``z``: the output (B,), bitwise what ``functional_forward`` computes. Per layer ``l``:
    ``inputs[l]`` = ``h_{l-1}`` (B, ...); ``pre[l]`` its pre-activation; ``sens[l]`` =
    ``delta_l = d z_j / d pre_l`` per sample (the output's first-order sensitivity);
    ``local[l]`` = ``|w_l| |h_{l-1}| + |b_l|`` (elementwise, the scale of one output's rounding).
    """

    z: torch.Tensor
    inputs: list[torch.Tensor]
    pre: list[torch.Tensor]
    sens: list[torch.Tensor]
    local: list[torch.Tensor]


def forward_trace(disc: Discriminator, x: torch.Tensor, weights: Sequence[torch.Tensor],
                  biases: Sequence[torch.Tensor | None], activation: Activation) -> ForwardTrace:
    """:class:`ForwardTrace` of ``disc`` with explicit weights, biases and activation."""
    xg = x.detach().clone().requires_grad_(True)
    h, inputs, pres = xg, [], []
    last = len(disc.layers) - 1
    for i, (layer, w, b) in enumerate(zip(disc.layers, weights, biases)):
        inputs.append(h.detach() if isinstance(layer, torch.nn.Conv2d) else h.detach().flatten(1))
        pre = apply_layer(layer, h, w.detach(), None if b is None else b.detach())
        pres.append(pre)
        h = activation(pre) if i < last else pre
    z = h.reshape(h.shape[0])
    sens = [s.detach() for s in torch.autograd.grad(z.sum(), pres)]
    with torch.no_grad():
        local = [apply_layer(layer, hin, w.detach().abs(),
                             None if b is None else b.detach().abs())
                 for layer, hin, w, b in zip(disc.layers, [i.abs() for i in inputs], weights,
                                             biases)]
    return ForwardTrace(z.detach(), inputs, [p.detach() for p in pres], sens, local)


def output_roundoff_bound(disc: Discriminator, trace: ForwardTrace) -> torch.Tensor:
    """Per sample (B,): ``sum_l gamma_{K_l+L+3} sum_i |delta_l,i| local_l,i`` -- the first-order
    bound on the rounding error of one forward pass (module docstring)."""
    total = torch.zeros_like(trace.z)
    for g, s, loc in zip(layer_gammas(disc), trace.sens, trace.local):
        total = total + g * (s.abs() * loc).flatten(1).sum(dim=1)
    return total


def _biases_for(snap: Float64Snapshot, x: torch.Tensor, seed: int) -> tuple[list, str]:
    """The discriminator's biases, or (bias-free nets) seeded synthetic biases whose scale is the
    RMS pre-activation of each layer on ``x``, so the bias controls have something to scale."""
    if any(b is not None for b in snap.biases):
        return [b if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
                for w, b in zip(snap.weights, snap.biases)], "discriminator"
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5032, 1)))
    biases, h = [], x
    last = snap.depth - 1
    with torch.no_grad():
        for i, (layer, w) in enumerate(zip(snap.disc.layers, snap.weights)):
            pre = apply_layer(layer, h, w, None)
            scale = float(pre.pow(2).mean().sqrt()) or 1.0
            b = torch.from_numpy(rng.standard_normal(w.shape[0]) * scale)
            biases.append(b)
            shape = (1, -1) + (1,) * (pre.dim() - 2)
            pre = pre + b.reshape(shape)
            h = snap.activation(pre) if i < last else pre
    return biases, "synthetic (RMS pre-activation scale)"


def p2_deviation(snap: Float64Snapshot, x: torch.Tensor, c, *, bias_mode: str = "free",
                 biases: Sequence[torch.Tensor | None] | None = None,
                 activation: Activation | str | None = None) -> dict:
    """Deviation of the rescaled network from the original for one draw ``c`` (not required to
    have ``prod c = 1``: a wrong draw is how the tests show the check can fail).

    Per sample ``j``: ``dev_j = |fl(D_c(x_j)) - fl(D(x_j))|`` and the round-off bound
    ``tol_j = R(x_j) + R_c(x_j) + 2 gamma_{L+1} |D(x_j)|`` (``R`` = :func:`output_roundoff_bound`
    of each network; module docstring). Returns ``dev_over_bound = max_j dev_j / tol_j`` (<= 1:
    invariant to round-off), ``max_abs_dev``, ``max_rel_dev`` (over ``max_j |D(x_j)|``),
    ``bound_rel`` (``max_j tol_j / |D(x_j)|``: the tolerance relative to the output; the smallest
    relative deviation every sample would flag) and ``bound_rel_median`` (the median over ``j``),
    ``condition_max`` (the cancellation factor ``max_j sum_l sum_i |delta| local / |D(x_j)|``)
    and the exact ``prod c - 1``.
    """
    act = snap.activation if activation is None else parse_activation(activation)
    base_b = list(snap.biases) if biases is None else list(biases)
    c = _check_factors(c, snap.depth)
    orig_b = [None] * snap.depth if bias_mode == "free" else base_b
    new_w, new_b = rescaled_parameters(snap.weights, base_b, c, bias_mode)
    t0 = forward_trace(snap.disc, x, snap.weights, orig_b, act)
    t1 = forward_trace(snap.disc, x, new_w, new_b, act)
    d0, d1 = t0.z, t1.z
    diff = (d1 - d0).abs()
    if not (torch.isfinite(diff).all() and torch.isfinite(d0).all()):
        raise ValueError(f"the rescaled network's output is not finite for c = {c.tolist()} "
                         f"(overflow): choose less extreme factors")
    tol = (output_roundoff_bound(snap.disc, t0) + output_roundoff_bound(snap.disc, t1)
           + product_allowance(snap.depth) * d0.abs())
    ratio = torch.where(tol > 0, diff / torch.where(tol > 0, tol, 1.0),
                        torch.where(diff > 0, torch.full_like(diff, math.inf), 0.0))
    sensitivity = sum((s.abs() * loc).flatten(1).sum(dim=1) for s, loc in zip(t0.sens, t0.local))
    nonzero = d0.abs() > 0
    cond = (float((sensitivity[nonzero] / d0.abs()[nonzero]).max()) if bool(nonzero.any())
            else 0.0)
    rel = tol[nonzero] / d0.abs()[nonzero]
    bound_rel = float(rel.max()) if bool(nonzero.any()) else 0.0
    bound_rel_median = float(rel.median()) if bool(nonzero.any()) else 0.0
    scale = float(d0.abs().max())
    max_rel = float(diff.max()) / scale if scale > 0 else float(diff.max())
    return {"max_abs_dev": float(diff.max()), "max_rel_dev": max_rel,
            "dev_in_units_of_eps": max_rel / UNIT_ROUNDOFF,
            "dev_over_bound": float(ratio.max()), "bound_rel": bound_rel,
            "bound_rel_median": bound_rel_median,
            "condition_max": cond, "prod_c_minus_1": exact_product_error(c)}


# --------------------------------------------------------------------------------------------------
# the check


def _variants(own: Activation, extra_homogeneous: Sequence[str], controls: Sequence[str]):
    """``[(activation, bias_mode), ...]`` in report order, each activation once."""
    seen, acts = set(), []
    for a in [own, *map(parse_activation, extra_homogeneous),
              *map(parse_activation, controls)]:
        if a.name not in seen:
            seen.add(a.name)
            acts.append(a)
    out = []
    for a in acts:
        modes = BIAS_MODES if a.homogeneous else ("free",)
        out.extend((a, m) for m in modes)
    return out


def _p2_row(act: Activation, mode: str, recs: list[dict], experiment: str, setting: str,
            bias_source: str) -> ClaimRow:
    in_hyp = act.homogeneous and mode != "unscaled"
    worst = max(recs, key=lambda r: r["dev_over_bound"])
    measured = worst["dev_over_bound"]
    within = measured <= 1.0
    detail = (f"max over {len(recs)} draws and the batch of |D_c - D| / round-off bound = "
              f"{measured:.3g}; max relative deviation "
              f"{max(r['max_rel_dev'] for r in recs):.3g} "
              f"({max(r['dev_in_units_of_eps'] for r in recs):.3g} u); the bound is at most "
              f"{max(r['bound_rel'] for r in recs):.3g} of |D|; worst draw: {worst['draw_kind']}")
    why = []
    if not act.homogeneous:
        why.append(f"activation {act.name} is not positively homogeneous")
    if mode == "unscaled":
        why.append("biases not scaled by prod_{j<=i} c_j")
    if in_hyp:
        verdict = Verdict.HOLDS if within else Verdict.VIOLATED
        note = detail
    else:
        verdict = Verdict.OUTSIDE_HYPOTHESES
        observed = ("observed: deviates" if not within
                    else "observed: invariant to round-off")
        note = f"{observed} ({measured:.3g} x the round-off bound); " + detail
    hyp = [f"{act.name} ({'homogeneous' if act.homogeneous else 'not homogeneous'})",
           {"free": "no biases", "scaled": f"biases ({bias_source}) scaled by prod_{{j<=i}} c_j",
            "unscaled": f"biases ({bias_source}) NOT scaled"}[mode]]
    if why:
        hyp.append("outside: " + "; ".join(why))
    return ClaimRow(
        claim=CLAIM, experiment=experiment,
        setting=f"{setting}{', ' if setting else ''}{act.name}, {_BIAS_LABEL[mode]}",
        statement="D_{theta_c}(x) = D_theta(x) for c_i > 0, prod c_i = 1, to float64 round-off: "
                  "|D_c - D| / (R + R_c + 2 gamma_{L+1} |D|) <= 1, R = sum_l gamma_{K_l+L+3} "
                  "|delta_l|^T (|w_l||h_{l-1}| + |b_l|)",
        hypotheses="; ".join(hyp), bound=1.0, measured=measured,
        slack=relative_slack(measured, 1.0, "upper"), verdict=verdict,
        hypotheses_hold=in_hyp, note=note,
        extra={"activation": act.name, "bias_mode": mode, "n_draws": len(recs),
               "max_rel_dev": max(r["max_rel_dev"] for r in recs),
               "max_dev_over_bound": measured})


def check_prop2(disc: Discriminator, x, *, seed: int, n_draws: int = 6,
                log_sds: Sequence[float] = (0.5, 1.5, 3.0), extreme: bool = True,
                extreme_decades: float = 3.0, extra_homogeneous: Sequence[str] = ("relu",),
                controls: Sequence[str] = SMOOTH_CONTROLS, experiment: str = "",
                setting: str = "", step: int | None = None) -> LabCheckResult:
    """Check P2 on ``disc`` and the batch ``x``: records (one per variant and draw) and rows (one
    per variant).

    Variants: the discriminator's activation and each of ``extra_homogeneous`` with biases removed,
    biases scaled by ``prod_{j<=i} c_j`` and biases unscaled (the discriminator's biases, or seeded
    synthetic ones of the pre-activations' RMS size when it has none); each of ``controls`` (smooth
    activations) bias-free. Draws: :func:`rescaling_draws` (``n_draws`` log-normal, plus two
    extreme ones spanning ``10^-extreme_decades .. 10^extreme_decades`` when ``extreme``).

    Rows with the hypotheses in force (homogeneous activation; bias-free or biases scaled) are
    HOLDS when every draw's deviation is within the round-off bound (module docstring), VIOLATED
    otherwise; the others are OUTSIDE-HYPOTHESES with ``note`` starting "observed: deviates" or
    "observed: invariant to round-off".
    """
    seed = require_seed(seed)
    if step is not None:
        require_positive_int("step", step, minimum=0)
    snap = float64_snapshot(disc)
    xb = as_input_batch(disc, x)
    draws = rescaling_draws(snap.depth, seed=seed, n_draws=n_draws, log_sds=log_sds,
                            extreme=extreme, extreme_decades=extreme_decades)
    biases, bias_source = _biases_for(snap, xb, seed)
    records: list[dict] = []
    rows: list[ClaimRow] = []
    for act, mode in _variants(snap.activation, extra_homogeneous, controls):
        recs = []
        for k, (kind, c) in enumerate(draws):
            dev = p2_deviation(snap, xb, c, bias_mode=mode, biases=biases, activation=act)
            rec = {"claim": CLAIM, "variant": f"{act.name}, {_BIAS_LABEL[mode]}",
                   "activation": act.name, "bias_mode": mode,
                   "bias_source": bias_source if mode != "free" else "none",
                   "in_hypotheses": bool(act.homogeneous and mode != "unscaled"),
                   "draw": k, "draw_kind": kind, "n_layers": snap.depth,
                   "batch_size": int(xb.shape[0]),
                   "log10_c_min": float(np.log10(c.min())), "log10_c_max": float(np.log10(c.max())),
                   "c": ",".join(f"{v:.17g}" for v in c), **dev}
            if step is not None:
                rec["step"] = int(step)
            recs.append(rec)
        records.extend(recs)
        rows.append(_p2_row(act, mode, recs, experiment, setting, bias_source))
    config = {"claim": CLAIM, "n_draws": n_draws, "log_sds": [float(s) for s in log_sds],
              "extreme": extreme, "extreme_decades": extreme_decades,
              "extra_homogeneous": list(extra_homogeneous), "controls": list(controls),
              "batch_size": int(xb.shape[0]), "layers": [i.label for i in disc.layer_info],
              "activation": snap.activation.name, "step": step, "experiment": experiment,
              "setting": setting}
    summary = {
        "in_hypotheses_holds": all(r.verdict == Verdict.HOLDS.value for r in rows
                                   if r.hypotheses_hold),
        "max_in_hypotheses_dev_in_units_of_eps": max(
            (r["dev_in_units_of_eps"] for r in records if r["in_hypotheses"]), default=0.0),
        "min_control_dev_over_bound": min(
            (r.extra["max_dev_over_bound"] for r in rows if not r.hypotheses_hold),
            default=math.nan),
        "max_in_hypotheses_dev_over_bound": max(
            (r["dev_over_bound"] for r in records if r["in_hypotheses"]), default=0.0),
        "max_in_hypotheses_bound_rel": max(
            (r["bound_rel"] for r in records if r["in_hypotheses"]), default=0.0),
        "bias_source": bias_source,
    }
    return LabCheckResult(CLAIM, records, rows, summary, provenance(seed=seed, config=config))


# --------------------------------------------------------------------------------------------------
# trained runs


def load_run_batch(run_dir, *, step: int | None, n_samples: int, seed: int):
    """``(loaded_run, x)``: :func:`sntheory.lab.train.load_run` and ``n_samples`` images drawn
    without replacement (seeded) from the run's dataset, as float64."""
    import importlib

    path = Path(run_dir)
    if not path.exists():
        raise FileNotFoundError(f"`run_dir` {str(run_dir)!r} does not exist (expected a training "
                                f"run directory written by sntheory.lab.train)")
    n_samples = require_positive_int("n_samples", n_samples)
    seed = require_seed(seed)
    train = importlib.import_module("sntheory.lab.train")
    run = train.load_run(path, step=step)
    images = run.data.images
    n = int(images.shape[0])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x5032, 2)))
    index = np.sort(rng.choice(n, size=min(n_samples, n), replace=False))
    x = images[torch.from_numpy(index)].to(torch.float64)
    return run, x


def check_prop2_run(run_dir, *, step: int | None = None, n_samples: int = 64, seed: int = 0,
                    **kwargs) -> LabCheckResult:
    """:func:`check_prop2` on the discriminator of a training run (``load_run(run_dir, step)``)
    and ``n_samples`` of its real images; ``kwargs`` go to :func:`check_prop2`."""
    run, x = load_run_batch(run_dir, step=step, n_samples=n_samples, seed=seed)
    kwargs.setdefault("experiment", str(run_dir))
    kwargs.setdefault("setting", f"step {run.step}")
    return check_prop2(run.disc, x, seed=seed, step=int(run.step), **kwargs)
