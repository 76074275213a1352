"""Claim P1 (Prop. 1, Cor. 1, App. C): gradients of the discriminator are bounded.

Turns the probe records of :func:`sntheory.lab.probes.probe_discriminator` (one per step, layer and
batch) into :class:`~sntheory.report.rows.ClaimRow` objects: one row per layer and statement, worst
over every probe point (steps x real/fake batches x samples), plus rows for the whole network.
The statements and their derivations are in :mod:`sntheory.lab.probes`; in short, per sample
``x`` and layer ``t`` with ``U_i`` the certified upper bound of ``||w~_i||_sp``:

=========================  =========================================================================
``grad_z_expanded``         ``||grad_{w~_t} z(x)||_F <= B_{t-1}(x) prod_{i>t} U_i`` (the paper's
                            ``prod_{i!=t} ||w~_i|| ||x||`` without biases; ``B`` the bias recursion)
``grad_z_kernel``           the kernel-tensor gradient (what autograd returns): ``<= alpha_t`` times it
``loss_grad``               ``||grad_{w_t} mean_j loss(z_j)||_F <= mean_j |loss'(z_j)| alpha_t bound_t(x_j)``
``grad_bias_param``         ``||grad_{b_t} z(x)|| <= sqrt(P_t) prod_{i>t} U_i`` (networks with biases)
``raw_grad``                corrected App. C: ``||grad_W L||_F <= |c| max(1, ||W||_F ||grad log|c|||_F)
                            ||G||_F`` for ``W_eff = c(W) W`` (batch loss, autograd through the
                            normalizer; and per sample)
``sn_corollary``            with SNw / SNConv: ``prod_{i!=t} k_i ||x||`` (``k_i = 1``, or ``alpha_i``
                            for SNw on a conv layer)
``total_*``                 ``||grad_theta z(x)|| <= sqrt(sum_t bound_t^2)`` (expanded, kernel, with
                            biases, SN corollary)
=========================  =========================================================================

These are deterministic inequalities: a probe point above its bound beyond round-off is a violation,
reported with layer, step, batch, sample and margin.

Round-off tolerance: ``ROUND_OFF = 1e-8`` relative. Both sides are float64 products of at most
``2 L + 4`` factors, each a norm or a sum of at most ``K`` products (``K`` = the longest dot product,
a fan-in or ``c_out kh kw``; ``K <= 1e5`` for every network of the lab), so each side carries a
relative error of at most ``(2 L + 4) gamma_K`` with ``gamma_K = K u / (1 - K u)``, ``u = 2^-53``:
``<= 5e-10`` for ``L <= 20`` -- wherever a measurement is near its bound, where its terms add up
without cancellation (cancellation only makes the measurement smaller than its bound). The
operator norms enter through certified upper bounds, which already include their rounding. The
tolerance is 20 times that worst case, and 1e5 times smaller than the smallest real violation
known to matter (the sheet's raw-parameter bound, exceeded by 1.8e-3 on a trained layer). Tested:
an exactly tight network (aligned rank-one weights, positive data) sits within 1e-14 of its bound
and passes; the same network with activation ``scaled_relu:1.000001`` (Lipschitz ``1 + 1e-6``)
exceeds it and is caught.

Hypotheses: internal activations with Lipschitz constant ``<= 1`` and ``a(0) = 0``
(``Activation.meets_p1_hypotheses``); networks outside them (``scaled_relu:2``, softplus) give
OUTSIDE-HYPOTHESES rows with what was observed (``bound-holds`` / ``bound-fails`` and the worst
ratio), never counted as failures. The raw-parameter rows need ``W_eff = c(W) W`` with ``sigma``
positively homogeneous (checked per layer by the probe, ``raw_proportional``) and not the
activation hypotheses (pure chain rule). The SN corollary also needs the normalized norm
``<= 1`` as measured (``sn_normalized_norm``): torch's power iteration estimates ``sigma`` from
below, so it can sit a hair above 1, and such points are counted outside the hypotheses.

The sheet's raw-parameter bound ``(s/sigma) ||G||_F`` is wrong (it holds only for an orthogonal
projection, i.e. Frobenius normalization); its worst ratio is kept in every raw row's ``extra``
(``sheet_ratio_max``) and, with ``sheet_raw_bound=True``, reported as its own rows (VIOLATED where
it fails: the negative control of the correction).
"""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from ..monte_carlo.verdicts import Verdict
from ..report.rows import ClaimRow, relative_slack

