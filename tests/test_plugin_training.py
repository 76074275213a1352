"""Tests of the plug-in battery's training part (sntheory.plugin.training) and its wiring.

The derived quantities against slow references (the normalized P1 ratios against per-sample
autograd gradients, exact input norms and the coverage constants computed independently; the gap
growth and the layer statistics against hand-made inputs); the row verdicts on normalizers whose
failure is known in advance -- dividing by 100 ||W||_F (vanishing), no normalization with a large
(unit-variance) initialization (exploding), SNw times 10 without declaring its scale, a normalizer
whose first training step overflows (diverged) -- with SNw not flagged; a tampered probe record
caught by the P1 row; caching, resumption, temporary registration of Python objects; the
``plugin:<spec>`` training configs and ``build_discriminator`` with a normalizer object.
Every run is a smoke-size run (40 steps of the lab DCGAN, probes at steps 0, 20, 40).
"""
from __future__ import annotations

import copy
import json
import math
import sys

import numpy as np
import pytest
import torch
from torch import nn

from sntheory.conv import coverage_alpha
from sntheory.lab.config import TrainConfig
from sntheory.lab.nets import NetConfig, build_discriminator
from sntheory.lab.probes import probe_discriminator
from sntheory.normalizers import snw_normalize
from sntheory.plugin import (BatteryConfig, load_normalizer, registered_normalizers,
                             run_battery)
from sntheory.plugin import training as T
from sntheory.plugin.battery import Entry, format_summary

EXAMPLE = "experiments/try_example/geomean_norm.py:geomean_normalize"
SMOKE = T.TrainingSettings(steps=40, probe_every=20)
K = 10.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- normalizers with known behaviour ----------------------------------------------------------

def frobenius_times_100(weight):
    """The deliberately bad idea: ``W / (100 ||W||_F)``."""
    return weight / (100 * torch.linalg.vector_norm(weight))


class UnitVarianceInit(nn.Module):
    """No normalization; torch calls ``right_inverse`` when attaching it, so the raw weights start
    at unit variance (torch's default draw has variance 1/(3 fan_in))."""

    def forward(self, weight):
        return weight

    def right_inverse(self, weight):
        return weight * math.sqrt(3 * weight[0].numel())


def snw_times_10(weight, *, kind="conv"):
    return 10 * snw_normalize(weight)


def overflow(weight):
    """Finite in float64 (the contract's and the probes' precision), infinite in float32."""
    return weight * 1e30


def _entry(obj, label, layer_scale=None):
    return Entry(label, load_normalizer(obj, layer_scale=layer_scale), role="plugin")


def rows_by_test(result, label):
    return {r.extra["test"]: r for r in result.rows if r.extra["normalizer"] == label}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("training_runs")


@pytest.fixture(scope="module")
def snw_result(runs_dir):
    return T.training_part(_entry("snw", "snw"), ("frobenius", "lecun-init"), SMOKE, K, 0,
                           runs_dir)


@pytest.fixture(scope="module")
def frobenius_100_result(runs_dir):
    return T.training_part(_entry(frobenius_times_100, "frob100"), (), SMOKE, K, 0, runs_dir)


@pytest.fixture(scope="module")
def large_init_result(runs_dir):
    return T.training_part(_entry(UnitVarianceInit, "large-init"), (), SMOKE, K, 0, runs_dir)


# ---- derived quantities against slow references ------------------------------------------------

