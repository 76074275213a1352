"""The sanity battery: does a weight normalizer control exploding and vanishing signals?

:func:`run_battery` applies one normalizer (any :class:`~sntheory.plugin.contract.PluginNormalizer`)
beside the baselines -- SNw, BSN, BSSN (scale 1.75), Frobenius normalization, and LeCun / Xavier /
Kaiming initialization without normalization -- to three tests that need no training, and to a
short GAN training run (test 4). Every entry
sees the *same* raw random numbers (common random numbers: differences between entries are not
sampling noise); the raw weights of the normalizers are Gaussian with LeCun's variance
``1/fan_in`` (``init``, ``init_gain`` change that for the plug-in), those of the init baselines
follow their rule.

1. Variance law. For each shape of a sweep of dense matrices ``(out, in)`` and conv kernels
   ``(c_out, c_in, kh, kw)`` (``fan_in = c_in kh kw``, ``fan_out = c_out kh kw``), ``n`` raw weights
   are normalized and ``Var(w_bar)`` is estimated with the all-entries statistic of T2/T3
   (``X = ||w_bar||_F^2 / N``, ``Y = sum(w_bar) / N``, ``Var = E X - (E Y)^2``, delta-method
   t-interval: :func:`sntheory.claims.base.variance_estimate`; no symmetry is assumed of a plug-in).
   It is compared with LeCun ``1/fan_in``, Xavier ``2/(fan_in + fan_out)``, Kaiming ``2/fan_in`` and
   T2's ``1/max(m, n)`` (``m = out``, ``n = fan_in``: the reshape ``w^``), and the law
   ``log Var = log C - a log fan_in - b log fan_out`` is fitted by least squares over all shapes
   (standard errors from the residuals, ``t`` on ``shapes - 3`` degrees of freedom).

   *Verdicts.* ``variance-low`` / ``variance-high``: ``1/k <= Var * fan_in <= k`` (``k`` =
   ``factor_k``, default 10) on every shape with ``fan_in >= out`` -- T2's regime, where SN's
   variance ``~ 1/(sqrt m + sqrt n)^2`` is within ``[1/4, 1]`` of LeCun's; shapes with
   ``out > fan_in`` (where any ``1/max``-type normalizer sits below LeCun by ``fan_in/out``) are
   reported beside as outside the hypotheses. ``width-fast`` / ``width-slow``:
   ``|a + b - 1| <= width_band`` (0.25) for the law fitted to the dense shapes: every
   initialization rule and T2's law are homogeneous of degree -1 in the layer size; a larger
   ``a + b`` (Frobenius: 2) means the weights shrink faster than ``1/width`` and wide networks lose
   their signal, a smaller one that they blow up. (The conv fit is reported, not judged: with
   mixed kernel sizes the power law is misspecified, SNw's variance depending on
   ``c_out = fan_out / k`` rather than on ``fan_out``.)

2. Signal propagation at initialization. Stacks of ``D`` (up to ``max(depths)``) bias-free layers
   ``h_l = act(W_l h_{l-1})`` -- dense ``width x width`` and conv 3x3/s1 ``c -> c`` with 'same'
   zero padding on ``s x s`` images; ReLU and leaky ReLU 0.1 -- with normalized weights, on random
   Gaussian inputs. The forward ratio ``||h_d|| / ||h_0||`` and the backward ratio
   ``||dL/dh_{D-d}|| / ||dL/dh_D||`` (a random cotangent at the top, pulled back ``d`` layers) are
   accumulated layer by layer on renormalized signals (both maps are positively homogeneous:
   exact, and free of float64 under/overflow). Per network the *per-layer log gain* is
   ``g = log(ratio_D) / D``; its mean over ``depth_nets`` independent networks, with a t-interval,
   is the measurement.

   *Verdicts* (``forward-vanishing``, ``forward-exploding``, ``backward-...`` per stack):
   ``log gamma_lo <= g <= log gamma_hi`` with ``gamma_lo = 1/sqrt(2k)``, ``gamma_hi = sqrt(k)``.
   Derivation: a layer with i.i.d. weights of variance ``r / fan_in`` has
   ``E||W h||^2 = r ||h||^2``; ReLU keeps half the energy of a symmetric pre-activation, leaky ReLU
   and the identity at most all of it, so the variance band ``r in [1/k, k]`` of test 1 maps to a
   per-layer amplitude in ``[1/sqrt(2k), sqrt(k)]``. The depth test checks that the *realised*
   propagation -- with the structure the variance ignores (rank, correlations between entries,
   the zero-padded boundary) -- stays in the band the variance test promises. Over ``D`` layers
   the signal may shrink by ``gamma_lo^D`` before it counts as vanishing; SN with ReLU sits near
   ``0.35`` per dense layer, LeCun near ``0.71``, Kaiming at 1.

3. Lipschitz control. The paper's CIFAR discriminator from ``sntheory.lab.nets`` (``cifar-cnn``:
   conv3x3/s1, conv4x4/s2, ..., dense to 1, 'same' zero padding, leaky ReLU 0.1; ``net_width``,
   ``net_image_size``), no biases. Its Lipschitz constant is at most
   ``P = prod_l ||w~_l||_sp`` (leaky ReLU 0.1 is 1-Lipschitz), with each conv layer's *exact*
   operator norm for its real geometry (:func:`sntheory.conv.conv_operator_norm`: certified
   interval) and each dense layer's largest singular value. Probes of raw weights: Gaussian
   (common random numbers) multiplied by each of ``lipschitz_scales`` -- training moves raw weights
   far from their initial scale, and a normalizer must bound ``P`` whatever that scale -- and the
   constant all-ones kernel (the kernel that attains ``alpha`` in claim R).

   *Verdicts.* ``lipschitz-exploding``: ``max_probes P <= B``, ``B = prod_l s alpha_l`` with ``s``
   the normalizer's declared ``layer_scale`` (1; BSSN: its scale) and ``alpha_l`` the exact
   coverage constant of layer ``l`` (1 for dense layers). This is the bound a reshaped-norm method
   guarantees: ``||w~|| <= alpha ||w^||`` (claim R) and ``||w^|| = s``; a method that normalizes by
   the operator norm itself gets ``P <= s^L``, inside it. ``lipschitz-collapse``:
   ``min_probes P >= 1/B`` -- the network's scale must not collapse (Frobenius normalization divides
   by ``sqrt(rank)`` too much per layer). Decided on certified bounds: HOLDS when the whole interval
   of ``P`` is inside, VIOLATED when the whole interval is outside (relative allowance 1e-9 for
   rounding), INCONCLUSIVE otherwise. A probe whose effective weights are a multiple ``lambda`` of
   an earlier probe's up to a residual ``delta`` (Frobenius) reuses its norm:
   ``| ||w~_b|| - |lambda| ||w~_a|| | <= ||w~_b - lambda w~_a|| <= alpha delta``, since
   ``||w~|| <= alpha ||w^|| <= alpha ||w||_F``.

4. Gradient control through a short GAN training run (:mod:`sntheory.plugin.training`, skipped
   with ``training=False``): the lab's DCGAN pair on digits at 16x16, ``train_steps`` WGAN steps
   (quick 300, full 1000), probes every ``train_probe_every`` steps, for the plug-in beside SNw
   (always: the reference), BSN, BSSN, Frobenius and no normalization (controls). Rows:
   ``train-p1`` (P1 at every probe point, a theorem), ``train-p1-normalized`` (per-layer gradient
   ``<= (B/s) ||x||``, the SN corollary with the declared budget), ``train-exploding`` (``<= k
   B_SN ||x||``), ``train-vanishing-layers`` and ``train-vanishing-vs-snw`` (``>= 1/k`` of the
   largest layer's / of SNw's gradient), ``train-trained`` (finite losses, the real-fake gap
   doubled); derivations in that module.

Statistical verdicts (tests 1 and 2) are decided by one-sided t-tests with Holm's step-down over
every check of one normalizer (:func:`sntheory.monte_carlo.verdicts.assign_verdicts`, family-wise
0.05); a row aggregates its checks (VIOLATED if any is, INCONCLUSIVE if any is, else HOLDS). Every
row names the failure it flags in ``extra["flags"]``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import require_choice, require_positive_float, require_positive_int
from ..claims.base import case_verdict, variance_estimate
from ..conv.alpha import coverage_alpha
from ..conv.operator import conv_operator_norm
from ..monte_carlo.estimators import Estimate, Moments
from ..monte_carlo.store import atomic_write_text
from ..monte_carlo.verdicts import BoundCheck, Verdict, assign_verdicts
from ..provenance import provenance
from ..random_weights import block_generator, case_spawn_key
from ..report.rows import ClaimRow, relative_slack
from .contract import (NormalizerContractError, NormalizerContractTypeError, PluginNormalizer,
                       load_normalizer)
from .training import TrainingResult, TrainingSettings, plot_training, training_part

__all__ = ["BatteryConfig", "BatteryResult", "Entry", "PROFILES", "BASELINES", "INITS",
           "EXPERIMENT", "run_battery", "baseline_entries", "variance_law", "fit_variance_law",
           "signal_propagation", "lipschitz_control", "battery_rows", "write_battery",
           "format_summary", "init_std", "try_normalizer", "plot_battery"]

EXPERIMENT = "plugin-battery"
CLAIM = "plugin"
INITS = ("lecun", "xavier", "kaiming", "standard")
ROLES = ("plugin", "reference", "control")
BASELINES = ("snw", "bsn", "bssn", "frobenius", "lecun-init", "xavier-init", "kaiming-init")
BSSN_SCALE = 1.75      # the scale the README and the paper's CIFAR runs use for BSSN
ROUNDING = 1e-9        # relative allowance on deterministic bounds
REUSE_RTOL = 1e-9      # a probe reuses an earlier norm when its residual is below this (relative)


# ---- configuration -----------------------------------------------------------------------------

@dataclass(frozen=True)
class BatteryConfig:
    """Sizes and criteria of one battery run. :data:`PROFILES` holds ``quick`` and ``full``;
    :meth:`from_profile` applies overrides (unknown keys are an error).

    Measured on this repository's busy 2-core machine (one thread; plug-in plus the 7 baselines):
    tests 1-3: quick 40 s of CPU (105 s wall), full 365 s of CPU (the paper's 32x32
    discriminator: the Lipschitz test dominates). The training part (``training``, ``train_*``:
    :class:`~sntheory.plugin.training.TrainingSettings`) adds 6 runs of 7-11 s of CPU each at
    300 steps (measured: 48 s for the quick part; the whole quick ``sntheory try`` of the example
    plug-in took 64 s wall, 66 s of CPU, on a lightly loaded moment of that machine); at 1000
    steps (full) about 3.3 times that (estimated from the per-step cost, not measured).
    """

    profile: str = "quick"
    dense_shapes: tuple = ((16, 16), (16, 128), (32, 64), (64, 64), (64, 256), (128, 32),
                           (128, 128), (256, 256))
    conv_shapes: tuple = ((16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3), (64, 64, 3, 3),
                          (32, 32, 4, 4), (64, 32, 4, 4), (128, 32, 1, 1), (32, 64, 1, 1))
    variance_samples: int = 24
    variance_input_size: tuple = (16, 16)   # the conv geometry a plug-in sees in test 1
    factor_k: float = 10.0
    width_band: float = 0.25
    depths: tuple = (2, 4, 8, 16, 32)
    stacks: tuple = ("dense:relu", "dense:leaky_relu", "conv:relu", "conv:leaky_relu")
    dense_width: int = 64
    conv_width: int = 16
    conv_image: int = 8
    depth_nets: int = 6
    depth_batch: int = 8
    net_image_size: int = 16
    net_width: int = 16
    lipschitz_scales: tuple = (0.01, 1.0, 100.0)
    lipschitz_rtol: float = 1e-5
    alpha: float = 0.05
    baselines: tuple = BASELINES
    init: str = "lecun"
    init_gain: float = 1.0
    training: bool = True
    # the training part's defaults are TrainingSettings' own (one source)
    train_steps: int = TrainingSettings.steps
    train_probe_every: int = TrainingSettings.probe_every
    train_width: int = TrainingSettings.width
    train_depth: int = TrainingSettings.depth
    train_batch_size: int = TrainingSettings.batch_size
    train_probe_batch: int = TrainingSettings.probe_batch
    train_lr: float = TrainingSettings.lr
    train_loss: str = TrainingSettings.loss

    def __post_init__(self) -> None:
        require_choice("profile", self.profile, tuple(PROFILES) + ("custom",))
        dense = tuple(tuple(int(v) for v in s) for s in self.dense_shapes)
        conv = tuple(tuple(int(v) for v in s) for s in self.conv_shapes)
        for s in dense:
            if len(s) != 2 or min(s) < 1:
                raise ValueError(f"`dense_shapes` entry {s} must be (out, in) with positive sizes")
        for s in conv:
            if len(s) != 4 or min(s) < 1:
                raise ValueError(f"`conv_shapes` entry {s} must be (c_out, c_in, kh, kw) with "
                                 f"positive sizes")
        if len(dense) < 5:
            raise ValueError(f"`dense_shapes` must list at least 5 shapes: the width test fits "
                             f"3 parameters with 2 degrees of freedom left for the errors, got "
                             f"{len(dense)}")
        design = np.column_stack([np.ones(len(dense)), np.log([s[1] for s in dense]),
                                  np.log([s[0] for s in dense])])
        if np.linalg.matrix_rank(design) < 3:
            raise ValueError(f"`dense_shapes` {list(dense)} do not vary fan_in and fan_out "
                             f"independently: the width fit is not identifiable")
        object.__setattr__(self, "dense_shapes", dense)
        object.__setattr__(self, "conv_shapes", conv)
        require_positive_int("variance_samples", self.variance_samples, minimum=2)
        require_positive_float("factor_k", self.factor_k)
        if self.factor_k <= 1:
            raise ValueError(f"`factor_k` must be > 1, got {self.factor_k!r}")
        require_positive_float("width_band", self.width_band)
        depths = tuple(sorted({require_positive_int("depths", d) for d in self.depths}))
        if not depths:
            raise ValueError("`depths` must list at least one depth")
        object.__setattr__(self, "depths", depths)
        for stack in self.stacks:
            kind, _, act = str(stack).partition(":")
            if kind not in ("dense", "conv") or act not in ("relu", "leaky_relu"):
                raise ValueError(f"`stacks` entry {stack!r} must be 'dense|conv:relu|leaky_relu'")
        for name in ("dense_width", "conv_width", "conv_image", "depth_batch", "net_width"):
            require_positive_int(name, getattr(self, name))
        require_positive_int("depth_nets", self.depth_nets, minimum=2)
        require_positive_int("net_image_size", self.net_image_size, minimum=8)
        if self.net_image_size % 8:
            raise ValueError(f"`net_image_size` must be a multiple of 8 (three stride-2 convs), "
                             f"got {self.net_image_size}")
        object.__setattr__(self, "variance_input_size",
                           tuple(require_positive_int("variance_input_size", v)
                                 for v in self.variance_input_size))
        scales = tuple(require_positive_float("lipschitz_scales", s)
                       for s in self.lipschitz_scales)
        if not scales:
            raise ValueError("`lipschitz_scales` must list at least one scale")
        object.__setattr__(self, "lipschitz_scales", scales)
        require_positive_float("lipschitz_rtol", self.lipschitz_rtol, maximum=1.0)
        require_positive_float("alpha", self.alpha, maximum=1.0)
        for b in self.baselines:
            require_choice("baselines", b, BASELINES)
        require_choice("init", self.init, INITS)
        require_positive_float("init_gain", self.init_gain)
        if not isinstance(self.training, bool):
            raise TypeError(f"`training` must be true or false, got {self.training!r}")
        for name in ("train_steps", "train_probe_every", "train_width", "train_depth",
                     "train_batch_size", "train_probe_batch"):
            require_positive_int(name, getattr(self, name))
        require_positive_float("train_lr", self.train_lr)
        require_choice("train_loss", self.train_loss, ("wgan", "hinge", "ns"))
        self.training_settings()  # the training fields make a valid run (checked now)

    def training_settings(self) -> TrainingSettings:
        """The :class:`~sntheory.plugin.training.TrainingSettings` of the training part."""
        return TrainingSettings(steps=self.train_steps, probe_every=self.train_probe_every,
                                width=self.train_width, depth=self.train_depth,
                                batch_size=self.train_batch_size,
                                probe_batch=self.train_probe_batch, lr=self.train_lr,
                                loss=self.train_loss)

    @classmethod
    def from_profile(cls, profile: str = "quick", **overrides) -> "BatteryConfig":
        require_choice("profile", profile, PROFILES)
        known = {f.name for f in fields(cls)} - {"profile"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown battery setting(s) {unknown}; valid: {sorted(known)}")
        base = dict(PROFILES[profile])
        base.update(overrides)
        return cls(profile=profile if not overrides else "custom", **base)

    @property
    def gamma_band(self) -> tuple[float, float]:
        """Per-layer amplitude band ``(1/sqrt(2k), sqrt(k))`` of the depth test."""
        return 1 / math.sqrt(2 * self.factor_k), math.sqrt(self.factor_k)

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


PROFILES: dict[str, dict] = {
    "quick": {},
    "full": {
        "dense_shapes": ((16, 16), (16, 128), (32, 64), (64, 64), (64, 256), (128, 32),
                         (128, 128), (256, 256), (32, 1024), (256, 1024), (1024, 256),
                         (512, 512)),
        "conv_shapes": ((64, 3, 3, 3), (16, 3, 3, 3), (32, 16, 3, 3), (64, 32, 3, 3),
                        (64, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3), (32, 32, 4, 4),
                        (64, 32, 4, 4), (128, 128, 4, 4), (128, 64, 4, 4), (128, 32, 1, 1),
                        (32, 64, 1, 1), (16, 32, 5, 5)),
        "variance_samples": 32,
        "dense_width": 256, "conv_width": 32, "conv_image": 16,
        "depth_nets": 12, "depth_batch": 16,
        "net_image_size": 32, "net_width": 64,
        "train_steps": 1000,
    },
}


# ---- entries -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One column of the battery: a normalizer and the raw initialization it is fed."""

    label: str
    normalizer: PluginNormalizer
    init: str = "lecun"
    init_gain: float = 1.0
    role: str = "reference"     # "plugin" (under test), "reference" (SN family) or "control"
    control_reason: str = ""    # controls: why the battery's claims are not expected of them

    def __post_init__(self) -> None:
        require_choice("role", self.role, ROLES)
        if (self.role == "control") != bool(self.control_reason):
            raise ValueError(f"entry {self.label!r}: a control needs a `control_reason`, and only "
                             f"a control has one")

    def describe(self) -> dict:
        return {"label": self.label, "role": self.role, "init": self.init,
                "init_gain": self.init_gain, "control_reason": self.control_reason,
                "normalizer": self.normalizer.describe()}


