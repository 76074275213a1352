"""Tests of sntheory.plugin: the plug-in contract, the sanity battery, ``sntheory try``.

Contract: every way of naming a normalizer (built-in, registered, import path, file path, object)
and every validation failure, each with the ``failure`` code it must carry. Battery: the exact
pieces against slow references (renormalized signal propagation against the plain float64 pass
with autograd; layer norms and the reuse shortcut against dense SVDs of the expanded matrices; the
least-squares fit against a known law), then the verdict criteria on normalizers whose failure is
known in advance -- dividing by 100 ||W||_F (vanishing), no normalization with a large init
(exploding), SNw scaled by 3 (Lipschitz budget exceeded unless declared) -- with SNw not flagged.
Every battery run uses a tiny configuration (seconds); the quick profile is exercised by
``sntheory try`` in ``experiments/try_example/README.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sntheory.cli_try import parse_option, register
from sntheory.conv import expanded_matrix
from sntheory.normalizers import snw_normalize
from sntheory.plugin import (BatteryConfig, NormalizerContractError, NormalizerContractTypeError,
                             PluginNormalizer, format_summary, load_normalizer,
                             register_normalizer, registered_normalizers, run_battery,
                             try_normalizer, unregister_normalizer, validate_normalizer)
from sntheory.plugin import battery as B
from sntheory.plugin.contract import module_geometry

EXAMPLE = "experiments/try_example/geomean_norm.py:geomean_normalize"

# A battery small enough for the test suite: 6 dense + 5 conv shapes, depth 8, a 2-wide 8x8 lab
# discriminator. Dense width 32 / conv width 8 keep the large-init control clearly exploding
# (per-layer factor sqrt(fan_in / 2) = 4 and 6 > sqrt(10)). The training part is off here; it
# has its own tests (tests/test_plugin_training.py).
TINY = dict(dense_shapes=((8, 8), (8, 32), (16, 16), (16, 64), (32, 8), (32, 32)),
            conv_shapes=((8, 4, 3, 3), (8, 8, 3, 3), (16, 8, 4, 4), (8, 16, 1, 1), (16, 16, 3, 3)),
            variance_samples=6, depths=(2, 4, 8), stacks=("dense:relu", "conv:leaky_relu"),
            dense_width=32, conv_width=8, conv_image=6, depth_nets=4, depth_batch=4,
            net_image_size=8, net_width=2, baselines=(), training=False)


def tiny(**extra) -> BatteryConfig:
    return BatteryConfig.from_profile("quick", **{**TINY, **extra})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- normalizers used as plug-ins --------------------------------------------------------------

def frobenius_times_100(weight):
    """The deliberately bad idea: ``W / (100 ||W||_F)``."""
    return weight / (100 * torch.linalg.vector_norm(weight))


def no_normalization(weight):
    return weight * 1.0


def snw_times_3(weight, *, kind="conv"):
    return 3 * snw_normalize(weight)


def row_max_norm(weight, *, kind="conv", stride=1, input_size=None, scale=1.0):
    """Deterministic, geometry-aware: divides by the largest row norm of ``w^``."""
    return scale * weight / weight.flatten(1).norm(dim=1).max()


class RowMaxNorm(nn.Module):
    def __init__(self, weight, scale=1.0):
        super().__init__()
        self.scale = scale
        self.shape = tuple(weight.shape)

    def forward(self, weight):
        return self.scale * weight / weight.flatten(1).norm(dim=1).max()


class NoArgNorm(nn.Module):
    def forward(self, weight):
        return weight / weight.abs().max()


def rows_of(result, label=None):
    label = label or result.plugin_label
    return {r.extra["test"] + ("" if "stack" not in r.extra else f" {r.extra['stack']}"): r
            for r in result.rows_for(label)}


# ---- contract: naming ---------------------------------------------------------------------------

def test_builtin_by_name_is_the_exact_pure_function():
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    snw = load_normalizer("snw")
    assert snw.form == "builtin" and snw.layer_scale == 1.0
    assert torch.equal(snw.normalize(w), snw_normalize(w))
    bssn = load_normalizer("bssn", options={"scale": 1.75})
    assert bssn.layer_scale == 1.75
    torch.testing.assert_close(bssn.normalize(w), 1.75 * load_normalizer("bsn").normalize(w),
                               rtol=1e-14, atol=0)


def test_function_receives_only_the_geometry_it_names():
    seen = []

    def spy(weight, *, kind="conv", stride=1):
        seen.append({"kind": kind, "stride": stride})
        return weight / weight.norm()

    plugin = load_normalizer(spy)
    assert plugin.form == "function" and plugin.accepted_geometry == ("kind", "stride")
    assert [s["kind"] for s in seen] == ["conv", "conv", "linear"]       # the three probes
    assert [s["stride"] for s in seen] == [(1, 1), (2, 2), 1]             # dense: default kept
    seen.clear()
    w = torch.randn(6, 10, dtype=torch.float64)
    plugin.normalize(w, kind="linear", stride=None, input_size=None)
    assert seen == [{"kind": "linear", "stride": 1}]
    with pytest.raises(TypeError, match="unknown geometry keyword"):
        plugin.normalize(w, strides=2)
    with pytest.raises(ValueError, match="kind='conv' needs a 4-D kernel"):
        plugin.normalize(w, kind="conv")


def test_import_path_file_path_and_registry(tmp_path, monkeypatch):
    pkg = tmp_path / "plugpkg_for_tests"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "norms.py").write_text(textwrap.dedent("""
        import torch
        class Holder:
            @staticmethod
            def frob(weight):
                return weight / torch.linalg.vector_norm(weight)
        def frob(weight):
            return weight / torch.linalg.vector_norm(weight)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    w = torch.randn(5, 7, dtype=torch.float64)
    ref = w / torch.linalg.vector_norm(w)
    by_module = load_normalizer("plugpkg_for_tests.norms:frob")
    by_dotted = load_normalizer("plugpkg_for_tests.norms:Holder.frob")
    by_file = load_normalizer(f"{pkg / 'norms.py'}:frob")
    for plugin in (by_module, by_dotted, by_file):
        assert plugin.name == "frob" and plugin.form == "function"
        torch.testing.assert_close(plugin.normalize(w), ref, rtol=0, atol=0)
    registered = register_normalizer("frob-test", by_module.obj)
    try:
        assert load_normalizer("frob-test") is registered
        assert "frob-test" in registered_normalizers()
        with pytest.raises(ValueError, match="already registered"):
            register_normalizer("frob-test", by_module.obj)
        register_normalizer("frob-test", row_max_norm, overwrite=True)
        assert load_normalizer("frob-test").obj is row_max_norm
    finally:
        unregister_normalizer("frob-test")
    assert "frob-test" not in registered_normalizers()
    with pytest.raises(ValueError, match="built-in"):
        register_normalizer("snw", row_max_norm)
    with pytest.raises(ValueError, match="must not contain"):
        register_normalizer("a:b", row_max_norm)
    with pytest.raises(ValueError, match="not registered"):
        unregister_normalizer("never-registered")


