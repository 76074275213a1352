"""Pieces every claim shares: shape parsing, the case verdict, and sweep-level records."""
from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Callable, Iterable, Sequence

import numpy as np

from ..monte_carlo.engine import CaseResult, StoppingRule, Task, run_tasks
from ..monte_carlo.estimators import Estimate, Moments, delta_estimate, mean_estimate
from ..monte_carlo.store import ResultStore
from ..monte_carlo.verdicts import BoundCheck, Verdict, assign_verdicts
from ..provenance import provenance

__all__ = ["parse_shapes", "case_verdict", "variance_estimate", "assign_sweep_verdicts",
           "summarize_L_hat", "run_sweep", "case_record", "l_hat"]

_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_shapes(text: str | Iterable, *, name: str = "shapes") -> list[tuple[int, int]]:
    """Parse ``"8x8,64x32"`` (or a list of pairs) into ``[(8, 8), (64, 32)]``.

    Every entry must be ``MxN`` with positive integers; an error names the offending entry.
    """
    if isinstance(text, str):
        entries = [e for e in text.split(",")]
        if not text.strip():
            raise ValueError(f"`{name}` must list at least one shape such as '8x8', got {text!r}")
        shapes = []
        for entry in entries:
            match = _SHAPE.match(entry)
            if not match:
                raise ValueError(f"`{name}` entry {entry.strip()!r} is malformed: each shape must "
                                 f"be MxN with positive integers, as in '64x32'")
            m, n = int(match.group(1)), int(match.group(2))
            if m <= 0 or n <= 0:
                raise ValueError(f"`{name}` entry {entry.strip()!r} is not positive: m and n must "
                                 f"be >= 1")
            shapes.append((m, n))
        return shapes
    shapes = []
    for entry in text:
        try:
            m, n = entry
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` entry {entry!r} is malformed: expected a pair (m, n)") from None
        if isinstance(m, bool) or isinstance(n, bool) or int(m) != m or int(n) != n:
            raise ValueError(f"`{name}` entry {entry!r} is malformed: m and n must be integers")
        if m <= 0 or n <= 0:
            raise ValueError(f"`{name}` entry {entry!r} is not positive: m and n must be >= 1")
        shapes.append((int(m), int(n)))
    if not shapes:
        raise ValueError(f"`{name}` must list at least one shape")
    return shapes


def case_verdict(checks: Sequence[BoundCheck]) -> Verdict:
    """VIOLATED if any in-hypothesis check is; else INCONCLUSIVE if any is; else HOLDS.

    A case whose every check is outside its hypotheses is OUTSIDE-HYPOTHESES.
    """
    inside = [c.verdict for c in checks if c.in_hypotheses]
    if not inside:
        return Verdict.OUTSIDE_HYPOTHESES
    if Verdict.VIOLATED in inside:
        return Verdict.VIOLATED
    if Verdict.INCONCLUSIVE in inside:
        return Verdict.INCONCLUSIVE
    return Verdict.HOLDS


# ---- shared machinery of the variance claims (T2, T3) ------------------------------------------

def variance_estimate(moments: Moments, symmetric: bool, x: int = 0, y: int = 1) -> Estimate:
    """Entry variance from the all-entries statistics ``X = ||W_bar||_F^2 / N`` (column ``x``) and
    ``Y = sum(W_bar) / N`` (column ``y``): ``E X`` for symmetric laws (the mean is exactly 0 by the
    symmetry ``W -> -W``), ``E X - (E Y)^2`` with a delta-method interval otherwise."""
    if symmetric:
        return mean_estimate(moments, x)

    def value(mu):
        return mu[x] - mu[y] ** 2

    def gradient(mu):
        g = np.zeros_like(mu)
        g[x], g[y] = 1.0, -2.0 * mu[y]
        return g

    return delta_estimate(moments, value, gradient)


def assign_sweep_verdicts(records: Sequence[dict], checks_for: Callable[[dict], list[BoundCheck]],
                          alpha: float) -> tuple[list[dict], int]:
    """Holm-controlled verdicts over every check of a sweep; each record gains ``checks`` and
    ``verdict``. Returns the new records and the number of checks."""
    per_record = [checks_for(record) for record in records]
    every = [c for checks in per_record for c in checks]
    assign_verdicts(every, alpha=alpha)
    out = []
    for record, checks in zip(records, per_record):
        rec = dict(record)
        rec["checks"] = [c.to_json() for c in checks]
        rec["verdict"] = str(case_verdict(checks))
        out.append(rec)
    return out, len(every)


def summarize_L_hat(records: Sequence[dict], size: Callable[[dict], float],
                    label: Callable[[dict], str], alpha: float, n_checks: int) -> dict:
    """Per law: the largest ``L_hat`` (where), its log-log slope against ``size``, whether every
    in-hypothesis ``L-ref`` check HOLDS (the numerical form of "L stays bounded") and how often
    ``L-ref`` fails outside its hypotheses; verdict counts; the multiple-testing set-up."""
    by_law: dict[str, list[dict]] = {}
    for r in records:
        by_law.setdefault(f'{r["params"]["dist"]} / {r["params"]["normalizer"]}', []).append(r)
    laws = {}
    for law, rows in by_law.items():
        worst = max(rows, key=lambda r: r["L_hat"]["estimate"])
        sizes = np.array([size(r["params"]) for r in rows], dtype=float)
        l_hat = np.array([r["L_hat"]["estimate"] for r in rows])
        slope = None
        if len(rows) >= 3 and np.ptp(np.log(sizes)) > 0 and np.all(np.isfinite(l_hat)):
            slope = float(np.polyfit(np.log(sizes), np.log(l_hat), 1)[0])
        lref = [c for r in rows for c in r["checks"] if c["name"] == "L-ref"]
        in_hyp = [c for c in lref if c["in_hypotheses"]]
        laws[law] = {
            "cases": len(rows),
            "max_L_hat": worst["L_hat"]["estimate"],
            "max_L_hat_ci_high": worst["L_hat"]["ci_high"],
            "max_L_hat_shape": label(worst["params"]),
            "log_L_hat_vs_log_size_slope": slope,
            "L_hat_bounded_by_L_ref": (all(c["verdict"] == "HOLDS" for c in in_hyp)
                                       if in_hyp else None),
            "L_ref_exceeded_outside_hypotheses": sum(c["observed"] == "bound-fails"
                                                     for c in lref if not c["in_hypotheses"]),
            "verdicts": {v.value: sum(r["verdict"] == v.value for r in rows) for v in Verdict},
        }
    return {"alpha_familywise": alpha, "n_checks": n_checks,
            "multiple_testing": "Holm step-down over all in-hypothesis checks of the sweep",
            "laws": laws,
            "any_violated": any(r["verdict"] == "VIOLATED" for r in records)}


def run_sweep(*, claim: str, claim_version: int, tasks: Sequence[Task],
              build_record: Callable[..., dict], finalize: Callable[[list[dict], float], dict],
              seed: int, rule: StoppingRule, store: ResultStore | None, workers: int,
              alpha: float, progress: bool, executor=None) -> dict:
    """Run a claim's tasks through the engine, build and store each case's record as it
    finishes, then finalize the sweep (verdicts, summary) and attach provenance and timing."""
    started = time.perf_counter()

    def save(result: CaseResult) -> None:
        result.record = build_record(result.task, result.moments, n_blocks=result.n_blocks,
                                     precision_reached=result.precision_reached,
                                     wall_s=result.wall_s, seed=seed, rule=rule)
        if store is not None:
            store.save_case(result.key, result.record)

    results = run_tasks(tasks, seed=seed, rule=rule, store=store, workers=workers,
                        executor=executor, progress=progress, on_case_done=save)
    records = [r.record for r in results]
    out = finalize(records, alpha)
    config = {"claim": claim, "claim_version": claim_version, "precision": rule.precision,
              "level": rule.level, "min_samples": rule.min_samples,
              "max_samples": rule.max_samples, "alpha": alpha, "workers": workers,
              "cases": [c["params"] for c in records]}
    out["provenance"] = provenance(seed=seed, config=config)
    out["wall_s"] = time.perf_counter() - started
    out["resumed_cases"] = sum(r.resumed for r in results)
    return out


def case_record(claim: str, task: Task, moments: Moments, *, n_blocks: int,
                precision_reached: bool, wall_s: float, seed: int, rule: StoppingRule,
                var: Estimate, spectral_rtol: float) -> dict:
    """The fields every variance claim's case record shares: identity, provenance of the run
    that computed it, sampling counts, the raw moments and the variance estimate with its CI."""
    low, high = var.ci(0.95)
    return {
        "claim": claim, "key": task.result_key(seed, rule), "params": task.params, "seed": seed,
        "provenance": provenance(seed=seed, config={
            "params": task.params, "block_size": task.block_size, "sampler": task.sampler,
            "spectral_rtol": spectral_rtol,
            "stopping_rule": dataclasses.asdict(task.rule or rule)}),
        "n_samples": moments.count, "n_blocks": n_blocks, "block_size": task.block_size,
        "precision_reached": precision_reached, "wall_s": wall_s,
        "moments": moments.to_json(),
        "estimate": var.value, "se": var.se, "ci_low": low, "ci_high": high,
    }


def l_hat(record: dict, scale: float) -> dict:
    """``L_hat = 1 / (scale Var)`` with the interval mapped from the variance's CI."""
    def inv(v):
        return 1 / (scale * v) if v > 0 else math.inf
    return {"estimate": inv(record["estimate"]), "ci_low": inv(record["ci_high"]),
            "ci_high": inv(record["ci_low"])}