def init_std(init: str, fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """Standard deviation of the Gaussian raw weights: LeCun ``1/sqrt(fan_in)``, Xavier
    ``sqrt(2/(fan_in + fan_out))``, Kaiming ``sqrt(2/fan_in)``, standard 1; times ``gain``."""
    require_choice("init", init, INITS)
    base = {"lecun": 1 / math.sqrt(fan_in), "xavier": math.sqrt(2 / (fan_in + fan_out)),
            "kaiming": math.sqrt(2 / fan_in), "standard": 1.0}[init]
    return gain * base


def baseline_entries(names: Sequence[str] = BASELINES) -> list[Entry]:
    """The comparison entries, by name: the references SNw, BSN, BSSN (scale 1.75), and the
    negative controls Frobenius normalization and LeCun / Xavier / Kaiming initialization with no
    normalizer (raw weights of the normalizers: LeCun Gaussian)."""
    out = []
    for name in names:
        require_choice("baselines", name, BASELINES)
        if name.endswith("-init"):
            out.append(Entry(name, load_normalizer("none"), name.split("-")[0], role="control",
                             control_reason="no normalizer: initialization alone, which sets the "
                                            "variance but controls nothing once training moves "
                                            "the weights"))
        elif name == "frobenius":
            out.append(Entry(name, load_normalizer(name), role="control",
                             control_reason="Frobenius normalization divides by up to "
                                            "sqrt(rank) times the spectral norm: known to shrink "
                                            "the signal"))
        elif name == "bssn":
            out.append(Entry(f"bssn({BSSN_SCALE:g})",
                             load_normalizer("bssn", options={"scale": BSSN_SCALE})))
        else:
            out.append(Entry(name, load_normalizer(name)))
    return out


def _torch_seed(seed: int, *parts) -> int:
    """A torch seed derived from ``seed`` and a case description (stable across processes)."""
    key = case_spawn_key({"torch": [str(p) for p in parts]})
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0]
               % (2 ** 63))