@pytest.mark.parametrize("obj, expected_form", [(row_max_norm, "function"),
                                                (RowMaxNorm, "parametrization"),
                                                (RowMaxNorm(torch.ones(2, 2)), "parametrization")])
def test_attach_and_normalize_agree(obj, expected_form):
    plugin = load_normalizer(obj)
    assert plugin.form == expected_form
    torch.manual_seed(0)
    for layer, size in ((nn.Conv2d(3, 5, 3, padding=1), (6, 6)), (nn.Linear(7, 4), None)):
        layer = layer.double()
        raw = layer.weight.detach().clone()
        plugin.attach(layer, input_size=size)
        expected = plugin.normalize(raw, **module_geometry(layer, size))
        torch.testing.assert_close(layer.weight, expected, rtol=0, atol=0)
        torch.testing.assert_close(layer.weight, raw / raw.flatten(1).norm(dim=1).max(),
                                   rtol=1e-15, atol=0)
        assert torch.equal(layer.parametrizations.weight.original, raw)


def test_parametrization_class_without_arguments_and_options():
    plugin = load_normalizer(NoArgNorm)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(plugin.normalize(w), w / w.abs().max(), rtol=0, atol=0)
    scaled = load_normalizer(RowMaxNorm, options={"scale": 2.0}, layer_scale=2.0)
    torch.testing.assert_close(scaled.normalize(w), 2 * w / w.flatten(1).norm(dim=1).max(),
                               rtol=0, atol=0)
    assert scaled.layer_scale == 2.0
    with pytest.raises(ValueError, match="layer_scale"):
        load_normalizer(row_max_norm, layer_scale=-1.0)


