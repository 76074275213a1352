"""The discriminator-lab experiments of ``sntheory report`` (sntheory.report.kinds_lab).

One module-scoped report runs every lab config's smoke profile through the real runner with one
shared run cache (seconds); the tests read it for the kind-specific properties (negative controls
outside the hypotheses and failing, figures, records), check the shared, resumable training runs,
and feed the decision functions synthetic records that must come out VIOLATED / INCONCLUSIVE.
Fast paths are compared with dense float64 references (full SVD, the expanded conv matrix).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from sntheory.report.experiments import RunContext, get_kind, load_config
from sntheory.report.kinds_lab import (LabTrainingParams, P1GradientsParams, P3HessianParams,
                                       RatioTrainingParams, ScaledSnParams, SnwVsSnconvParams,
                                       VarianceTrainingParams, ensure_training_run,
                                       paired_sign_test, parse_run_spec, ratio_rows,
                                       run_is_finished, runs_root, training_run_key,
                                       trend_verdicts, variance_rows)
from sntheory.report.rows import ClaimRow
from sntheory.report.runner import run_report

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
LAB = ("p1_gradients", "p2_invariance", "t1_rescaling", "p3_hessian", "snw_vs_snconv",
       "scaled_sn", "variance_training", "ratio_training")
PNG = b"\x89PNG\r\n\x1a\n"


def _params(name: str, profile: str = "smoke"):
    return load_config(EXPERIMENTS / name / "config.toml").params(profile)


def _ctx(cache: Path, name: str = "lab-test", seed: int = 0) -> RunContext:
    return RunContext(seed=seed, profile="smoke", cache_dir=cache, progress=False,
                      experiment=name, claim="R")


@pytest.fixture(scope="module")
def lab_report(tmp_path_factory):
    """Every lab config's smoke profile, run by the real runner with one shared run cache."""
    tmp = tmp_path_factory.mktemp("lab")
    exps = tmp / "experiments"
    for name in LAB:
        shutil.copytree(EXPERIMENTS / name, exps / name)
    report = run_report(exps, tmp / "out", profile="smoke", cache_dir=tmp / "cache",
                        progress=False)
    results = {r.config.name: r.result for r in report.runs}
    return {"report": report, "results": results, "out": tmp / "out", "cache": tmp / "cache",
            "experiments": exps}


def _rows(result: dict) -> list[ClaimRow]:
    return [ClaimRow.from_dict(r) for r in result["rows"]]


# ---- configs -----------------------------------------------------------------------------------

def test_lab_configs_share_their_training_settings_in_every_profile():
    """Runs are shared only if every lab config resolves to the same training settings."""
    for profile in ("quick", "full", "smoke"):
        settings = {name: _params(name, profile).lab_settings() for name in LAB}
        first = settings[LAB[0]]
        for name, s in settings.items():
            assert s == first, f"{name} [{profile}] trains other runs than {LAB[0]}: " + str(
                {k: (s[k], first[k]) for k in s if s[k] != first[k]})
    assert _params("p1_gradients", "quick").lab_settings() == LabTrainingParams().lab_settings()
    full = _params("p1_gradients", "full")
    assert (full.arch, full.data, full.image_size, full.channels, full.width) == \
        ("cifar-cnn", "photo-patches", 32, 3, 64)


def test_run_specs_parse_and_bad_ones_name_the_rule():
    assert parse_run_spec("ssn:1.75").label == "ssn:1.75"
    spec = parse_run_spec("snw/scaled_relu:2")
    assert (spec.normalizer, spec.scale, spec.activation) == ("snw", None, "scaled_relu:2")
    assert parse_run_spec("bssn:3").effective_scale == 3.0
    for text, pattern in [("ssn", "needs its scale"), ("snw:2", "takes no scale"),
                          ("spectral", "must be one of"), ("ssn:-1", "finite number > 0"),
                          ("snw/wiggle", "activation"), ("ssn:abc", "must be a number")]:
        with pytest.raises(ValueError, match=pattern):
            parse_run_spec(text, "runs")
    with pytest.raises(TypeError, match="`runs` entries must be non-empty strings"):
        parse_run_spec(3, "runs")