@contextlib.contextmanager
def _isolated_torch_rng(seed: int, *parts):
    """Fork torch's global generator and seed it for this case: a plug-in that draws random
    numbers (power-iteration starts) is reproducible and leaves the caller's stream alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_torch_seed(seed, *parts))
        yield


def _normalized(entry: Entry, raw: torch.Tensor, geometry: dict, where: str) -> torch.Tensor:
    """``entry``'s effective weight (detached), or a clear error naming the case."""
    what = f"normalizer {entry.label!r} on a weight of shape {tuple(raw.shape)} ({where})"
    try:
        with torch.no_grad():
            out = entry.normalizer.normalize(raw, **geometry)
    except Exception as exc:
        raise NormalizerContractError(f"{what} raised {type(exc).__name__}: {exc}",
                                      "raised") from exc
    if not isinstance(out, torch.Tensor) or not out.is_floating_point():
        dtype = f" of dtype {out.dtype}" if isinstance(out, torch.Tensor) else ""
        raise NormalizerContractTypeError(f"{what} returned {type(out).__name__}{dtype}, not a "
                                          f"floating-point tensor", "not-a-tensor")
    if out.shape != raw.shape:
        raise NormalizerContractError(f"{what} returned shape {tuple(out.shape)}", "shape")
    out = out.detach().to(torch.float64)
    if not bool(torch.isfinite(out).all()):
        raise NormalizerContractError(f"{what} returned NaN or infinity; the battery cannot "
                                      f"measure it", "non-finite-output")
    return out


def _conv_geometry(kernel: Sequence[int], stride: int, input_size: Sequence[int]) -> dict:
    kh, kw = kernel
    pad = ((kh - 1) // 2, (kw - 1) // 2) if stride == 1 else (1, 1)
    return {"kind": "conv", "stride": (stride, stride), "padding": pad,
            "input_size": tuple(input_size), "dilation": (1, 1), "groups": 1,
            "padding_mode": "zeros", "kernel_size": (kh, kw)}


# ---- test 1: variance law ----------------------------------------------------------------------

def _shape_cases(cfg: BatteryConfig) -> list[dict]:
    cases = []
    for out, inp in cfg.dense_shapes:
        cases.append({"kind": "linear", "shape": (out, inp), "fan_in": inp, "fan_out": out,
                      "m": out, "n": inp, "geometry": {"kind": "linear"}})
    for c_out, c_in, kh, kw in cfg.conv_shapes:
        k = kh * kw
        cases.append({"kind": "conv", "shape": (c_out, c_in, kh, kw), "fan_in": c_in * k,
                      "fan_out": c_out * k, "m": c_out, "n": c_in * k,
                      "geometry": _conv_geometry((kh, kw), 1, cfg.variance_input_size)})
    return cases


def variance_law(entries: Sequence[Entry], cfg: BatteryConfig, seed: int) -> list[dict]:
    """One record per (entry, shape): ``Var(w_bar)`` with its 95% CI, the reference laws, and
    whether the shape is inside the LeCun comparison's hypothesis (``fan_in >= out``)."""
    records = []
    for case in _shape_cases(cfg):
        shape, n_samples = case["shape"], cfg.variance_samples
        rng = block_generator(seed, case_spawn_key({"part": "variance", "shape": list(shape)}), 0)
        z = rng.standard_normal((n_samples, *shape))
        fan_in, fan_out, m, n = case["fan_in"], case["fan_out"], case["m"], case["n"]
        refs = {"lecun": 1 / fan_in, "xavier": 2 / (fan_in + fan_out), "kaiming": 2 / fan_in,
                "t2": 1 / max(m, n)}
        for entry in entries:
            std = init_std(entry.init, fan_in, fan_out, entry.init_gain)
            stats = np.empty((n_samples, 2))
            with _isolated_torch_rng(seed, "variance", entry.label, shape):
                for i in range(n_samples):
                    w_bar = _normalized(entry, torch.from_numpy(z[i] * std), case["geometry"],
                                        f"variance law, shape {shape}")
                    numel = w_bar.numel()
                    stats[i] = (float((w_bar * w_bar).sum()) / numel, float(w_bar.sum()) / numel)
            est = variance_estimate(Moments.from_samples(stats), symmetric=False)
            low, high = est.ci(0.95)
            records.append({
                "normalizer": entry.label, "kind": case["kind"], "shape": list(shape),
                "fan_in": fan_in, "fan_out": fan_out, "m": m, "n": n,
                "n_samples": n_samples, "raw_std": std,
                "var": est.value, "se": est.se, "df": est.df, "ci_low": low, "ci_high": high,
                "refs": refs, "ratio": {k: est.value / v for k, v in refs.items()},
                "in_hypotheses": fan_in >= m,
            })
    return records


def fit_variance_law(records: Sequence[dict]) -> dict:
    """Least squares ``log Var = log C - a log fan_in - b log fan_out`` over one entry's shapes.

    Returns ``a, b, log_C, C`` with standard errors (``sigma^2 (X^T X)^{-1}``,
    ``sigma^2 = RSS / (shapes - 3)``), ``a + b`` with its standard error, 95% t-intervals, the
    residual RMS (in natural log units) and the degrees of freedom.
    """
    variances = np.array([r["var"] for r in records], dtype=np.float64)
    if not (np.all(np.isfinite(variances)) and np.all(variances > 0)):
        raise ValueError(f"the variance fit needs positive finite variances, got "
                         f"{variances.tolist()} (a normalizer whose output is zero has no law)")
    y = np.log(variances)
    x = np.column_stack([np.ones(len(records)), -np.log([r["fan_in"] for r in records]),
                         -np.log([r["fan_out"] for r in records])])
    n_obs, n_par = x.shape
    if n_obs <= n_par:
        raise ValueError(f"the variance fit needs more than {n_par} shapes, got {n_obs}")
    if np.linalg.matrix_rank(x) < n_par:
        raise ValueError("the shapes do not vary fan_in and fan_out independently: the fit "
                         "log Var = log C - a log fan_in - b log fan_out is not identifiable")
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    df = n_obs - n_par
    sigma2 = float(resid @ resid) / df
    cov = sigma2 * np.linalg.inv(x.T @ x)
    se = np.sqrt(np.diag(cov))
    from scipy import stats as _stats
    q = float(_stats.t.ppf(0.975, df))
    sum_se = math.sqrt(max(cov[1, 1] + cov[2, 2] + 2 * cov[1, 2], 0.0))
    out = {"df": df, "residual_rms": math.sqrt(float(resid @ resid) / n_obs), "n_shapes": n_obs}
    for name, value, err in (("log_C", coef[0], se[0]), ("a", coef[1], se[1]),
                             ("b", coef[2], se[2]), ("a_plus_b", coef[1] + coef[2], sum_se)):
        out[name] = {"estimate": float(value), "se": float(err),
                     "ci_low": float(value - q * err), "ci_high": float(value + q * err)}
    out["C"] = math.exp(out["log_C"]["estimate"])
    return out


def _fits(records: Sequence[dict]) -> dict:
    """The law fitted separately to dense shapes (the width test's basis) and to conv kernels
    (descriptive: with mixed kernel sizes ``k`` the power law is misspecified -- SNw's conv
    variance depends on ``c_out = fan_out / k``, not on ``fan_out`` -- and the residuals show it);
    ``None`` for a kind with fewer than 5 shapes, an unidentifiable design, or a zero variance
    (then the variance rows flag the collapse and no width rows are made)."""
    out = {}
    for kind, key in (("linear", "dense"), ("conv", "conv")):
        recs = [r for r in records if r["kind"] == kind]
        design = np.column_stack([np.ones(len(recs)), np.log([r["fan_in"] for r in recs]),
                                  np.log([r["fan_out"] for r in recs])]) if recs else None
        identifiable = len(recs) >= 5 and np.linalg.matrix_rank(design) == 3
        positive = all(r["var"] > 0 for r in recs)   # a zero variance (zero output) has no law
        out[key] = fit_variance_law(recs) if identifiable and positive else None
    return out


def _law_comparison(records: Sequence[dict]) -> dict:
    """Per reference law: geometric-mean ratio ``Var/ref``, its range, and the RMS log ratio;
    ``closest``: the law with the smallest RMS log ratio. ``None`` when a variance is zero."""
    if not all(r["var"] > 0 for r in records):
        return None
    out = {}
    for law in ("lecun", "xavier", "kaiming", "t2"):
        logs = np.log([r["ratio"][law] for r in records])
        out[law] = {"geomean_ratio": float(np.exp(logs.mean())),
                    "min_ratio": float(np.exp(logs.min())), "max_ratio": float(np.exp(logs.max())),
                    "rms_log_ratio": float(np.sqrt((logs ** 2).mean()))}
    out["closest"] = min(("lecun", "xavier", "kaiming", "t2"),
                         key=lambda k: out[k]["rms_log_ratio"])
    return out


# ---- test 2: signal propagation ----------------------------------------------------------------

def _activation(name: str):
    return F.relu if name == "relu" else (lambda x: F.leaky_relu(x, 0.1))


def signal_propagation(entries: Sequence[Entry], cfg: BatteryConfig, seed: int) -> list[dict]:
    """One record per (entry, stack, network): cumulative forward and backward log ratios at
    every depth ``1..max(depths)`` (natural log) and how many layers saw an exactly zero signal."""
    depth = max(cfg.depths)
    records = []
    for stack in cfg.stacks:
        kind, _, act_name = stack.partition(":")
        act = _activation(act_name)
        if kind == "dense":
            w, shape = cfg.dense_width, (cfg.dense_width, cfg.dense_width)
            x_shape = (cfg.depth_batch, w)
            geometry = {"kind": "linear"}
            fan = w

            def layer(h, weight):
                return h @ weight.T
        else:
            c, s = cfg.conv_width, cfg.conv_image
            shape, x_shape = (c, c, 3, 3), (cfg.depth_batch, c, s, s)
            geometry = _conv_geometry((3, 3), 1, (s, s))
            fan = 9 * c

            def layer(h, weight):
                return F.conv2d(h, weight, padding=1)
        for net in range(cfg.depth_nets):
            rng = block_generator(seed, case_spawn_key({"part": "depth", "stack": stack}), net)
            z = rng.standard_normal((depth, *shape))
            x = torch.from_numpy(rng.standard_normal(x_shape))
            cotangent = torch.from_numpy(rng.standard_normal(x_shape))  # same shape at the top
            for entry in entries:
                std = init_std(entry.init, fan, fan, entry.init_gain)
                with _isolated_torch_rng(seed, "depth", entry.label, stack, net):
                    weights = [_normalized(entry, torch.from_numpy(z[l] * std), geometry,
                                           f"{stack} stack, layer {l + 1}")
                               for l in range(depth)]
                fwd, bwd, dead = _propagate(layer, act, weights, x, cotangent, entry.label, stack)
                records.append({"normalizer": entry.label, "stack": stack, "net": net,
                                "width": shape[0], "raw_std": std,
                                "log_forward": fwd, "log_backward": bwd, "dead_layers": dead})
    return records


_LOG_TINY = math.log(np.finfo(np.float64).tiny)


def _propagate(layer, act, weights, x, cotangent, label, stack):
    """Cumulative log ratios, forward (``log ||h_d|| / ||h_0||``, d = 1..D) and backward
    (``log ||g_{D-d}|| / ||g_D||``), computed on renormalized signals; a layer whose output is
    exactly zero ends the signal (its log gain is clamped at the float64 underflow and counted)."""
    h = x / x.norm()
    inputs, fwd, total, dead = [], [], 0.0, 0
    for l, weight in enumerate(weights):
        inputs.append(h)
        out = act(layer(h, weight))
        norm = float(out.norm())
        if not math.isfinite(norm):
            raise ValueError(f"non-finite forward signal in the {stack} stack at layer {l + 1} "
                             f"with normalizer {label!r}")
        if norm == 0.0:
            dead += 1
            total += _LOG_TINY
            h = x / x.norm()  # restart from a fresh direction: the count records the death
        else:
            total += math.log(norm)
            h = out / norm
        fwd.append(total)
    g = cotangent / cotangent.norm()
    bwd, total = [], 0.0
    for l in reversed(range(len(weights))):
        u = inputs[l].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(act(layer(u, weights[l])), u, g)
        norm = float(grad.norm())
        if not math.isfinite(norm):
            raise ValueError(f"non-finite backward signal in the {stack} stack at layer {l + 1} "
                             f"with normalizer {label!r}")
        if norm == 0.0:
            dead += 1
            total += _LOG_TINY
            g = cotangent / cotangent.norm()
        else:
            total += math.log(norm)
            g = grad / norm
        bwd.append(total)
    return fwd, bwd, dead


def _gain_estimate(records: Sequence[dict], key: str, depth: int) -> Estimate:
    """Mean per-layer log gain ``log(ratio_depth) / depth`` over networks, with its t-SE."""
    values = np.array([r[key][depth - 1] / depth for r in records])
    n = values.size
    return Estimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(n)), float(n - 1))