def _reference_ratios(disc, x):
    """``max_j ||grad_{w_t} z(x_j)||_F / (prod_l alpha_l ||x_j||)`` per layer by per-sample
    autograd on a float64 eval-mode copy, and the mean per-sample gradient norm per layer."""
    work = copy.deepcopy(disc).double().eval()
    with torch.no_grad():
        weights = [w.detach().clone() for w in work.effective_weights()]
    alphas = [1.0 if info.kind == "linear" else
              coverage_alpha(info.geometry, tuple(w.shape[2:])).alpha
              for info, w in zip(work.layer_info, weights)]
    b_sn = math.prod(alphas)
    norms = np.zeros((x.shape[0], len(weights)))
    for j in range(x.shape[0]):
        ws = [w.clone().requires_grad_(True) for w in weights]
        z = work.functional_forward(x[j], ws)
        grads = torch.autograd.grad(z, ws)
        norms[j] = [float(g.norm()) for g in grads]
    x_norm = x.flatten(1).norm(dim=1).numpy()
    return (norms / (b_sn * x_norm[:, None])).max(axis=0), norms.mean(axis=0), b_sn


@pytest.mark.parametrize("normalizer, scale", [("snw", 1.0), ("none", 1.0),
                                               (snw_times_10, 10.0)])
def test_normalized_ratios_match_per_sample_autograd(normalizer, scale):
    cfg = NetConfig(arch="dcgan", image_size=16, channels=1, width=4, depth=2, bias=False)
    if isinstance(normalizer, str):
        disc = build_discriminator(cfg, normalizer, seed=3)
    else:
        disc = build_discriminator(cfg, load_normalizer(normalizer, layer_scale=scale), seed=3)
    gen = torch.Generator().manual_seed(5)
    real = torch.rand(6, 1, 16, 16, generator=gen, dtype=torch.float64) * 2 - 1
    fake = torch.randn(6, 1, 16, 16, generator=gen, dtype=torch.float64)
    points = T.probe_points(probe_discriminator(disc, real, fake, step=7), scale)
    assert len(points) == 2 * 3
    for batch, x in (("real", real), ("fake", fake)):
        ratios, means, b_sn = _reference_ratios(disc, x)
        mine = sorted((p for p in points if p["batch"] == batch), key=lambda p: p["layer"])
        np.testing.assert_allclose([p["sn_ratio"] for p in mine], ratios, rtol=1e-9)
        np.testing.assert_allclose([p["budget_ratio"] for p in mine],
                                   ratios / scale ** 2, rtol=1e-9)
        np.testing.assert_allclose([p["grad_eff_fro_mean"] for p in mine], means, rtol=1e-9)
        assert all(p["b_sn"] == pytest.approx(b_sn, rel=1e-12) for p in mine)
        assert b_sn == pytest.approx(4.0)           # two 4x4/s2 convs (alpha 2) and a dense layer


def test_probe_points_need_bias_free_and_complete_records():
    cfg = NetConfig(arch="dcgan", image_size=16, channels=1, width=4, depth=2, bias=True)
    x = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
    records = probe_discriminator(build_discriminator(cfg, "snw", seed=0), x + 0.5, x - 0.5,
                                  step=0)
    with pytest.raises(ValueError, match="bias-free"):
        T.probe_points(records)
    records = [dict(r, has_bias=False) for r in records
               if not (r.get("scope") == "layer" and r["layer"] == 1)]
    with pytest.raises(ValueError, match="exactly once"):
        T.probe_points(records)
    with pytest.raises(ValueError, match="layer_scale"):
        T.probe_points([], layer_scale=0.0)


def test_layer_statistics_on_hand_made_points():
    pts = [{"step": s, "batch": b, "layer": t, "grad_eff_fro_mean": g}
           for s, gs in ((0, (1.0, 4.0)), (10, (0.0, 0.0)), (20, (2.0, 2.0)))
           for b in ("real", "fake") for t, g in enumerate(gs)]
    assert T.layer_balance(pts) == {0: 0.25, 10: 0.0, 20: 1.0}
    ref = [dict(p, grad_eff_fro_mean=2.0) for p in pts]
    assert T.ratio_to_reference(pts, ref) == {0: {0: 0.5, 10: 0.0, 20: 1.0},
                                              1: {0: 2.0, 10: 0.0, 20: 1.0}}
    ref[0]["grad_eff_fro_mean"] = 0.0               # a zero reference leaves that step out
    assert 0 not in T.ratio_to_reference(pts, ref)[0]


