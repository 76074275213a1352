"""Experiment kinds ``thm2``, ``thm3`` and ``ratio``: the Monte Carlo claims T2, T3 and R.

Each kind drives the claim module exactly as ``sntheory check`` does (:mod:`sntheory.claims.thm2`,
:mod:`~sntheory.claims.thm3`, :mod:`~sntheory.claims.ratio`: same cases, stopping rule, Holm
verdicts, resumable store, seeds) and turns every decided check of every case into a
:class:`~sntheory.report.rows.ClaimRow`:

* checks inside their hypotheses keep their verdict (HOLDS / VIOLATED / INCONCLUSIVE);
* checks outside them (heavy-tailed or non-symmetric entries, shapes below the lower bound's
  hypotheses, geometries where ``||w~|| >= ||w^||`` is not guaranteed) are OUTSIDE-HYPOTHESES with
  what was observed;
* deliberate negative controls — T2 with a broken normaliser (``sn-scaled:c``: divides by
  ``c ||A||_sp``; ``sn-power:K``: ``K`` cold power iterations), R with the constant ``alpha``
  dropped (SNw's implicit claim ``||w~|| <= ||w^||``) — are run beside the claim and reported as
  OUTSIDE-HYPOTHESES together with the failure they show: the checks can fail.

The normaliser under test in T2 (``normalizer``) is held to the theorem like the exact one: set it
to a broken normaliser and its rows come out VIOLATED (the report exits with 1).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

from ..claims import ratio as ratio_claim
from ..claims import thm2, thm3
from ..claims.base import parse_shapes
from ..monte_carlo.engine import StoppingRule, make_executor
from ..random_weights import parse_distribution
from .experiments import (ExperimentKind, ExperimentOutput, Figure, RunContext,
                          deterministic_verdict, register_kind, row_from_check, verdict_counts)
from .rows import ClaimRow, relative_slack

__all__ = ["Thm2Params", "Thm3Params", "RatioParams", "run_thm2", "run_thm3", "run_ratio",
           "THM2_KIND", "THM3_KIND", "RATIO_KIND"]


def _shape_text(m: int, n: int) -> str:
    return f"{m}x{n}"


def _check_sampling(precision: float, control_precision: float, min_samples: int,
                    max_samples: int, alpha: float) -> StoppingRule:
    rule = StoppingRule(precision=precision, min_samples=min_samples, max_samples=max_samples)
    StoppingRule(precision=control_precision, min_samples=min_samples, max_samples=max_samples)
    if isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}")
    return rule


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else "inf"


def _pct(fraction: float) -> str:
    """A fraction of a bound as a percentage with three decimals (99.998%, not a rounded 1)."""
    return f"{100 * fraction:.3f}%"


def _executor(workers: int):
    """One process pool for every sweep of an experiment (``None``: in-process)."""
    return make_executor(workers)


# ---- T2 --------------------------------------------------------------------------------------

_T2_HYPOTHESES = {
    "upper": "none on the law or the shape (the stable rank is at most min{m,n}); A divided by "
             "its exact spectral norm",
    "gauss-lb": "i.i.d. N(0,1) entries, any m, n",
    "L-ref": "i.i.d. Gaussian or uniform entries, m, n >= 2, max{m,n} >= 3",
}
_T2_STATEMENTS = {
    "upper": "E[a_bar^2] <= 1/max{m,n}",
    "gauss-lb": "Var(a_bar) >= 1/((sqrt m + sqrt n)^2 + 1)",
    "L-ref": "Var(a_bar) >= 3/(13 max{m,n}), i.e. L_hat <= 13/3",
}


@dataclass(frozen=True)
class Thm2Params:
    """Parameters of the ``thm2`` kind (defaults: the default sweep of ``sntheory check thm2``).

    ``shapes`` x ``dists``: the claim's cases (``MxN``; m, n >= 2). ``control_shapes`` x
    ``control_dists``: heavy-tailed / non-symmetric negative controls at ``control_precision``
    (empty ``control_dists``: none). ``normalizer``: the normaliser under test (``sn``: the exact
    one, as in the theorem). ``broken_normalizers`` x ``broken_shapes``: deliberately broken
    normalisers on Gaussian entries, run as a separate sweep and reported as negative controls.
    """

    shapes: tuple[str, ...] = tuple(_shape_text(m, n) for m, n in thm2.DEFAULT_SHAPES)
    dists: tuple[str, ...] = ("gaussian", "uniform")
    normalizer: str = "sn"
    precision: float = 0.005
    min_samples: int = 30
    max_samples: int = 1_000_000
    alpha: float = 0.05
    control_shapes: tuple[str, ...] = tuple(_shape_text(m, n) for m, n in thm2.CONTROL_SHAPES)
    control_dists: tuple[str, ...] = thm2.CONTROL_DISTS
    control_precision: float = thm2.CONTROL_PRECISION
    broken_normalizers: tuple[str, ...] = ("sn-scaled:0.4", "sn-scaled:2.5")
    broken_shapes: tuple[str, ...] = ("8x8", "64x32", "3x200")

    def __post_init__(self) -> None:
        _check_sampling(self.precision, self.control_precision, self.min_samples,
                        self.max_samples, self.alpha)
        if not self.dists:
            raise ValueError("`dists` must list at least one distribution, got []")
        thm2.parse_normalizer(self.normalizer)
        for spec in self.broken_normalizers:
            kind, value = thm2.parse_normalizer(spec)
            if kind == "sn" or (kind == "sn-scaled" and value == 1.0):
                raise ValueError(f"`broken_normalizers` entry {spec!r} is the exact normaliser: "
                                 f"a negative control must be broken ('sn-scaled:c' with c != 1 "
                                 f"or 'sn-power:K')")
        if self.control_dists and not self.control_shapes:
            raise ValueError("`control_shapes` must list at least one shape when `control_dists` "
                             "is not empty")
        if self.broken_normalizers and not self.broken_shapes:
            raise ValueError("`broken_shapes` must list at least one shape when "
                             "`broken_normalizers` is not empty")
        thm2.make_tasks(self.cases() + self.broken_cases())   # validates shapes and laws

    def cases(self) -> list[thm2.Thm2Case]:
        cases = thm2.cases_from_grid(",".join(self.shapes), list(self.dists), self.normalizer)
        if self.control_dists:
            shapes = parse_shapes(",".join(self.control_shapes), name="control_shapes")
            cases += [thm2.Thm2Case(m, n, parse_distribution(d).name, self.normalizer,
                                    self.control_precision)
                      for d in self.control_dists for m, n in shapes]
        return cases

    def broken_cases(self) -> list[thm2.Thm2Case]:
        if not self.broken_normalizers:
            return []
        shapes = parse_shapes(",".join(self.broken_shapes), name="broken_shapes")
        return [thm2.Thm2Case(m, n, "gaussian", spec) for spec in self.broken_normalizers
                for m, n in shapes]


def _check_columns(record: dict, names: tuple[str, ...]) -> dict:
    """``verdict_<check>`` and ``observed_<check>`` columns of a flattened record, in ``names`` order."""
    checks = {c["name"]: c for c in record["checks"]}
    out = {}
    for name in names:
        key = name.replace("-", "_")
        out[f"verdict_{key}"] = checks[name]["verdict"]
        out[f"observed_{key}"] = checks[name]["observed"]
    return out


def _thm2_record(record: dict, role: str) -> dict:
    p, b = record["params"], record["bounds"]
    flat = {
        "claim": "T2", "role": role, "m": p["m"], "n": p["n"], "dist": p["dist"],
        "normalizer": p["normalizer"], "n_samples": record["n_samples"],
        "precision_reached": record["precision_reached"],
        "var": record["estimate"], "var_ci_low": record["ci_low"], "var_ci_high": record["ci_high"],
        "second_moment": record["second_moment"]["estimate"],
        "bound_upper_1_over_max": b["upper_1_over_max"], "bound_gaussian_lower": b["gaussian_lower"],
        "bound_L_ref_lower": b["L_ref_lower"],
        "L_hat": record["L_hat"]["estimate"], "L_hat_ci_low": record["L_hat"]["ci_low"],
        "L_hat_ci_high": record["L_hat"]["ci_high"],
        "bai_yin_ratio": record["bai_yin_ratio"]["estimate"],
        "mean_stable_rank": record["mean_stable_rank"], "case_verdict": record["verdict"],
    }
    flat.update(_check_columns(record, ("upper", "gauss-lb", "L-ref")))
    return flat


def _thm2_summary(main: list[dict], broken: list[dict], rows: list[ClaimRow]) -> str:
    inside = [r for r in main if parse_distribution(r["params"]["dist"]).in_lower_bound_hypothesis]
    controls = [r for r in main if r not in inside]
    counts = verdict_counts(r for r in rows if r.hypotheses_hold)
    parts = [f"{len(main)} cases ({len(inside)} Gaussian/uniform, {len(controls)} heavy-tailed or "
             f"non-symmetric controls). In-hypothesis checks: {counts['HOLDS']} HOLDS, "
             f"{counts['VIOLATED']} VIOLATED, {counts['INCONCLUSIVE']} INCONCLUSIVE."]
    if inside:
        worst = max(inside, key=lambda r: r["L_hat"]["estimate"])
        squares = [r for r in inside if r["params"]["m"] == r["params"]["n"]]
        parts.append(f"Largest `L_hat` inside the hypotheses: {_fmt(worst['L_hat']['estimate'])} "
                     f"({worst['params']['dist']} {_shape_text(worst['params']['m'], worst['params']['n'])}"
                     f"; reference 13/3 = 4.33).")
        if squares:
            big = max(squares, key=lambda r: r["params"]["m"])
            parts.append(f"Bai-Yin ratio `Var (sqrt m + sqrt n)^2` at the largest square shape "
                         f"({_shape_text(big['params']['m'], big['params']['n'])}): "
                         f"{_fmt(big['bai_yin_ratio']['estimate'], 4)} (limit 1).")
    if controls:
        worst = max(controls, key=lambda r: r["L_hat"]["estimate"])
        parts.append(f"Negative controls: `L_hat` reaches {_fmt(worst['L_hat']['estimate'])} "
                     f"({worst['params']['dist']} {_shape_text(worst['params']['m'], worst['params']['n'])}): "
                     f"the lower bound fails outside its hypotheses, as the theory predicts; "
                     f"the upper bound still holds.")
    for spec in sorted({r["params"]["normalizer"] for r in broken}):
        cases = [r for r in broken if r["params"]["normalizer"] == spec]
        caught = sum(any(c["verdict"] == "VIOLATED" for c in r["checks"]) for r in cases)
        failed = sorted({c["name"] for r in cases for c in r["checks"] if c["verdict"] == "VIOLATED"})
        parts.append(f"Broken normaliser `{spec}`: caught in {caught} of {len(cases)} cases"
                     + (f" (failing: {', '.join(failed)})." if failed else "."))
    return " ".join(parts)


def run_thm2(params: Thm2Params, out_dir: Path, ctx: RunContext) -> ExperimentOutput:
    """Run the T2 sweep (and the broken-normaliser controls) and report one row per check."""
    from .thm2_figure import plot_thm2

    rule = StoppingRule(precision=params.precision, min_samples=params.min_samples,
                        max_samples=params.max_samples)
    store = ctx.store()
    executor = _executor(ctx.workers)
    try:
        common = dict(seed=ctx.seed, rule=rule, store=store, workers=ctx.workers,
                      alpha=params.alpha, progress=ctx.progress, executor=executor)
        main = thm2.run(params.cases(), **common)
        broken = thm2.run(params.broken_cases(), **common) if params.broken_normalizers else None
    finally:
        if executor is not None:
            executor.shutdown()
    rows: list[ClaimRow] = []
    records: list[dict] = []
    sets = [(main["records"], None)]
    if broken is not None:
        sets.append((broken["records"], "broken"))
    for case_records, role in sets:
        for record in case_records:
            p = record["params"]
            setting = f"{p['dist']} {_shape_text(p['m'], p['n'])}"
            reason = None
            if role == "broken":
                setting += f", normaliser {p['normalizer']}"
                reason = (f"negative control: normaliser {p['normalizer']} is not A/||A||_sp")
            elif p["normalizer"] != "sn":
                setting += f", normaliser {p['normalizer']}"
            for check in record["checks"]:
                rows.append(row_from_check(
                    check, claim="T2", experiment=ctx.experiment, setting=setting,
                    hypotheses=_T2_HYPOTHESES[check["name"]],
                    statement=_T2_STATEMENTS[check["name"]], control_reason=reason,
                    extra={"n_samples": record["n_samples"]}))
            law_inside = parse_distribution(p["dist"]).in_lower_bound_hypothesis
            records.append(_thm2_record(record, role or ("main" if law_inside else "control")))
    every = main["records"] + (broken["records"] if broken is not None else [])
    plot_thm2(every, out_dir / "thm2.png",
              title=f"{ctx.experiment}: profile {ctx.profile}, seed {ctx.seed}")
    caption = ("Left: max{m,n} Var(a_bar) with 95% CIs against the upper bound 1 (red), the "
               "reference lower bound 3/13 (dashed) and the explicit Gaussian lower bound (grey "
               "ticks); filled markers are inside the lower bound's hypotheses, hollow ones are "
               "negative controls, which fall below it. Broken normalisers (if any) appear as "
               "their own colour, outside the band. Right: the Bai-Yin ratio tends to 1.")
    return ExperimentOutput(rows=rows, figures=[Figure("thm2.png", caption)], records=records,
                            summary=_thm2_summary(main["records"],
                                                  broken["records"] if broken else [], rows))


# ---- T3 --------------------------------------------------------------------------------------

_T3_HYPOTHESES = {
    "upper": "none on the law or the shape (rank w^ <= c_out, rank w^' <= c_in)",
    "gauss-lb": "i.i.d. N(0,1) entries",
    "L-ref": "i.i.d. Gaussian or uniform entries, c_in, c_out >= 2, c_in k, c_out k >= 3",
    "snw-upper": "none (T2 applied to the reshaped kernel w^)",
}
_T3_STATEMENTS = {
    "upper": "E[w_bar^2] <= 4/(k (sqrt c_in + sqrt c_out)^2)",
    "gauss-lb": "Var(w_bar) >= 2/((sqrt c_out + sqrt(c_in k))^2 + (sqrt c_in + sqrt(c_out k))^2 + 2)",
    "L-ref": "Var(w_bar) >= 6/(13 (fan_in + fan_out)), i.e. L_hat <= 13/6",
    "snw-upper": "SNw on the same kernels: E[w_bar^2] <= 1/max{c_out, c_in k}",
}


def _kernel_text(dims) -> str:
    return "x".join(str(d) for d in dims)


@dataclass(frozen=True)
class Thm3Params:
    """Parameters of the ``thm3`` kind (defaults: the default sweep of ``sntheory check thm3``).

    ``kernels`` (``c_out x c_in x kh x kw``) x ``dists``: the claim's cases; ``control_kernels`` x
    ``control_dists``: heavy-tailed / non-symmetric negative controls at ``control_precision``.
    """

    kernels: tuple[str, ...] = tuple(_kernel_text(k) for k in thm3.DEFAULT_KERNELS)
    dists: tuple[str, ...] = ("gaussian", "uniform")
    precision: float = 0.005
    min_samples: int = 30
    max_samples: int = 1_000_000
    alpha: float = 0.05
    control_kernels: tuple[str, ...] = tuple(_kernel_text(k) for k in thm3.CONTROL_KERNELS)
    control_dists: tuple[str, ...] = thm3.CONTROL_DISTS
    control_precision: float = thm3.CONTROL_PRECISION

    def __post_init__(self) -> None:
        _check_sampling(self.precision, self.control_precision, self.min_samples,
                        self.max_samples, self.alpha)
        if not self.dists:
            raise ValueError("`dists` must list at least one distribution, got []")
        if self.control_dists and not self.control_kernels:
            raise ValueError("`control_kernels` must list at least one kernel when "
                             "`control_dists` is not empty")
        thm3.make_tasks(self.cases())

    def cases(self) -> list[thm3.Thm3Case]:
        cases = thm3.cases_from_grid(",".join(self.kernels), list(self.dists))
        if self.control_dists:
            dims = thm3.parse_kernels(",".join(self.control_kernels), name="control_kernels")
            cases += [thm3.Thm3Case(*k, parse_distribution(d).name, self.control_precision)
                      for d in self.control_dists for k in dims]
        return cases


def _thm3_record(record: dict) -> dict:
    p, b = record["params"], record["bounds"]
    inside = parse_distribution(p["dist"]).in_lower_bound_hypothesis
    flat = {
        "claim": "T3", "role": "main" if inside else "control", "c_out": p["c_out"],
        "c_in": p["c_in"], "kh": p["kh"], "kw": p["kw"], "dist": p["dist"],
        "fan_in": record["fan_in"], "fan_out": record["fan_out"],
        "n_samples": record["n_samples"], "precision_reached": record["precision_reached"],
        "var_bsn": record["estimate"], "var_bsn_ci_low": record["ci_low"],
        "var_bsn_ci_high": record["ci_high"],
        "second_moment_bsn": record["second_moment"]["estimate"],
        "bound_upper": b["upper"], "bound_xavier_2_over_fan_sum": b["xavier_2_over_fan_sum"],
        "bound_gaussian_lower": b["gaussian_lower"], "bound_L_ref_lower": b["L_ref_lower"],
        "bound_snw_upper": b["snw_upper_1_over_max"],
        "L_hat": record["L_hat"]["estimate"], "L_hat_ci_low": record["L_hat"]["ci_low"],
        "L_hat_ci_high": record["L_hat"]["ci_high"],
        "xavier_ratio": record["xavier_ratio"]["estimate"],
        "var_snw": record["snw"]["estimate"], "var_snw_ci_low": record["snw"]["ci_low"],
        "var_snw_ci_high": record["snw"]["ci_high"], "case_verdict": record["verdict"],
    }
    flat.update(_check_columns(record, ("upper", "gauss-lb", "L-ref", "snw-upper")))
    return flat


def _thm3_summary(records: list[dict], rows: list[ClaimRow]) -> str:
    inside = [r for r in records if parse_distribution(r["params"]["dist"]).in_lower_bound_hypothesis]
    controls = [r for r in records if r not in inside]
    counts = verdict_counts(r for r in rows if r.hypotheses_hold)
    parts = [f"{len(records)} kernel cases ({len(inside)} Gaussian/uniform, {len(controls)} "
             f"controls). In-hypothesis checks: {counts['HOLDS']} HOLDS, {counts['VIOLATED']} "
             f"VIOLATED, {counts['INCONCLUSIVE']} INCONCLUSIVE."]
    if inside:
        fan_var = [r["estimate"] * (r["fan_in"] + r["fan_out"]) for r in inside]
        of_bound = [r["estimate"] / r["bounds"]["upper"] for r in inside]
        parts.append(f"`(fan_in + fan_out) Var` of BSN ranges over [{_fmt(min(fan_var))}, "
                     f"{_fmt(max(fan_var))}] (upper bound 4, Xavier 2), i.e. "
                     f"{_fmt(min(of_bound), 2)}-{_fmt(max(of_bound), 2)} of the exact per-kernel "
                     f"upper bound.")
        worst = max(inside, key=lambda r: r["L_hat"]["estimate"])
        parts.append(f"Largest `L_hat`: {_fmt(worst['L_hat']['estimate'])} "
                     f"({worst['params']['dist']} {_kernel_text([worst['params'][k] for k in ('c_out', 'c_in', 'kh', 'kw')])}"
                     f"; reference 13/6 = 2.17).")
    if controls:
        worst = max(controls, key=lambda r: r["L_hat"]["estimate"])
        parts.append(f"Negative controls: `L_hat` reaches {_fmt(worst['L_hat']['estimate'])} "
                     f"({worst['params']['dist']}); the lower bound fails outside its hypotheses.")
    return " ".join(parts)


def run_thm3(params: Thm3Params, out_dir: Path, ctx: RunContext) -> ExperimentOutput:
    """Run the T3 sweep and report one row per check (BSN bounds and SNw beside them)."""
    from .thm3_figure import plot_thm3

    rule = StoppingRule(precision=params.precision, min_samples=params.min_samples,
                        max_samples=params.max_samples)
    executor = _executor(ctx.workers)
    try:
        result = thm3.run(params.cases(), seed=ctx.seed, rule=rule, store=ctx.store(),
                          workers=ctx.workers, alpha=params.alpha, progress=ctx.progress,
                          executor=executor)
    finally:
        if executor is not None:
            executor.shutdown()
    rows, records = [], []
    for record in result["records"]:
        p = record["params"]
        setting = f"{p['dist']} {_kernel_text([p[k] for k in ('c_out', 'c_in', 'kh', 'kw')])}"
        for check in record["checks"]:
            rows.append(row_from_check(
                check, claim="T3", experiment=ctx.experiment, setting=setting,
                hypotheses=_T3_HYPOTHESES[check["name"]], statement=_T3_STATEMENTS[check["name"]],
                extra={"n_samples": record["n_samples"]}))
        records.append(_thm3_record(record))
    plot_thm3(result["records"], out_dir / "thm3.png",
              title=f"{ctx.experiment}: profile {ctx.profile}, seed {ctx.seed}")
    caption = ("Left: (fan_in + fan_out) Var(w_bar) of BSN with 95% CIs against the upper bound 4 "
               "(red; grey ticks: the exact per-kernel bound), Xavier's 2 (dotted) and the "
               "reference lower bound 6/13 (dashed); hollow markers are negative controls. Right: "
               "SNw's variance over BSN's on the same kernels (1 for square kernels).")
    return ExperimentOutput(rows=rows, figures=[Figure("thm3.png", caption)], records=records,
                            summary=_thm3_summary(result["records"], rows))


# ---- R ---------------------------------------------------------------------------------------

_R_HYPOTHESES = {
    "ratio<=alpha": "any kernel; alpha = sqrt(max coverage) of this geometry",
    "ratio>=1": "some output position's receptive field lies inside the unpadded input",
    "var<=snw": "any kernel (holds kernel by kernel)",
    "var>=snw/alpha^2": "any kernel (holds kernel by kernel)",
    "adversarial<=alpha": "any kernel (best kernel of a gradient-ascent search)",
}
_R_STATEMENTS = {
    "ratio<=alpha": "every random kernel: ||w~||/||w^|| <= alpha",
    "ratio>=1": "every random kernel: ||w~||/||w^|| >= 1",
    "var<=snw": "Var_SNConv / Var_SNw <= 1",
    "var>=snw/alpha^2": "Var_SNConv / Var_SNw >= 1/alpha^2",
    "adversarial<=alpha": "adversarial kernel: ||w~||/||w^|| <= alpha",
}
_GEOMETRIES = {case.name: case for case in ratio_claim.DEFAULT_CASES}


@dataclass(frozen=True)
class RatioParams:
    """Parameters of the ``ratio`` kind (defaults: ``sntheory check ratio``).

    ``geometries``: names from :data:`sntheory.claims.ratio.DEFAULT_CASES`. ``n_kernels`` Gaussian
    kernels per geometry; ``adversarial_steps`` of gradient ascent (0: no search).
    ``snw_lipschitz_control``: also report the negative control "every kernel has
    ``||w~|| <= ||w^||``" (the claim with ``alpha`` dropped, which SNw implicitly assumes).
    """

    geometries: tuple[str, ...] = tuple(_GEOMETRIES)
    n_kernels: int = 64
    adversarial_steps: int = 150
    alpha: float = 0.05
    snw_lipschitz_control: bool = True

    def __post_init__(self) -> None:
        if not self.geometries:
            raise ValueError("`geometries` must list at least one geometry name")
        for name in self.geometries:
            if name not in _GEOMETRIES:
                raise ValueError(f"`geometries` entry {name!r} is unknown; known geometries: "
                                 f"{list(_GEOMETRIES)}")
        if len(set(self.geometries)) != len(self.geometries):
            raise ValueError(f"`geometries` lists a geometry twice: {list(self.geometries)}")
        if isinstance(self.n_kernels, bool) or self.n_kernels < 2:
            raise ValueError(f"`n_kernels` must be an integer >= 2, got {self.n_kernels!r}")
        if isinstance(self.adversarial_steps, bool) or self.adversarial_steps < 0:
            raise ValueError(f"`adversarial_steps` must be an integer >= 0, got "
                             f"{self.adversarial_steps!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"`alpha` must be in (0, 1), got {self.alpha!r}")


def _ratio_record(record: dict) -> dict:
    p, q = record["params"], record["ratio"]["quantiles"]
    v = record["variance"]["snconv_over_snw"]
    adv = record.get("adversarial")
    flat = {
        "claim": "R", "geometry": p["name"], "c_out": p["c_out"], "c_in": p["c_in"],
        "kernel": "x".join(map(str, p["kernel"])), "input_size": "x".join(map(str, p["input_size"])),
        "stride": "x".join(map(str, p["stride"])), "padding": "x".join(map(str, p["padding"])),
        "padding_mode": p["padding_mode"], "groups": p["groups"], "n_kernels": record["n_kernels"],
        "alpha": record["alpha"], "lower_bound_applies": record["lower_bound_applies"],
        "operator_norm_exact": record["operator_norm_exact"],
        **{f"ratio_{k}": q[k] for k in ("min", "q05", "median", "q95", "max")},
        "ratio_mean": record["ratio"]["mean"],
        "ratio_max_certified_upper": record["ratio"]["max_certified_upper"],
        "all_ones_ratio": record["all_ones"]["ratio"],
        "all_ones_fraction_of_alpha": record["all_ones"]["fraction_of_alpha"],
        "adversarial_ratio": adv["ratio"] if adv else None,
        "adversarial_ratio_certified_upper": adv["ratio_upper"] if adv else None,
        "adversarial_fraction_of_alpha": adv["fraction_of_alpha"] if adv else None,
        "var_snw": record["variance"]["snw"]["estimate"],
        "var_snconv": record["variance"]["snconv"]["estimate"],
        "var_ratio": v["estimate"], "var_ratio_ci_low": v["ci_low"],
        "var_ratio_ci_high": v["ci_high"], "case_verdict": record["verdict"],
    }
    for c in record["checks"]:
        flat[f"verdict_{c['name']}"] = c["verdict"]
    return flat


def _ratio_summary(records: list[dict], rows: list[ClaimRow], control_rows: list[ClaimRow]) -> str:
    counts = verdict_counts(r for r in rows if r.hypotheses_hold)
    parts = [f"{len(records)} geometries, {records[0]['n_kernels']} Gaussian kernels each. "
             f"In-hypothesis checks: {counts['HOLDS']} HOLDS, {counts['VIOLATED']} VIOLATED, "
             f"{counts['INCONCLUSIVE']} INCONCLUSIVE."]
    trivial = [r for r in records if r["alpha"] <= 1 + 1e-12]
    spread = [r for r in records if r not in trivial]
    if trivial:
        parts.append(f"Where alpha = 1 ({', '.join(r['params']['name'] for r in trivial)}: every "
                     f"input pixel is read once) the two norms agree, as they must.")
    if spread:
        fractions = [r["ratio"]["quantiles"]["max"] / r["alpha"] for r in spread]
        medians = [r["ratio"]["quantiles"]["median"] for r in spread]
        parts.append(f"Elsewhere random kernels reach at most {_pct(max(fractions))} of "
                     f"`alpha`, with medians of `||w~||/||w^||` from {_fmt(min(medians), 3)} to "
                     f"{_fmt(max(medians), 3)}.")
        ones = max(spread, key=lambda r: r["all_ones"]["fraction_of_alpha"])
        parts.append(f"The all-ones kernel reaches {_pct(ones['all_ones']['fraction_of_alpha'])} "
                     f"of `alpha` ({ones['params']['name']}): the bound is tight.")
        adv = [r for r in spread if "adversarial" in r]
        if adv:
            best = max(adv, key=lambda r: r["adversarial"]["fraction_of_alpha"])
            parts.append(f"The adversarial search ({best['adversarial']['steps']} steps) gets to "
                         f"{_pct(best['adversarial']['fraction_of_alpha'])} of `alpha` "
                         f"({best['params']['name']}) and never beyond it.")
    if control_rows:
        failing = sum(r.extra["observed"] == "bound-fails" for r in control_rows)
        parts.append(f"Negative control `||w~|| <= ||w^||` (alpha dropped: what SNw implicitly "
                     f"assumes): fails on {failing} of {len(control_rows)} geometries, so SNw does "
                     f"not make a conv layer 1-Lipschitz.")
    return " ".join(parts)


@contextlib.contextmanager
def _one_thread():
    """Run torch and numba on one thread (both restored afterwards).

    The adversarial search works on tensors of a few thousand entries, where extra threads only
    add synchronisation: on this repository's busy 2-core machine 20 steps took 8.0 s with 2 torch
    threads and 0.47 s with one. numba is pinned too because ``numba.set_num_threads`` (which
    ``conv_operator_norm`` calls on the way out) resets torch's intra-op threads to numba's count.
    One thread also fixes the order of float sums: the same seed gives the same numbers.
    """
    import numba
    import torch

    numba_before, torch_before = numba.get_num_threads(), torch.get_num_threads()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(numba_before)
        torch.set_num_threads(torch_before)


def run_ratio(params: RatioParams, out_dir: Path, ctx: RunContext) -> ExperimentOutput:
    """Measure the ratio on each geometry, run the adversarial search, one row per check."""
    from .ratio_figure import plot_ratio

    cases = [_GEOMETRIES[name] for name in params.geometries]
    with _one_thread():
        result = ratio_claim.run(cases, n_kernels=params.n_kernels, seed=ctx.seed,
                                 adversarial_steps=params.adversarial_steps, alpha_fw=params.alpha,
                                 progress=ctx.progress)
    rows: list[ClaimRow] = []
    control_rows: list[ClaimRow] = []
    records = []
    for record in result["records"]:
        p = record["params"]
        setting = f"{p['name']}, {p['c_out']}x{p['c_in']} kernels, alpha = {record['alpha']:.4g}"
        tol = max(ratio_claim.ROUND_OFF, 10 * record["rtol"])
        for check in record["checks"]:
            rows.append(row_from_check(
                check, claim="R", experiment=ctx.experiment, setting=setting,
                hypotheses=_R_HYPOTHESES[check["name"]], statement=_R_STATEMENTS[check["name"]],
                extra={"alpha": record["alpha"]}))
        if params.snw_lipschitz_control:
            measured = record["ratio"]["quantiles"]["max"]
            verdict, observed = deterministic_verdict(measured, 1.0, "upper", rel_tol=tol,
                                                      hypotheses_hold=False)
            control_rows.append(ClaimRow(
                claim="R", experiment=ctx.experiment, setting=setting,
                statement="control: every random kernel: ||w~||/||w^|| <= 1 (alpha dropped)",
                hypotheses="the claim needs the factor alpha; SNw implicitly assumes 1",
                bound=1.0, measured=measured, slack=relative_slack(measured, 1.0, "upper"),
                verdict=verdict, hypotheses_hold=False,
                note=f"negative control: constant 1 claimed instead of alpha = "
                     f"{record['alpha']:.4g}",
                extra={"check": "ratio<=1 (control)", "direction": "upper", "observed": observed,
                       "alpha": record["alpha"]}))
        records.append(_ratio_record(record))
    plot_ratio(result["records"], out_dir / "ratio.png",
               title=f"{ctx.experiment}: profile {ctx.profile}, seed {ctx.seed}")
    caption = ("One column per geometry: random kernels' ||w~||/||w^|| (box 5-95%, line median, "
               "whiskers min-max), the all-ones kernel (star) and the adversarial search's best "
               "kernel (triangle), between the bounds 1 and alpha (red; dotted where the lower "
               "bound is not guaranteed). Every marker must lie between the red lines.")
    return ExperimentOutput(rows=rows + control_rows, figures=[Figure("ratio.png", caption)],
                            records=records,
                            summary=_ratio_summary(result["records"], rows, control_rows))


# A kind's version joins this module's revision and the claim module's CLAIM_VERSION, so a change
# to either recomputes finished results instead of reusing them. Bump _REVISION when rows,
# records, figures or summaries change here.
_REVISION = 1


def _version(claim_module) -> str:
    return f"kinds_mc-{_REVISION}/{claim_module.CLAIM}-{claim_module.CLAIM_VERSION}"


THM2_KIND = register_kind(ExperimentKind(
    "thm2", Thm2Params, run_thm2, version=_version(thm2),
    description="Theorem 2: Var of A/||A||_sp for random matrices against its bounds"))
THM3_KIND = register_kind(ExperimentKind(
    "thm3", Thm3Params, run_thm3, version=_version(thm3),
    description="Theorem 3: Var of BSN-normalised random conv kernels against its bounds"))
RATIO_KIND = register_kind(ExperimentKind(
    "ratio", RatioParams, run_ratio, version=_version(ratio_claim),
    description="Claim R: ||w^|| <= ||w~|| <= alpha ||w^|| on conv geometries"))