# ---- test 3: Lipschitz control -----------------------------------------------------------------

def _discriminator_layers(cfg: BatteryConfig) -> list[dict]:
    """Layer plan of the lab's CIFAR discriminator: kind, weight shape, geometry, alpha, label."""
    from ..lab.nets import NetConfig, build_discriminator

    net_cfg = NetConfig(arch="cifar-cnn", image_size=cfg.net_image_size, channels=3,
                        width=cfg.net_width, bias=False, activation="leaky_relu:0.1")
    disc = build_discriminator(net_cfg, "none", seed=0)
    plan = []
    for info, raw in zip(disc.layer_info, disc.raw_weights()):
        shape = tuple(raw.shape)
        if info.kind == "conv":
            g = info.geometry
            alpha = coverage_alpha(g, shape[2:]).alpha
            geometry = {"kind": "conv", "stride": g.stride, "padding": g.padding,
                        "input_size": g.input_size, "dilation": g.dilation, "groups": g.groups,
                        "padding_mode": g.padding_mode, "kernel_size": tuple(shape[2:])}
            fan_in, fan_out = shape[1] * shape[2] * shape[3], shape[0] * shape[2] * shape[3]
        else:
            g, alpha, geometry = None, 1.0, {"kind": "linear"}
            fan_in, fan_out = shape[1], shape[0]
        plan.append({"index": info.index, "label": info.label, "kind": info.kind,
                     "shape": shape, "conv_geometry": g, "geometry": geometry, "alpha": alpha,
                     "fan_in": fan_in, "fan_out": fan_out})
    return plan


def _layer_norm(weight: torch.Tensor, layer: dict, rtol: float) -> tuple[float, float, float]:
    """``(lower, value, upper)`` of ``||w~||_sp`` (conv: certified interval) or ``||W||_sp``."""
    if layer["kind"] == "conv":
        res = conv_operator_norm(weight.numpy(), layer["conv_geometry"], rtol=rtol,
                                 threads=None)  # run_battery sets the threads
        return float(res.lower), float(res.value), float(res.upper)
    sigma = float(torch.linalg.matrix_norm(weight, 2))
    return sigma * (1 - 1e-12), sigma, sigma * (1 + 1e-12)


def _reuse(weight: torch.Tensor, cache: list, alpha: float):
    """An earlier norm, rescaled, when ``weight`` is a multiple of an earlier effective weight."""
    for prev, (lower, value, upper) in cache:
        denom = float((prev * prev).sum())
        if denom == 0:
            continue
        lam = float((weight * prev).sum()) / denom
        delta = float((weight - lam * prev).norm())
        if delta <= REUSE_RTOL * float(weight.norm()):
            pad = alpha * delta
            return (max(abs(lam) * lower - pad, 0.0), abs(lam) * value, abs(lam) * upper + pad)
    return None


def lipschitz_control(entries: Sequence[Entry], cfg: BatteryConfig, seed: int) -> list[dict]:
    """One record per (entry, probe): per-layer operator norms and their product with its
    certified interval, the alpha-product budget ``B`` and the layer scale."""
    plan = _discriminator_layers(cfg)
    rng = block_generator(seed, case_spawn_key({"part": "lipschitz",
                                                "layers": [list(p["shape"]) for p in plan]}), 0)
    z = [rng.standard_normal(p["shape"]) for p in plan]
    probes = [(f"gaussian x{c:g}", c, False) for c in cfg.lipschitz_scales]
    probes.append(("constant kernel", 1.0, True))
    alpha_product = math.prod(p["alpha"] for p in plan)
    records = []
    for entry in entries:
        budget = alpha_product * entry.normalizer.layer_scale ** len(plan)
        caches: list[list] = [[] for _ in plan]
        for probe, scale, constant in probes:
            layers = []
            with _isolated_torch_rng(seed, "lipschitz", entry.label, probe):
                for p, zl, cache in zip(plan, z, caches):
                    std = init_std(entry.init, p["fan_in"], p["fan_out"], entry.init_gain)
                    raw = np.full(p["shape"], std) if constant else zl * (std * scale)
                    w = _normalized(entry, torch.from_numpy(raw), p["geometry"],
                                    f"Lipschitz probe {probe!r}, layer {p['label']}")
                    bounds = _reuse(w, cache, p["alpha"])
                    reused = bounds is not None
                    if bounds is None:
                        bounds = _layer_norm(w, p, cfg.lipschitz_rtol)
                        cache.append((w, bounds))
                    layers.append({"layer": p["label"], "alpha": p["alpha"],
                                   "lower": bounds[0], "value": bounds[1], "upper": bounds[2],
                                   "reshaped_norm": float(torch.linalg.matrix_norm(
                                       w.reshape(w.shape[0], -1), 2)),
                                   "reused": reused})
            records.append({
                "normalizer": entry.label, "probe": probe, "layers": layers,
                "product": math.prod(l["value"] for l in layers),
                "product_lower": math.prod(l["lower"] for l in layers),
                "product_upper": math.prod(l["upper"] for l in layers),
                "alpha_product": alpha_product, "layer_scale": entry.normalizer.layer_scale,
                "budget": budget, "n_layers": len(plan),
                "net": {"arch": "cifar-cnn", "image_size": cfg.net_image_size,
                        "width": cfg.net_width, "activation": "leaky_relu:0.1"},
            })
    return records


# ---- verdicts and rows -------------------------------------------------------------------------

def _aggregate(checks: Sequence[BoundCheck]) -> Verdict:
    return case_verdict(checks)


_OBSERVED = {"VIOLATED": "bound-fails", "HOLDS": "bound-holds", "INCONCLUSIVE": "undecided"}


def _row(entry: Entry, key: str, *, setting: str, statement: str, hypotheses: str, flags: str,
         bound: float, measured: float, ci: tuple | None, direction: str, verdict,
         note: str = "", extra: dict | None = None,
         always_in_hypotheses: bool = False) -> ClaimRow:
    """One row. ``verdict`` is the decision; a control's row is OUTSIDE-HYPOTHESES (shown, never
    counted as a failure) with the decision kept as what was observed, unless
    ``always_in_hypotheses`` (a theorem that holds for any weights, such as P1).
    ``extra["decision"]`` holds the decision for every role."""
    decision = str(verdict)
    inside = entry.role != "control" or always_in_hypotheses
    if not inside:
        note = (f"negative control ({entry.control_reason}); observed: "
                f"{_OBSERVED[decision].replace('-', ' ')}" + (f"; {note}" if note else ""))
        hypotheses = f"{hypotheses}; a normalizer controls the weights (fails on purpose)"
    return ClaimRow(
        claim=CLAIM, experiment=EXPERIMENT, setting=f"{entry.label}: {setting}",
        statement=statement, hypotheses=hypotheses, bound=float(bound), measured=float(measured),
        ci_low=None if ci is None else float(ci[0]), ci_high=None if ci is None else float(ci[1]),
        slack=relative_slack(measured, bound, direction),
        verdict=decision if inside else Verdict.OUTSIDE_HYPOTHESES.value,
        hypotheses_hold=inside, note=note,
        extra={"normalizer": entry.label, "role": entry.role, "test": key, "flags": flags,
               "decision": decision, "observed": _OBSERVED[decision], **(extra or {})})