# ---- contract: every validation failure ---------------------------------------------------------

def _failure(spec, **kwargs):
    with pytest.raises((NormalizerContractError, FileNotFoundError)) as info:
        load_normalizer(spec, **kwargs)
    return info.value


def test_not_found_and_import_errors(tmp_path):
    assert _failure("no_such_module_for_plugin_tests.x:f").failure == "not-found"
    assert _failure("os:no_such_attribute").failure == "not-found"
    error = _failure("no-such-normalizer")
    assert error.failure == "not-found" and "snw" in str(error)      # lists the built-ins
    error = _failure(str(tmp_path / "missing.py") + ":f")
    assert isinstance(error, FileNotFoundError) and "missing.py" in str(error)
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    error = _failure(f"{broken}:f")
    assert error.failure == "import-error" and "boom at import" in str(error)
    syntax = tmp_path / "syntax_plugin.py"
    syntax.write_text("def f(w:\n")
    assert _failure(f"{syntax}:f").failure == "import-error"


def test_not_callable():
    error = _failure(5)
    assert isinstance(error, TypeError) and error.failure == "not-callable"

    class NotAModule:
        pass

    error = _failure(NotAModule)
    assert isinstance(error, NormalizerContractTypeError) and "not a torch.nn.Module" in str(error)


class ExtraForwardArgument(nn.Module):
    def forward(self, weight, extra):
        return weight


def _positional_only(weight, factor, /):
    return weight * factor


@pytest.mark.parametrize("spec, options, match", [
    (lambda: 1, None, "must accept the weight"),
    (lambda weight, scale: weight * scale, None, r"required parameter\(s\) \['scale'\]"),
    (lambda weight, *, stride: weight, None, "must have defaults"),
    (row_max_norm, {"unknown_option": 1}, "does not accept the option"),
    (ExtraForwardArgument, None, "forward takes only the weight"),
    (_positional_only, None, "positional-only"),
    (RowMaxNorm(torch.ones(2, 2)), {"scale": 2.0}, "Module instance"),
])
def test_wrong_signature(spec, options, match):
    error = _failure(spec, options=options)
    assert error.failure == "signature"
    assert pytest.raises(NormalizerContractError, load_normalizer, spec,
                         options=options).match(match)


def test_required_option_supplied_is_accepted():
    plugin = load_normalizer(lambda weight, scale: weight * scale / weight.norm(),
                             options={"scale": 0.5})
    w = torch.randn(3, 4, dtype=torch.float64)
    torch.testing.assert_close(plugin.normalize(w), 0.5 * w / w.norm(), rtol=0, atol=0)


def _raises(weight):
    raise RuntimeError("my normalizer is broken")


def _nan_on_dense(weight, *, kind="conv"):
    return weight / weight.norm() if kind == "conv" else weight * float("nan")


class _RightInverseRaises(nn.Module):
    def forward(self, weight):
        return weight / weight.norm()

    def right_inverse(self, value):
        raise RuntimeError("cannot invert")


@pytest.mark.parametrize("spec, failure, probe, cls", [
    (_raises, "raised", "conv3x3/s1", NormalizerContractError),
    (lambda w: w.tolist(), "not-a-tensor", "conv3x3/s1", TypeError),
    (lambda w: (w > 0).to(torch.int64), "not-a-tensor", "conv3x3/s1", TypeError),
    (lambda w: w[:1], "shape", "conv3x3/s1", NormalizerContractError),
    (lambda w: w.flatten(), "shape", "conv3x3/s1", NormalizerContractError),
    (lambda w: w / 0.0, "non-finite-output", "conv3x3/s1", NormalizerContractError),
    (_nan_on_dense, "non-finite-output", "linear", NormalizerContractError),
    (lambda w: w.detach() / w.detach().norm(), "no-gradient", "conv3x3/s1",
     NormalizerContractError),
    (lambda w: w + torch.sqrt(w - w.detach()), "non-finite-grad", "conv3x3/s1",
     NormalizerContractError),
    (_RightInverseRaises, "attach", "attach to Conv2d", NormalizerContractError),
])
def test_validation_failures(spec, failure, probe, cls):
    error = _failure(spec)
    assert isinstance(error, cls)
    assert error.failure == failure, str(error)
    assert probe in str(error)
    if failure == "raised":
        assert isinstance(error.__cause__, RuntimeError) and "broken" in str(error)


