"""Claims P2 (rescaling invariance) and T1 (equal spectral norms minimize the gradient).

Every check is shown to pass where the theory says it must (homogeneous activations, no or
scaled biases: to float64 round-off) and to fail clearly where it must not hold (unscaled biases,
smooth activations, a rescaling whose product is not 1, unscaled biases in the gradient identity).
Fast paths are compared with slow references: autograd gradients with central differences,
operator norms with the SVD of the dense expanded matrix, the numerical minimizer with AM-GM.
"""
from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch

from sntheory.claims import prop2, thm1
from sntheory.claims.prop2 import (UNIT_ROUNDOFF, check_prop2, check_prop2_run,
                                   exact_product_error, float64_snapshot, forward_trace,
                                   layer_gammas, output_roundoff_bound, p2_deviation,
                                   rescaling_draws)
from sntheory.claims.thm1 import (check_thm1, check_thm1_run, excess_ratio,
                                  gradient_identity_errors, gradient_roundoff_bound,
                                  helmert_basis, layer_gradients, layer_operator_norms,
                                  minimize_gradient_norm)
from sntheory.conv.dense import dense_operator_norm
from sntheory.lab.nets import NetConfig, build_discriminator
from sntheory.report.lab_figures import (prop2_figure, thm1_rescaling_figure,
                                         thm1_scatter_figure)
from sntheory.report.rows import ClaimRow


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _disc(arch="dcgan", activation="leaky_relu:0.1", bias=True, normalizer="snw", seed=0,
          width=4, depth=2, image_size=8):
    cfg = NetConfig(arch=arch, image_size=image_size, channels=1, width=width, depth=depth,
                    activation=activation, bias=bias)
    return build_discriminator(cfg, normalizer, seed=seed)


def _batch(n=8, size=8, seed=1):
    return torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _rows(result, **match):
    return [r for r in result.rows if all(r.extra.get(k) == v for k, v in match.items())]


# --------------------------------------------------------------------------------------------------
# P2


@pytest.fixture(scope="module")
def p2_biased():
    return check_prop2(_disc(), _batch(), seed=0, n_draws=4)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu:0.2"])
@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_p2_homogeneous_bias_free_holds_to_roundoff(activation, arch):
    disc = _disc(arch=arch, activation=activation, bias=False, width=6, depth=2)
    result = check_prop2(disc, _batch(), seed=3, n_draws=3, controls=())
    inside = [r for r in result.records if r["in_hypotheses"]]
    # measured: ~1e-3 of the round-off bound (a few u relative to max |D|)
    assert inside and max(r["dev_over_bound"] for r in inside) < 0.1
    for row in result.rows:
        if row.hypotheses_hold:
            assert row.verdict == "HOLDS", row
    # the extreme draws span 1e-3 .. 1e3
    extreme = [r for r in inside if r["draw_kind"].startswith("extreme")]
    assert extreme and all(r["log10_c_min"] == pytest.approx(-3, abs=1e-9) and
                           r["log10_c_max"] == pytest.approx(3, abs=1e-9) for r in extreme)


def test_p2_scaled_biases_hold_unscaled_biases_deviate(p2_biased):
    by_mode = {(r.extra["activation"], r.extra["bias_mode"]): r for r in p2_biased.rows}
    for act in ("leaky_relu:0.1", "relu"):
        for mode in ("free", "scaled"):
            row = by_mode[(act, mode)]
            assert row.verdict == "HOLDS" and row.hypotheses_hold, row
            assert row.measured <= row.bound
        control = by_mode[(act, "unscaled")]
        assert control.verdict == "OUTSIDE-HYPOTHESES" and not control.hypotheses_hold
        assert control.note.startswith("observed: deviates")
        assert control.extra["max_dev_over_bound"] > 1e6
    assert p2_biased.summary["bias_source"] == "discriminator"


def test_p2_smooth_activations_deviate(p2_biased):
    for act in prop2.SMOOTH_CONTROLS:
        (row,) = [r for r in p2_biased.rows if r.extra["activation"] == act]
        assert row.verdict == "OUTSIDE-HYPOTHESES", act
        assert row.note.startswith("observed: deviates"), row.note
        assert row.extra["max_dev_over_bound"] > 1e6, act
        assert row.extra["bias_mode"] == "free"