def _deterministic(lower: float, upper: float, bound: float, direction: str) -> Verdict:
    """HOLDS when the whole interval is on the safe side of ``bound`` (rounding allowance),
    VIOLATED when it is wholly beyond it, else INCONCLUSIVE."""
    if direction == "upper":
        limit = bound * (1 + ROUNDING)
        return Verdict.HOLDS if upper <= limit else (
            Verdict.VIOLATED if lower > limit else Verdict.INCONCLUSIVE)
    limit = bound * (1 - ROUNDING)
    return Verdict.HOLDS if lower >= limit else (
        Verdict.VIOLATED if upper < limit else Verdict.INCONCLUSIVE)


def battery_rows(entry: Entry, cfg: BatteryConfig, variance: Sequence[dict], fits: dict,
                 depth: Sequence[dict], lipschitz: Sequence[dict]) -> tuple[list[ClaimRow], dict]:
    """The rows of one entry and its per-check details (JSON-able). ``fits``: the entry's
    ``{"dense": fit, "conv": fit}`` (:func:`fit_variance_law`); the width rows use the dense fit."""
    k = cfg.factor_k
    fit = fits["dense"]
    var_recs = [r for r in variance if r["normalizer"] == entry.label]

    # statistical checks, one Holm family per entry
    var_checks = {"low": [], "high": []}
    for r in var_recs:
        est = Estimate(r["var"], r["se"], r["df"]).scale(r["fan_in"])
        where = f"{r['kind']} {'x'.join(map(str, r['shape']))}"
        note = "" if r["in_hypotheses"] else "out > fan_in: below LeCun by design for 1/max laws"
        var_checks["low"].append(BoundCheck(f"variance-low {where}", "Var*fan_in >= 1/k", "lower",
                                            est, 1 / k, r["in_hypotheses"], note))
        var_checks["high"].append(BoundCheck(f"variance-high {where}", "Var*fan_in <= k", "upper",
                                             est, k, r["in_hypotheses"], note))
    width_checks = {}
    if fit is not None:
        ab = fit["a_plus_b"]
        ab_est = Estimate(ab["estimate"], ab["se"], float(fit["df"]))
        width_checks = {"fast": [BoundCheck("width-fast", "a + b <= 1 + band", "upper", ab_est,
                                            1 + cfg.width_band)],
                        "slow": [BoundCheck("width-slow", "a + b >= 1 - band", "lower", ab_est,
                                            1 - cfg.width_band)]}
    d_max = max(cfg.depths)
    g_lo, g_hi = cfg.gamma_band
    depth_checks = {}
    for stack in cfg.stacks:
        recs = [r for r in depth if r["normalizer"] == entry.label and r["stack"] == stack]
        for direction, key in (("forward", "log_forward"), ("backward", "log_backward")):
            est = _gain_estimate(recs, key, d_max)
            depth_checks[(stack, direction, "vanishing")] = [BoundCheck(
                f"{direction}-vanishing {stack}", "g >= log gamma_lo", "lower", est,
                math.log(g_lo))]
            depth_checks[(stack, direction, "exploding")] = [BoundCheck(
                f"{direction}-exploding {stack}", "g <= log gamma_hi", "upper", est,
                math.log(g_hi))]
    family = [c for cs in var_checks.values() for c in cs]
    family += [c for cs in width_checks.values() for c in cs]
    family += [c for cs in depth_checks.values() for c in cs]
    assign_verdicts(family, alpha=cfg.alpha)

    rows = []
    hyp_var = (f"i.i.d. Gaussian raw weights ({entry.init} init x{entry.init_gain:g}); shapes with "
               f"fan_in >= out (T2's regime, where SN's variance is within [1/4, 1] of LeCun's)")
    for side, direction, bound, flags in (
            ("low", "lower", 1 / k, "variance far below LeCun's 1/fan_in (vanishing)"),
            ("high", "upper", k, "variance far above LeCun's 1/fan_in (exploding)")):
        checks = var_checks[side]
        in_checks = [(c, r) for c, r in zip(checks, var_recs) if r["in_hypotheses"]]
        if not in_checks:
            continue
        worst_c, worst_r = (min if side == "low" else max)(
            in_checks, key=lambda cr: cr[0].estimate.value)
        outside = [c for c in checks if not c.in_hypotheses]
        note = (f"worst shape {worst_r['kind']} {'x'.join(map(str, worst_r['shape']))}; "
                f"{len(in_checks)} shapes inside; outside (out > fan_in): "
                f"{sum(c.observed == 'bound-fails' for c in outside)} of {len(outside)} beyond")
        rows.append(_row(entry, f"variance-{side}",
                         setting=f"variance law, {len(in_checks)} shapes",
                         statement=(f"Var(w_bar) * fan_in >= 1/{k:g} (not far below LeCun)"
                                    if side == "low" else
                                    f"Var(w_bar) * fan_in <= {k:g} (not far above LeCun)"),
                         hypotheses=hyp_var, flags=flags, bound=bound,
                         measured=worst_c.estimate.value, ci=worst_c.estimate.ci(0.95),
                         direction=direction, verdict=_aggregate([c for c, _ in in_checks]),
                         note=note))
    for side, direction, bound, flags in (
            ("fast", "upper", 1 + cfg.width_band,
             "variance shrinks faster than 1/width (vanishing in wide layers)"),
            ("slow", "lower", 1 - cfg.width_band,
             "variance shrinks slower than 1/width (exploding in wide layers)")):
        if side not in width_checks:
            continue
        c = width_checks[side][0]
        rows.append(_row(entry, f"width-{side}",
                         setting=f"variance law fit, {fit['n_shapes']} dense shapes",
                         statement=f"fitted a + b {'<=' if side == 'fast' else '>='} {bound:g}",
                         hypotheses="log Var = log C - a log fan_in - b log fan_out, least "
                                    "squares; every init rule and T2 have a + b = 1",
                         flags=flags, bound=bound, measured=c.estimate.value,
                         ci=c.estimate.ci(0.95), direction=direction, verdict=c.verdict,
                         note=f"a = {fit['a']['estimate']:.3f} +- {fit['a']['se']:.3f}, "
                              f"b = {fit['b']['estimate']:.3f} +- {fit['b']['se']:.3f}, "
                              f"C = {fit['C']:.3g}"))
    for (stack, direction, failure), checks in depth_checks.items():
        c = checks[0]
        kind, _, act = stack.partition(":")
        act_text = "ReLU" if act == "relu" else "leaky ReLU 0.1"
        bound = math.log(g_lo) if failure == "vanishing" else math.log(g_hi)
        gamma = math.exp(c.estimate.value)
        gamma_bound = g_lo if failure == "vanishing" else g_hi
        what = "gradients" if direction == "backward" else "activations"
        rows.append(_row(
            entry, f"{direction}-{failure}",
            setting=f"{kind} stack, {act_text}, depth {d_max}",
            statement=(f"no {failure} {direction} signal at depth {d_max}: per-layer log gain "
                       f"{'>=' if failure == 'vanishing' else '<='} log({gamma_bound:.4g})"),
            hypotheses=f"bias-free {kind} stack at initialization, {cfg.depth_nets} random "
                       f"networks, Gaussian inputs",
            flags=f"{failure} {direction} signal ({what})",
            bound=bound, measured=c.estimate.value, ci=c.estimate.ci(0.95),
            direction="lower" if failure == "vanishing" else "upper", verdict=c.verdict,
            note=f"per-layer factor {gamma:.3g}; over {d_max} layers {gamma ** d_max:.3g}",
            extra={"stack": stack, "direction": direction}))
    lip = [r for r in lipschitz if r["normalizer"] == entry.label]
    budget = lip[0]["budget"]
    worst_hi = max(lip, key=lambda r: r["product"])
    worst_lo = min(lip, key=lambda r: r["product"])
    gauss = next((r for r in lip if r["probe"] == "gaussian x1"), lip[0])
    lip_hyp = (f"lab cifar-cnn discriminator ({lip[0]['n_layers']} layers, "
               f"{cfg.net_image_size}x{cfg.net_image_size}, width {cfg.net_width}), leaky ReLU "
               f"0.1, no biases; probes: Gaussian "
               f"x{', x'.join(f'{s:g}' for s in cfg.lipschitz_scales)} and the constant kernel")
    rows.append(_row(
        entry, "lipschitz-exploding", setting="Lipschitz bound, every probe",
        statement=f"prod_l ||w~_l|| <= prod_l s alpha_l = {budget:.4g} (s = "
                  f"{entry.normalizer.layer_scale:g})",
        hypotheses=lip_hyp, flags="exploding Lipschitz constant (layer norms not bounded)",
        bound=budget, measured=worst_hi["product"],
        ci=(worst_hi["product_lower"], worst_hi["product_upper"]), direction="upper",
        verdict=_deterministic(max(r["product_lower"] for r in lip),
                               max(r["product_upper"] for r in lip), budget, "upper"),
        note=f"worst probe {worst_hi['probe']!r}; Gaussian x1: prod = {gauss['product']:.4g} "
             f"({'<=' if gauss['product_upper'] <= 1 else '>'} 1)"))
    rows.append(_row(
        entry, "lipschitz-collapse", setting="Lipschitz bound, every probe",
        statement=f"prod_l ||w~_l|| >= 1 / prod_l s alpha_l = {1 / budget:.4g}",
        hypotheses=lip_hyp, flags="collapsing Lipschitz scale (layers shrink the signal)",
        bound=1 / budget, measured=worst_lo["product"],
        ci=(worst_lo["product_lower"], worst_lo["product_upper"]), direction="lower",
        verdict=_deterministic(min(r["product_lower"] for r in lip),
                               min(r["product_upper"] for r in lip), 1 / budget, "lower"),
        note=f"worst probe {worst_lo['probe']!r}"))
    details = {"checks": [c.to_json() for c in family], "n_checks": len(family)}
    return rows, details


# ---- the run -----------------------------------------------------------------------------------

@dataclass
class BatteryResult:
    """What :func:`run_battery` returns: the rows, the figure paths, the raw records (variance,
    fits, depth, lipschitz, checks) and a summary (per entry: verdict counts, flagged failures,
    the fitted law, the signal classification; plus provenance and timing)."""

    rows: list[ClaimRow]
    figures: dict[str, Path]
    records: dict
    summary: dict
    training: TrainingResult | None = None   # the training part (runs with their losses)

    def rows_for(self, label: str) -> list[ClaimRow]:
        return [r for r in self.rows if r.extra.get("normalizer") == label]

    @property
    def plugin_label(self) -> str:
        return self.summary["plugin"]


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield
    finally:
        torch.set_num_threads(before)