def test_validate_false_defers_checks_and_validation_keeps_the_global_rng():
    plugin = load_normalizer(lambda w: w * float("nan"), validate=False)
    assert isinstance(plugin, PluginNormalizer)
    state = torch.random.get_rng_state()
    with pytest.raises(NormalizerContractError):
        validate_normalizer(plugin)
    validate_normalizer(load_normalizer(lambda w: w * torch.rand(()), validate=False))
    assert torch.equal(torch.random.get_rng_state(), state)


# ---- battery: exact pieces against references ---------------------------------------------------

@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_signal_propagation_matches_the_plain_float64_pass(kind):
    """Renormalized, layer-by-layer log ratios == log of the direct forward pass and of the
    gradient of the whole network (autograd), to round-off."""
    cfg = tiny(stacks=(f"{kind}:leaky_relu",), depths=(5,), depth_nets=2)
    entry = B.Entry("lecun", load_normalizer("none"), "lecun", role="reference")
    records = B.signal_propagation([entry], cfg, seed=3)
    depth = 5
    for rec in records:
        rng = B.block_generator(3, B.case_spawn_key({"part": "depth",
                                                     "stack": f"{kind}:leaky_relu"}), rec["net"])
        shape = (32, 32) if kind == "dense" else (8, 8, 3, 3)
        z = rng.standard_normal((depth, *shape))
        x_shape = (4, 32) if kind == "dense" else (4, 8, 6, 6)
        x = torch.from_numpy(rng.standard_normal(x_shape)).requires_grad_(True)
        cot = torch.from_numpy(rng.standard_normal(x_shape))
        fan = shape[1] * (9 if kind == "conv" else 1)
        weights = [torch.from_numpy(z[l] / math.sqrt(fan)) for l in range(depth)]
        h, norms = x, []
        for w in weights:
            h = F.leaky_relu(h @ w.T if kind == "dense" else F.conv2d(h, w, padding=1), 0.1)
            norms.append(h.norm())
        expected_fwd = [math.log(float(n.detach() / x.detach().norm())) for n in norms]
        np.testing.assert_allclose(rec["log_forward"], expected_fwd, rtol=1e-11, atol=1e-11)
        (grad,) = torch.autograd.grad(h, x, cot)
        expected_bwd = math.log(float(grad.norm() / cot.norm()))
        assert rec["log_backward"][-1] == pytest.approx(expected_bwd, rel=1e-11, abs=1e-11)
        assert rec["dead_layers"] == 0


def test_lipschitz_norms_and_reuse_against_dense_svd():
    """Each layer's interval contains the exact norm (dense SVD of the expanded matrix); the
    rescaled probes that reuse a norm are exact too; the product is the product."""
    cfg = tiny(lipschitz_scales=(0.5, 1.0, 4.0))
    entries = [B.Entry("snw", load_normalizer("snw")),
               B.Entry("lecun", load_normalizer("none"), "lecun", role="reference")]
    records = B.lipschitz_control(entries, cfg, seed=1)
    plan = B._discriminator_layers(cfg)
    rng = B.block_generator(1, B.case_spawn_key({"part": "lipschitz", "layers": [
        list(p["shape"]) for p in plan]}), 0)
    z = [rng.standard_normal(p["shape"]) for p in plan]
    reused = 0
    for rec in records:
        entry = entries[0] if rec["normalizer"] == "snw" else entries[1]
        scale = {"gaussian x0.5": 0.5, "gaussian x1": 1.0, "gaussian x4": 4.0}.get(rec["probe"])
        for layer, p, zl in zip(rec["layers"], plan, z):
            std = B.init_std("lecun", p["fan_in"], p["fan_out"])
            raw = np.full(p["shape"], std) if scale is None else zl * std * scale
            w = entry.normalizer.normalize(torch.from_numpy(raw), **p["geometry"]).numpy()
            if p["kind"] == "conv":
                exact = np.linalg.norm(expanded_matrix(w, p["conv_geometry"]), 2)
            else:
                exact = np.linalg.norm(w, 2)
            assert layer["lower"] <= exact * (1 + 1e-12) and exact <= layer["upper"] * (1 + 1e-12)
            assert layer["value"] == pytest.approx(exact, rel=1e-4)
            reused += layer["reused"]
        assert rec["product"] == pytest.approx(math.prod(l["value"] for l in rec["layers"]))
        assert rec["budget"] == pytest.approx(math.prod(p["alpha"] for p in plan))
    assert reused >= 2 * len(plan)   # snw's and LeCun's scaled probes reuse their x0.5 norms


