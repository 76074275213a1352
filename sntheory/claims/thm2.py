"""Claim T2 (Lin, Sekar, Fanti 2021, Thm. 2): variance of spectrally normalised random matrices.

``A`` is ``m x n`` with i.i.d. entries from a symmetric law and ``A_bar = A / ||A||_sp``.

Estimator (toolkit). By symmetry ``E a_bar_ij = 0``; by exchangeability of the entries,
``Var(a_bar_ij) = E[||A||_F^2 / ||A||_sp^2] / (m n)``: the mean stable rank over ``m n``. Each sample
contributes ``X = ||A_bar||_F^2 / (m n)``, an unbiased estimate that uses every entry, and
``Y = sum_ij a_bar_ij / (m n)``. For symmetric laws ``Var = E X``; for the non-symmetric controls
``Var = E X - (E Y)^2`` (delta method for its interval). ``1 <= stable rank <= min{m, n}``, so ``X``
is bounded and the CLT interval is valid for every law, heavy tails included.

Checks, each an inequality with its own hypotheses:

``upper``     ``E[a_bar^2] <= 1/max{m,n}`` (paper). Holds for every matrix, since the stable rank is at
              most ``min{m,n}``; it can only fail if the normaliser under-estimates ``||A||_sp``.
``gauss-lb``  ``Var >= 1/((sqrt m + sqrt n)^2 + 1)`` (toolkit, Gaussian entries, any m, n): with
              ``A = R B``, ``R = ||A||_F`` independent of ``B`` uniform on the sphere, Jensen gives
              ``E[1/||B||_sp^2] >= m n / E||A||_sp^2``; Gordon: ``E||A||_sp <= sqrt m + sqrt n``; Gaussian
              concentration: ``Var ||A||_sp <= 1``.
``L-ref``     ``L_hat = 1/(max{m,n} Var) <= L_ref = 13/3`` (Gaussian or uniform entries, m, n >= 2,
              max{m,n} >= 3). The paper proves some dimension-free ``L`` without a recoverable value;
              13/3 is the constant the Gaussian bound gives (``(sqrt m + sqrt n)^2 + 1 <= 4 max + 1 <=
              13/3 max`` when ``max >= 3``) and is the reference the toolkit holds both laws to.
              Across a sweep, ``L_hat`` staying under ``L_ref`` is the numerical form of "bounded".

Reported beside them: ``L_hat`` with its interval, the Bai-Yin ratio ``Var (sqrt m + sqrt n)^2``
(tends to 1 for zero-mean entries with a finite fourth moment), the mean stable rank and the mean
entry ``E a_bar``. Heavy-tailed and non-symmetric laws are negative controls: their lower-bound
checks are reported as OUTSIDE-HYPOTHESES with what was observed (the bound fails for heavy tails),
never as violations of the theorem.

Normalisers (``normalizer`` parameter): ``sn`` divides by the exact ``||A||_sp`` (the theorem);
``sn-power:K`` by ``K`` cold-start power iterations (an under-estimate: a realistic bug);
``sn-scaled:c`` by ``c ||A||_sp``. The checks are held against any normaliser, so a broken one is
caught as VIOLATED.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .._validation import require_positive_int
from ..monte_carlo.engine import StoppingRule, Task
from ..monte_carlo.estimators import Estimate, Moments, mean_estimate
from ..monte_carlo.store import ResultStore
from ..monte_carlo.verdicts import BoundCheck
from ..random_weights import parse_distribution
from ..spectral import normalized_sums
from .base import (assign_sweep_verdicts, case_record, l_hat, parse_shapes, run_sweep,
                   summarize_L_hat, variance_estimate)

__all__ = ["CLAIM", "L_REF", "Thm2Case", "make_tasks", "sample_block", "build_record",
           "finalize_sweep", "default_sweep", "parse_normalizer", "DEFAULT_SHAPES",
           "CONTROL_SHAPES", "CONTROL_DISTS", "cases_from_grid", "run"]

CLAIM = "thm2"
CLAIM_VERSION = 1
L_REF = 13 / 3
# The "fast" spectral paths: relative error <= 1e-10, or <= the gap sigma_1 - sigma_2 when that
# is below ~1e-5 relative (for random matrices such near-ties have probability ~1e-7), except
# for rare misconvergence to sigma_2 (start vector nearly orthogonal to v1: measured ~1e-4 of
# Gaussian 512 x 256 matrices, error = the gap, ~0.3%; see spectral's module docstring): its
# effect on a mean over samples is ~1e-6 relative, far below any precision a sweep asks for.
# Loosening this tolerance toward the statistical precision would save ~10% of the Lanczos
# passes at 1e-8 and raise the miss rate (x10 at 1e-5): not done.
SPECTRAL_RTOL = 1e-10
BLOCK_ENTRIES = 1 << 18        # random numbers per block (the unit of the random stream)

DEFAULT_SHAPES: tuple[tuple[int, int], ...] = (
    (2, 2), (3, 3), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16), (24, 24), (32, 32), (48, 48),
    (64, 64), (96, 96), (128, 128), (192, 192), (256, 256), (384, 384), (512, 512), (768, 768),
    (1024, 1024), (1536, 1536), (2048, 2048), (3072, 3072), (4096, 4096),
    (2, 3), (3, 2), (2, 16), (16, 2), (2, 256), (3, 200), (200, 3), (8, 64), (64, 8),
    (16, 256), (64, 32), (32, 64), (128, 512), (512, 128), (10, 1000), (1000, 10),
    (256, 1024), (512, 2048), (2048, 512), (1024, 4096), (4096, 1024),
)
CONTROL_SHAPES: tuple[tuple[int, int], ...] = (
    (4, 4), (16, 16), (64, 64), (256, 256), (64, 32), (32, 256), (3, 200),
)
CONTROL_DISTS: tuple[str, ...] = ("cauchy", "student-t:2.5", "exponential")
# The controls only need to show a bound failing by a wide margin, and heavy tails make the
# stable rank very noisy (a 64x64 Cauchy case needs ~40k samples for 0.5%): 2% suffices.
CONTROL_PRECISION = 0.02


def parse_normalizer(spec: str) -> tuple[str, float]:
    """``"sn"`` -> ("sn", 1); ``"sn-power:K"`` -> ("sn-power", K); ``"sn-scaled:c"`` -> ("sn-scaled", c)."""
    if not isinstance(spec, str):
        raise TypeError(f"`normalizer` must be a string such as 'sn', got {spec!r}")
    text = spec.strip().lower()
    if text == "sn":
        return "sn", 1.0
    kind, _, raw = text.partition(":")
    if kind == "sn-power":
        try:
            k = int(raw)
        except ValueError:
            k = 0
        if k < 1:
            raise ValueError(f"`normalizer` {spec!r}: the number of power iterations must be an "
                             f"integer >= 1, as in 'sn-power:1'")
        return "sn-power", float(k)
    if kind == "sn-scaled":
        try:
            c = float(raw)
        except ValueError:
            c = float("nan")
        if not math.isfinite(c) or c <= 0:
            raise ValueError(f"`normalizer` {spec!r}: the scale must be a finite number > 0, as "
                             f"in 'sn-scaled:0.5'")
        return "sn-scaled", c
    raise ValueError(f"`normalizer` must be 'sn', 'sn-power:K' or 'sn-scaled:c', got {spec!r}")


def _power_iteration_sigma(a: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Miyato-style estimate ``u^T A v`` after ``iterations`` steps from a random ``u``; (N,)."""
    u = rng.standard_normal(a.shape[:2])                       # (N, m)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    for _ in range(iterations):
        v = np.einsum("kij,ki->kj", a, u)                      # (N, n) = A^T u
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        u = np.einsum("kij,kj->ki", a, v)                      # (N, m) = A v
        sigma = np.linalg.norm(u, axis=1)
        u /= sigma[:, None]
    return sigma