def test_p2_on_a_smooth_discriminator_is_outside_the_hypotheses():
    result = check_prop2(_disc(activation="tanh"), _batch(), seed=0, n_draws=2,
                         extra_homogeneous=(), controls=())
    assert [r.extra["bias_mode"] for r in result.rows] == ["free"]
    (row,) = result.rows
    assert not row.hypotheses_hold and row.note.startswith("observed: deviates")


def test_p2_synthetic_biases_for_bias_free_nets():
    result = check_prop2(_disc(arch="mlp", bias=False, width=6), _batch(), seed=0, n_draws=2,
                         controls=())
    assert result.summary["bias_source"].startswith("synthetic")
    unscaled = [r for r in result.rows if r.extra["bias_mode"] == "unscaled"]
    assert unscaled and all(r.extra["max_dev_over_bound"] > 1e6 for r in unscaled)


def test_p2_catches_a_rescaling_whose_product_is_not_one():
    """Negative control of the tolerance itself: a product off by 1e-9 is flagged, so the
    round-off bound cannot hide a real deviation of that size."""
    disc = _disc(arch="mlp", bias=False, width=6)
    snap = float64_snapshot(disc)
    x = _batch().double()
    good = p2_deviation(snap, x, [2.0, 0.25, 2.0])          # exact powers of two: product 1
    assert good["prod_c_minus_1"] == 0.0 and good["dev_over_bound"] <= 1
    bad = p2_deviation(snap, x, [2.0 * (1 + 1e-9), 0.25, 2.0])
    assert bad["prod_c_minus_1"] == pytest.approx(1e-9, rel=1e-6)
    assert bad["dev_over_bound"] > 10
    assert bad["max_rel_dev"] == pytest.approx(1e-9, rel=1e-3)


def _longdouble_mlp(snap, x):
    """Slow reference for an MLP: forward and backprop in numpy long double (64-bit mantissa on
    x86, 2^11 times finer than float64; 'exact' for bounding float64 rounding)."""
    ld = np.longdouble
    slope = 0.1
    ws = [w.numpy().astype(ld) for w in snap.weights]
    bs = [b.numpy().astype(ld) for b in snap.biases]
    h = x.flatten(1).numpy().astype(ld)
    inputs, pres = [], []
    for i, (w, b) in enumerate(zip(ws, bs)):
        inputs.append(h)
        pre = h @ w.T + b
        pres.append(pre)
        h = np.where(pre > 0, pre, slope * pre) if i < len(ws) - 1 else pre
    z = h[:, 0]
    grads = [None] * len(ws)
    delta = np.ones((x.shape[0], 1), dtype=ld) / ld(x.shape[0])
    for i in reversed(range(len(ws))):
        grads[i] = delta.T @ inputs[i]
        if i:
            delta = (delta @ ws[i]) * np.where(pres[i - 1] > 0, ld(1), ld(slope))
    return z, grads


def test_roundoff_bounds_contain_the_float64_error_against_a_long_double_reference():
    """The first-order bounds of prop2/thm1 against the actual float64 error of the output and of
    the autograd gradients (reference: long double), on a wide MLP with biases."""
    if np.finfo(np.longdouble).eps >= 1e-18:
        pytest.skip("numpy long double is not extended precision on this platform")
    cfg = NetConfig(arch="mlp", image_size=8, channels=1, width=96, depth=3, bias=True,
                    activation="leaky_relu:0.1")
    disc = build_discriminator(cfg, "none", seed=3)
    snap = float64_snapshot(disc)
    x = _batch(n=32, seed=4).double()
    trace = forward_trace(snap.disc, x, snap.weights, snap.biases, snap.activation)
    assert torch.equal(trace.z, snap.disc.functional_forward(x, list(snap.weights),
                                                             list(snap.biases)))
    z_ref, g_ref = _longdouble_mlp(snap, x)
    err = np.abs(trace.z.numpy().astype(np.longdouble) - z_ref).astype(float)
    bound = output_roundoff_bound(snap.disc, trace).numpy()
    assert np.all(err <= bound)
    assert err.max() > 0 and np.max(err / bound) > 1e-5     # not vacuous: within 1e5 of it
    grads = layer_gradients(snap, x, snap.weights, snap.biases)
    sigma_up = [n["upper"] for n in layer_operator_norms(snap)]
    gbound = gradient_roundoff_bound(snap.disc, trace, snap.weights, sigma_up, grads, 1.0)
    for t, (g, ref) in enumerate(zip(grads, g_ref)):
        gerr = float(np.sqrt(np.sum((g.numpy().astype(np.longdouble) - ref) ** 2)))
        assert gerr <= gbound[t], t
        assert gerr > 0 and gerr / gbound[t] > 1e-6, t
    ks = [64, 96, 96, 96]
    L = 4
    assert layer_gammas(snap.disc) == pytest.approx(
        [(k + L + 3) * UNIT_ROUNDOFF / (1 - (k + L + 3) * UNIT_ROUNDOFF) for k in ks], rel=1e-15)