def test_snconv_has_lipschitz_product_one():
    """Cross-check: SNConv divides each conv layer by its operator norm (computed by its own exact
    routine) and dense layers by their spectral norm, so every probe's product is 1, measured by
    conv_operator_norm's certified intervals."""
    entry = B.Entry("snconv", load_normalizer("snconv"))
    for rec in B.lipschitz_control([entry], tiny(), seed=2):
        assert rec["product_lower"] <= 1 + 1e-9 and 1 - 1e-9 <= rec["product_upper"]
        assert rec["product"] == pytest.approx(1.0, rel=1e-5)


def test_variance_fit_recovers_a_known_law_and_rejects_collinear_shapes():
    shapes = [(8, 8), (8, 64), (32, 16), (64, 64), (16, 128), (128, 32)]
    records = [{"fan_in": n, "fan_out": m, "var": 3.0 * n ** -0.7 * m ** -0.4} for m, n in shapes]
    fit = B.fit_variance_law(records)
    assert fit["a"]["estimate"] == pytest.approx(0.7, abs=1e-12)
    assert fit["b"]["estimate"] == pytest.approx(0.4, abs=1e-12)
    assert fit["C"] == pytest.approx(3.0, rel=1e-12)
    assert fit["a_plus_b"]["estimate"] == pytest.approx(1.1, abs=1e-12) and fit["df"] == 3
    noisy = [dict(r, var=r["var"] * math.exp(0.05 * e))
             for r, e in zip(records, [1, -1, 0.5, -0.5, 1, -1])]
    fit = B.fit_variance_law(noisy)
    assert fit["a"]["ci_low"] < 0.7 < fit["a"]["ci_high"] and fit["a"]["se"] > 0
    with pytest.raises(ValueError, match="not identifiable"):
        B.fit_variance_law([{"fan_in": n, "fan_out": 2 * n, "var": 1 / n}
                            for n in (4, 8, 16, 32, 64)])
    with pytest.raises(ValueError, match="do not vary fan_in and fan_out independently"):
        tiny(dense_shapes=((4, 4), (8, 8), (16, 16), (32, 32), (64, 64)))


def test_deterministic_verdicts_use_the_whole_interval():
    holds, violated, inconclusive = (B.Verdict.HOLDS, B.Verdict.VIOLATED,
                                     B.Verdict.INCONCLUSIVE)
    assert B._deterministic(0.5, 0.9, 1.0, "upper") is holds
    assert B._deterministic(1.0, 1.0 + 1e-12, 1.0, "upper") is holds      # rounding allowance
    assert B._deterministic(1.1, 1.2, 1.0, "upper") is violated
    assert B._deterministic(0.9, 1.1, 1.0, "upper") is inconclusive
    assert B._deterministic(1.1, 1.2, 1.0, "lower") is holds
    assert B._deterministic(0.5, 0.9, 1.0, "lower") is violated
    assert B._deterministic(0.9, 1.1, 1.0, "lower") is inconclusive


