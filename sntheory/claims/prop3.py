"""Claim P3 (Prop. 3): the Hessian of the discriminator is bounded (toolkit form of THEORY.md).

Reads the Hessian fields of probe records (``ProbeOptions(hessian=True)``; derivation in
:func:`sntheory.lab.probes._hessian_records`). For ``f = mean_j sigmoid(z(x_j))`` and layer ``t``'s
kernel tensor, with piecewise-linear internal activations, ``H_t = mean_j s''(z_j) g_j g_j^T``
almost everywhere, so

* ``hessian``: ``||H_t||_sp <= ||s''||_inf alpha_t^2 mean_j bound_t(x_j)^2`` (THEORY.md's form
  ``||a_L''||_inf (prod_{i!=t} ||w_i||)^2 ||x||^2`` for the batch mean, bias-free, dense layers;
  the kernel tensor adds ``alpha_t^2``, biases the recursion ``B``);
* ``hessian_curvature``: ``||H_t||_sp <= mean_j |s''(z_j)| ||g_j||^2`` (sharper, with the measured
  per-sample gradients).

``||H_t||`` is measured by block Lanczos on Hessian-vector products (:mod:`sntheory.lab.hessian`):
the Ritz value ``theta`` never exceeds the true norm (Cauchy interlacing) and lies within the
residual ``r`` of an eigenvalue, so a point is VIOLATED when ``theta > bound (1 + tol)`` and counts
as holding only when ``theta + r <= bound (1 + tol)``; a point in between (an unconverged run)
makes the row INCONCLUSIVE. Tolerance ``tol = 1e-8`` relative, as for P1 (same float64 argument;
the HVPs add one more backward pass). The Gauss-Newton identity itself is reported in ``extra``:
``hessian_gauss_newton_norm = ||mean_j s'' g_j g_j^T||`` from a ``B x B`` eigenproblem, equal to the
Lanczos value for piecewise-linear nets (to the Lanczos accuracy) and not for smooth ones.

Hypotheses: internal activations piecewise linear, 1-Lipschitz, ``a(0) = 0``. Smooth activations
(tanh, ELU, softplus, GELU) add the term ``s'(z_j) grad^2 z`` and are negative controls: their
rows are OUTSIDE-HYPOTHESES with what was observed. Cross-layer blocks ``H_ts`` (``t != s``) are not
covered by the claim: reported as OUTSIDE-HYPOTHESES rows with the measured norm and no bound.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..monte_carlo.verdicts import Verdict
from ..report.rows import ClaimRow, relative_slack
from .prop1 import MAX_LISTED, read_probe_records

__all__ = ["CLAIM", "ROUND_OFF", "check_prop3", "check_prop3_run"]

CLAIM = "P3"
ROUND_OFF = 1e-8

_STATEMENTS = (
    ("hessian", "hessian_bound",
     "||H_t||_sp <= ||s''||_inf alpha_t^2 mean_j bound_t(x_j)^2, H_t = Hessian of "
     "mean_j sigmoid(z(x_j)) w.r.t. layer t's kernel (bias-free: ||s''||_inf alpha_t^2 "
     "(prod_{i!=t}||w~_i||)^2 mean_j ||x_j||^2)"),
    ("hessian_curvature", "hessian_bound_curvature",
     "||H_t||_sp <= mean_j |s''(z_j)| ||grad_{w_t} z(x_j)||^2 (H_t = mean_j s''(z_j) g_j g_j^T a.e.)"),
)


def _hyp(r: dict) -> bool:
    return bool(r["activation_piecewise_linear"]) and bool(r["meets_p1_hypotheses"])


def check_prop3(records: Sequence[dict], *, experiment: str = "lab") -> list[ClaimRow]:
    """P3 rows (module docstring): per layer and statement, worst over the probe points with
    Hessian fields, then one row per cross-layer block (outside the claim).

    Raises
    ------
    TypeError
        ``records`` not a list of dicts.
    ValueError
        No record carries Hessian measurements.
    """
    if not isinstance(experiment, str) or not experiment:
        raise ValueError(f"`experiment` must be a non-empty string, got {experiment!r}")
    if isinstance(records, (str, bytes, dict)):
        raise TypeError("`records` must be a list of probe records (dicts)")
    layer_recs, cross_recs = [], []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise TypeError(f"`records[{i}]` must be a dict, got {type(r).__name__}")
        if r.get("scope") == "layer" and "hessian_norm" in r:
            layer_recs.append(r)
        elif r.get("scope") == "hessian-cross":
            cross_recs.append(r)
    if not layer_recs:
        raise ValueError("no probe record carries Hessian measurements: probe with "
                         "ProbeOptions(hessian=True)")
    act = layer_recs[0]
    act_text = (f"internal activations piecewise linear, 1-Lipschitz, a(0) = 0; activation "
                f"{act['activation']} (piecewise linear: {act['activation_piecewise_linear']}, "
                f"Lipschitz {act['activation_lipschitz']:g})")
    by_layer = defaultdict(list)
    for r in layer_recs:
        by_layer[r["layer"]].append(r)
    rows = []
    for layer in sorted(by_layer):
        recs = by_layer[layer]
        label = f"layer {layer} ({recs[0]['layer_label']}, {recs[0]['normalizer']})"
        for name, bound_key, statement in _STATEMENTS:
            rows.append(_row(name, bound_key, statement, act_text, recs, label, experiment))
    by_pair = defaultdict(list)
    for r in cross_recs:
        by_pair[(r["layer"], r["layer_other"])].append(r)
    for (t, s), recs in sorted(by_pair.items()):
        worst = max(recs, key=lambda r: r["hessian_cross_norm"])
        rows.append(ClaimRow(
            claim=CLAIM, experiment=experiment,
            setting=f"cross block layers {t} x {s} ({recs[0]['layer_label']}), "
                    f"{len(recs)} probe points",
            statement="||H_ts||_sp (cross-layer block, t != s): measured, not bounded by P3",
            hypotheses="P3 covers the diagonal blocks H_tt only",
            bound=None, measured=float(worst["hessian_cross_norm"]),
            verdict=Verdict.OUTSIDE_HYPOTHESES, hypotheses_hold=False,
            note=(f"outside the claim (the mixed second derivative s'(z) d^2 z / dw_t dw_s does "
                  f"not vanish); largest at step {worst['step']}, {worst['batch']} batch, "
                  f"residual {worst['hessian_cross_residual']:.2g}"),
            extra={"statement_id": "hessian_cross", "layers": [t, s],
                   "worst": {"step": worst["step"], "batch": worst["batch"],
                             "value": worst["hessian_cross_norm"],
                             "converged": worst["hessian_cross_converged"]},
                   "n_points": len(recs)}))
    return rows


def _row(name, bound_key, statement, hyp_text, recs, label, experiment) -> ClaimRow:
    inside = [r for r in recs if _hyp(r)]
    group = inside if inside else recs
    pts = []
    for r in group:
        bound = r[bound_key]
        theta, resid = r["hessian_norm"], r["hessian_residual"]
        ratio = theta / bound if bound > 0 else (float("inf") if theta > 0 else 0.0)
        upper_ratio = (theta + resid) / bound if bound > 0 else ratio
        pts.append((ratio, upper_ratio, r))
    worst_ratio, _, worst = max(pts, key=lambda p: p[0])
    bad = [p for p in pts if p[0] > 1.0 + ROUND_OFF]
    unsure = [p for p in pts if p[0] <= 1.0 + ROUND_OFF < p[1]]
    gn_gap = max(abs(r["hessian_norm"] - r["hessian_gauss_newton_norm"])
                 / max(r["hessian_norm"], 1e-300) for r in group)
    steps = sorted({r["step"] for r in group})
    span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    extra = {"statement_id": name, "n_points": len(group), "n_violations": len(bad),
             "n_unresolved": len(unsure), "round_off": ROUND_OFF,
             "worst": {"step": worst["step"], "batch": worst["batch"], "ratio": worst_ratio,
                       "residual": worst["hessian_residual"],
                       "converged": worst["hessian_converged"]},
             "violations": [{"step": r["step"], "batch": r["batch"], "layer": r["layer"],
                             "ratio": ratio, "margin": ratio - 1.0}
                            for ratio, _, r in sorted(bad, key=lambda p: -p[0])[:MAX_LISTED]],
             "gauss_newton_rel_gap_max": gn_gap,
             "n_points_outside_hypotheses": len(recs) - len(inside)}
    worst_text = (f"worst at step {worst['step']}, {worst['batch']} batch: ||H|| "
                  f"{worst['hessian_norm']:.6g} vs bound {worst[bound_key]:.6g} (ratio "
                  f"{worst_ratio:.6g}); Gauss-Newton form matches to {gn_gap:.1e} relative")
    if inside:
        hold = True
        if bad:
            verdict = Verdict.VIOLATED
            note = f"VIOLATED at {len(bad)} of {len(group)} points; " + worst_text
        elif unsure:
            verdict = Verdict.INCONCLUSIVE
            note = (f"{len(unsure)} points within the Lanczos residual of the bound; "
                    + worst_text)
        else:
            verdict = Verdict.HOLDS
            note = worst_text
    else:
        hold = False
        verdict = Verdict.OUTSIDE_HYPOTHESES
        observed = "bound-fails" if bad else ("undecided" if unsure else "bound-holds")
        extra["observed"] = observed
        note = f"outside the hypotheses; observed {observed}; " + worst_text
    return ClaimRow(claim=CLAIM, experiment=experiment,
                    setting=f"{label}, {len(group)} probe points ({span})", statement=statement,
                    hypotheses=hyp_text, bound=float(worst[bound_key]),
                    measured=float(worst["hessian_norm"]),
                    slack=relative_slack(worst["hessian_norm"], worst[bound_key], "upper")
                    if worst[bound_key] > 0 else None,
                    verdict=verdict, hypotheses_hold=hold, note=note, extra=extra)


def check_prop3_run(run_dir: str | Path, *, experiment: str | None = None) -> list[ClaimRow]:
    """:func:`check_prop3` on the ``probes.jsonl`` of a training run directory."""
    run_dir = Path(run_dir)
    return check_prop3(read_probe_records(run_dir), experiment=experiment or run_dir.name)