def _classify(rows: Sequence[ClaimRow], stack: str, direction: str) -> str:
    sel = {r.extra["test"]: r.extra["decision"] for r in rows
           if r.extra.get("stack") == stack and r.extra.get("direction") == direction}
    if sel.get(f"{direction}-vanishing") == "VIOLATED":
        return "vanishing"
    if sel.get(f"{direction}-exploding") == "VIOLATED":
        return "exploding"
    if all(v == "HOLDS" for v in sel.values()):
        return "controlled"
    return "undecided"


def run_battery(normalizer, *, config: BatteryConfig | None = None, profile: str = "quick",
                seed: int = 0, out: str | Path | None = None, label: str | None = None,
                options: dict | None = None, threads: int | None = 1,
                progress=None, runs_dir: str | Path | None = None) -> BatteryResult:
    """Run the battery on ``normalizer`` (a spec for :func:`load_normalizer` or a
    :class:`PluginNormalizer`) beside the baselines.

    ``config`` (or ``profile``: ``"quick"`` / ``"full"``) sets the sizes (``training=False``
    skips the training part); ``seed`` the random numbers (one seed in, identical numbers out);
    ``out`` a directory for figures and records (nothing is written when None); ``threads``
    torch / BLAS threads during the run (restored after; None leaves them alone); ``progress`` an
    optional ``callable(str)``; ``runs_dir`` where the training runs are kept, reused when
    finished and resumed when interrupted (default: ``out / "training-runs"``, or a temporary
    folder without ``out``).
    """
    seed = require_positive_int("seed", seed, minimum=0)
    cfg = config if config is not None else BatteryConfig.from_profile(profile)
    if not isinstance(cfg, BatteryConfig):
        raise TypeError(f"`config` must be a BatteryConfig, got {type(cfg).__name__}")
    plugin = (normalizer if isinstance(normalizer, PluginNormalizer) and options is None
              else load_normalizer(normalizer, options=options))
    name = label or plugin.name
    baselines = baseline_entries(cfg.baselines)
    if name in {b.label for b in baselines}:
        name = f"{name} (plug-in)"
    entry = Entry(name, plugin, cfg.init, cfg.init_gain, role="plugin")
    entries = [entry, *baselines]
    say = progress or (lambda text: None)
    started = time.perf_counter()
    timings = {}
    with _threads(threads):
        t = time.perf_counter()
        say("variance law")
        variance = variance_law(entries, cfg, seed)
        fits = {e.label: _fits([r for r in variance if r["normalizer"] == e.label])
                for e in entries}
        timings["variance"] = time.perf_counter() - t
        t = time.perf_counter()
        say("signal propagation")
        depth = signal_propagation(entries, cfg, seed)
        timings["depth"] = time.perf_counter() - t
        t = time.perf_counter()
        say("Lipschitz control")
        lipschitz = lipschitz_control(entries, cfg, seed)
        timings["lipschitz"] = time.perf_counter() - t
        training = None
        if cfg.training:
            t = time.perf_counter()
            if runs_dir is None and out is not None:
                runs_dir = Path(out) / "training-runs"
            training = training_part(entry, cfg.baselines, cfg.training_settings(),
                                     cfg.factor_k, seed, runs_dir, progress=say)
            timings["training"] = time.perf_counter() - t
    rows, checks, per_entry = [], {}, {}
    for e in entries:
        e_rows, details = battery_rows(e, cfg, variance, fits[e.label], depth, lipschitz)
        if training is not None:
            e_rows = e_rows + [r for r in training.rows if r.extra["normalizer"] == e.label]
        rows.extend(e_rows)
        checks[e.label] = details
        e_var = [r for r in variance if r["normalizer"] == e.label]
        per_entry[e.label] = {
            "role": e.role, "describe": e.describe(),
            "decisions": {v: sum(r.extra["decision"] == v for r in e_rows)
                          for v in ("HOLDS", "VIOLATED", "INCONCLUSIVE")},
            "flagged": [r.extra["flags"] + f" [{r.setting}]" for r in e_rows
                        if r.extra["decision"] == Verdict.VIOLATED.value],
            "fit": fits[e.label], "laws": _law_comparison(e_var),
            "signal": {f"{s} {d}": _classify(e_rows, s, d) for s in cfg.stacks
                       for d in ("forward", "backward")},
            "per_layer_gain": {f"{s} {d}": math.exp(_gain_estimate(
                [r for r in depth if r["normalizer"] == e.label and r["stack"] == s],
                f"log_{d}", max(cfg.depths)).value) for s in cfg.stacks
                for d in ("forward", "backward")},
            "lipschitz": {r["probe"]: r["product"] for r in lipschitz
                          if r["normalizer"] == e.label},
            "lipschitz_budget": next(r["budget"] for r in lipschitz
                                     if r["normalizer"] == e.label),
        }
    if training is not None:  # entries that only train (no normalization)
        rows.extend(r for r in training.rows if r.extra["normalizer"] not in per_entry)
    config_dict = {"battery": cfg.to_dict(), "entries": [e.describe() for e in entries],
                   "threads": threads}
    if training is not None:
        config_dict["training"] = {"settings": cfg.training_settings().to_dict(),
                                   "runs": {r.label: r.config for r in training.runs}}
    summary = {
        "plugin": name, "profile": cfg.profile, "seed": seed,
        "criteria": {"factor_k": cfg.factor_k, "width_band": cfg.width_band,
                     "gamma_band": list(cfg.gamma_band), "alpha_familywise": cfg.alpha,
                     "depth": max(cfg.depths)},
        "entries": per_entry,
        "any_plugin_violation": any(r.verdict == "VIOLATED" for r in rows
                                    if r.extra["role"] == "plugin"),
        "timings_s": {**timings, "total": time.perf_counter() - started},
        "provenance": provenance(seed=seed, config=config_dict),
    }
    if training is not None:
        summary["training"] = {"settings": cfg.training_settings().to_dict(),
                               "description": cfg.training_settings().describe(),
                               "entries": training.summary}
    records = {"variance": variance, "fits": fits, "depth": depth, "lipschitz": lipschitz,
               "checks": checks}
    if training is not None:
        records["training"] = training.points
    result = BatteryResult(rows, {}, records, summary, training)
    if out is not None:
        write_battery(result, out, cfg)
    return result


def try_normalizer(spec, *, profile: str = "quick", out: str | Path | None = None, seed: int = 0,
                   options: dict | None = None, layer_scale: float | None = None,
                   init: str | None = None, init_gain: float | None = None,
                   baselines: Sequence[str] | None = None, progress=None,
                   runs_dir: str | Path | None = None, **overrides) -> BatteryResult:
    """``sntheory try`` from Python: load ``spec`` (validated against the contract), run the
    ``profile`` battery (``overrides``: any :class:`BatteryConfig` field, e.g.
    ``training=False`` or ``train_steps=100``) beside the baselines and, with ``out``, write
    figures and records there (training runs in ``runs_dir``, default ``out/training-runs``).

    >>> result = try_normalizer("experiments/try_example/geomean_norm.py:geomean_normalize",
    ...                         out="try-geomean")                     # doctest: +SKIP
    >>> print(format_summary(result))                                   # doctest: +SKIP
    """
    settings = dict(overrides)
    for key, value in (("init", init), ("init_gain", init_gain), ("baselines", baselines)):
        if value is not None:
            settings[key] = tuple(value) if key == "baselines" else value
    cfg = BatteryConfig.from_profile(profile, **settings)
    plugin = load_normalizer(spec, options=options, layer_scale=layer_scale)
    return run_battery(plugin, config=cfg, seed=seed, out=out, progress=progress,
                       runs_dir=runs_dir)


# ---- output ------------------------------------------------------------------------------------

def _finite_json(obj):
    """JSON-able copy: numpy scalars to Python, non-finite floats to strings (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else repr(x)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    keys = list(rows[0]) if rows else []
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (json.dumps(_finite_json(v)) if isinstance(v, (dict, list))
                                 else v) for k, v in row.items()})


def write_battery(result: BatteryResult, out: str | Path, cfg: BatteryConfig) -> dict[str, Path]:
    """Write ``battery.json`` (rows, summary, records, provenance), ``rows.csv``,
    ``variance.csv``, ``depth.csv``, ``lipschitz.csv``, with training ``training.csv`` (one
    line per probe step, batch and layer) and ``training_losses.csv``, and the figures into
    ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prov = result.summary["provenance"]
    figures = plot_battery(result, out, cfg)
    if result.training is not None:
        figures.update(plot_training(result.training, out, factor_k=cfg.factor_k,
                                     plugin=result.plugin_label))
    result.figures.update(figures)
    payload = {"experiment": EXPERIMENT, "provenance": prov, "summary": result.summary,
               "rows": [r.to_dict() for r in result.rows], "records": result.records,
               "figures": {k: v.name for k, v in figures.items()}}
    atomic_write_text(out / "battery.json", json.dumps(_finite_json(payload), indent=1))
    _write_csv(out / "rows.csv", [r.to_dict() for r in result.rows])
    _write_csv(out / "variance.csv", [
        {k: v for k, v in r.items() if k not in ("refs", "ratio")} | {
            f"ratio_{k}": v for k, v in r["ratio"].items()} for r in result.records["variance"]])
    _write_csv(out / "depth.csv", [
        {"normalizer": r["normalizer"], "stack": r["stack"], "net": r["net"], "depth": d,
         "log_forward": r["log_forward"][d - 1], "log_backward": r["log_backward"][d - 1]}
        for r in result.records["depth"] for d in range(1, len(r["log_forward"]) + 1)])
    _write_csv(out / "lipschitz.csv", [
        {"normalizer": r["normalizer"], "probe": r["probe"], **l}
        for r in result.records["lipschitz"] for l in r["layers"]])
    files = {"json": out / "battery.json", "rows": out / "rows.csv",
             "variance": out / "variance.csv", "depth": out / "depth.csv",
             "lipschitz": out / "lipschitz.csv"}
    if result.training is not None:
        _write_csv(out / "training.csv", result.records["training"])
        _write_csv(out / "training_losses.csv", [
            {"normalizer": run.label, **row} for run in result.training.runs
            for row in run.losses])
        files.update({"training": out / "training.csv",
                      "training_losses": out / "training_losses.csv"})
    return {**files, **figures}


# ---- figures -----------------------------------------------------------------------------------