def test_criteria_constants_follow_from_k():
    cfg = tiny(factor_k=16.0)
    assert cfg.gamma_band == pytest.approx((1 / math.sqrt(32), 4.0))
    with pytest.raises(ValueError, match="factor_k"):
        tiny(factor_k=1.0)
    with pytest.raises(ValueError, match="unknown battery setting"):
        BatteryConfig.from_profile("quick", no_such_setting=1)
    with pytest.raises(ValueError, match="stacks"):
        tiny(stacks=("dense:tanh",))
    with pytest.raises(ValueError, match="baselines"):
        tiny(baselines=("snconv",))


# ---- battery: verdicts on normalizers with known failures --------------------------------------

@pytest.fixture(scope="module")
def snw_run():
    return run_battery("snw", config=tiny(baselines=("snw", "frobenius", "lecun-init")), seed=0)


@pytest.fixture(scope="module")
def frobenius_100_run():
    return run_battery(load_normalizer(frobenius_times_100), config=tiny(), seed=0)


@pytest.fixture(scope="module")
def large_init_run():
    return run_battery(load_normalizer(no_normalization), config=tiny(init="standard"), seed=0)


def test_snw_is_not_flagged(snw_run):
    rows = snw_run.rows_for(snw_run.plugin_label)
    assert len(rows) == 4 + 2 * 2 * 2 + 2
    assert not [r.setting for r in rows if r.verdict == "VIOLATED"]
    # the depth and Lipschitz rows are decided, not merely undecided
    for r in rows:
        if r.extra["test"].startswith(("forward", "backward", "lipschitz", "variance")):
            assert r.verdict == "HOLDS", (r.setting, r.extra["test"], r.measured)
    assert not snw_run.summary["any_plugin_violation"]
    assert snw_run.plugin_label == "snw (plug-in)"       # the baseline keeps its own name


def test_dividing_by_100_frobenius_is_flagged_as_vanishing(frobenius_100_run):
    rows = rows_of(frobenius_100_run)
    for test in ("variance-low", "width-fast", "forward-vanishing dense:relu",
                 "backward-vanishing dense:relu", "forward-vanishing conv:leaky_relu",
                 "lipschitz-collapse"):
        assert rows[test].verdict == "VIOLATED", test
    for test in ("variance-high", "forward-exploding dense:relu", "lipschitz-exploding"):
        assert rows[test].verdict == "HOLDS", test
    assert "vanishing" in rows["forward-vanishing dense:relu"].extra["flags"]
    assert frobenius_100_run.summary["any_plugin_violation"]
    assert frobenius_100_run.summary["entries"][frobenius_100_run.plugin_label]["signal"][
        "dense:relu forward"] == "vanishing"


def test_no_normalization_with_large_init_is_flagged_as_exploding(large_init_run):
    rows = rows_of(large_init_run)
    for test in ("variance-high", "width-slow", "forward-exploding dense:relu",
                 "backward-exploding dense:relu", "forward-exploding conv:leaky_relu",
                 "lipschitz-exploding"):
        assert rows[test].verdict == "VIOLATED", test
    for test in ("variance-low", "forward-vanishing dense:relu"):
        assert rows[test].verdict == "HOLDS", test
    assert "exploding" in rows["lipschitz-exploding"].extra["flags"]
    assert large_init_run.summary["entries"][large_init_run.plugin_label]["signal"][
        "dense:relu forward"] == "exploding"


def test_zero_output_is_flagged_without_nan():
    """``W -> 0`` passes the contract (finite output and gradient) but kills every signal: flagged
    as vanishing everywhere, no width rows (no law to fit), every number finite."""
    result = run_battery(load_normalizer(lambda w: w * 0.0), config=tiny(), seed=0)
    rows = rows_of(result)
    assert "width-fast" not in rows and "width-slow" not in rows
    for test in ("variance-low", "forward-vanishing dense:relu", "backward-vanishing dense:relu",
                 "lipschitz-collapse"):
        assert rows[test].verdict == "VIOLATED", test
    assert all(math.isfinite(r.measured) for r in rows.values())
    entry = result.summary["entries"][result.plugin_label]
    assert entry["fit"]["dense"] is None and entry["laws"] is None
    assert "no law to fit" in B.report_summary(result)
    assert "n/a" in format_summary(result)


