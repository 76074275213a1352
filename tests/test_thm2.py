"""Claim T2: the estimator against exact references, the verdicts, and their negative controls."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sntheory.claims import thm2
from sntheory.monte_carlo import ResultStore, StoppingRule
from sntheory.random_weights import block_generator, parse_distribution

FAST = StoppingRule(precision=0.02, min_samples=30)


def _run(cases, **kw):
    kw.setdefault("rule", FAST)
    kw.setdefault("progress", False)
    return thm2.run(cases, **kw)


def _checks(record):
    return {c["name"]: c for c in record["checks"]}


@pytest.mark.parametrize("dist", ["gaussian", "uniform", "cauchy", "exponential"])
@pytest.mark.parametrize("shape", [(2, 2), (5, 3), (7, 40)])
def test_sample_block_statistics_equal_svd_reference(dist, shape):
    """X = ||A||_F^2/(||A||_sp^2 mn) and Y = sum(A)/(||A||_sp mn), recomputed from the same stream."""
    m, n = shape
    params = thm2.Thm2Case(m, n, dist).params
    stats = thm2.sample_block(params, block_generator(7, (1, 2), 0), 50)
    a = parse_distribution(dist).sample(block_generator(7, (1, 2), 0), (50, m, n))
    sigma = np.linalg.svd(a, compute_uv=False)[:, 0]
    x = (a ** 2).sum(axis=(1, 2)) / (sigma ** 2 * m * n)
    y = a.sum(axis=(1, 2)) / (sigma * m * n)
    np.testing.assert_allclose(stats[:, 0], x, rtol=1e-9)
    np.testing.assert_allclose(stats[:, 1], y, rtol=1e-9, atol=1e-15)
    # the stable rank lies in [1, min{m, n}], so X lies in [1/(mn), 1/max{m, n}]
    assert np.all(stats[:, 0] <= 1 / max(m, n) * (1 + 1e-12))
    assert np.all(stats[:, 0] >= 1 / (m * n) * (1 - 1e-12))


def test_vector_is_exact_equality_and_outside_hypotheses_by_default():
    """A 1 x n matrix normalises to a unit vector: Var = 1/n exactly, se = 0, upper bound tight."""
    with pytest.raises(ValueError, match=r"1x6 is outside Theorem 2's hypotheses"):
        thm2.make_tasks([thm2.Thm2Case(1, 6, "gaussian")])
    out = _run([thm2.Thm2Case(1, 6, "gaussian")], allow_outside_hypotheses=True)
    record = out["records"][0]
    assert record["estimate"] == pytest.approx(1 / 6, rel=1e-13)
    assert record["se"] == pytest.approx(0, abs=1e-15)
    assert _checks(record)["upper"]["verdict"] == "HOLDS"
    assert _checks(record)["L-ref"]["verdict"] == "OUTSIDE-HYPOTHESES"


def test_gaussian_and_uniform_hold_with_bounds_bracketing():
    out = _run([thm2.Thm2Case(m, n, d) for d in ("gaussian", "uniform")
                for m, n in ((8, 8), (64, 32), (3, 200))], seed=0)
    assert not out["summary"]["any_violated"]
    for r in out["records"]:
        assert r["verdict"] == "HOLDS", r
        m, n = r["params"]["m"], r["params"]["n"]
        # the explicit Gaussian bound and the paper's upper bound bracket the estimate
        assert r["ci_high"] < 1 / max(m, n)
        if r["params"]["dist"] == "gaussian":
            assert r["ci_low"] > 1 / ((math.sqrt(m) + math.sqrt(n)) ** 2 + 1)
        assert 1 <= r["L_hat"]["estimate"] <= thm2.L_REF
        # relative precision reached: half-width <= 2% of the estimate
        assert (r["ci_high"] - r["ci_low"]) / 2 <= 0.02 * r["estimate"] * (1 + 1e-9)


def test_heavy_tails_break_the_lower_bound_but_are_not_violations():
    """Negative control: Cauchy entries collapse the stable rank; L_hat far above 13/3."""
    out = _run([thm2.Thm2Case(64, 64, "cauchy"), thm2.Thm2Case(64, 64, "student-t:1.5")], seed=1)
    for r in out["records"]:
        checks = _checks(r)
        assert checks["L-ref"]["verdict"] == "OUTSIDE-HYPOTHESES"
        assert checks["L-ref"]["observed"] == "bound-fails", checks["L-ref"]
        assert "heavy-tailed" in checks["L-ref"]["hypothesis_note"]
        assert checks["upper"]["verdict"] == "HOLDS"  # the upper bound needs no hypothesis
        assert r["verdict"] == "HOLDS"
        assert r["L_hat"]["ci_low"] > 2 * thm2.L_REF
    assert not out["summary"]["any_violated"]


def test_cauchy_L_hat_grows_with_size():
    """'Bounded across the sweep' fails for heavy tails: L_hat increases with the size."""
    out = _run([thm2.Thm2Case(n, n, "cauchy") for n in (8, 32, 128)], seed=2)
    l_hat = [r["L_hat"] for r in out["records"]]
    for small, large in zip(l_hat, l_hat[1:]):
        assert large["ci_low"] > small["ci_high"], l_hat
    law = out["summary"]["laws"]["cauchy / sn"]
    assert law["log_L_hat_vs_log_size_slope"] > 0.3


def test_broken_normalizer_is_caught_as_violated():
    """Negative control for the upper bound: dividing by 0.4 ||A||_sp multiplies Var by 6.25."""
    cases = [thm2.Thm2Case(8, 8, "gaussian", "sn-scaled:0.4"),
             thm2.Thm2Case(8, 8, "gaussian", "sn")]
    out = _run(cases, seed=3)
    broken, exact = out["records"]
    assert _checks(broken)["upper"]["verdict"] == "VIOLATED"
    assert broken["verdict"] == "VIOLATED"
    assert broken["estimate"] == pytest.approx(exact["estimate"] / 0.16, rel=0.05)
    assert exact["verdict"] == "HOLDS"
    assert out["summary"]["any_violated"]


def test_power_iteration_normalizer_matches_exact_after_many_iterations():
    a = np.random.default_rng(0).standard_normal((20, 6, 9))
    sigma = thm2._power_iteration_sigma(a, 500, np.random.default_rng(1))
    np.testing.assert_allclose(sigma, np.linalg.svd(a, compute_uv=False)[:, 0], rtol=1e-8)
    one_step = thm2._power_iteration_sigma(a, 1, np.random.default_rng(1))
    assert np.all(one_step <= sigma * (1 + 1e-12))  # a Rayleigh-type estimate never overshoots


def test_non_symmetric_variance_subtracts_the_mean():
    """For exponential entries E a_bar != 0 and Var = E X - (E Y)^2 < E X."""
    out = _run([thm2.Thm2Case(16, 16, "exponential")], seed=4)
    r = out["records"][0]
    assert r["mean_entry"]["ci"][0] > 0
    assert r["estimate"] < r["second_moment"]["estimate"]
    assert r["estimate"] == pytest.approx(
        r["second_moment"]["estimate"] - r["mean_entry"]["estimate"] ** 2, rel=1e-12)


def test_same_seed_same_numbers_different_seed_different_numbers():
    cases = [thm2.Thm2Case(8, 8, "gaussian"), thm2.Thm2Case(16, 4, "uniform")]
    first = _run(cases, seed=11)
    again = _run(cases, seed=11)
    other = _run(cases, seed=12)
    for a, b, c in zip(first["records"], again["records"], other["records"]):
        assert a["moments"] == b["moments"]
        assert a["estimate"] != c["estimate"]


def test_workers_do_not_change_results():
    cases = [thm2.Thm2Case(8, 8, "gaussian"), thm2.Thm2Case(64, 32, "uniform")]
    serial = _run(cases, seed=5, workers=1)
    pooled = _run(cases, seed=5, workers=2)
    for a, b in zip(serial["records"], pooled["records"]):
        assert a["moments"] == b["moments"]
        assert a["n_samples"] == b["n_samples"]


def test_store_resume_reuses_finished_cases(tmp_path):
    cases = [thm2.Thm2Case(8, 8, "gaussian"), thm2.Thm2Case(12, 5, "gaussian")]
    store = ResultStore(tmp_path / "store")
    first = _run(cases, seed=6, store=store)
    assert first["resumed_cases"] == 0
    second = _run(cases, seed=6, store=store)
    assert second["resumed_cases"] == 2
    for a, b in zip(first["records"], second["records"]):
        assert a["moments"] == b["moments"] and a["verdict"] == b["verdict"]


def test_records_carry_provenance_and_every_bound():
    out = _run([thm2.Thm2Case(8, 8, "gaussian")], seed=9)
    r = out["records"][0]
    for key in ("claim", "params", "estimate", "ci_low", "ci_high", "bounds", "verdict",
                "n_samples", "seed", "L_hat", "bai_yin_ratio", "checks", "provenance"):
        assert key in r, key
    case_prov = r["provenance"]
    assert case_prov["seed"] == 9 and case_prov["git_commit"]
    assert case_prov["config"]["stopping_rule"]["precision"] == FAST.precision
    assert case_prov["config"]["params"] == r["params"]
    assert set(r["bounds"]) >= {"upper_1_over_max", "gaussian_lower", "L_ref_lower"}
    prov = out["provenance"]
    assert prov["seed"] == 9
    assert {"numpy", "scipy", "python"} <= set(prov["versions"])
    assert prov["git_commit"] and prov["device"]["kind"] == "cpu"
    assert prov["config"]["precision"] == FAST.precision


def test_default_sweep_covers_the_bar():
    cases = thm2.default_sweep()
    main = [c for c in cases if c.dist in ("gaussian", "uniform")]
    shapes = {(c.m, c.n) for c in main}
    assert len(shapes) >= 40
    assert (2, 2) in shapes and (4096, 4096) in shapes
    assert {c.dist for c in cases} >= {"cauchy", "exponential"}


@pytest.mark.parametrize("bad, message", [
    ("0x5", "not positive|malformed"),
    ("8by8", "malformed"),
    ("8x", "malformed"),
    ("", "at least one shape"),
])
def test_bad_shapes_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        thm2.cases_from_grid(bad, "gaussian")


@pytest.mark.parametrize("bad", ["sn-power:0", "sn-scaled:-1", "spectral", "sn-power:x"])
def test_bad_normalizer_is_refused(bad):
    with pytest.raises(ValueError, match="normalizer"):
        thm2.make_tasks([thm2.Thm2Case(4, 4, "gaussian", bad)])