def test_rescaling_draws_are_seeded_positive_with_unit_product():
    for L in (1, 2, 3, 8):
        draws = rescaling_draws(L, seed=5, n_draws=4)
        assert len(draws) == 6
        for _, c in draws:
            assert c.shape == (L,) and np.all(c > 0)
            gamma_L = L * UNIT_ROUNDOFF / (1 - L * UNIT_ROUNDOFF)
            assert abs(exact_product_error(c)) <= gamma_L
    a = rescaling_draws(4, seed=5, n_draws=3)
    b = rescaling_draws(4, seed=5, n_draws=3)
    c = rescaling_draws(4, seed=6, n_draws=3)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][1], c[0][1])
    assert not np.array_equal(a[0][1], rescaling_draws(4, seed=5, n_draws=3, stream=1)[0][1])


def test_p2_is_reproducible_json_flat_and_leaves_the_discriminator_untouched():
    disc = _disc()
    disc.train()
    u_before = [b.clone() for b in disc.buffers()]
    x = _batch()
    r1 = check_prop2(disc, x, seed=4, n_draws=2, step=3)
    r2 = check_prop2(disc, x, seed=4, n_draws=2, step=3)
    assert r1.records == r2.records
    assert disc.training and all(torch.equal(a, b) for a, b in zip(u_before, disc.buffers()))
    for rec in r1.records:
        assert rec["step"] == 3
        assert all(isinstance(v, (int, float, str, bool)) for v in rec.values()), rec
    data = json.loads(json.dumps(r1.to_json(), allow_nan=False))
    back = prop2.LabCheckResult.from_json(data)
    assert back.records == r1.records and all(isinstance(r, ClaimRow) for r in back.rows)
    assert data["provenance"]["seed"] == 4