def _losses(gaps):
    return [{"step": i + 1, "d_real": g, "d_fake": 0.0} for i, g in enumerate(gaps)]


def test_gap_growth_on_hand_made_losses():
    assert T.gap_growth(_losses([1.0] * 40), 40)["growth"] == pytest.approx(1.0)
    up = T.gap_growth(_losses([0.5] + [3.0] * 39), 40)       # window 2
    assert up["window"] == 2 and up["growth"] == pytest.approx(6.0)
    assert T.gap_growth(_losses([0.0] * 10), 10)["growth"] == 0.0   # stuck at a constant D
    assert T.gap_growth(_losses([0.0, 1.0, 1.0]), 3)["growth"] == math.inf
    assert T.gap_growth(_losses([-1.0, -2.0]), 2)["growth"] == 0.0
    spike = T.gap_growth(_losses([1.0] * 19 + [10.0] + [1.0] * 20), 40)   # one step of 10
    assert spike["max_running"] == pytest.approx(5.5)         # smoothed over 2 steps
    assert T.gap_growth([], 10)["growth"] == 0.0


# ---- the bar: bad ideas flagged for what they cause, SNw not -----------------------------------

def test_snw_is_not_flagged(snw_result):
    rows = rows_by_test(snw_result, "snw (plug-in)")
    assert set(rows) == set(T.TRAINING_TESTS)
    assert all(r.verdict == "HOLDS" for r in rows.values()), {
        k: (r.verdict, r.measured) for k, r in rows.items()}
    # the plug-in is SNw itself: the same config, hence the same (shared) run, ratio exactly 1
    assert rows["train-vanishing-vs-snw"].measured == 1.0
    assert rows["train-exploding"].measured <= 1.0          # within SN's own bound B_SN ||x||
    reference = rows_by_test(snw_result, "snw")
    assert "train-vanishing-vs-snw" not in reference        # no row against itself
    summary = snw_result.summary["snw (plug-in)"]
    assert summary["steps_probed"] == [0, 20, 40] and not summary["flagged"]


def test_dividing_by_100_frobenius_is_flagged_as_vanishing(frobenius_100_result):
    rows = rows_by_test(frobenius_100_result, "frob100")
    assert rows["train-vanishing-vs-snw"].verdict == "VIOLATED"
    assert rows["train-vanishing-vs-snw"].measured < 1e-3   # ~1e-4 per layer, times Frobenius
    assert "vanishing" in rows["train-vanishing-vs-snw"].extra["flags"]
    for test in ("train-p1", "train-p1-normalized", "train-exploding", "train-trained"):
        assert rows[test].verdict == "HOLDS", test           # it trains, with tiny gradients
    flagged = frobenius_100_result.summary["frob100"]["flagged"]
    assert flagged and all("vanishing" in f for f in flagged)


def test_no_normalization_with_large_init_is_flagged_as_exploding(large_init_result):
    rows = rows_by_test(large_init_result, "large-init")
    for test in ("train-exploding", "train-p1-normalized"):
        assert rows[test].verdict == "VIOLATED", test
        assert "exploding" in rows[test].extra["flags"]
    assert rows["train-exploding"].measured > K
    assert rows["train-p1"].verdict == "HOLDS"              # P1 is a theorem: it still holds
    assert rows["train-vanishing-vs-snw"].verdict == "HOLDS"
    assert rows["train-vanishing-vs-snw"].measured > 1      # larger than SNw's, not smaller


def test_an_undeclared_scale_is_caught_by_the_normalized_row(runs_dir):
    undeclared = T.training_part(_entry(snw_times_10, "x10"), (), SMOKE, K, 0, runs_dir)
    declared = T.training_part(_entry(snw_times_10, "x10", 10.0), (), SMOKE, K, 0, runs_dir)
    u, d = rows_by_test(undeclared, "x10"), rows_by_test(declared, "x10")
    assert u["train-p1-normalized"].verdict == "VIOLATED"
    assert d["train-p1-normalized"].verdict == "HOLDS"
    # the same run (layer_scale does not change training), the ratio divided by s^(L-1) = 100
    assert d["train-p1-normalized"].measured == pytest.approx(
        u["train-p1-normalized"].measured / 100, rel=1e-12)
    # the exploding row ignores declarations: 10 x SN on every layer is 100 x SN's gradients
    assert u["train-exploding"].verdict == d["train-exploding"].verdict == "VIOLATED"