@pytest.mark.parametrize("make, error, pattern", [
    (lambda: P1GradientsParams(controls=("snw",)), ValueError, "must break P1's hypotheses"),
    (lambda: P1GradientsParams(runs=()), ValueError, "at least one run"),
    (lambda: P1GradientsParams(runs=("snw", "snw")), ValueError, "more than once"),
    (lambda: P1GradientsParams(data="imagenet"), ValueError, "spec"),
    (lambda: P1GradientsParams(probe_every=0), ValueError, "`probe_every` must be"),
    (lambda: P3HessianParams(hessian_every=0), ValueError, "`hessian_every` must be"),
    (lambda: P3HessianParams(controls=("snw/relu",)), ValueError, "must break P3's"),
    (lambda: ScaledSnParams(scales=(1.0, 0.7)), ValueError, "strictly increasing"),
    (lambda: SnwVsSnconvParams(second="snw"), ValueError, "different runs"),
    (lambda: SnwVsSnconvParams(quantity="grad"), ValueError, "`quantity` must be one of"),
    (lambda: VarianceTrainingParams(rel_tol=0.0), ValueError, "`rel_tol` must be in"),
    (lambda: RatioTrainingParams(runs=("bssn",)), ValueError, "needs its scale"),
])
def test_bad_parameters_are_rejected_before_any_work(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


# ---- shared, resumable training runs -----------------------------------------------------------

def _tiny_run_config(seed: int = 0, steps: int = 8) -> dict:
    base = _params("ratio_training")
    cfg = base.train_config("snw", seed)
    cfg["run"].update(steps=steps, checkpoint_every=4)
    cfg["probe"].update(every=4, hessian_every=0)
    return cfg


def test_ensure_training_run_trains_once_and_reuses(tmp_path):
    ctx = _ctx(tmp_path / "cache")
    cfg = _tiny_run_config()
    run_dir = ensure_training_run(cfg, ctx)
    assert run_dir == runs_root(ctx) / training_run_key(cfg)
    assert run_dir.parent == tmp_path / "cache" / "lab-runs"
    assert run_is_finished(run_dir, 8)
    before = (run_dir / "probes.jsonl").read_bytes()
    assert ensure_training_run(cfg, ctx) == run_dir
    sessions = (run_dir / "timings.jsonl").read_text().splitlines()
    assert len(sessions) == 1, "a finished run must be reused, not trained again"
    assert (run_dir / "probes.jsonl").read_bytes() == before
    other = _tiny_run_config(seed=1)
    assert training_run_key(other) != training_run_key(cfg)
    with pytest.raises(TypeError, match="`ctx` must be a RunContext"):
        ensure_training_run(cfg, {"cache_dir": tmp_path})


def test_interrupted_run_resumes_to_the_uninterrupted_bytes(tmp_path):
    from sntheory.lab.train import train

    cfg = _tiny_run_config()
    whole = ensure_training_run(cfg, _ctx(tmp_path / "a"))
    ctx = _ctx(tmp_path / "b")
    cut = runs_root(ctx) / training_run_key(cfg)
    train(cfg, cut, progress=False, stop_after=5)        # killed after step 5 (checkpoint at 4)
    assert not run_is_finished(cut, 8)
    assert ensure_training_run(cfg, ctx) == cut
    assert len((cut / "timings.jsonl").read_text().splitlines()) == 2   # resumed, not restarted
    assert (cut / "probes.jsonl").read_bytes() == (whole / "probes.jsonl").read_bytes()
    assert (cut / "losses.csv").read_bytes() == (whole / "losses.csv").read_bytes()


def test_second_experiment_reuses_the_first_ones_runs(lab_report):
    """p1_gradients, snw_vs_snconv, variance_training and ratio_training read one SNw run."""
    ctx = _ctx(lab_report["cache"])
    snw = _params("ratio_training").train_config("snw", 0, device="cpu")
    run_dir = runs_root(ctx) / training_run_key(snw)
    assert run_is_finished(run_dir, 20)
    assert len((run_dir / "timings.jsonl").read_text().splitlines()) == 1
    n_runs = len(list(runs_root(ctx).glob("*/config.json")))
    # 7 distinct runs: none, snw, snconv, the two controls, ssn:3, bssn:1.75 (smoke lists)
    assert n_runs == 7, sorted(p.parent.name for p in runs_root(ctx).glob("*/config.json"))
    # running another experiment on the same cache trains nothing new
    params = _params("snw_vs_snconv")
    get_kind("snw_vs_snconv").run(params, _fresh(lab_report["out"] / "extra"), ctx)
    assert len((run_dir / "timings.jsonl").read_text().splitlines()) == 1
    assert len(list(runs_root(ctx).glob("*/config.json"))) == n_runs


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- what every kind produced ------------------------------------------------------------------

@pytest.mark.parametrize("name", LAB)
def test_each_lab_kind_gives_rows_figures_records_and_a_summary(lab_report, name):
    result = lab_report["results"][name]
    folder = lab_report["out"] / name
    rows = _rows(result)
    assert rows and result["summary"].strip()
    assert not any(r.verdict == "VIOLATED" and r.hypotheses_hold for r in rows), name
    assert result["figures"]
    for figure in result["figures"]:
        assert (folder / figure["path"]).read_bytes()[:8] == PNG
        assert "bound" in figure["caption"] or "diagonal" in figure["caption"]
    records = json.loads((folder / "records.json").read_text())
    assert records and all(isinstance(v, (str, int, float, bool)) or v is None
                           for r in records for v in r.values())
    assert result["device"] == "cpu"


def test_p1_controls_are_outside_and_show_the_bound_failing(lab_report):
    rows = _rows(lab_report["results"]["p1_gradients"])
    control = [r for r in rows if r.setting.startswith("snw/scaled_relu:2:")]
    outside = [r for r in control if not r.hypotheses_hold]
    assert outside and all(r.verdict == "OUTSIDE-HYPOTHESES" for r in outside)
    assert any(r.extra["observed"] == "bound-fails" for r in outside), \
        "the Lipschitz-2 control must break some P1 bound"
    # the raw-parameter rows need no activation hypothesis: they stay in and hold
    assert all(r.verdict == "HOLDS" for r in control
               if r.extra["statement_id"] in ("raw_grad", "raw_grad_z"))
    sheet = [r for r in rows if r.extra["statement_id"] in ("raw_grad_sheet", "raw_grad_z_sheet")]
    assert sheet and all(not r.hypotheses_hold for r in sheet)
    assert any(r.extra["observed"] == "bound-fails" for r in sheet), \
        "the sheet's uncorrected App. C bound fails on trained SN layers"
    inside = [r for r in rows if r.hypotheses_hold]
    assert {r.verdict for r in inside} == {"HOLDS"}


def test_p2_p3_and_ratio_controls_fail_outside_the_hypotheses(lab_report):
    p2 = _rows(lab_report["results"]["p2_invariance"])
    assert any(not r.hypotheses_hold and r.note.startswith("observed: deviates") for r in p2)
    p3 = _rows(lab_report["results"]["p3_hessian"])
    tanh = [r for r in p3 if r.setting.startswith("snw/tanh:")]
    assert tanh and all(r.verdict == "OUTSIDE-HYPOTHESES" for r in tanh)
    assert any(r.extra["observed"] == "bound-fails" for r in tanh)
    ratio = _rows(lab_report["results"]["ratio_training"])
    control = [r for r in ratio if not r.hypotheses_hold]
    assert control and all(r.extra["observed"] == "bound-fails" for r in control)
    assert {r.extra["check"] for r in ratio if r.hypotheses_hold} == {"upper", "lower"}
    variance = _rows(lab_report["results"]["variance_training"])
    unnormalised = [r for r in variance if r.setting.startswith("none:")
                    and r.extra["check"] in ("T2", "L-T2")]
    assert unnormalised and all(r.verdict == "OUTSIDE-HYPOTHESES" for r in unnormalised)


def test_same_seed_same_records_and_another_seed_differs(lab_report, tmp_path):
    """A fresh cache retrains the runs: bitwise the same records; seed 1 gives other numbers."""
    exps = tmp_path / "experiments"
    shutil.copytree(lab_report["experiments"] / "ratio_training", exps / "ratio_training")
    run_report(exps, tmp_path / "out", profile="smoke", cache_dir=tmp_path / "cache",
               progress=False)
    again = (tmp_path / "out" / "ratio_training" / "records.json").read_bytes()
    assert again == (lab_report["out"] / "ratio_training" / "records.json").read_bytes()
    cfg = exps / "ratio_training" / "config.toml"
    cfg.write_text(cfg.read_text().replace("seed = 0", "seed = 1"))
    run_report(exps, tmp_path / "out1", profile="smoke", cache_dir=tmp_path / "cache",
               progress=False)
    assert (tmp_path / "out1" / "ratio_training" / "records.json").read_bytes() != again


# ---- fast paths against dense references -------------------------------------------------------

def test_variance_and_ratio_records_match_dense_references(lab_report):
    """The tidy records' variance, reshaped norm and ||w~||/||w^|| against float64 dense SVDs of
    the trained layers (effective weights recomputed from the final checkpoint)."""
    from sntheory.conv.dense import expanded_matrix
    from sntheory.lab.train import load_run

    ctx = _ctx(lab_report["cache"])
    cfg = _params("ratio_training").train_config("snw", 0, device="cpu")
    run = load_run(runs_root(ctx) / training_run_key(cfg))
    final = run.step
    records = json.loads((lab_report["out"] / "ratio_training" / "records.json").read_text())
    variance = json.loads((lab_report["out"] / "variance_training" / "records.json").read_text())
    disc = run.disc.double().eval()
    with torch.no_grad():
        weights = [w.detach().numpy() for w in disc.effective_weights()]
    for info, w in zip(disc.layer_info, weights):
        mat = w.reshape(w.shape[0], -1)
        hat = np.linalg.svd(mat, compute_uv=False)[0]
        var_rec = next(r for r in variance if r["run"] == "snw" and r["step"] == final
                       and r["layer"] == info.index)
        assert var_rec["eff_weight_var"] == pytest.approx(np.var(w), rel=1e-6)
        assert var_rec["normalized_norm"] == pytest.approx(hat, rel=1e-6)
        assert var_rec["rank_bound"] == pytest.approx(hat ** 2 / max(mat.shape), rel=1e-6)
        assert np.var(w) <= hat ** 2 / max(mat.shape) * (1 + 1e-12)
        if info.kind != "conv":
            continue
        dense = np.linalg.svd(expanded_matrix(w, info.geometry), compute_uv=False)[0]
        rec = next(r for r in records if r["run"] == "snw" and r["step"] == final
                   and r["layer"] == info.index)
        assert rec["ratio"] == pytest.approx(dense / hat, rel=1e-6)
        assert rec["ratio_certified_lower"] <= dense / hat * (1 + 1e-9)
        assert 1 - 1e-9 <= rec["ratio"] <= rec["alpha"] * (1 + 1e-9)


# ---- decision functions on synthetic records: the checks can fail -------------------------------

def _ratio_point(step, lower, hat=1.0, upper=None, converged=True):
    return {"step": step, "reshaped_norm": hat, "op_norm_lower": lower,
            "op_norm_upper": lower * 1.001 if upper is None else upper,
            "op_norm_exact": lower, "op_norm_converged": converged}


def test_ratio_rows_flag_a_ratio_beyond_alpha_and_leave_open_cases_open():
    ok = [_ratio_point(0, 1.5), _ratio_point(50, 1.9)]
    rows = ratio_rows(ok, experiment="x", setting="l", alpha=2.0, lower_bound_applies=True,
                      alpha_one_control=True)
    assert [r.verdict for r in rows] == ["HOLDS", "HOLDS", "OUTSIDE-HYPOTHESES"]
    assert rows[2].extra["observed"] == "bound-fails"
    beyond = ok + [_ratio_point(100, 2.0 * (1 + 1e-6))]            # certified lower > alpha
    assert ratio_rows(beyond, experiment="x", setting="l", alpha=2.0,
                      lower_bound_applies=False)[0].verdict == "VIOLATED"
    at_bound = ok + [_ratio_point(100, 2.0 * (1 + 1e-12))]         # within the round-off
    assert ratio_rows(at_bound, experiment="x", setting="l", alpha=2.0,
                      lower_bound_applies=False)[0].verdict == "HOLDS"
    unconverged = ok + [_ratio_point(100, 1.7, converged=False)]
    assert ratio_rows(unconverged, experiment="x", setting="l", alpha=2.0,
                      lower_bound_applies=False)[0].verdict == "INCONCLUSIVE"
    below_one = ok + [_ratio_point(100, 0.9, upper=0.95)]          # certified upper < ||w^||
    assert ratio_rows(below_one, experiment="x", setting="l", alpha=2.0,
                      lower_bound_applies=True)[1].verdict == "VIOLATED"
    unsure = ok + [_ratio_point(100, 0.99, upper=1.01)]
    assert ratio_rows(unsure, experiment="x", setting="l", alpha=2.0,
                      lower_bound_applies=True)[1].verdict == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="`points` must hold"):
        ratio_rows([], experiment="x", setting="l", alpha=2.0, lower_bound_applies=True)
    with pytest.raises(ValueError, match="`alpha` must be"):
        ratio_rows(ok, experiment="x", setting="l", alpha=0.5, lower_bound_applies=True)