def test_p2_errors_name_the_argument():
    disc = _disc()
    with pytest.raises(ValueError, match="`x` must have shape"):
        check_prop2(disc, torch.zeros(2, 3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="`x` must be finite"):
        check_prop2(disc, torch.full((2, 1, 8, 8), math.nan), seed=0)
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        check_prop2(disc, [[1.0]], seed=0)
    with pytest.raises(ValueError, match="`seed`"):
        check_prop2(disc, _batch(), seed=-1)
    with pytest.raises(ValueError, match="`n_draws`"):
        check_prop2(disc, _batch(), seed=0, n_draws=0)
    with pytest.raises(TypeError, match="`disc`"):
        check_prop2(torch.nn.Linear(2, 1), _batch(), seed=0)
    with pytest.raises(ValueError, match="`activation`"):
        check_prop2(disc, _batch(), seed=0, controls=("sigmoidish",))
    snap = float64_snapshot(disc)
    with pytest.raises(ValueError, match="`c` must be finite and > 0"):
        p2_deviation(snap, _batch().double(), [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="`c` must hold one factor per layer"):
        p2_deviation(snap, _batch().double(), [1.0, 1.0])
    with pytest.raises(ValueError, match="`bias_mode`"):
        p2_deviation(snap, _batch().double(), [1.0, 1.0, 1.0], bias_mode="half")


# --------------------------------------------------------------------------------------------------
# T1: the pieces against references


def test_layer_gradients_match_central_differences():
    disc = _disc(arch="dcgan", width=3)
    snap = float64_snapshot(disc)
    x = _batch(n=4).double()
    grads = layer_gradients(snap, x, snap.weights, snap.biases)
    rng = np.random.default_rng(0)
    h = 1e-6
    for t, w in enumerate(snap.weights):
        v = torch.from_numpy(rng.standard_normal(tuple(w.shape)))

        def at(s):
            ws = list(snap.weights)
            ws[t] = w + s * v
            with torch.no_grad():
                return float(snap.disc.functional_forward(x, ws, list(snap.biases)).mean())

        fd = (at(h) - at(-h)) / (2 * h)
        exact = float((grads[t] * v).sum())
        assert fd == pytest.approx(exact, rel=1e-6, abs=1e-9), t


def test_operator_norms_match_the_dense_svd():
    disc = _disc(arch="dcgan", width=3, normalizer="none")
    snap = float64_snapshot(disc)
    norms = layer_operator_norms(snap, rtol=1e-10)
    for info, w, n in zip(disc.layer_info, snap.weights, norms):
        kernel = w.numpy()
        if info.kind == "conv":
            ref = dense_operator_norm(kernel, info.geometry)
        else:
            ref = float(np.linalg.svd(kernel, compute_uv=False)[0])
        assert n["lower"] <= ref * (1 + 1e-12) and ref <= n["upper"] * (1 + 1e-12)
        assert n["value"] == pytest.approx(ref, rel=1e-8)


def test_minimizer_agrees_with_c_proportional_to_g():
    rng = np.random.default_rng(0)
    for L in (1, 2, 3, 5, 9):
        for _ in range(5):
            g = np.exp(3 * rng.standard_normal(L))
            res = minimize_gradient_norm(g)
            assert res["success"]
            assert res["max_rel_diff"] < 1e-10
            assert np.prod(res["c_numeric"]) == pytest.approx(1.0, rel=1e-12)
            assert res["min_numeric"] == pytest.approx(math.sqrt(L) * np.exp(np.log(g).mean()),
                                                       rel=1e-12)
            # and it is a minimum: random feasible c never do better
            for _ in range(20):
                logc = rng.standard_normal(L)
                c = np.exp(logc - logc.mean())
                assert math.sqrt(np.sum(g ** 2 / c ** 2)) >= res["min_numeric"] * (1 - 1e-12)
    H = helmert_basis(4)
    assert np.allclose(H.T @ H, np.eye(3)) and np.allclose(H.sum(axis=0), 0)
    with pytest.raises(ValueError, match="`g` must be finite and > 0"):
        minimize_gradient_norm([1.0, 0.0])


def test_gradient_identity_holds_with_scaled_biases_and_fails_unscaled():
    disc = _disc()
    snap = float64_snapshot(disc)
    x = _batch().double()
    sigma_up = [n["upper"] for n in layer_operator_norms(snap)]
    for c in ([10.0, 1e-3, 100.0], [0.5, 3.0, 2.0 / 3.0]):
        ok = gradient_identity_errors(snap, x, c, bias_mode="scaled", sigma_upper=sigma_up)
        assert max(ok["err_over_bound"]) < 0.1       # measured ~1e-3
        assert max(ok["rel_err"]) < 1e-13
        bad = gradient_identity_errors(snap, x, c, bias_mode="unscaled", sigma_upper=sigma_up)
        assert max(bad["err_over_bound"]) > 1e6


# --------------------------------------------------------------------------------------------------
# T1: the check


@pytest.fixture(scope="module")
def t1_leaky():
    return check_thm1(_disc(), _batch(), seed=0, n_rescalings=5, target_geomean=1.75, step=2)


def test_t1_identity_rows_hold_and_the_minimizer_agrees(t1_leaky):
    identity = _rows(t1_leaky, check="identity")
    assert len(identity) == 3 and all(r.verdict == "HOLDS" for r in identity)
    (minimizer,) = _rows(t1_leaky, check="minimizer")
    assert minimizer.verdict == "HOLDS" and minimizer.measured < 1e-6
    (excess,) = [r for r in t1_leaky.records if r["kind"] == "excess"]
    assert excess["minimizer_max_rel_diff"] < 1e-10
    assert excess["excess_ratio"] > 1.0
    # autograd at c* and at the minimizer agree with the closed form sqrt(AM/GM)
    assert excess["excess_ratio"] == pytest.approx(excess["excess_ratio_formula"], rel=1e-10)
    layers = sorted((r for r in t1_leaky.records if r["kind"] == "layer"),
                    key=lambda r: r["layer"])
    g = [r["grad_eff_fro"] for r in layers]
    s = [r["op_norm_exact"] for r in layers]
    assert excess["excess_ratio_formula"] == pytest.approx(excess_ratio(g, s), rel=1e-12)
    assert all(r["op_norm_lower"] <= r["op_norm_exact"] <= r["op_norm_upper"] for r in layers)


def test_t1_scatter_residuals_do_not_depend_on_the_rescaling(t1_leaky):
    pts = [r for r in t1_leaky.records if r["kind"] == "scatter"]
    assert len(pts) == 5 * 3
    for r in pts:
        assert r["geomean_op_norm"] == pytest.approx(1.75, rel=1e-12)
        same = [p for p in pts if (p["layer_i"], p["layer_j"]) == (r["layer_i"], r["layer_j"])]
        assert r["log_residual"] == pytest.approx(same[0]["log_residual"], abs=1e-12)
    (hyp,) = _rows(t1_leaky, check="hypothesis")
    (excess,) = [r for r in t1_leaky.records if r["kind"] == "excess"]
    assert hyp.measured == excess["log_residual_sd"]
    assert hyp.verdict == ("HOLDS" if hyp.measured <= hyp.bound else "INCONCLUSIVE")
    assert hyp.statement.startswith("T1 hypothesis: log-residual sd = ")


def test_t1_scatter_matches_gradients_of_the_rescaled_network(t1_leaky):
    """The scatter uses g'_t = (prod d / d_t) g_t; recompute one point by autograd."""
    disc = _disc()
    snap = float64_snapshot(disc)
    x = _batch().double()
    sigma = np.array([r["op_norm_exact"] for r in sorted(
        (r for r in t1_leaky.records if r["kind"] == "layer"), key=lambda r: r["layer"])])
    (_, c), = rescaling_draws(3, seed=0, n_draws=1, log_sds=(1.0,), extreme=False, stream=2)
    d = 1.75 / math.exp(np.mean(np.log(sigma))) * c
    ws = [w * float(dt) for w, dt in zip(snap.weights, d)]
    cum = np.cumprod(d)
    bs = [b * float(cum[i]) for i, b in enumerate(snap.biases)]
    g = [float(torch.linalg.vector_norm(t)) for t in layer_gradients(snap, x, ws, bs)]
    point = [r for r in t1_leaky.records if r["kind"] == "scatter" and r["rescaling"] == 0
             and (r["layer_i"], r["layer_j"]) == (0, 2)][0]
    assert point["grad_ratio"] == pytest.approx(g[0] / g[2], rel=1e-10)
    assert point["norm_ratio"] == pytest.approx(d[2] * sigma[2] / (d[0] * sigma[0]), rel=1e-12)


def _deep_linear(orthogonal: bool):
    """A deep linear net (leaky_relu:1 = identity) of scaled orthogonal layers: g_t ||w_t|| is the
    same for every layer (= ||w_L|| prod_{i<L} s_i ||mean x||), so it lies in the class D."""
    cfg = NetConfig(arch="mlp", image_size=4, channels=1, width=16, depth=3, bias=False,
                    activation="leaky_relu:1")
    disc = build_discriminator(cfg, "none", seed=0).double()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for s, layer in zip((0.5, 2.0, 3.0), disc.layers[:-1]):
            a = torch.randn(16, 16, generator=gen, dtype=torch.float64)
            q = torch.linalg.qr(a)[0] if orthogonal else a
            layer.weight.copy_(s * q)
        disc.layers[-1].weight.copy_(0.7 * torch.randn(1, 16, generator=gen, dtype=torch.float64))
    return disc


def test_t1_excess_is_one_in_the_class_d_and_above_one_outside():
    x = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    inside = check_thm1(_deep_linear(True), x, seed=0, n_rescalings=3)
    assert abs(inside.summary["excess_ratio"] - 1) < 1e-12
    assert inside.summary["log_residual"]["sd_about_diagonal"] < 1e-12
    assert all(r.verdict == "HOLDS" for r in inside.rows)
    outside = check_thm1(_deep_linear(False), x, seed=0, n_rescalings=3)
    assert outside.summary["excess_ratio"] > 1 + 1e-3
    assert outside.summary["log_residual"]["sd_about_diagonal"] > 1e-3
    random_net = check_thm1(_disc(arch="mlp", width=8, depth=3), _batch(), seed=0,
                            n_rescalings=2)
    assert random_net.summary["excess_ratio"] > 1 + 1e-3


def test_t1_smooth_activation_is_outside_and_deviates():
    result = check_thm1(_disc(activation="tanh"), _batch(), seed=0, n_rescalings=2)
    assert all(r.verdict == "OUTSIDE-HYPOTHESES" and not r.hypotheses_hold for r in result.rows)
    for row in _rows(result, check="identity"):
        assert row.note.startswith("observed: deviates") and row.measured > 1e6 * row.bound


def test_t1_hypothesis_tolerance_gives_inconclusive_not_violated():
    result = check_thm1(_disc(), _batch(), seed=0, n_rescalings=2, residual_sd_tol=1e-6,
                        excess_tol=1e-9)
    (hyp,) = _rows(result, check="hypothesis")
    (exc,) = _rows(result, check="excess")
    assert hyp.verdict == "INCONCLUSIVE" and exc.verdict == "INCONCLUSIVE"
    assert not any(r.verdict == "VIOLATED" for r in result.rows)


def test_t1_is_reproducible_and_json_flat(t1_leaky):
    again = check_thm1(_disc(), _batch(), seed=0, n_rescalings=5, target_geomean=1.75, step=2)
    assert again.records == t1_leaky.records
    for rec in t1_leaky.records:
        assert rec["step"] == 2
        assert all(isinstance(v, (int, float, str, bool)) for v in rec.values()), rec
    json.dumps(t1_leaky.to_json(), allow_nan=False)


def test_t1_errors_name_the_argument():
    disc = _disc()
    with pytest.raises(ValueError, match="`target_geomean`"):
        check_thm1(disc, _batch(), seed=0, target_geomean=-1.0)
    with pytest.raises(ValueError, match="`biases`"):
        check_thm1(disc, _batch(), seed=0, biases="some")
    with pytest.raises(ValueError, match="`n_rescalings`"):
        check_thm1(disc, _batch(), seed=0, n_rescalings=0)
    with pytest.raises(ValueError, match="`x` must have shape"):
        check_thm1(disc, torch.zeros(2, 1, 4, 4), seed=0)


# --------------------------------------------------------------------------------------------------
# trained discriminators and run directories


def _trained(steps=30, normalizer="snw", seed=0):
    """A few dozen Adam steps of WGAN-style training on random data (two Gaussian blobs)."""
    disc = _disc(normalizer=normalizer, seed=seed, width=4)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed + 10)
    for _ in range(steps):
        real = 0.5 * torch.randn(16, 1, 8, 8, generator=gen) + 0.3
        fake = torch.rand(16, 1, 8, 8, generator=gen) * 2 - 1
        loss = disc(fake).mean() - disc(real).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return disc


@pytest.mark.parametrize("normalizer", ["snw", "none"])
def test_briefly_trained_discriminators(normalizer):
    disc = _trained(normalizer=normalizer)
    x = _batch(n=16)
    p2 = check_prop2(disc, x, seed=1, n_draws=1, controls=("tanh", "gelu"))
    assert all(r.verdict == "HOLDS" for r in p2.rows if r.hypotheses_hold)
    assert all(r.note.startswith("observed: deviates") for r in p2.rows if not r.hypotheses_hold)
    t1 = check_thm1(disc, x, seed=1, n_rescalings=4, n_identity_draws=2)
    assert all(r.verdict == "HOLDS" for r in _rows(t1, check="identity"))
    assert _rows(t1, check="minimizer")[0].verdict == "HOLDS"
    assert t1.summary["excess_ratio"] >= 1 - 1e-12


def _fake_run(monkeypatch, disc, step=7):
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    loaded = types.SimpleNamespace(disc=disc, gen=None, config=None, step=step,
                                   data=types.SimpleNamespace(images=images))
    calls = []

    def load_run(run_dir, step=None):
        calls.append((run_dir, step))
        return loaded

    try:
        import sntheory.lab.train as train_module
    except ImportError:   # the trainer not there: stand in a module with its API
        train_module = types.ModuleType("sntheory.lab.train")
        monkeypatch.setitem(sys.modules, "sntheory.lab.train", train_module)
    monkeypatch.setattr(train_module, "load_run", load_run, raising=False)
    return calls


def test_run_checks_with_a_monkeypatched_loader(tmp_path, monkeypatch):
    calls = _fake_run(monkeypatch, _disc())
    p2 = check_prop2_run(tmp_path, n_samples=12, seed=0, n_draws=2)
    t1 = check_thm1_run(tmp_path, step=7, n_samples=12, seed=0, n_rescalings=2)
    assert calls[0][1] is None and calls[1][1] == 7
    for result in (p2, t1):
        assert {r["step"] for r in result.records} == {7}
        assert {r["batch_size"] for r in result.records} == {12}
        assert all(r.experiment == str(tmp_path) and "step 7" in r.setting for r in result.rows)
    with pytest.raises(FileNotFoundError, match="`run_dir`"):
        check_prop2_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="`n_samples`"):
        check_thm1_run(tmp_path, n_samples=0)