def test_controls_are_outside_hypotheses_except_p1(snw_result):
    for label in ("frobenius", "none"):
        rows = rows_by_test(snw_result, label)
        assert rows["train-p1"].verdict == "HOLDS" and rows["train-p1"].hypotheses_hold
        others = [r for k, r in rows.items() if k != "train-p1"]
        assert all(r.verdict == "OUTSIDE-HYPOTHESES" and not r.hypotheses_hold for r in others)
    frob = rows_by_test(snw_result, "frobenius")["train-vanishing-vs-snw"]
    assert frob.extra["decision"] == "VIOLATED"             # Frobenius: vanishing against SNw
    assert "observed: bound fails" in frob.note


def test_a_tampered_probe_record_violates_p1(snw_result):
    run = next(r for r in snw_result.runs if r.label == "snw")
    tampered = copy.deepcopy(run)
    rec = next(r for r in tampered.records if r.get("scope") == "layer" and r["step"] == 20)
    rec["grad_z_kernel_ratio_max"] = 1.0 + 1e-6             # a gradient 1e-6 above its bound
    entry = _entry("snw", "snw")
    rows, _ = T.training_rows(entry, tampered, SMOKE, K, None)
    p1 = next(r for r in rows if r.extra["test"] == "train-p1")
    assert p1.verdict == "VIOLATED" and "grad_z_kernel" in p1.note
    rows, _ = T.training_rows(entry, run, SMOKE, K, None)
    assert next(r for r in rows if r.extra["test"] == "train-p1").verdict == "HOLDS"


def test_a_diverging_run_is_recorded_flagged_and_reused(runs_dir, monkeypatch):
    result = T.training_part(_entry(overflow, "overflow"), (), SMOKE, K, 0, runs_dir)
    rows = rows_by_test(result, "overflow")
    assert rows["train-trained"].verdict == "VIOLATED"
    assert rows["train-trained"].extra["diverged_at"] == 1
    assert "diverged at step 1" in rows["train-trained"].note
    assert rows["train-exploding"].verdict == "VIOLATED"    # the step-0 probe saw it coming
    assert all(math.isfinite(r.measured) for r in rows.values())
    run = next(r for r in result.runs if r.label == "overflow")
    assert json.loads((runs_dir / run.run_dir.split("/")[-1] / "diverged.json").read_text())[
        "step"] == 1

    def no_training(*args, **kwargs):
        raise AssertionError("a finished or diverged run must not be trained again")

    monkeypatch.setattr("sntheory.lab.train.train", no_training)
    again = T.training_part(_entry(overflow, "overflow"), (), SMOKE, K, 0, runs_dir)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.rows]


# ---- runs: caching, resumption, Python objects -------------------------------------------------

def test_an_interrupted_run_resumes_to_the_uninterrupted_records(tmp_path):
    from sntheory.lab.train import train

    settings = T.TrainingSettings(steps=20, probe_every=5)
    entry = _entry(EXAMPLE, "geomean")
    whole = T.train_entry(entry, settings, 0, tmp_path / "whole")
    # the same run killed after 12 steps (last checkpoint at step 10), then resumed
    key = whole.run_dir.split("/")[-1]
    train(whole.config, tmp_path / "cut" / key, progress=False, stop_after=12)
    resumed = T.train_entry(entry, settings, 0, tmp_path / "cut")
    assert resumed.run_dir.endswith(key)
    assert resumed.records == whole.records and resumed.losses == whole.losses
    assert [r["step"] for r in resumed.records if r.get("scope") == "network"] == [
        s for s in (0, 5, 10, 15, 20) for _ in ("real", "fake")]