__all__ = ["CLAIM", "ROUND_OFF", "check_prop1", "check_prop1_run", "read_probe_records",
           "Point", "collect_points"]

CLAIM = "P1"
ROUND_OFF = 1e-8
MAX_LISTED = 20          # violations listed per row (all are counted)


class Point:
    """One probe point of one statement: where, measured, bound, ratio, hypotheses."""

    __slots__ = ("step", "batch", "layer", "sample", "measured", "bound", "ratio", "in_hyp")

    def __init__(self, step, batch, layer, sample, measured, bound, ratio, in_hyp):
        self.step, self.batch, self.layer, self.sample = step, batch, layer, sample
        self.measured, self.bound, self.ratio, self.in_hyp = measured, bound, ratio, in_hyp

    def where(self) -> dict:
        out = {"step": self.step, "batch": self.batch, "layer": self.layer,
               "measured": self.measured, "bound": self.bound, "ratio": self.ratio,
               "margin": self.ratio - 1.0}
        if self.sample is not None:
            out["sample"] = self.sample
        return out


def read_probe_records(run_dir: str | Path) -> list[dict]:
    """The probe records of a training run (``probes.jsonl``; via ``sntheory.lab.train`` when
    it provides ``read_probes``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"`run_dir` {str(run_dir)!r} is not a directory")
    try:
        from ..lab.train import read_probes
    except ImportError:
        read_probes = None
    if read_probes is not None:
        return list(read_probes(run_dir))
    import json
    path = run_dir / "probes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no probes.jsonl in run directory {str(run_dir)!r}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _probe_records(records: Iterable[dict]) -> list[dict]:
    if isinstance(records, (str, bytes, dict)):
        raise TypeError("`records` must be a list of probe records (dicts)")
    out = []
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise TypeError(f"`records[{i}]` must be a dict, got {type(r).__name__}")
        if "probe_version" in r:
            out.append(r)
    return out


def _per_sample_point(r: dict, name: str, in_hyp: bool) -> Point | None:
    key = f"{name}_ratio_max"
    if key not in r:
        return None
    return Point(r["step"], r["batch"], r.get("layer", -1), r.get(f"{name}_worst_sample"),
                 r[f"{name}_at_worst"], r[f"{name}_bound_at_worst"], r[key], in_hyp)


def _pair_point(r: dict, measured_key: str, bound_key: str, in_hyp: bool) -> Point | None:
    if measured_key not in r or bound_key not in r:
        return None
    m, b = r[measured_key], r[bound_key]
    ratio = m / b if b > 0 else (math.inf if m > 0 else 0.0)
    return Point(r["step"], r["batch"], r.get("layer", -1), None, m, b, ratio, in_hyp)


def _p1_hyp(r: dict) -> bool:
    return bool(r["meets_p1_hypotheses"])


def _sn_hyp_by_step(records: Sequence[dict]) -> dict:
    """(step, batch) -> every layer's normalized norm <= 1 (+ round-off)."""
    ok: dict = defaultdict(lambda: True)
    for r in records:
        if r.get("scope") == "layer" and "sn_normalized_norm" in r:
            key = (r["step"], r["batch"])
            ok[key] = ok[key] and r["sn_normalized_norm"] <= 1.0 + ROUND_OFF
    return ok


# statement id -> (text, hypotheses text, point builder)
_ACT_HYP = "internal activations 1-Lipschitz with a(0) = 0; certified operator-norm upper bounds"