def _var_point(step, var, *, norm=1.0, m=8, n=32, family="sn", scale=1.0):
    return {"step": step, "var": var, "mean_sq": var, "m": m, "n": n, "family": family,
            "form": "T2", "scale": scale, "normalized_norm": norm,
            "rank_bound": norm ** 2 / max(m, n), "paper_bound": scale ** 2 / max(m, n),
            "t2_var_bound": 1 / max(m, n), "l_hat": scale ** 2 / (max(m, n) * var),
            "l_reference": 13 / 3}


def _checks(rows):
    return {r.extra["check"]: r for r in rows}


def test_variance_rows_decide_each_statement_and_can_fail():
    good = [_var_point(0, 0.02), _var_point(50, 0.025)]              # 1/32 = 0.03125
    rows = _checks(variance_rows(good, experiment="x", claim_setting="s"))
    assert {k: r.verdict for k, r in rows.items()} == {"rank": "HOLDS", "T2": "HOLDS",
                                                      "L-T2": "HOLDS"}
    broken = good + [_var_point(100, 0.04)]                          # above ||w^||^2/max
    rows = _checks(variance_rows(broken, experiment="x", claim_setting="s"))
    assert rows["rank"].verdict == "VIOLATED" and rows["T2"].verdict == "VIOLATED"
    lagging = good + [_var_point(100, 0.0315, norm=1.01)]            # power-iteration lag
    rows = _checks(variance_rows(lagging, experiment="x", claim_setting="s"))
    assert rows["rank"].verdict == "HOLDS" and rows["T2"].verdict == "INCONCLUSIVE"
    collapsed = good + [_var_point(100, 0.001)]                       # L_hat = 31 > 13/3
    assert _checks(variance_rows(collapsed, experiment="x", claim_setting="s"))[
        "L-T2"].verdict == "INCONCLUSIVE"
    none = [_var_point(0, 0.05, norm=2.0, family="none")]
    rows = _checks(variance_rows(none, experiment="x", claim_setting="s"))
    assert rows["rank"].verdict == "HOLDS"                              # any matrix
    assert rows["T2"].verdict == "OUTSIDE-HYPOTHESES"
    assert rows["T2"].extra["observed"] == "bound-fails"
    with pytest.raises(ValueError, match="`points` must hold"):
        variance_rows([], experiment="x", claim_setting="s")


