"""Claim R: SNw versus SNConv, ``||w^||_sp <= ||w~||_sp <= alpha ||w^||_sp``.

For a conv layer with a given geometry, ``w^`` is the kernel reshaped to ``c_out x c_in kh kw`` (what
SNw divides by) and ``w~`` the layer's expanded matrix (what SNConv divides by). ``alpha`` is the
square root of the largest number of output positions that read one input pixel (THEORY.md R;
:func:`sntheory.conv.alpha.coverage_alpha` computes it exactly for the geometry, together with the
condition under which the lower bound applies). For grouped layers ``||w^||`` is the max over the
groups' reshaped norms (the form both bounds need; torch's SN reshapes the whole weight).

Three measurements per geometry:

1. **Random kernels** (``n_kernels`` Gaussian kernels, fixed seed): the ratio ``rho = ||w~||/||w^||``
   — quantiles, mean with a t-interval, min and max — and two deterministic checks: no kernel has
   ``rho > alpha`` and (where the lower bound applies) none has ``rho < 1``. ``||w~||`` is taken as
   a certified interval, so a violation is only called when the interval lies wholly outside.
2. **Variances**: ``Var_SNConv = E||w||_F^2/||w~||^2 / N`` against
   ``[Var_SNw / alpha^2, Var_SNw]`` on the same kernels (holds kernel by kernel, hence in mean).
3. **Tightness and adversarial search**: the all-ones kernel (reaches ``alpha`` on circular
   geometries that cover the torus, approaches it on large zero-padded inputs), and gradient ascent
   on the kernel (PyTorch, differentiable power iteration on the real operator) that pushes
   ``rho`` towards ``alpha``: its best kernel is re-measured with the certified interval and must
   never exceed ``alpha``.

Negative control: a claimed bound tighter than the truth (``alpha_claimed < alpha``, e.g. the
``sqrt(kh kw)``-free constant 1) must be flagged — see ``tests/test_ratio.py``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..conv.alpha import coverage_alpha
from ..conv.geometry import ConvGeometry
from ..conv.operator import conv_operator_norm
from ..conv.reshaped import reshaped_kernel_norm
from ..monte_carlo.estimators import Estimate, Moments, delta_estimate, mean_estimate
from ..monte_carlo.verdicts import BoundCheck, assign_verdicts
from ..provenance import provenance
from ..random_weights import block_generator, case_spawn_key, parse_distribution
from .base import case_verdict

__all__ = ["RatioCase", "DEFAULT_CASES", "QUICK_CASES", "measure_case", "adversarial_search",
           "run", "CLAIM"]

CLAIM = "ratio"
CLAIM_VERSION = 1
ROUND_OFF = 1e-9   # relative allowance when comparing certified intervals with the bounds


@dataclass(frozen=True)
class RatioCase:
    """A conv geometry and kernel shape to measure the ratio on."""

    name: str
    c_out: int
    c_in: int
    kernel: tuple[int, int]
    geometry: ConvGeometry

    @property
    def params(self) -> dict:
        g = self.geometry
        return {"name": self.name, "c_out": self.c_out, "c_in": self.c_in,
                "kernel": list(self.kernel), "input_size": list(g.input_size),
                "stride": list(g.stride), "padding": list(g.padding),
                "padding_mode": g.padding_mode, "dilation": list(g.dilation), "groups": g.groups}


def _case(name, c_out, c_in, k, size, stride=1, padding=None, mode="zeros") -> RatioCase:
    kernel = (k, k)
    if padding is None:
        geometry = ConvGeometry.same((size, size), kernel, stride=stride, padding_mode=mode)
    else:
        geometry = ConvGeometry((size, size), stride, padding, mode)
    return RatioCase(name, c_out, c_in, kernel, geometry)


DEFAULT_CASES: tuple[RatioCase, ...] = (
    _case("3x3/s1 same, 32x32", 16, 16, 3, 32),
    _case("3x3/s1 same, 8x8", 16, 16, 3, 8),
    _case("3x3/s1 same circular, 16x16", 16, 16, 3, 16, mode="circular"),
    _case("3x3/s1 same, 4x4 (small)", 32, 16, 3, 4),
    _case("4x4/s2 pad1, 32x32", 16, 16, 4, 32, stride=2, padding=1),
    _case("4x4/s2 pad1, 8x8", 16, 16, 4, 8, stride=2, padding=1),
    _case("4x4/s2 pad1 circular, 16x16", 16, 16, 4, 16, stride=2, padding=1, mode="circular"),
    _case("1x1/s1, 16x16", 32, 16, 1, 16, padding=0),
    _case("5x5/s1 same, 16x16", 8, 8, 5, 16),
    _case("5x5/s1 same circular, 12x12", 8, 8, 5, 12, mode="circular"),
    _case("3x3/s1 valid, 10x10", 16, 8, 3, 10, padding=0),
)
QUICK_CASES: tuple[RatioCase, ...] = tuple(DEFAULT_CASES[i] for i in (1, 2, 5, 6, 7, 9))


def _certified_norms(w: np.ndarray, geometry: ConvGeometry, rtol: float):
    res = conv_operator_norm(w, geometry, rtol=rtol)
    return (np.atleast_1d(np.asarray(res.value, dtype=float)),
            np.atleast_1d(np.asarray(res.lower, dtype=float)),
            np.atleast_1d(np.asarray(res.upper, dtype=float)), res)


def measure_case(case: RatioCase, *, n_kernels: int = 64, seed: int = 0, dist: str = "gaussian",
                 rtol: float = 1e-6) -> dict:
    """Random-kernel ratios, variances and the all-ones kernel for one geometry (JSON-able)."""
    started = time.perf_counter()
    law = parse_distribution(dist)
    rng = block_generator(seed, case_spawn_key({"claim": CLAIM, **case.params, "dist": law.name}), 0)
    c_in_g = case.c_in // case.geometry.groups
    w = law.sample(rng, (n_kernels, case.c_out, c_in_g, *case.kernel))
    alpha = coverage_alpha(case.geometry, case.kernel)
    hat = np.atleast_1d(reshaped_kernel_norm(w, groups=case.geometry.groups))
    value, lower, upper, res = _certified_norms(w, case.geometry, rtol)
    ratio, ratio_lo, ratio_hi = value / hat, lower / hat, upper / hat
    n_entries = w[0].size
    fro2 = (w.reshape(n_kernels, -1) ** 2).sum(axis=1)
    x_snw = fro2 / (hat ** 2 * n_entries)
    x_snconv = fro2 / (value ** 2 * n_entries)
    moments = Moments.from_samples(np.column_stack([ratio, x_snw, x_snconv]))
    var_ratio = delta_estimate(moments, lambda mu: mu[2] / mu[1],
                               lambda mu: np.array([0.0, -mu[2] / mu[1] ** 2, 1 / mu[1]]))
    ones = np.ones((1, case.c_out, c_in_g, *case.kernel))
    o_value, o_lower, o_upper, _ = _certified_norms(ones, case.geometry, rtol)
    o_hat = np.atleast_1d(reshaped_kernel_norm(ones, groups=case.geometry.groups))
    q = np.quantile(ratio, [0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0])
    mean_ratio = mean_estimate(moments, 0)
    return {
        "claim": CLAIM, "params": case.params, "dist": law.name, "n_kernels": n_kernels,
        "seed": seed, "rtol": rtol,
        "alpha": alpha.alpha, "alpha_bound": alpha.alpha_bound,
        "lower_bound_applies": bool(alpha.lower_bound_applies), "alpha_reason": alpha.reason,
        "operator_norm_exact": bool(np.all(np.atleast_1d(res.exact))),
        "operator_norm_method": str(res.method), "operator_norm_note": str(res.note),
        "ratio": {"mean": mean_ratio.value, "ci": list(mean_ratio.ci(0.95)),
                  "quantiles": dict(zip(["min", "q05", "q25", "median", "q75", "q95", "max"],
                                        map(float, q))),
                  "max_certified_upper": float(ratio_hi.max()),
                  "min_certified_lower": float(ratio_lo.min()),
                  "n_above_alpha": int(np.sum(ratio_lo > alpha.alpha * (1 + ROUND_OFF))),
                  "n_below_one": int(np.sum(ratio_hi < 1 - ROUND_OFF))},
        "variance": {
            "snw": _est_json(mean_estimate(moments, 1)),
            "snconv": _est_json(mean_estimate(moments, 2)),
            "snconv_over_snw": _est_json(var_ratio),
        },
        "all_ones": {"ratio": float(o_value[0] / o_hat[0]),
                     "ratio_interval": [float(o_lower[0] / o_hat[0]), float(o_upper[0] / o_hat[0])],
                     "fraction_of_alpha": float(o_value[0] / o_hat[0] / alpha.alpha)},
        "wall_s": time.perf_counter() - started,
    }


def _est_json(e: Estimate) -> dict:
    low, high = e.ci(0.95)
    return {"estimate": e.value, "se": e.se, "df": e.df, "ci_low": low, "ci_high": high}


def _est(d: dict) -> Estimate:
    return Estimate(d["estimate"], d["se"], d["df"])


def adversarial_search(case: RatioCase, *, steps: int = 150, seed: int = 0, lr: float = 0.05,
                       power_iterations: int = 30, rtol: float = 1e-6) -> dict:
    """Gradient ascent on ``log ||w~|| - log ||w^||`` from a random kernel (PyTorch, float64).

    ``||w~||`` is differentiated through a warm-started power iteration on the real operator
    (``conv2d`` / ``conv_transpose2d``): ``sigma = <u, A v>`` with ``u, v`` detached, whose gradient
    is ``u v^T``, exact at convergence. The best kernel met is re-measured with the certified
    interval of :func:`conv_operator_norm`; ``ratio_upper`` is the certified upper end.
    """
    import torch
    import torch.nn.functional as F

    g = case.geometry
    gen = torch.Generator().manual_seed(int(seed))
    c_in_g = case.c_in // g.groups
    w = torch.randn(case.c_out, c_in_g, *case.kernel, generator=gen, dtype=torch.float64)
    w.requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    x_shape = (1, case.c_in, *g.input_size)
    v = torch.randn(x_shape, generator=gen, dtype=torch.float64)

    def forward(weight, x):
        if g.padding_mode == "circular":
            ph, pw = g.padding
            x = F.pad(x, (pw, pw, ph, ph), mode="circular")
            return F.conv2d(x, weight, stride=g.stride, dilation=g.dilation, groups=g.groups)
        return F.conv2d(x, weight, stride=g.stride, padding=g.padding, dilation=g.dilation,
                        groups=g.groups)

    def adjoint(weight, y):  # A^T y, by differentiating the (linear) forward map
        with torch.enable_grad():
            x = torch.zeros(x_shape, dtype=torch.float64, requires_grad=True)
            (grad,) = torch.autograd.grad(forward(weight.detach(), x), x, grad_outputs=y)
        return grad

    best_ratio, best_w, history = -1.0, w.detach().clone(), []
    for _ in range(steps):
        with torch.no_grad():
            for _ in range(power_iterations):
                u = forward(w, v)
                u = u / u.norm()
                v = adjoint(w, u)
                v = v / v.norm()
        sigma = (u.detach() * forward(w, v.detach())).sum()
        hat = torch.linalg.matrix_norm(w.reshape(case.c_out, -1), ord=2)
        objective = torch.log(sigma) - torch.log(hat)
        ratio = float(torch.exp(objective.detach()))
        history.append(ratio)
        if ratio > best_ratio:
            best_ratio, best_w = ratio, w.detach().clone()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    kernel = best_w.numpy()[None]
    value, lower, upper, _ = _certified_norms(kernel, g, rtol)
    hat = float(np.atleast_1d(reshaped_kernel_norm(kernel, groups=g.groups))[0])
    alpha = coverage_alpha(g, case.kernel).alpha
    return {"steps": steps, "seed": seed, "alpha": alpha,
            "ratio": float(value[0] / hat), "ratio_upper": float(upper[0] / hat),
            "ratio_lower": float(lower[0] / hat), "fraction_of_alpha": float(value[0] / hat / alpha),
            "history": [float(h) for h in history[:: max(1, steps // 30)]],
            "start_ratio": float(history[0]) if history else None}


def checks_for(record: dict) -> list[BoundCheck]:
    """Deterministic and Monte Carlo checks of one geometry's record.

    The ratio checks compare the converged values (relative accuracy ``rtol``) with the bounds,
    allowing ``10 rtol``; the certified intervals are reported beside them (``n_above_alpha``
    counts kernels whose certified LOWER end exceeds alpha: a proven violation).
    """
    alpha = record["alpha"]
    r = record["ratio"]
    df = float(record["n_kernels"] - 1)
    tol = max(ROUND_OFF, 10 * record["rtol"])
    lower_note = "" if record["lower_bound_applies"] else (
        f"lower bound not guaranteed: {record['alpha_reason']}")
    checks = [
        BoundCheck("ratio<=alpha", f"every kernel: ||w~||/||w^|| <= alpha = {alpha:.4g}", "upper",
                   Estimate(r["quantiles"]["max"], 0.0, df), alpha, rel_tol=tol),
        BoundCheck("ratio>=1", "every kernel: ||w~||/||w^|| >= 1", "lower",
                   Estimate(r["quantiles"]["min"], 0.0, df), 1.0,
                   in_hypotheses=record["lower_bound_applies"], hypothesis_note=lower_note,
                   rel_tol=tol),
        BoundCheck("var<=snw", "Var_SNConv / Var_SNw <= 1", "upper",
                   _est(record["variance"]["snconv_over_snw"]), 1.0, rel_tol=tol),
        BoundCheck("var>=snw/alpha^2", "Var_SNConv / Var_SNw >= 1/alpha^2", "lower",
                   _est(record["variance"]["snconv_over_snw"]), 1 / alpha ** 2, rel_tol=tol),
    ]
    if "adversarial" in record:
        adv = record["adversarial"]
        checks.append(BoundCheck("adversarial<=alpha",
                                 "adversarial kernel: ||w~||/||w^|| <= alpha", "upper",
                                 Estimate(adv["ratio"], 0.0, 0.0), alpha, rel_tol=tol))
    return checks


def run(cases: Sequence[RatioCase] = DEFAULT_CASES, *, n_kernels: int = 64, seed: int = 0,
        adversarial_steps: int = 150, alpha_fw: float = 0.05, progress: bool = True) -> dict:
    """Measure every geometry, run the adversarial search, assign Holm verdicts (JSON-able)."""
    from tqdm.auto import tqdm

    started = time.perf_counter()
    records = []
    for case in tqdm(cases, desc="geometries", disable=not progress):
        record = measure_case(case, n_kernels=n_kernels, seed=seed)
        if adversarial_steps:
            record["adversarial"] = adversarial_search(case, steps=adversarial_steps, seed=seed)
        records.append(record)
    per_record = [checks_for(r) for r in records]
    assign_verdicts([c for cs in per_record for c in cs], alpha=alpha_fw)
    for record, checks in zip(records, per_record):
        record["checks"] = [c.to_json() for c in checks]
        record["verdict"] = str(case_verdict(checks))
    config = {"claim": CLAIM, "claim_version": CLAIM_VERSION, "n_kernels": n_kernels,
              "adversarial_steps": adversarial_steps, "alpha": alpha_fw,
              "cases": [c.params for c in cases]}
    return {"records": records,
            "summary": {"any_violated": any(r["verdict"] == "VIOLATED" for r in records),
                        "alpha_familywise": alpha_fw,
                        "n_checks": sum(len(cs) for cs in per_record)},
            "provenance": provenance(seed=seed, config=config),
            "wall_s": time.perf_counter() - started}


def format_table(result: dict) -> str:
    """One row per geometry: alpha, the ratio's range over random kernels, the all-ones and
    adversarial kernels, the variance ratio, and a verdict per check."""
    from ..report.tables import fmt, short_verdict

    names = ("ratio<=alpha", "ratio>=1", "var<=snw", "var>=snw/alpha^2", "adversarial<=alpha")
    header = (f"{'geometry':<30} {'c_out x c_in':>12} {'alpha':>6} {'min':>7} {'median':>7} "
              f"{'max':>7} {'ones/alpha':>10} {'adv/alpha':>9} {'VarSNConv/VarSNw [CI]':<26} "
              + " ".join(f"{n[:12]:>12}" for n in names) + " verdict")
    lines = [f"Claim R: ||w^|| <= ||w~|| <= alpha ||w^||   seed={result['provenance']['seed']}  "
             f"kernels per geometry={result['provenance']['config']['n_kernels']}  "
             f"Holm alpha={result['summary']['alpha_familywise']:g} over "
             f"{result['summary']['n_checks']} checks", "", header, "-" * len(header)]
    for r in result["records"]:
        p, q = r["params"], r["ratio"]["quantiles"]
        v = r["variance"]["snconv_over_snw"]
        checks = {c["name"]: c for c in r["checks"]}
        adv = r.get("adversarial", {}).get("fraction_of_alpha")
        lines.append(
            f"{p['name'][:30]:<30} {p['c_out']:>5} x {p['c_in']:<4} {r['alpha']:>6.3g} "
            f"{q['min']:>7.4f} {q['median']:>7.4f} {q['max']:>7.4f} "
            f"{r['all_ones']['fraction_of_alpha']:>10.4f} {fmt(adv, 4):>9} "
            f"{fmt(v['estimate'], 4) + ' [' + fmt(v['ci_low'], 4) + ', ' + fmt(v['ci_high'], 4) + ']':<26} "
            + " ".join(f"{short_verdict(checks[n]) if n in checks else '-':>12}" for n in names)
            + f" {r['verdict']}")
    lines += ["", "ones/alpha: the all-ones kernel's ratio over alpha (1 = the bound is attained); "
                  "adv/alpha: best ratio of the gradient-ascent search over alpha",
              f"{sum(r['verdict'] == 'VIOLATED' for r in result['records'])} geometry(ies) "
              f"VIOLATED; wall time {result['wall_s']:.1f} s"]
    return "\n".join(lines)