def _statements(sheet_raw_bound: bool):
    layer = [
        ("grad_z_expanded", "||grad_{w~_t} z(x)||_F <= B_{t-1}(x) prod_{i>t} ||w~_i||_sp, "
         "B_0 = ||x||, B_i = ||w~_i|| B_{i-1} + ||b~_i|| (= prod_{i!=t}||w~_i|| ||x|| bias-free)",
         _ACT_HYP, lambda r, h: _per_sample_point(r, "grad_z_expanded", _p1_hyp(r))),
        ("grad_z_kernel", "||grad_{kernel_t} z(x)||_F <= alpha_t B_{t-1}(x) prod_{i>t} "
         "||w~_i||_sp", _ACT_HYP, lambda r, h: _per_sample_point(r, "grad_z_kernel", _p1_hyp(r))),
        ("loss_grad", "||grad_{w_t} mean_j loss(z_j)||_F <= mean_j |loss'(z_j)| alpha_t "
         "bound_t(x_j)", _ACT_HYP,
         lambda r, h: _pair_point(r, "loss_grad_eff_fro", "loss_grad_eff_bound", _p1_hyp(r))),
        ("loss_grad_expanded", "||grad_{w~_t} mean_j loss(z_j)||_F <= mean_j |loss'(z_j)| "
         "bound_t(x_j)", _ACT_HYP,
         lambda r, h: _pair_point(r, "loss_grad_expanded_fro", "loss_grad_expanded_bound",
                                  _p1_hyp(r))),
        ("grad_bias_param", "||grad_{b_t} z(x)|| <= sqrt(P_t) prod_{i>t} ||w~_i||_sp "
         "(P_t output positions; the expanded bias: without sqrt(P_t))", _ACT_HYP,
         lambda r, h: _per_sample_point(r, "grad_bias_param", _p1_hyp(r))),
        ("loss_grad_bias", "||grad_{b_t} mean_j loss(z_j)|| <= mean_j |loss'(z_j)| sqrt(P_t) "
         "prod_{i>t} ||w~_i||_sp", _ACT_HYP,
         lambda r, h: _pair_point(r, "loss_grad_bias_fro", "loss_grad_bias_bound", _p1_hyp(r))),
        ("raw_grad", "||grad_W L||_F <= |c| max(1, ||W||_F ||grad log|c|||_F) ||G||_F, "
         "W_eff = c(W) W, G = grad_{W_eff} L (corrected App. C; batch loss, autograd)",
         "W_eff = s W / sigma(W) with sigma positively homogeneous of degree 1",
         lambda r, h: _pair_point(r, "raw_grad_fro", "raw_grad_bound",
                                  bool(r.get("raw_proportional", False)))),
        ("raw_grad_z", "||grad_W z(x)||_F <= |c| max(1, ||W||_F ||grad log|c|||_F) "
         "||grad_{W_eff} z(x)||_F (corrected App. C, per sample)",
         "W_eff = s W / sigma(W) with sigma positively homogeneous of degree 1",
         lambda r, h: _per_sample_point(r, "raw_grad_z", bool(r.get("raw_proportional", False)))),
        ("sn_corollary", "SN corollary: ||grad_{w~_t} z(x)||_F <= prod_{i!=t} k_i ||x|| (bias "
         "recursion with k_i), k_i = 1 (SNConv; dense) or alpha_i (SNw on a conv layer)",
         _ACT_HYP + "; every layer SNw/SNConv with normalized norm <= 1 as measured",
         lambda r, h: _per_sample_point(r, "sn_corollary",
                                        _p1_hyp(r) and h[(r["step"], r["batch"])])),
    ]
    if sheet_raw_bound:
        layer += [
            ("raw_grad_sheet", "sheet's App. C form: ||grad_W L||_F <= (s/sigma) ||G||_F "
             "(batch loss)", "W_eff = s W / sigma(W) (as the sheet states it)",
             lambda r, h: _pair_point(r, "raw_grad_fro", "raw_grad_sheet_bound",
                                      bool(r.get("raw_proportional", False)))),
            ("raw_grad_z_sheet", "sheet's App. C form: ||grad_W z(x)||_F <= (s/sigma) "
             "||grad_{W_eff} z(x)||_F (per sample)", "W_eff = s W / sigma(W) (as the sheet "
             "states it)",
             lambda r, h: _per_sample_point(r, "raw_grad_z_sheet",
                                            bool(r.get("raw_proportional", False)))),
        ]
    network = [
        ("total_grad_expanded", "||grad_theta z(x)|| <= sqrt(sum_t bound_t(x)^2) (expanded "
         "matrices)", _ACT_HYP),
        ("total_grad_kernel", "||grad_kernels z(x)|| <= sqrt(sum_t (alpha_t bound_t(x))^2)",
         _ACT_HYP),
        ("total_grad_with_biases", "||grad_{kernels, biases} z(x)|| <= sqrt(sum_t "
         "(alpha_t bound_t)^2 + P_t (prod_{i>t} ||w~_i||)^2)", _ACT_HYP),
        ("total_sn_corollary", "SN corollary, whole network: ||grad_theta z(x)|| <= "
         "sqrt(sum_t (prod_{i!=t} k_i ||x||)^2) (sqrt(L) ||x|| with SNConv, bias-free)",
         _ACT_HYP + "; every layer SNw/SNConv with normalized norm <= 1 as measured"),
    ]
    return layer, network