def test_run_checks_on_a_real_training_run(tmp_path):
    """End to end with sntheory.lab.train: a 4-step SNw run on the embedded digits."""
    train = pytest.importorskip("sntheory.lab.train")
    cfg = {"run": {"seed": 0, "steps": 4, "checkpoint_every": 4, "sample_every": 0,
                   "threads": 1},
           "data": {"spec": "digits", "image_size": 8, "limit": 64},
           "net": {"arch": "dcgan", "width": 4, "depth": 2}, "normalizer": {"name": "snw"},
           "train": {"batch_size": 8}}
    train.train(cfg, tmp_path / "run", resume=False, progress=False)
    p2 = check_prop2_run(tmp_path / "run", n_samples=8, seed=0, n_draws=1)
    t1 = check_thm1_run(tmp_path / "run", n_samples=8, seed=0, n_rescalings=2)
    assert p2.summary["in_hypotheses_holds"]
    assert all(r.verdict == "HOLDS" for r in _rows(t1, check="identity"))
    assert {r["step"] for r in p2.records + t1.records} == {4}


# --------------------------------------------------------------------------------------------------
# figures


def test_figures_are_written(tmp_path, p2_biased, t1_leaky):
    png = b"\x89PNG"
    p = prop2_figure(p2_biased, tmp_path / "p2.png")
    s = thm1_scatter_figure({"dcgan": t1_leaky, "dict": t1_leaky.to_json()}, tmp_path / "s.png")
    r = thm1_rescaling_figure([t1_leaky], tmp_path / "sub" / "r.png")
    for path in (p, s, r):
        assert path.read_bytes()[:4] == png and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="expected a P2 result"):
        prop2_figure(t1_leaky, tmp_path / "x.png")
    with pytest.raises(TypeError, match="`results`"):
        thm1_scatter_figure(42, tmp_path / "y.png")
    assert thm1.CLAIM == "T1"


def test_t1_with_every_unit_dead_is_inconclusive_not_a_crash(tmp_path):
    """All first-layer units negative on non-negative inputs: every layer gradient is 0, the
    infimum over rescalings is 0 and not attained; the check says so."""
    disc = _disc(arch="mlp", activation="relu", bias=False, normalizer="none", width=6)
    with torch.no_grad():
        disc.layers[0].weight.copy_(-disc.layers[0].weight.abs())
    x = _batch().abs()
    result = check_thm1(disc, x, seed=0, n_rescalings=2)
    assert [r.verdict for r in result.rows if r.extra["check"] != "identity"] == \
        ["INCONCLUSIVE"] * 3
    assert all("zero gradient" in r.note for r in result.rows if r.extra["check"] != "identity")
    assert all(r["grad_is_zero"] for r in result.records if r["kind"] == "layer")
    assert not [r for r in result.records if r["kind"] == "scatter"]
    thm1_rescaling_figure(result, tmp_path / "dead.png")