def test_python_objects_train_under_a_temporary_name_and_uncacheable_ones_are_not_kept(tmp_path):
    before = registered_normalizers()
    settings = T.TrainingSettings(steps=10, probe_every=10)
    plugin = load_normalizer(lambda w: 2 * w / torch.linalg.matrix_norm(w.flatten(1), 2))
    assert T.plugin_fingerprint(plugin) is None and T.plugin_spec(plugin) == (None, {})
    run = T.train_entry(Entry("lam", plugin, role="plugin"), settings, 0, tmp_path)
    assert run.run_dir is None and not list(tmp_path.iterdir())
    assert run.config["normalizer"]["name"].startswith("plugin:_sntheory_battery_")
    assert registered_normalizers().keys() == before.keys()
    # a function from a file is fingerprinted by its file, and its run is kept
    kept = T.train_entry(_entry(frobenius_times_100, "f"), settings, 0, tmp_path)
    assert kept.run_dir is not None and (tmp_path / kept.run_dir.split("/")[-1]).is_dir()
    assert registered_normalizers().keys() == before.keys()


def test_fingerprint_follows_the_code_and_the_options(tmp_path):
    path = tmp_path / "idea.py"
    path.write_text("def f(w, scale=1.0):\n    return scale * w / w.norm()\n")
    first = T.plugin_fingerprint(load_normalizer(f"{path}:f"))
    assert T.plugin_spec(load_normalizer(f"{path}:f")) == (f"plugin:{path.resolve()}:f", {})
    assert T.plugin_fingerprint(load_normalizer(f"{path}:f", options={"scale": 2.0})) != first
    path.write_text("def f(w, scale=1.0):\n    return scale * w / (w.norm() + 1e-9)\n")
    assert T.plugin_fingerprint(load_normalizer(f"{path}:f")) != first   # the file's bytes
    assert T.plugin_fingerprint(load_normalizer("snw")) == T.plugin_fingerprint(
        load_normalizer("snw"))
    assert T.plugin_spec(load_normalizer("bssn", options={"scale": 1.75})) == (
        "bssn", {"scale": 1.75})


def test_training_settings_are_validated():
    with pytest.raises(ValueError, match="probe_every"):
        T.TrainingSettings(steps=10, probe_every=20)
    with pytest.raises(ValueError, match="depth"):
        T.TrainingSettings(depth=5)                          # 16x16 halves only 4 times
    with pytest.raises(ValueError, match="P1"):
        T.TrainingSettings(activation="scaled_relu:2")
    with pytest.raises(TypeError, match="training"):
        BatteryConfig.from_profile("quick", training="no")
    with pytest.raises(ValueError, match="train_steps"):
        BatteryConfig.from_profile("quick", train_steps=0)
    assert BatteryConfig.from_profile("full").training_settings().steps == 1000


# ---- the lab's plug-in support (surgical edits in sntheory.lab) --------------------------------

def _config(name, **options):
    return {"data": {"spec": "digits"}, "normalizer": {"name": name, **options},
            "run": {"steps": 1}}


def test_training_config_accepts_plugin_specs_and_checks_them_at_start_up(tmp_path):
    cfg = TrainConfig.from_dict(_config(f"plugin:{EXAMPLE}", eps=1e-9))
    assert cfg.normalizer.name == f"plugin:{EXAMPLE}" and cfg.normalizer.kwargs == {"eps": 1e-9}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FileNotFoundError, match=r"\[normalizer\].*no such file"):
        TrainConfig.from_dict(_config("plugin:nowhere/idea.py:f"))
    with pytest.raises(ValueError, match="must be followed by a spec"):
        TrainConfig.from_dict(_config("plugin: "))
    with pytest.raises(ValueError, match="does not accept the option"):
        TrainConfig.from_dict(_config(f"plugin:{EXAMPLE}", scale=2.0))
    bad = tmp_path / "bad.py"
    bad.write_text("def f(w):\n    return w.detach()\n")
    with pytest.raises(ValueError, match="no-gradient|detached"):
        TrainConfig.from_dict(_config(f"plugin:{bad}:f"))