def _colours(labels: Sequence[str]) -> dict:
    import matplotlib.pyplot as plt

    return {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}


def plot_battery(result: BatteryResult, out: str | Path, cfg: BatteryConfig) -> dict[str, Path]:
    """Three PNG figures (matplotlib Agg) in ``out``: ``variance.png``, ``depth.png``,
    ``lipschitz.png``. Returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = list(result.summary["entries"])
    plugin = result.summary["plugin"]
    colours = _colours(labels)
    k = cfg.factor_k
    paths = {}

    # variance: Var * fan_in against fan_in, dense and conv panels
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True, sharey=True)
    for ax, kind in zip(axes, ("linear", "conv")):
        for label in labels:
            recs = [r for r in result.records["variance"]
                    if r["normalizer"] == label and r["kind"] == kind]
            for r in recs:
                y = r["var"] * r["fan_in"]
                err = [[y - r["ci_low"] * r["fan_in"]], [r["ci_high"] * r["fan_in"] - y]]
                ax.errorbar([r["fan_in"]], [y], yerr=err, marker="o" if label != plugin else "*",
                            ms=5 if label != plugin else 10, color=colours[label],
                            mfc=colours[label] if r["in_hypotheses"] else "none",
                            linestyle="none", capsize=2)
            ax.plot([], [], marker="o" if label != plugin else "*", color=colours[label],
                    linestyle="none", label=label)
        ax.axhspan(1 / k, k, color="0.92", zorder=0, label=f"criterion: [1/{k:g}, {k:g}]")
        ax.axhline(1.0, color="0.3", lw=1, ls="--", label="LeCun 1/fan_in")
        ax.axhline(2.0, color="0.3", lw=1, ls=":", label="Kaiming 2/fan_in")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("fan_in")
        ax.set_title(f"{'dense' if kind == 'linear' else 'conv'} weights (hollow: out > fan_in, "
                     f"outside the criterion)")
    axes[0].set_ylabel("Var(w_bar) * fan_in  (95% CI)")
    axes[1].legend(fontsize=7, loc="best")
    paths["variance"] = out / "variance.png"
    fig.savefig(paths["variance"], dpi=110)
    plt.close(fig)

    # depth: log10 ratio against depth, one panel per stack
    stacks = list(cfg.stacks)
    g_lo, g_hi = cfg.gamma_band
    fig, axes = plt.subplots(1, len(stacks), figsize=(4.2 * len(stacks), 4.6),
                             constrained_layout=True, squeeze=False)
    d_all = np.arange(1, max(cfg.depths) + 1)
    for ax, stack in zip(axes[0], stacks):
        for label in labels:
            recs = [r for r in result.records["depth"]
                    if r["normalizer"] == label and r["stack"] == stack]
            fwd = np.mean([r["log_forward"] for r in recs], axis=0) / math.log(10)
            bwd = np.mean([r["log_backward"] for r in recs], axis=0) / math.log(10)
            lw = 2.2 if label == plugin else 1.1
            ax.plot(d_all, fwd, color=colours[label], lw=lw, label=label)
            ax.plot(d_all, bwd, color=colours[label], lw=lw, ls="--")
        ax.fill_between(d_all, d_all * math.log10(g_lo), d_all * math.log10(g_hi),
                        color="0.92", zorder=0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("depth d")
        ax.set_title(f"{stack} (solid: forward, dashed: backward)", fontsize=9)
    axes[0][0].set_ylabel("log10 signal ratio (mean over networks)")
    axes[0][-1].legend(fontsize=7, loc="best")
    paths["depth"] = out / "depth.png"
    fig.savefig(paths["depth"], dpi=110)
    plt.close(fig)

    # Lipschitz: log10 of the product per probe, with the budget band
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 4.8), constrained_layout=True)
    probes = sorted({r["probe"] for r in result.records["lipschitz"]})
    markers = dict(zip(probes, "osD^v<>"))
    for i, label in enumerate(labels):
        recs = [r for r in result.records["lipschitz"] if r["normalizer"] == label]
        budget = recs[0]["budget"]
        ax.plot([i - 0.35, i + 0.35], [math.log10(budget)] * 2, color="crimson", lw=1.5)
        ax.plot([i - 0.35, i + 0.35], [-math.log10(budget)] * 2, color="navy", lw=1.5)
        for r in recs:
            ax.plot([i], [math.log10(r["product"])], marker=markers[r["probe"]],
                    color=colours[label], linestyle="none", ms=7)
    for probe in probes:
        ax.plot([], [], marker=markers[probe], color="0.3", linestyle="none", label=probe)
    ax.plot([], [], color="crimson", label="budget B = prod s alpha")
    ax.plot([], [], color="navy", label="1/B")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("log10 prod_l ||w~_l||  (exact operator norms)")
    ax.set_title("Lipschitz bound of the lab CIFAR discriminator")
    ax.legend(fontsize=7, loc="best")
    paths["lipschitz"] = out / "lipschitz.png"
    fig.savefig(paths["lipschitz"], dpi=110)
    plt.close(fig)
    return paths


def _training_summary_lines(s: dict, result: BatteryResult) -> list[str]:
    tr = s["training"]
    k = s["criteria"]["factor_k"]
    lines = [f"training: {tr['description']}",
             f"  criteria: P1 ratios <= 1; grad/(B/s ||x||) <= 1; grad/(B_SN ||x||) <= {k:g}; "
             f"layer balance and ratio to SNw >= {1 / k:g}; real-fake gap grows x2", "",
             f"  {'normalizer':<22} {'HOLDS':>5} {'VIOL':>5}  {'P1 grad':>8} {'/(B/s)':>7} "
             f"{'/B_SN':>7} {'balance':>8} {'vs SNw':>7} {'gap x':>7}  flagged"]
    for label, e in tr["entries"].items():
        tag = {"plugin": " *", "reference": "", "control": " (ctrl)"}[e["role"]]
        vs = e.get("vs_snw_median_min")
        growth = e["gap"]["growth"]
        flagged = sorted({f.split(" [")[0] for f in e["flagged"]})
        lines.append(f"  {label + tag:<22} {e['decisions']['HOLDS']:>5} "
                     f"{e['decisions']['VIOLATED']:>5}  {e['p1_kernel_ratio_max']:>8.3g} "
                     f"{e['budget_ratio_max']:>7.3g} {e['sn_ratio_max']:>7.3g} "
                     f"{e['layer_balance_median']:>8.3g} "
                     f"{'-' if vs is None else format(vs, '.3g'):>7} "
                     f"{'inf' if growth >= 1e308 else format(growth, '.3g'):>7}  "
                     f"{'; '.join(flagged) or '-'}")
    lines.append("  P1 grad: worst per-sample kernel gradient / its P1 bound (every P1 statement "
                 "is checked: the train-p1 row); /(B/s), /B_SN: worst per-sample gradient over "
                 "the normalized bound; balance: "
                 "median over steps of min/max layer gradient; vs SNw: weakest layer's median "
                 "ratio to SNw; gap x: growth of the real-fake gap")
    return lines


def format_summary(result: BatteryResult) -> str:
    """A terminal summary: the plug-in's rows, then one line per baseline."""
    s = result.summary
    crit = s["criteria"]
    lines = [f"sntheory try {s['plugin']}  profile={s['profile']}  seed={s['seed']}  "
             f"({s['timings_s']['total']:.0f} s)",
             f"criteria: variance within x{crit['factor_k']:g} of 1/fan_in; |a+b-1| <= "
             f"{crit['width_band']:g}; per-layer gain in [{crit['gamma_band'][0]:.3g}, "
             f"{crit['gamma_band'][1]:.3g}] at depth {crit['depth']}; Lipschitz within "
             f"[1/B, B], B = prod s*alpha", ""]
    plugin_rows = result.rows_for(s["plugin"])
    width = max(len(r.setting) for r in plugin_rows) - len(s["plugin"]) - 2
    for r in plugin_rows:
        lines.append(f"  {r.verdict:<13} {r.setting[len(s['plugin']) + 2:]:<{width}}  "
                     f"{r.extra['test']:<20} measured {r.measured:.4g} (bound {r.bound:.4g})")
    lines.append("")
    first_stack = next(iter(next(iter(s["entries"].values()))["per_layer_gain"]))
    lines.append(f"  {'normalizer':<22} {'HOLDS':>5} {'VIOL':>5} {'INCON':>5}  closest law   "
                 f"fit a+b   gain/layer*  flagged")
    for label, e in s["entries"].items():
        v = e["decisions"]
        gains = e["per_layer_gain"]
        g = next(iter(gains.values()))
        flagged = sorted({f.split(" (")[0] for f in e["flagged"]})
        tag = {"plugin": " *", "reference": "", "control": " (ctrl)"}[e["role"]]
        fit = e["fit"]["dense"]
        a_plus_b = f"{fit['a_plus_b']['estimate']:>7.3f}" if fit else f"{'n/a':>7}"
        closest = e["laws"]["closest"] if e["laws"] else "n/a"
        lines.append(f"  {label + tag:<22} {v['HOLDS']:>5} {v['VIOLATED']:>5} "
                     f"{v['INCONCLUSIVE']:>5}  {closest:<12} {a_plus_b}   "
                     f"{g:>10.3g}          {'; '.join(flagged) or '-'}")
    lines.append(f"  gain/layer*: per-layer amplitude factor, {first_stack}; *: the plug-in; "
                 f"(ctrl): negative control, expected to be flagged")
    lines.append("")
    if "training" in s:
        lines += _training_summary_lines(s, result)
        lines.append("")
    verdict = ("FLAGGED: " + "; ".join(sorted({f.split(' [')[0] for f in
                                                s['entries'][s['plugin']]['flagged']})))
    lines.append(verdict if s["any_plugin_violation"] else
                 f"{s['plugin']}: no failure flagged (controls exploding and vanishing signals "
                 f"in every test)")
    return "\n".join(lines)


# ---- the report kind "plugin-battery" ----------------------------------------------------------