def test_paired_sign_test_matches_scipy_and_brute_force():
    rng = np.random.default_rng(7)
    a = rng.lognormal(size=25)
    b = a * rng.lognormal(mean=-0.3, sigma=0.5, size=25)
    test = paired_sign_test(a, b)
    d = np.log(b) - np.log(a)
    n_less = int(np.sum(d < 0))
    assert test["n_less"] == n_less and test["n_pairs"] == 25
    assert test["p_less"] == pytest.approx(
        stats.binomtest(n_less, 25, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert test["p_greater"] == pytest.approx(
        stats.binomtest(25 - n_less, 25, 0.5, alternative="greater").pvalue, rel=1e-12)
    assert test["median_ratio"] == pytest.approx(math.exp(np.median(d)), rel=1e-12)
    # CI: the widest symmetric order-statistic interval whose miss probability is <= 5%
    ds = np.sort(d)
    k = max(j for j in range(1, 13) if stats.binom.cdf(j - 1, 25, 0.5) <= 0.025)
    assert (test["ci_low"], test["ci_high"]) == pytest.approx(
        (math.exp(ds[k - 1]), math.exp(ds[25 - k])), rel=1e-12)
    assert paired_sign_test([1, 2], [0.5, 1])["ci_low"] is None      # too few pairs
    dropped = paired_sign_test([1.0, 0.0, 2.0], [0.5, 1.0, 2.0])
    assert (dropped["n_dropped"], dropped["n_ties"], dropped["n_pairs"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="same length"):
        paired_sign_test([1, 2], [1])
    with pytest.raises(ValueError, match="finite"):
        paired_sign_test([1, float("nan")], [1, 2])


def test_trend_verdicts_hold_reverse_and_stay_open():
    steps = np.arange(1.0, 13.0)
    smaller = paired_sign_test(steps, 0.8 * steps)
    larger = paired_sign_test(steps, 1.2 * steps)
    mixed = paired_sign_test(steps, steps * np.where(np.arange(12) % 2, 1.1, 0.9))
    few = paired_sign_test(steps[:3], 0.8 * steps[:3])
    verdicts = trend_verdicts([smaller, larger, mixed, few], 0.05, expect="less")
    assert [v for v, _ in verdicts] == ["HOLDS", "VIOLATED", "INCONCLUSIVE", "INCONCLUSIVE"]
    assert trend_verdicts([larger], 0.05, expect="greater") == [("HOLDS", "bound-holds")]
    with pytest.raises(ValueError, match="`expect`"):
        trend_verdicts([smaller], 0.05, expect="down")


def test_without_a_cache_runs_go_to_a_scratch_folder_shared_within_the_process(tmp_path):
    ctx = RunContext(seed=0, profile="smoke", cache_dir=None, progress=False)
    root = runs_root(ctx)
    assert root == runs_root(ctx) and root.is_dir() and tmp_path not in root.parents
    cfg = _tiny_run_config(steps=4)
    run_dir = ensure_training_run(cfg, ctx)
    assert run_dir.parent == root and run_is_finished(run_dir, 4)


def test_figure_helpers_reject_empty_input(tmp_path):
    from sntheory.report.lab_training_figures import panels_figure, ratio_figure, series_by

    with pytest.raises(ValueError, match="`panels` must hold at least one Panel"):
        panels_figure([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="`reduce` must be"):
        series_by([], ("layer",), "grad", reduce="median")
    dense_only = [{"run": "snw", "layer": 2, "layer_label": "dense 1", "step": 0, "ratio": 1.0,
                   "alpha": 1.0, "kind": "linear"}]
    assert series_by(dense_only, ("layer",), "ratio")[(2,)][1].tolist() == [1.0]
    with pytest.raises(ValueError, match="no conv layer"):
        ratio_figure([], tmp_path / "r.png")