def collect_points(records: Sequence[dict], *, sheet_raw_bound: bool = False) -> dict:
    """``{(statement, layer): [Point, ...]}`` over the probe records (layer -1: network)."""
    records = _probe_records(records)
    sn_ok = _sn_hyp_by_step(records)
    layer_st, network_st = _statements(sheet_raw_bound)
    points: dict = defaultdict(list)
    for r in records:
        scope = r.get("scope")
        if scope == "layer":
            for name, _, _, build in layer_st:
                p = build(r, sn_ok)
                if p is not None:
                    points[(name, r["layer"])].append(p)
        elif scope == "network":
            for name, _, _ in network_st:
                in_hyp = _p1_hyp(r)
                if name == "total_sn_corollary":
                    in_hyp = in_hyp and sn_ok[(r["step"], r["batch"])]
                p = _per_sample_point(r, name, in_hyp)
                if p is not None:
                    points[(name, -1)].append(p)
    return points


def _describe(p: Point) -> str:
    where = f"step {p.step}, {p.batch} batch"
    if p.layer >= 0:
        where = f"layer {p.layer}, " + where
    if p.sample is not None:
        where += f", sample {p.sample}"
    return where


def _row(name, statement, hypotheses, pts: list[Point], label: str, experiment: str) -> ClaimRow:
    inside = [p for p in pts if p.in_hyp]
    outside = [p for p in pts if not p.in_hyp]
    group = inside if inside else outside
    worst = max(group, key=lambda p: p.ratio)
    bad = [p for p in group if p.ratio > 1.0 + ROUND_OFF]
    steps = sorted({p.step for p in pts})
    span = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps[0]}-{steps[-1]}"
    setting = f"{label}, {len(group)} probe points ({span}, {'+'.join(sorted({p.batch for p in pts}))})"
    extra = {"statement_id": name, "worst": worst.where(), "n_points": len(group),
             "n_violations": len(bad), "round_off": ROUND_OFF,
             "violations": [p.where() for p in sorted(bad, key=lambda p: -p.ratio)[:MAX_LISTED]],
             "n_points_outside_hypotheses": len(outside)}
    worst_text = (f"worst at {_describe(worst)}: measured {worst.measured:.6g} vs bound "
                  f"{worst.bound:.6g} (ratio {worst.ratio:.9g})")
    if inside:
        verdict = Verdict.VIOLATED if bad else Verdict.HOLDS
        note = (f"VIOLATED at {len(bad)} of {len(group)} points (tolerance {ROUND_OFF:g} "
                f"relative); " if bad else "") + worst_text
        if outside:
            note += f"; {len(outside)} further points outside the hypotheses not counted"
        hyp_hold = True
    else:
        verdict = Verdict.OUTSIDE_HYPOTHESES
        observed = "bound-fails" if bad else "bound-holds"
        extra["observed"] = observed
        note = f"outside the hypotheses; observed {observed}" + \
            (f" at {len(bad)} of {len(group)} points" if bad else "") + "; " + worst_text
        hyp_hold = False
    return ClaimRow(claim=CLAIM, experiment=experiment, setting=setting, statement=statement,
                    hypotheses=hypotheses, bound=float(worst.bound), measured=float(worst.measured),
                    slack=relative_slack(worst.measured, worst.bound, "upper")
                    if worst.bound > 0 else None,
                    verdict=verdict, hypotheses_hold=hyp_hold, note=note, extra=extra)