def test_build_discriminator_with_a_normalizer_object_or_spec():
    cfg = NetConfig(arch="dcgan", image_size=16, channels=1, width=4, depth=2, bias=False)
    by_name = build_discriminator(cfg, "snw", seed=1)
    by_spec = build_discriminator(cfg, "plugin:snw", seed=1)
    by_object = build_discriminator(cfg, load_normalizer("snw"), seed=1)
    for a, b, c in zip(by_name.effective_weights(), by_spec.effective_weights(),
                       by_object.effective_weights()):
        assert torch.equal(a, b) and torch.equal(a, c)
    plugin = load_normalizer(EXAMPLE)
    disc = build_discriminator(cfg, plugin, seed=1).double().eval()
    for info, raw, eff in zip(disc.layer_info, disc.raw_weights(), disc.effective_weights()):
        kind = "conv" if info.kind == "conv" else "linear"
        torch.testing.assert_close(eff, plugin.normalize(raw.detach(), kind=kind), rtol=1e-13,
                                   atol=0)
    with pytest.raises(TypeError, match="attach"):
        build_discriminator(cfg, object())
    with pytest.raises(ValueError, match="normalizer_kwargs"):
        build_discriminator(cfg, plugin, normalizer_kwargs={"eps": 1.0})


# ---- run_battery with the training part ------------------------------------------------------------

TINY = dict(dense_shapes=((8, 8), (8, 32), (16, 16), (16, 64), (32, 8)),
            conv_shapes=((8, 4, 3, 3), (8, 8, 3, 3), (16, 8, 4, 4), (8, 16, 1, 1), (16, 16, 3, 3)),
            variance_samples=4, depths=(2, 4), stacks=("dense:relu",), dense_width=16,
            conv_width=4, conv_image=6, depth_nets=3, depth_batch=4, net_image_size=8,
            net_width=2, baselines=("frobenius",), train_steps=40, train_probe_every=20)


def test_run_battery_includes_training_rows_figures_and_records(tmp_path, runs_dir):
    cfg = BatteryConfig.from_profile("quick", **TINY)
    out = tmp_path / "out"
    result = run_battery(EXAMPLE, config=cfg, seed=0, out=out, runs_dir=runs_dir)
    plugin = result.plugin_label
    tests = {r.extra["test"] for r in result.rows_for(plugin)}
    assert set(T.TRAINING_TESTS) <= tests
    assert not result.summary["any_plugin_violation"]
    assert set(result.summary["training"]["entries"]) == {plugin, "snw", "frobenius"}
    assert result.rows_for("snw")                            # trained as the reference
    for name in ("training_gradients.png", "training_vanishing.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "battery.json").read_text())
    assert data["provenance"]["config"]["training"]["settings"]["steps"] == 40
    assert len(data["records"]["training"]) == 3 * 3 * 2 * 3   # entries x steps x batches x layers
    lines = (out / "training.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 * 3 * 2 * 3 and lines[0].startswith("normalizer,step,batch,layer")
    assert len((out / "training_losses.csv").read_text().splitlines()) == 1 + 3 * 40
    text = format_summary(result)
    assert "training: lab DCGAN" in text and "vanishing gradients (relative to SNw)" in text
    # same seed, same rows (the training runs come from the cache the second time)
    again = run_battery(EXAMPLE, config=cfg, seed=0, runs_dir=runs_dir)
    assert [r.to_dict() for r in again.rows] == [r.to_dict() for r in result.rows]
    skipped = run_battery(EXAMPLE, config=BatteryConfig.from_profile(
        "quick", **{**TINY, "training": False}), seed=0)
    assert not any(r.extra["test"].startswith("train") for r in skipped.rows)
    assert "training" not in skipped.summary and skipped.training is None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