def sample_block(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """Per-sample statistics ``(X, Y)`` for ``count`` random matrices; shape ``(count, 2)``."""
    m, n = params["m"], params["n"]
    dist = parse_distribution(params["dist"])
    kind, value = parse_normalizer(params["normalizer"])
    a = dist.sample(rng, (count, m, n), reuse=True)            # (count, m, n)
    mn = m * n
    if kind == "sn-power":
        sigma = _power_iteration_sigma(a, int(value), rng)
        frobenius_sq = np.einsum("kij,kij->k", a, a)
        total = a.sum(axis=(1, 2))
        return np.column_stack([frobenius_sq / (sigma * sigma * mn), total / (sigma * mn)])
    # ||A/sigma||_F^2 and sum(A/sigma) with sigma = value * ||A||_sp; on the large-matrix
    # ("mixed") path both sums come from the pass that makes the float32 copy
    sums = normalized_sums(a, method="fast", rtol=SPECTRAL_RTOL)
    return np.column_stack([sums.frobenius_sq / (value * value * mn),
                            sums.entry_sum / (value * mn)])


def sample_block_floor(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """Benchmark floor: draw the same random numbers and make one pass over each matrix.

    No spectral work: the time of this sampler bounds from below what any T2 estimator can cost.
    """
    m, n = params["m"], params["n"]
    a = parse_distribution(params["dist"]).sample(rng, (count, m, n), reuse=True)
    total = a.sum(axis=(1, 2))
    return np.column_stack([total, total])


@dataclass(frozen=True)
class Thm2Case:
    m: int
    n: int
    dist: str
    normalizer: str = "sn"
    precision: float | None = None   # overrides the sweep's precision for this case

    @property
    def params(self) -> dict:
        return {"claim_version": CLAIM_VERSION, "m": self.m, "n": self.n, "dist": self.dist,
                "normalizer": self.normalizer}


def make_tasks(cases: Iterable[Thm2Case], *, allow_outside_hypotheses: bool = False,
               rule: StoppingRule | None = None) -> list[Task]:
    """Validate cases and turn them into engine tasks.

    Shapes with ``m < 2`` or ``n < 2`` are outside Theorem 2 (a ``1 x n`` matrix normalises to a unit
    vector, ``Var = 1/n`` exactly) and are refused unless ``allow_outside_hypotheses``.
    """
    tasks = []
    for case in cases:
        m = require_positive_int("m", case.m)
        n = require_positive_int("n", case.n)
        if min(m, n) < 2 and not allow_outside_hypotheses:
            raise ValueError(f"`shapes` entry {m}x{n} is outside Theorem 2's hypotheses: it needs "
                             f"m >= 2 and n >= 2 (the lower bound also needs max{{m,n}} >= 3). "
                             f"Pass allow_outside_hypotheses=True (CLI: --allow-outside-hypotheses) "
                             f"to run it anyway")
        dist = parse_distribution(case.dist)
        canonical = Thm2Case(m, n, dist.name, case.normalizer.strip().lower())
        parse_normalizer(canonical.normalizer)
        override = None
        if case.precision is not None:
            override = dataclasses.replace(rule or StoppingRule(), precision=case.precision)
        block = max(1, min(16384, BLOCK_ENTRIES // (m * n)))
        tasks.append(Task(claim=CLAIM, params=canonical.params,
                          sampler="sntheory.claims.thm2:sample_block", block_size=block,
                          primary=functools.partial(variance_estimate,
                                                    symmetric=dist.symmetric), n_stats=2,
                          cost_per_sample=float(m * n), rule=override))
    return tasks


def _hypothesis_notes(m: int, n: int, dist_name: str) -> dict[str, str]:
    """Why each lower-bound check is outside its hypotheses ('' when inside)."""
    dist = parse_distribution(dist_name)
    law = []
    if not dist.symmetric:
        law.append("not symmetric")
    if not dist.finite_fourth_moment:
        law.append("heavy-tailed: infinite fourth moment")
    law_text = "; ".join(law)
    gauss = "" if dist.name == "gaussian" else (
        f"entries are {dist.name}, not Gaussian" + (f" ({law_text})" if law_text else ""))
    lref_parts = []
    if not dist.in_lower_bound_hypothesis:
        lref_parts.append(f"entries are {dist.name}, not Gaussian or uniform"
                          + (f" ({law_text})" if law_text else ""))
    if min(m, n) < 2 or max(m, n) < 3:
        lref_parts.append(f"shape {m}x{n} needs m, n >= 2 and max{{m,n}} >= 3")
    # E[a_bar^2] <= 1/max{m,n} holds for every matrix: no hypothesis on the law or the shape
    return {"upper": "", "gauss-lb": gauss, "L-ref": "; ".join(lref_parts)}


def build_record(task: Task, moments: Moments, *, n_blocks: int, precision_reached: bool,
                 wall_s: float, seed: int, rule: StoppingRule) -> dict:
    """Everything about one finished case except the sweep-level verdicts (JSON-able).

    ``provenance`` records who computed this case (commit, versions, device, time) and with which
    configuration: a case reused from a store keeps the provenance of the run that computed it.
    """
    p = task.params
    m, n = p["m"], p["n"]
    dist = parse_distribution(p["dist"])
    var = variance_estimate(moments, dist.symmetric)
    second_moment = mean_estimate(moments, 0)
    mean_entry = mean_estimate(moments, 1)
    big = max(m, n)
    by_scale = (math.sqrt(m) + math.sqrt(n)) ** 2
    record = case_record(CLAIM, task, moments, n_blocks=n_blocks,
                         precision_reached=precision_reached, wall_s=wall_s, seed=seed,
                         rule=rule, var=var, spectral_rtol=SPECTRAL_RTOL)
    low, high = record["ci_low"], record["ci_high"]
    return {
        **record,
        "second_moment": {"estimate": second_moment.value, "se": second_moment.se},
        "mean_entry": {"estimate": mean_entry.value, "ci": list(mean_entry.ci(0.95))},
        "mean_stable_rank": second_moment.value * m * n,
        "bounds": {
            "upper_1_over_max": 1 / big,
            "gaussian_lower": 1 / (by_scale + 1),
            "L_ref_lower": 1 / (L_REF * big),
            "L_ref": L_REF,
        },
        "L_hat": l_hat(record, big),
        "bai_yin_ratio": {"estimate": var.value * by_scale, "ci_low": low * by_scale,
                          "ci_high": high * by_scale},
    }


def _checks_for(record: dict) -> list[BoundCheck]:
    p = record["params"]
    m, n = p["m"], p["n"]
    notes = _hypothesis_notes(m, n, p["dist"])
    df = record["n_samples"] - 1
    var = Estimate(record["estimate"], record["se"], df)
    second = Estimate(record["second_moment"]["estimate"], record["second_moment"]["se"], df)
    b = record["bounds"]
    return [
        BoundCheck("upper", "E[a_bar^2] <= 1/max{m,n}", "upper", second, b["upper_1_over_max"],
                   in_hypotheses=not notes["upper"], hypothesis_note=notes["upper"]),
        BoundCheck("gauss-lb", "Var >= 1/((sqrt m + sqrt n)^2 + 1)", "lower", var,
                   b["gaussian_lower"], in_hypotheses=not notes["gauss-lb"],
                   hypothesis_note=notes["gauss-lb"]),
        BoundCheck("L-ref", "L_hat = 1/(max{m,n} Var) <= 13/3", "lower", var, b["L_ref_lower"],
                   in_hypotheses=not notes["L-ref"], hypothesis_note=notes["L-ref"]),
    ]


def finalize_sweep(records: Sequence[dict], alpha: float = 0.05) -> dict:
    """Assign Holm-controlled verdicts over the whole sweep and summarise ``L_hat`` per law.

    Returns ``{"records": [...], "summary": {...}}``; each record gains ``checks`` and ``verdict``.
    """
    out, n_checks = assign_sweep_verdicts(records, _checks_for, alpha)
    summary = summarize_L_hat(out, lambda p: max(p["m"], p["n"]),
                              lambda p: f'{p["m"]}x{p["n"]}', alpha, n_checks)
    return {"records": out, "summary": summary}


def default_sweep(normalizer: str = "sn", controls: bool = True,
                  control_precision: float = CONTROL_PRECISION) -> list[Thm2Case]:
    """>= 40 shapes from 2x2 to 4096x4096 for Gaussian and uniform entries, plus heavy-tailed and
    non-symmetric negative controls on a smaller grid."""
    cases = [Thm2Case(m, n, d, normalizer) for d in ("gaussian", "uniform")
             for m, n in DEFAULT_SHAPES]
    if controls:
        cases += [Thm2Case(m, n, d, normalizer, control_precision) for d in CONTROL_DISTS
                  for m, n in CONTROL_SHAPES]
    return cases


def cases_from_grid(shapes: str | Sequence, dists: str | Sequence[str],
                    normalizer: str = "sn") -> list[Thm2Case]:
    shape_list = parse_shapes(shapes)
    dist_list = [d for d in (dists.split(",") if isinstance(dists, str) else dists)]
    if not dist_list or any(not d.strip() for d in dist_list):
        raise ValueError(f"`dist` must list at least one distribution, got {dists!r}")
    names = [parse_distribution(d).name for d in dist_list]
    return [Thm2Case(m, n, d, normalizer) for d in names for m, n in shape_list]


def run(cases: Sequence[Thm2Case], *, seed: int = 0, rule: StoppingRule | None = None,
        store: ResultStore | None = None, workers: int = 1, alpha: float = 0.05,
        allow_outside_hypotheses: bool = False, progress: bool = True,
        executor=None) -> dict:
    """Run a T2 sweep: Monte Carlo per case, Holm verdicts, summary and provenance (JSON-able)."""
    rule = rule or StoppingRule()
    tasks = make_tasks(cases, allow_outside_hypotheses=allow_outside_hypotheses, rule=rule)
    return run_sweep(claim=CLAIM, claim_version=CLAIM_VERSION, tasks=tasks,
                     build_record=build_record, finalize=finalize_sweep, seed=seed, rule=rule,
                     store=store, workers=workers, alpha=alpha, progress=progress,
                     executor=executor)