def check_prop1(records: Sequence[dict], *, experiment: str = "lab",
                sheet_raw_bound: bool = False) -> list[ClaimRow]:
    """P1 rows from probe records (module docstring): per layer and statement, then the network.

    Parameters
    ----------
    records : list of dict
        Records of :func:`sntheory.lab.probes.probe_discriminator` (others are ignored), from one
        discriminator (one run).
    experiment : str
        Name for the rows (``experiments/<name>``).
    sheet_raw_bound : bool
        Also report the sheet's (wrong) raw-parameter bound as rows.

    Raises
    ------
    TypeError
        ``records`` not a list of dicts.
    ValueError
        No probe records in ``records``.
    """
    if not isinstance(experiment, str) or not experiment:
        raise ValueError(f"`experiment` must be a non-empty string, got {experiment!r}")
    probe = _probe_records(records)
    if not probe:
        raise ValueError("`records` holds no probe records (dicts with 'probe_version'): "
                         "nothing to check")
    points = collect_points(probe, sheet_raw_bound=sheet_raw_bound)
    layer_st, network_st = _statements(sheet_raw_bound)
    labels = {}
    sheet_worst = defaultdict(float)
    for r in probe:
        if r.get("scope") == "layer":
            labels[r["layer"]] = f"layer {r['layer']} ({r['layer_label']}, {r['normalizer']})"
            if "raw_grad_z_sheet_ratio_max" in r:
                sheet_worst[r["layer"]] = max(sheet_worst[r["layer"]],
                                              r["raw_grad_z_sheet_ratio_max"],
                                              r["raw_grad_fro"] / r["raw_grad_sheet_bound"]
                                              if r["raw_grad_sheet_bound"] > 0 else 0.0)
    act = probe[0]
    act_text = (f"activation {act['activation']} (Lipschitz {act['activation_lipschitz']:g}, "
                f"a(0) {'= 0' if act['activation_zero_at_zero'] else '!= 0'})")
    rows = []
    for layer in sorted(labels):
        for name, statement, hyp, _ in layer_st:
            pts = points.get((name, layer))
            if not pts:
                continue
            h = hyp if not hyp.startswith("internal") else f"{hyp}; {act_text}"
            row = _row(name, statement, h, pts, labels[layer], experiment)
            if name in ("raw_grad", "raw_grad_z") and layer in sheet_worst:
                row.extra["sheet_ratio_max"] = sheet_worst[layer]
            rows.append(row)
    for name, statement, hyp in network_st:
        pts = points.get((name, -1))
        if pts:
            rows.append(_row(name, statement, f"{hyp}; {act_text}", pts, "whole network",
                             experiment))
    return rows


def check_prop1_run(run_dir: str | Path, *, experiment: str | None = None,
                    sheet_raw_bound: bool = False) -> list[ClaimRow]:
    """:func:`check_prop1` on the ``probes.jsonl`` of a training run directory."""
    run_dir = Path(run_dir)
    records = read_probe_records(run_dir)
    return check_prop1(records, experiment=experiment or run_dir.name,
                       sheet_raw_bound=sheet_raw_bound)