def test_variance_and_depth_criteria_at_their_edges():
    """Identity normalizer, LeCun init times g: Var * fan_in = g^2 and the per-layer ReLU factor
    is about g / sqrt 2. g = 2 sits inside both bands (k = 10); g = 7 is outside both."""
    inside = rows_of(run_battery(load_normalizer(no_normalization),
                                 config=tiny(init_gain=2.0, stacks=("dense:relu",)), seed=1))
    outside = rows_of(run_battery(load_normalizer(no_normalization),
                                  config=tiny(init_gain=7.0, stacks=("dense:relu",)), seed=1))
    assert inside["variance-high"].measured == pytest.approx(4.0, rel=0.15)
    for test in ("variance-low", "variance-high", "width-fast", "width-slow",
                 "forward-exploding dense:relu", "forward-vanishing dense:relu"):
        assert inside[test].verdict == "HOLDS", test
    assert outside["variance-high"].verdict == "VIOLATED"
    assert outside["forward-exploding dense:relu"].verdict == "VIOLATED"
    assert math.exp(outside["forward-exploding dense:relu"].measured) == pytest.approx(
        7 / math.sqrt(2), rel=0.15)


def test_lipschitz_budget_scales_with_the_declared_layer_scale():
    cfg = tiny(stacks=("dense:relu",))
    undeclared = rows_of(run_battery(load_normalizer(snw_times_3), config=cfg, seed=0))
    declared = rows_of(run_battery(load_normalizer(snw_times_3, layer_scale=3.0), config=cfg,
                                   seed=0))
    assert undeclared["lipschitz-exploding"].verdict == "VIOLATED"
    assert declared["lipschitz-exploding"].verdict == "HOLDS"
    assert declared["lipschitz-exploding"].bound == pytest.approx(
        undeclared["lipschitz-exploding"].bound * 3 ** 8)


def test_controls_are_outside_hypotheses_with_what_they_showed(snw_run):
    frob = rows_of(snw_run, "frobenius")
    assert all(r.verdict == "OUTSIDE-HYPOTHESES" and not r.hypotheses_hold for r in frob.values())
    assert frob["variance-low"].extra["decision"] == "VIOLATED"
    assert "observed: bound fails" in frob["variance-low"].note
    lecun = rows_of(snw_run, "lecun-init")
    assert lecun["lipschitz-exploding"].extra["decision"] == "VIOLATED"   # x100 raw weights
    assert lecun["variance-low"].extra["decision"] == "HOLDS"
    reference = rows_of(snw_run, "snw")
    assert all(r.hypotheses_hold for r in reference.values())


def test_same_seed_same_numbers_and_global_rng_untouched(snw_run):
    state = torch.random.get_rng_state()
    again = run_battery("snw", config=tiny(baselines=("snw", "frobenius", "lecun-init")), seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in snw_run.rows]
    other = run_battery("snw", config=tiny(baselines=()), seed=1)
    assert other.records["variance"][0]["var"] != snw_run.records["variance"][0]["var"]


def test_outputs_carry_provenance(tmp_path, snw_run):
    paths = B.write_battery(snw_run, tmp_path, tiny(baselines=("snw", "frobenius", "lecun-init")))
    data = json.loads((tmp_path / "battery.json").read_text())
    prov = data["provenance"]
    assert prov["seed"] == 0 and prov["git_commit"] and prov["versions"]["torch"]
    assert prov["config"]["battery"]["variance_samples"] == 6
    assert len(data["rows"]) == len(snw_run.rows)
    for name in ("variance", "depth", "lipschitz"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "rows.csv").read_text().splitlines()[0]
    assert header.startswith("claim,experiment,setting,statement")
    assert len((tmp_path / "variance.csv").read_text().splitlines()) == 1 + 4 * 11
    text = format_summary(snw_run)
    assert "no failure flagged" in text and "frobenius (ctrl)" in text


# ---- the example, the CLI, the report kind -----------------------------------------------------