@dataclass(frozen=True)
class PluginBatteryParams:
    """Parameters of the ``plugin-battery`` experiment kind (``sntheory report``).

    ``normalizer``: the spec (a file path relative to the working directory or to the sntheory
    checkout, an import path, or a built-in name). ``battery_profile``: the
    :class:`BatteryConfig` profile to start from; every other field, when given, overrides that
    profile's value (shapes as ``"16x16,64x256"`` / ``"32x16x3x3,64x64x3x3"``).
    """

    normalizer: str = "snw"
    battery_profile: str = "quick"
    layer_scale: float | None = None
    init: str | None = None
    init_gain: float | None = None
    baselines: tuple[str, ...] | None = None
    variance_samples: int | None = None
    dense_shapes: str | None = None
    conv_shapes: str | None = None
    depths: tuple[int, ...] | None = None
    stacks: tuple[str, ...] | None = None
    dense_width: int | None = None
    conv_width: int | None = None
    conv_image: int | None = None
    depth_nets: int | None = None
    depth_batch: int | None = None
    net_image_size: int | None = None
    net_width: int | None = None
    lipschitz_scales: tuple[float, ...] | None = None
    factor_k: float | None = None
    training: bool | None = None
    train_steps: int | None = None
    train_probe_every: int | None = None
    train_width: int | None = None
    train_depth: int | None = None
    train_batch_size: int | None = None
    train_probe_batch: int | None = None
    train_lr: float | None = None
    train_loss: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.normalizer, str) or not self.normalizer.strip():
            raise ValueError(f"`normalizer` must be a non-empty spec, got {self.normalizer!r}")
        if self.layer_scale is not None:
            require_positive_float("layer_scale", self.layer_scale)
        self.config()  # every other value is checked by BatteryConfig

    def config(self) -> BatteryConfig:
        from ..claims.base import parse_shapes
        from ..claims.thm3 import parse_kernels

        overrides = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("normalizer", "battery_profile", "layer_scale") or value is None:
                continue
            if f.name == "dense_shapes":
                value = tuple(parse_shapes(value, name="dense_shapes"))
            elif f.name == "conv_shapes":
                value = tuple(parse_kernels(value, name="conv_shapes"))
            overrides[f.name] = value
        return BatteryConfig.from_profile(self.battery_profile, **overrides)


def _resolve_spec(spec: str) -> str:
    """A relative file spec that does not exist from the working directory is looked up in the
    sntheory checkout (where ``experiments/`` lives)."""
    if ":" not in spec:
        return spec
    left, attr = spec.rsplit(":", 1)
    if not (left.endswith(".py") or "/" in left) or Path(left).is_absolute() or Path(left).exists():
        return spec
    candidate = Path(__file__).resolve().parents[2] / left
    return f"{candidate}:{attr}" if candidate.is_file() else spec


def report_records(result: BatteryResult) -> list[dict]:
    """Flat, scalar-valued records (no run times) for the report's ``records.csv``."""
    out = []
    for r in result.records["variance"]:
        out.append({"part": "variance", "normalizer": r["normalizer"], "kind": r["kind"],
                    "setting": "x".join(map(str, r["shape"])), "fan_in": r["fan_in"],
                    "fan_out": r["fan_out"], "value": r["var"], "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"], "var_x_fan_in": r["var"] * r["fan_in"],
                    "in_hypotheses": r["in_hypotheses"]})
    cfg_depth = max(len(r["log_forward"]) for r in result.records["depth"])
    for label in result.summary["entries"]:
        for stack in sorted({r["stack"] for r in result.records["depth"]}):
            recs = [r for r in result.records["depth"]
                    if r["normalizer"] == label and r["stack"] == stack]
            for direction in ("forward", "backward"):
                est = _gain_estimate(recs, f"log_{direction}", cfg_depth)
                low, high = est.ci(0.95)
                out.append({"part": "depth", "normalizer": label, "kind": stack,
                            "setting": f"{direction}, depth {cfg_depth}",
                            "value": math.exp(est.value), "ci_low": math.exp(low),
                            "ci_high": math.exp(high)})
    for r in result.records["lipschitz"]:
        out.append({"part": "lipschitz", "normalizer": r["normalizer"], "kind": "cifar-cnn",
                    "setting": r["probe"], "value": r["product"], "ci_low": r["product_lower"],
                    "ci_high": r["product_upper"], "budget": r["budget"]})
    for p in result.records.get("training", []):
        out.append({"part": "training", "normalizer": p["normalizer"], "kind": "dcgan",
                    "setting": f"step {p['step']}, {p['batch']}, layer {p['layer']} "
                               f"({p['layer_label']})",
                    "value": p["grad_eff_fro_max"], "bound_p1": p["grad_eff_bound_max"],
                    "grad_mean": p["grad_eff_fro_mean"], "p1_ratio": p["p1_ratio"],
                    "sn_ratio": p["sn_ratio"], "budget_ratio": p["budget_ratio"],
                    "input_norm_max": p["input_norm_max"], "step": p["step"],
                    "layer": p["layer"], "batch": p["batch"]})
    return out


def report_summary(result: BatteryResult) -> str:
    """A Markdown paragraph: what the battery flags for the plug-in and for the baselines."""
    s = result.summary
    plugin = s["entries"][s["plugin"]]
    flags = sorted({f.split(" [")[0] for f in plugin["flagged"]})
    head = (f"**{s['plugin']}**: " + ("flagged -- " + "; ".join(flags) if flags else
                                       "no failure flagged: it controls exploding and vanishing "
                                       "signals in every test") + ".")
    fit = plugin["fit"]["dense"]
    law = (f"Its dense variance law is Var ~ {fit['C']:.3g} fan_in^-{fit['a']['estimate']:.2f} "
           f"fan_out^-{fit['b']['estimate']:.2f} (closest reference: "
           f"{plugin['laws']['closest']})" if fit and plugin["laws"] else
           "Its variance is zero on some shapes (no law to fit)")
    lines = [head, law + "; per-layer signal factors: "
             + ", ".join(f"{k} {v:.2f}" for k, v in plugin["per_layer_gain"].items()
                         if k.endswith("forward")) + "."]
    refs = [f"{label} ({', '.join(sorted({f.split(' (')[0] for f in e['flagged']})) or 'clean'})"
            for label, e in s["entries"].items() if e["role"] != "plugin"]
    lines.append("Baselines: " + "; ".join(refs) + ". Frobenius normalization and the "
                 "initializations without a normalizer are negative controls "
                 "(OUTSIDE-HYPOTHESES): they show the checks can fail.")
    if "training" in s:
        tr = s["training"]["entries"]
        mine = tr[s["plugin"]]
        vs = mine.get("vs_snw_median_min")
        lines.append(
            f"Training ({s['training']['description']}): {s['plugin']}'s worst P1 ratio "
            f"{mine['p1_ratio_max']:.3g}, largest gradient {mine['sn_ratio_max']:.3g} B_SN ||x||, "
            f"layer balance {mine['layer_balance_median']:.3g}"
            + (f", weakest layer at {vs:.3g} of SNw's gradient" if vs is not None else "")
            + "; flagged in training: "
            + ", ".join(f"{label} ({', '.join(sorted({f.split(' [')[0] for f in e['flagged']}))})"
                        for label, e in tr.items() if e["flagged"]) + "."
            if any(e["flagged"] for e in tr.values()) else
            f"Training ({s['training']['description']}): nothing flagged.")
    return " ".join(lines)


_CAPTIONS = {
    "variance": "Var(w_bar) * fan_in of normalized Gaussian weights against fan_in (95% CI), dense "
                "(left) and conv (right); grey band: the criterion [1/k, k] around LeCun's "
                "1/fan_in; hollow markers: shapes with out > fan_in (outside the criterion). The "
                "plug-in is the star.",
    "depth": "log10 of the forward (solid) and backward (dashed) signal ratio against depth, mean "
             "over random networks; grey band: the per-layer criterion gamma_lo^d .. gamma_hi^d. "
             "A line leaving the band through the bottom is a vanishing signal, through the top "
             "an exploding one.",
    "lipschitz": "log10 of prod_l ||w~_l|| (exact operator norms) of the lab CIFAR discriminator "
                 "for each probe of raw weights; red: the budget B = prod s alpha_l, blue: 1/B.",
    "training_gradients": "Paper Fig. 2 for every normalizer: each layer's largest per-sample "
                          "gradient ||grad_{w_t} z(x)||_F on the real probe batch through "
                          "training (solid) under its P1 bound (dashed, same colour); dotted: "
                          "the normalized bound (B/s) max||x||, dash-dotted: the exploding "
                          "threshold k B_SN max||x||.",
    "training_vanishing": "Left: the weakest layer's mean gradient relative to SNw's at each "
                          "probe step (same images); middle: smallest over largest layer "
                          "gradient; red: the threshold 1/k below which gradients count as "
                          "vanishing. Right: the discriminator's real-fake gap (running mean) "
                          "relative to its value at step 1; dashed: the growth x2 the "
                          "train-trained row asks for.",
}


def run_report_kind(params: PluginBatteryParams, out_dir: Path, ctx) -> object:
    """``run`` of the ``plugin-battery`` kind: the battery on ``params.normalizer``, its rows
    (experiment = the experiment's name), figures, flat records and a summary."""
    from ..report.experiments import ExperimentOutput, Figure

    from ..report.kinds_lab import runs_root

    plugin = load_normalizer(_resolve_spec(params.normalizer), layer_scale=params.layer_scale)
    config = params.config()
    result = run_battery(plugin, config=config, seed=ctx.seed, out=out_dir,
                         runs_dir=runs_root(ctx) if config.training else None)
    rows = [ClaimRow.from_dict({**r.to_dict(), "experiment": ctx.experiment or EXPERIMENT})
            for r in result.rows]
    figures = [Figure(path.name, _CAPTIONS[name]) for name, path in result.figures.items()
               if name in _CAPTIONS]
    return ExperimentOutput(rows=rows, figures=figures, records=report_records(result),
                            summary=report_summary(result), device="cpu")


def register_report_kind():
    """Register the ``plugin-battery`` kind with ``sntheory report`` (idempotent)."""
    from ..report.experiments import ExperimentKind, register_kind

    return register_kind(ExperimentKind(
        EXPERIMENT, PluginBatteryParams, run_report_kind,
        description="sanity battery of a weight normalizer: variance law, signal propagation, "
                    "Lipschitz control, gradient control through a short GAN training run, "
                    "beside SNw/BSN/BSSN and negative controls", version=2),
        replace=True)


# The report framework lists this module in KIND_MODULES; importing it registers the kind. The
# presence check keeps sntheory.plugin importable where the report package is not installed.
if importlib.util.find_spec("sntheory.report.experiments") is not None:
    PLUGIN_BATTERY_KIND = register_report_kind()
