"""Claim T3 (BSN on conv kernels): statistics against SVD references, verdicts, controls."""
from __future__ import annotations

import math

import numpy as np
import pytest

from sntheory.claims import thm3
from sntheory.cli import main
from sntheory.monte_carlo import StoppingRule
from sntheory.random_weights import block_generator, parse_distribution

FAST = StoppingRule(precision=0.02, min_samples=30)


def _checks(record):
    return {c["name"]: c for c in record["checks"]}


@pytest.mark.parametrize("dims", [(2, 3, 3, 3), (5, 2, 1, 1), (3, 4, 2, 5)])
@pytest.mark.parametrize("dist", ["gaussian", "exponential"])
def test_sample_block_statistics_equal_svd_reference(dims, dist):
    params = thm3.Thm3Case(*dims, dist).params
    stats = thm3.sample_block(params, block_generator(3, (4, 5), 0), 40)
    w = parse_distribution(dist).sample(block_generator(3, (4, 5), 0), (40, *dims))
    c_out, c_in, kh, kw = dims
    s_hat = np.linalg.svd(w.reshape(40, c_out, -1), compute_uv=False)[:, 0]
    s_hat_t = np.linalg.svd(np.swapaxes(w, 1, 2).reshape(40, c_in, -1), compute_uv=False)[:, 0]
    n = w[0].size
    fro2 = (w ** 2).reshape(40, -1).sum(axis=1)
    total = w.reshape(40, -1).sum(axis=1)
    sigma = (s_hat + s_hat_t) / 2
    np.testing.assert_allclose(stats[:, 0], fro2 / (sigma ** 2 * n), rtol=1e-9)
    np.testing.assert_allclose(stats[:, 1], total / (sigma * n), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(stats[:, 2], fro2 / (s_hat ** 2 * n), rtol=1e-9)
    # the upper bound is deterministic: every sample obeys it
    bound = 4 / (kh * kw * (math.sqrt(c_in) + math.sqrt(c_out)) ** 2)
    assert np.all(stats[:, 0] <= bound * (1 + 1e-12))
    assert np.all(stats[:, 2] <= 1 / max(c_out, c_in * kh * kw) * (1 + 1e-12))


def test_gaussian_and_uniform_hold_between_the_bounds():
    out = thm3.run([thm3.Thm3Case(*d, law) for law in ("gaussian", "uniform")
                    for d in ((16, 16, 3, 3), (8, 32, 3, 3), (32, 16, 4, 4), (16, 8, 1, 1))],
                   seed=0, rule=FAST, progress=False)
    assert not out["summary"]["any_violated"]
    for r in out["records"]:
        assert r["verdict"] == "HOLDS", r["params"]
        assert r["ci_high"] < r["bounds"]["upper"]
        assert r["L_hat"]["ci_high"] < thm3.L_REF
        if r["params"]["dist"] == "gaussian":
            assert r["ci_low"] > r["bounds"]["gaussian_lower"]
    # SNw on the same kernels: the variance ratio follows the shape (c_out > c_in k raises it)
    by_shape = {(r["params"]["c_out"], r["params"]["c_in"]): r for r in out["records"]
                if r["params"]["dist"] == "gaussian"}
    assert by_shape[(16, 16)]["snw"]["ratio_to_bsn"] == pytest.approx(1.0, abs=0.03)
    assert by_shape[(8, 32)]["snw"]["ratio_to_bsn"] < 0.95


def test_heavy_tails_fail_the_lower_bound_outside_hypotheses():
    out = thm3.run([thm3.Thm3Case(32, 32, 3, 3, "cauchy")], seed=1, rule=FAST, progress=False)
    (r,) = out["records"]
    checks = _checks(r)
    assert checks["L-ref"]["verdict"] == "OUTSIDE-HYPOTHESES"
    assert checks["L-ref"]["observed"] == "bound-fails"
    assert checks["upper"]["verdict"] == "HOLDS"
    assert r["verdict"] == "HOLDS" and not out["summary"]["any_violated"]


def test_small_kernels_are_outside_the_shape_hypotheses():
    out = thm3.run([thm3.Thm3Case(16, 2, 1, 1, "gaussian")], seed=2, rule=FAST, progress=False)
    checks = _checks(out["records"][0])
    assert checks["L-ref"]["verdict"] == "OUTSIDE-HYPOTHESES"
    assert "c_in k, c_out k >= 3" in checks["L-ref"]["hypothesis_note"]
    assert checks["gauss-lb"]["verdict"] == "HOLDS"  # the explicit bound needs no shape condition


def test_a_wrong_bound_is_caught():
    """Negative control for the check itself: claiming Var <= Xavier's 2/F/2 must be VIOLATED."""
    out = thm3.run([thm3.Thm3Case(16, 16, 3, 3, "gaussian")], seed=3, rule=FAST, progress=False)
    record = dict(out["records"][0])
    record["bounds"] = dict(record["bounds"], upper=record["bounds"]["xavier_2_over_fan_sum"] / 2)
    again = thm3.finalize_sweep([record])
    assert _checks(again["records"][0])["upper"]["verdict"] == "VIOLATED"
    assert again["summary"]["any_violated"]


def test_default_sweep_and_parsing():
    cases = thm3.default_sweep()
    assert len({(c.c_out, c.c_in, c.kh, c.kw) for c in cases}) >= 20
    assert thm3.parse_kernels("64x32x3x3, 1x2x3x4") == [(64, 32, 3, 3), (1, 2, 3, 4)]


@pytest.mark.parametrize("bad, message", [
    ("64x64x3", "malformed"), ("0x4x3x3", "malformed|not positive"), ("", "at least one"),
    ("axbxcxd", "malformed"),
])
def test_bad_kernels_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        thm3.parse_kernels(bad)


def test_cli_check_thm3(tmp_path, capsys):
    out_png = tmp_path / "t3.png"
    code = main(["check", "thm3", "--kernels", "16x16x3x3,8x4x4x4", "--dist", "gaussian",
                 "--precision", "0.03", "--no-store", "--quiet", "--workers", "1",
                 "--plot", str(out_png)])
    assert code == 0
    text = capsys.readouterr().out
    assert "Theorem 3" in text and "16x16x3x3" in text and "HOLDS" in text
    assert out_png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["--kernels", "3x3"], "malformed"), (["--dist", "nope"], "dist"),
    (["--precision", "0"], "precision"),
])
def test_cli_thm3_bad_arguments(args, message, capsys):
    assert main(["check", "thm3", *args, "--no-store", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sntheory: error:") and message in err