def test_geomean_example_against_svd_reference():
    from importlib import util

    spec = util.spec_from_file_location("geomean_example",
                                        "experiments/try_example/geomean_norm.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    w = np.random.default_rng(0).standard_normal((6, 3, 3, 3))
    a = np.linalg.norm(w.reshape(6, -1), 2)
    b = np.linalg.norm(np.swapaxes(w, 0, 1).reshape(3, -1), 2)
    out = module.geomean_normalize(torch.from_numpy(w)).numpy()
    np.testing.assert_allclose(out, w / math.sqrt(a * b), rtol=1e-13)
    m = np.random.default_rng(1).standard_normal((5, 9))
    np.testing.assert_allclose(module.geomean_normalize(torch.from_numpy(m), kind="linear"),
                               m / np.linalg.norm(m, 2), rtol=1e-13)


def _cli(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["try", *argv])
    return args.func(args)


SETS = [f"--set={k}={json.dumps(v)}" for k, v in TINY.items() if k != "baselines"]


def test_cli_runs_the_readme_example(tmp_path, capsys):
    """The README's command (``sntheory try <example> --out DIR``) on tiny settings."""
    readme = open("experiments/try_example/README.md").read()
    assert f"sntheory try {EXAMPLE} --out try-geomean" in readme
    code = _cli([EXAMPLE, "--out", str(tmp_path / "geomean"), "--seed", "0", "--quiet",
                 "--baselines", "snw", *SETS])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "geomean_normalize: no failure flagged" in out
    assert (tmp_path / "geomean" / "battery.json").is_file()


def test_cli_flags_a_bad_idea_with_exit_1(tmp_path, capsys):
    bad = tmp_path / "bad_idea.py"
    bad.write_text("import torch\ndef shrink(w):\n    return w / (100 * w.norm())\n")
    code = _cli([f"{bad}:shrink", "--out", str(tmp_path / "bad"), "--quiet", "--baselines", "",
                 *SETS])
    out = capsys.readouterr().out
    assert code == 1
    assert "FLAGGED" in out and "vanishing" in out


@pytest.mark.parametrize("argv, message", [
    (["missing_file.py:f"], "no such file"),
    (["no_such_normalizer"], "neither a built-in"),
    (["snw", "--option", "notanassignment"], "NAME=VALUE"),
    (["snw", "--set", "no_such=1"], "unknown battery setting"),
    (["snw", "--seed", "-1"], "--seed"),
    (["snw", "--baselines", "snconv"], "baselines"),
    ([f"{__file__}:frobenius_times_100", "--option", "scale=2"], "does not accept the option"),
])
def test_cli_errors_exit_2(argv, message, capsys):
    assert _cli(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_option_reads_json_or_text():
    assert parse_option("scale=1.75") == ("scale", 1.75)
    assert parse_option("mode=fan_in") == ("mode", "fan_in")
    assert parse_option("depths=[2, 4]") == ("depths", [2, 4])


def test_try_normalizer_python_entry_matches_run_battery(snw_run):
    result = try_normalizer("snw", **{**TINY, "baselines": ("snw", "frobenius", "lecun-init")})
    assert [r.to_dict() for r in result.rows] == [r.to_dict() for r in snw_run.rows]


def test_report_kind_smoke_profile(tmp_path):
    experiments = pytest.importorskip("sntheory.report.experiments")
    import dataclasses

    config = experiments.load_config("experiments/try_example/config.toml")
    assert config.kind == "plugin-battery"
    assert config.params("full").config().profile == "full"
    # the training part on smoke sizes (20 steps), whatever the config's smoke table says
    params = dataclasses.replace(config.params("smoke"), train_steps=20, train_probe_every=10)
    ctx = experiments.RunContext(seed=0, profile="smoke", experiment="try_example")
    out = B.run_report_kind(params, tmp_path, ctx)
    assert {r.experiment for r in out.rows} == {"try_example"}
    assert all((tmp_path / f.path).is_file() for f in out.figures)
    assert out.records and all(not isinstance(v, (dict, list)) for r in out.records
                               for v in r.values())
    assert "geomean_normalize" in out.summary and "Training (" in out.summary
    assert not any(r.verdict == "VIOLATED" for r in out.rows)
    assert {"training_gradients.png", "training_vanishing.png"} <= {f.path for f in out.figures}
    tests = {r.extra["test"] for r in out.rows if r.extra["normalizer"] == "geomean_normalize"}
    assert {"train-p1", "train-exploding", "train-vanishing-vs-snw", "train-trained"} <= tests
    assert any(r["part"] == "training" for r in out.records)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
