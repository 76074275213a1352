"""Claim T3 (Lin, Sekar, Fanti 2021, Thm. 3): variance under bidirectional normalisation (BSN).

``w`` is a ``c_out x c_in x kh x kw`` kernel with i.i.d. symmetric entries, ``k = kh kw``,
``sigma_w = (||w^||_sp + ||w^'||_sp) / 2`` (``w^``: ``c_out x c_in k``; ``w^'``: ``c_in x c_out k``)
and ``w_bar = w / sigma_w``. Fan-in ``c_in k``, fan-out ``c_out k``, ``F = fan_in + fan_out``.

Estimator (toolkit). The map ``w -> -w`` gives ``E w_bar = 0``; permuting output channels, input
channels and kernel positions leaves both reshaped norms unchanged and maps any entry to any other,
so all entries share one variance: ``Var(w_bar) = E[||w||_F^2 / sigma_w^2] / (c_out c_in k)``.
Per sample: ``X = ||w_bar||_F^2 / N`` and ``Y = sum(w_bar) / N`` (``N`` entries), and the same for
SNw (``w / ||w^||_sp``) on the same kernels, for comparison.

Checks:

``upper``       ``E[w_bar^2] <= 4 / (k (sqrt c_in + sqrt c_out)^2)`` (toolkit derivation of the
                paper's bound: ``rank w^ <= c_out`` gives ``||w^|| >= ||w||_F / sqrt c_out``, likewise
                ``||w^'|| >= ||w||_F / sqrt c_in``). Holds for every kernel. It implies
                ``Var <= 4 / F``: twice Xavier's ``2 / F``.
``gauss-lb``    ``Var >= 2 / ((sqrt c_out + sqrt(c_in k))^2 + (sqrt c_in + sqrt(c_out k))^2 + 2)``
                (Gaussian entries; Jensen as in T2, ``(a + b)^2 <= 2 a^2 + 2 b^2`` for
                ``sigma_w^2``, Gordon + concentration for each reshaped norm).
``L-ref``       ``L_hat = 1 / (F Var) <= L_ref = 13/6`` (Gaussian or uniform, ``c_in, c_out >= 2``,
                ``c_in k, c_out k >= 3``): the Gaussian bound's denominator is at most
                ``2(F + c_in + c_out) + 2 <= 4F + 2``, so ``L_hat <= 2 + 1/F <= 13/6`` as ``F >= 6``.
``snw-upper``   SNw on the same kernels: ``E[w_bar_SNw^2] <= 1 / max{c_out, c_in k}`` (T2 applied to
                ``w^``), reported beside BSN.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .._validation import require_positive_int
from ..monte_carlo.engine import StoppingRule, Task
from ..monte_carlo.estimators import Estimate, Moments, mean_estimate
from ..monte_carlo.store import ResultStore
from ..monte_carlo.verdicts import BoundCheck
from ..random_weights import parse_distribution
from ..spectral import largest_singular_value
from .base import (assign_sweep_verdicts, case_record, l_hat, run_sweep, summarize_L_hat,
                   variance_estimate)

__all__ = ["CLAIM", "L_REF", "Thm3Case", "parse_kernels", "make_tasks", "sample_block",
           "build_record", "finalize_sweep", "default_sweep", "cases_from_grid", "run",
           "DEFAULT_KERNELS", "CONTROL_KERNELS", "CONTROL_DISTS"]

CLAIM = "thm3"
CLAIM_VERSION = 1
L_REF = 13 / 6
SPECTRAL_RTOL = 1e-10  # "fast" paths: what their error can be, and why 1e-10: thm2.SPECTRAL_RTOL
BLOCK_ENTRIES = 1 << 18

DEFAULT_KERNELS: tuple[tuple[int, int, int, int], ...] = (
    (2, 2, 3, 3), (3, 3, 3, 3), (4, 8, 3, 3), (8, 4, 3, 3), (16, 16, 3, 3), (32, 32, 3, 3),
    (64, 64, 3, 3), (128, 64, 3, 3), (64, 128, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3),
    (256, 256, 3, 3), (512, 256, 3, 3), (64, 3, 3, 3), (3, 64, 3, 3),
    (64, 64, 4, 4), (128, 128, 4, 4), (256, 256, 4, 4), (16, 32, 5, 5), (8, 8, 7, 7),
    (64, 64, 1, 1), (256, 128, 1, 1), (2, 16, 3, 3), (16, 2, 1, 1),
)
CONTROL_KERNELS: tuple[tuple[int, int, int, int], ...] = (
    (4, 4, 3, 3), (16, 16, 3, 3), (64, 64, 3, 3), (64, 32, 4, 4),
)
CONTROL_DISTS: tuple[str, ...] = ("cauchy", "student-t:2.5", "exponential")
CONTROL_PRECISION = 0.02

_KERNEL = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_kernels(text: str | Iterable, *, name: str = "kernels") -> list[tuple[int, int, int, int]]:
    """Parse ``"64x64x3x3,16x32x5x5"`` (c_out x c_in x kh x kw) or a list of 4-tuples."""
    entries = text.split(",") if isinstance(text, str) else list(text)
    if isinstance(text, str) and not text.strip():
        raise ValueError(f"`{name}` must list at least one kernel such as '64x64x3x3', got {text!r}")
    out = []
    for entry in entries:
        if isinstance(entry, str):
            match = _KERNEL.match(entry)
            if not match:
                raise ValueError(f"`{name}` entry {entry.strip()!r} is malformed: each kernel must "
                                 f"be c_out x c_in x kh x kw with positive integers, as in "
                                 f"'64x64x3x3'")
            dims = tuple(int(g) for g in match.groups())
        else:
            try:
                dims = tuple(int(v) for v in entry)
            except (TypeError, ValueError):
                raise ValueError(f"`{name}` entry {entry!r} is malformed") from None
            if len(dims) != 4:
                raise ValueError(f"`{name}` entry {entry!r} is malformed: need 4 integers")
        if min(dims) < 1:
            raise ValueError(f"`{name}` entry {entry!r} is not positive: every dimension must "
                             f"be >= 1")
        out.append(dims)
    if not out:
        raise ValueError(f"`{name}` must list at least one kernel")
    return out


@dataclass(frozen=True)
class Thm3Case:
    c_out: int
    c_in: int
    kh: int
    kw: int
    dist: str
    precision: float | None = None

    @property
    def params(self) -> dict:
        return {"claim_version": CLAIM_VERSION, "c_out": self.c_out, "c_in": self.c_in,
                "kh": self.kh, "kw": self.kw, "dist": self.dist, "normalizer": "bsn"}


def sample_block(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """Per-sample ``(X_bsn, Y_bsn, X_snw, Y_snw)`` for ``count`` random kernels; ``(count, 4)``."""
    c_out, c_in, kh, kw = params["c_out"], params["c_in"], params["kh"], params["kw"]
    w = parse_distribution(params["dist"]).sample(rng, (count, c_out, c_in, kh, kw), reuse=True)
    w_hat = w.reshape(count, c_out, c_in * kh * kw)
    w_hat_t = np.swapaxes(w, 1, 2).reshape(count, c_in, c_out * kh * kw)
    s_hat = largest_singular_value(w_hat, method="fast", rtol=SPECTRAL_RTOL).sigma
    s_hat_t = largest_singular_value(w_hat_t, method="fast", rtol=SPECTRAL_RTOL).sigma
    sigma_bsn = (s_hat + s_hat_t) / 2
    flat = w.reshape(count, -1)
    frobenius_sq = np.einsum("kj,kj->k", flat, flat)
    total = flat.sum(axis=1)
    n_entries = flat.shape[1]
    return np.column_stack([frobenius_sq / (sigma_bsn ** 2 * n_entries),
                            total / (sigma_bsn * n_entries),
                            frobenius_sq / (s_hat ** 2 * n_entries),
                            total / (s_hat * n_entries)])


def make_tasks(cases: Iterable[Thm3Case], *, rule: StoppingRule | None = None) -> list[Task]:
    """Validate cases and turn them into engine tasks. Kernels below the lower bound's shape
    hypotheses run, with those checks reported as outside their hypotheses (the upper bound
    needs no hypothesis)."""
    tasks = []
    for case in cases:
        dims = [require_positive_int(n, v) for n, v in
                (("c_out", case.c_out), ("c_in", case.c_in), ("kh", case.kh), ("kw", case.kw))]
        c_out, c_in, kh, kw = dims
        dist = parse_distribution(case.dist)
        canonical = Thm3Case(c_out, c_in, kh, kw, dist.name)
        override = None
        if case.precision is not None:
            override = dataclasses.replace(rule or StoppingRule(), precision=case.precision)
        size = c_out * c_in * kh * kw
        block = max(1, min(16384, BLOCK_ENTRIES // size))
        tasks.append(Task(claim=CLAIM, params=canonical.params,
                          sampler="sntheory.claims.thm3:sample_block", block_size=block,
                          primary=functools.partial(variance_estimate, symmetric=dist.symmetric),
                          n_stats=4, cost_per_sample=float(size), rule=override))
    return tasks


def _notes(p: dict) -> dict[str, str]:
    dist = parse_distribution(p["dist"])
    c_out, c_in, k = p["c_out"], p["c_in"], p["kh"] * p["kw"]
    law = []
    if not dist.symmetric:
        law.append("not symmetric")
    if not dist.finite_fourth_moment:
        law.append("heavy-tailed: infinite fourth moment")
    law_text = f" ({'; '.join(law)})" if law else ""
    gauss = "" if dist.name == "gaussian" else f"entries are {dist.name}, not Gaussian{law_text}"
    lref = []
    if not dist.in_lower_bound_hypothesis:
        lref.append(f"entries are {dist.name}, not Gaussian or uniform{law_text}")
    if min(c_in, c_out) < 2 or min(c_in * k, c_out * k) < 3:
        lref.append(f"kernel {c_out}x{c_in}x{p['kh']}x{p['kw']} needs c_in, c_out >= 2 and "
                    f"c_in k, c_out k >= 3")
    return {"gauss-lb": gauss, "L-ref": "; ".join(lref)}


def build_record(task: Task, moments: Moments, *, n_blocks: int, precision_reached: bool,
                 wall_s: float, seed: int, rule: StoppingRule) -> dict:
    """Everything about one finished case except the sweep-level verdicts (JSON-able)."""
    p = task.params
    c_out, c_in, k = p["c_out"], p["c_in"], p["kh"] * p["kw"]
    dist = parse_distribution(p["dist"])
    var = variance_estimate(moments, dist.symmetric, 0, 1)
    second = mean_estimate(moments, 0)
    var_snw = variance_estimate(moments, dist.symmetric, 2, 3)
    second_snw = mean_estimate(moments, 2)
    fan = c_in * k + c_out * k
    gauss_den = ((math.sqrt(c_out) + math.sqrt(c_in * k)) ** 2
                 + (math.sqrt(c_in) + math.sqrt(c_out * k)) ** 2 + 2)
    snw_low, snw_high = var_snw.ci(0.95)
    record = case_record(CLAIM, task, moments, n_blocks=n_blocks,
                         precision_reached=precision_reached, wall_s=wall_s, seed=seed,
                         rule=rule, var=var, spectral_rtol=SPECTRAL_RTOL)
    low, high = record["ci_low"], record["ci_high"]
    return {
        **record,
        "second_moment": {"estimate": second.value, "se": second.se},
        "fan_in": c_in * k, "fan_out": c_out * k,
        "bounds": {
            "upper": 4 / (k * (math.sqrt(c_in) + math.sqrt(c_out)) ** 2),
            "upper_4_over_fan_sum": 4 / fan,
            "xavier_2_over_fan_sum": 2 / fan,
            "gaussian_lower": 2 / gauss_den,
            "L_ref_lower": 1 / (L_REF * fan),
            "L_ref": L_REF,
            "snw_upper_1_over_max": 1 / max(c_out, c_in * k),
        },
        "L_hat": l_hat(record, fan),
        "xavier_ratio": {"estimate": var.value * fan / 2, "ci_low": low * fan / 2,
                         "ci_high": high * fan / 2},
        "snw": {"estimate": var_snw.value, "se": var_snw.se, "ci_low": snw_low,
                "ci_high": snw_high, "second_moment": second_snw.value,
                "second_moment_se": second_snw.se,
                "ratio_to_bsn": var_snw.value / var.value},
    }


def _checks_for(record: dict) -> list[BoundCheck]:
    notes = _notes(record["params"])
    df = record["n_samples"] - 1
    var = Estimate(record["estimate"], record["se"], df)
    second = Estimate(record["second_moment"]["estimate"], record["second_moment"]["se"], df)
    snw_second = Estimate(record["snw"]["second_moment"], record["snw"]["second_moment_se"], df)
    b = record["bounds"]
    return [
        BoundCheck("upper", "E[w_bar^2] <= 4/(k (sqrt c_in + sqrt c_out)^2)", "upper", second,
                   b["upper"]),
        BoundCheck("gauss-lb", "Var >= 2/((sqrt c_out + sqrt(c_in k))^2 + (sqrt c_in + "
                   "sqrt(c_out k))^2 + 2)", "lower", var, b["gaussian_lower"],
                   in_hypotheses=not notes["gauss-lb"], hypothesis_note=notes["gauss-lb"]),
        BoundCheck("L-ref", "L_hat = 1/((fan_in + fan_out) Var) <= 13/6", "lower", var,
                   b["L_ref_lower"], in_hypotheses=not notes["L-ref"],
                   hypothesis_note=notes["L-ref"]),
        BoundCheck("snw-upper", "SNw: E[w_bar^2] <= 1/max{c_out, c_in k}", "upper", snw_second,
                   b["snw_upper_1_over_max"]),
    ]


def _label(p: dict) -> str:
    return f'{p["c_out"]}x{p["c_in"]}x{p["kh"]}x{p["kw"]}'


def finalize_sweep(records: Sequence[dict], alpha: float = 0.05) -> dict:
    out, n_checks = assign_sweep_verdicts(records, _checks_for, alpha)
    summary = summarize_L_hat(out, lambda p: p["kh"] * p["kw"] * (p["c_in"] + p["c_out"]),
                              _label, alpha, n_checks)
    return {"records": out, "summary": summary}


def default_sweep(controls: bool = True,
                  control_precision: float = CONTROL_PRECISION) -> list[Thm3Case]:
    """24 kernel shapes (1x1 to 7x7, 2 to 512 channels), Gaussian and uniform, plus controls."""
    cases = [Thm3Case(*dims, d) for d in ("gaussian", "uniform") for dims in DEFAULT_KERNELS]
    if controls:
        cases += [Thm3Case(*dims, d, control_precision) for d in CONTROL_DISTS
                  for dims in CONTROL_KERNELS]
    return cases


def cases_from_grid(kernels, dists) -> list[Thm3Case]:
    dims = parse_kernels(kernels)
    dist_list = dists.split(",") if isinstance(dists, str) else list(dists)
    if not dist_list or any(not str(d).strip() for d in dist_list):
        raise ValueError(f"`dist` must list at least one distribution, got {dists!r}")
    names = [parse_distribution(d).name for d in dist_list]
    return [Thm3Case(*k, d) for d in names for k in dims]


def run(cases: Sequence[Thm3Case], *, seed: int = 0, rule: StoppingRule | None = None,
        store: ResultStore | None = None, workers: int = 1, alpha: float = 0.05,
        progress: bool = True, executor=None) -> dict:
    """Run a T3 sweep: Monte Carlo per kernel shape, Holm verdicts, summary, provenance."""
    rule = rule or StoppingRule()
    tasks = make_tasks(cases, rule=rule)
    return run_sweep(claim=CLAIM, claim_version=CLAIM_VERSION, tasks=tasks,
                     build_record=build_record, finalize=finalize_sweep, seed=seed, rule=rule,
                     store=store, workers=workers, alpha=alpha, progress=progress,
                     executor=executor)
