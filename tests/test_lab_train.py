"""Tests of the lab's training: config (sntheory.lab.config), loop (sntheory.lab.train), CLI
(sntheory.cli_lab) and figures (sntheory.lab.figures).

The bars: strict config errors that name file, table, key, value and rule; losses and the
gradient penalty equal to hand-computed values; one seed -> identical bytes; probes do not perturb
training (bitwise); a run killed (``stop_after`` and a real SIGKILL) and resumed writes exactly the
bytes of the uninterrupted run; the experiment configs run.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from sntheory.lab.config import TrainConfig
from sntheory.lab.train import (discriminator_loss, generator_loss, gradient_penalty,
                                list_checkpoints, load_run, read_losses, read_probes,
                                resolve_device, train)

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = REPO / "experiments" / "lab_mnist"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**changes) -> dict:
    """A config that trains in well under a second per step: 8x8 digits, a 3-layer DCGAN pair,
    SNw, WGAN-GP with n_dis 2, probes every 3 steps (Hessians every 6), checkpoints every 4."""
    cfg = {"run": {"seed": 1, "steps": 12, "checkpoint_every": 4, "sample_every": 0,
                   "threads": 1},
           "data": {"spec": "digits", "image_size": 8, "limit": 64},
           "net": {"arch": "dcgan", "width": 4, "depth": 2, "latent_dim": 8},
           "normalizer": {"name": "snw"},
           "train": {"loss": "wgan", "gp_weight": 1.0, "batch_size": 8, "n_dis": 2},
           "probe": {"every": 3, "batch_size": 4, "hessian_every": 6}}
    for table, values in changes.items():
        cfg[table] = {**cfg.get(table, {}), **values}
    return cfg


def bytes_of(run_dir: Path, name: str) -> bytes:
    return (run_dir / name).read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every other run is compared with."""
    run_dir = tmp_path_factory.mktemp("reference")
    summary = train(tiny(), run_dir, progress=False)
    assert summary.end_step == 12 and not summary.resumed and not summary.stopped_early
    return run_dir


# ---- config -------------------------------------------------------------------------------------

def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(textwrap.dedent(text))
    return path


BASE_TOML = """
[data]
spec = "digits"
image_size = 8
[net]
arch = "dcgan"
width = 4
depth = 2
"""


@pytest.mark.parametrize("extra, error, pattern", [
    ("[bogus]\nx = 1\n", ValueError, r"unknown table\(s\) \['bogus'\]"),
    ("[train]\nlos = 'wgan'\n", ValueError, r"\[train\] has unknown key\(s\) \['los'\]"),
    ("[train]\nloss = 'wasserstein'\n", ValueError,
     r"\[train\] loss = 'wasserstein': must be one of \['hinge', 'ns', 'wgan'\]"),
    ("[run]\nsteps = '10'\n", TypeError, r"\[run\] steps = '10': must be an integer >= 1"),
    ("[run]\nsteps = 0\n", ValueError, r"\[run\] steps = 0: must be an integer >= 1"),
    ("[train]\nlr = true\n", TypeError, r"\[train\] lr = True: must be a number"),
    ("[train]\nlr = -1e-4\n", ValueError, r"\[train\] lr = -0.0001: must be a finite number in"),
    ("[train]\nbeta2 = 1.0\n", ValueError, r"\[train\] beta2 = 1.0: .* in \[0, 1\)"),
    ("[run]\ndevice = 'tpu'\n", ValueError, r"\[run\] device = 'tpu': must be one of"),
    ("[normalizer]\nname = 'spectral'\n", ValueError,
     r"\[normalizer\] name = 'spectral': must be one of .*'snw'"),
    ("[normalizer]\nname = 'ssn'\n", ValueError, r"name = 'ssn' needs key\(s\) \['scale'\]"),
    ("[normalizer]\nname = 'snw'\nscale = 2.0\n", ValueError,
     r"key 'scale', which normalizer 'snw' does not take"),
    ("[probe]\nat = [3, -1]\n", ValueError, r"\[probe\] at = \[3, -1\]: must be a list of integers"),
    ("[probe]\noptions = {hesian = true}\n", ValueError,
     r"\[probe\] options: unknown ProbeOptions field\(s\) \['hesian'\]"),
    ("[probe]\noptions = {hessian = true}\n", ValueError, r"set by the schedule"),
    ("[probe]\noptions = {operator_norms = 'fast'}\n", ValueError,
     r"\[probe\] options: `operator_norms` must be one of"),
])
def test_config_errors_name_file_table_key_value_and_rule(tmp_path, extra, error, pattern):
    path = write(tmp_path, BASE_TOML + extra)
    with pytest.raises(error, match=pattern) as info:
        TrainConfig.from_toml(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("net, pattern", [
    ("arch = 'resnet'", r"\[net\] .*`arch` must be one of"),
    ("activation = 'swish'", r"\[net\] .*`activation` must be one of"),
    ("depth = 4", r"\[net\] \(with \[data\] image_size = 8, .*multiple of 2\*\*depth = 16"),
    ("image_size = 8", r"\[net\] image_size = 8: belongs in \[data\]"),
])
def test_net_errors_are_attributed_to_the_net_table(tmp_path, net, pattern):
    text = "[data]\nspec = 'digits'\nimage_size = 8\n[net]\narch = 'dcgan'\n" + net + "\n"
    path = write(tmp_path, text.replace("arch = 'dcgan'\narch", "arch"))
    with pytest.raises(ValueError, match=pattern):
        TrainConfig.from_toml(path)


def test_config_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.toml"):
        TrainConfig.from_toml(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_toml(write(tmp_path, "[data\nspec = 1"))
    with pytest.raises(ValueError, match=r"\[data\] is required"):
        TrainConfig.from_toml(write(tmp_path, "[run]\nseed = 1\n"))
    with pytest.raises(ValueError, match=r"\[data\] spec = 'imagenet': must be one of"):
        TrainConfig.from_dict({"data": {"spec": "imagenet"}})


def test_config_round_trip_overrides_and_schedule():
    cfg = TrainConfig.from_dict(tiny(probe={"at": [7, 1, 7, 40]}))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    assert cfg.net.image_size == 8 and cfg.net.channels == 1
    assert cfg.probe.at == (1, 7, 40)
    assert cfg.probe.steps(12) == (0, 1, 3, 6, 7, 9, 12)
    assert [s for s in cfg.probe.steps(12) if cfg.probe.hessian_at(s)] == [0, 6, 12]
    longer = cfg.replace_run(steps=50)
    assert longer.run.steps == 50 and longer.train == cfg.train
    with pytest.raises(ValueError, match=r"\[run\] steps = 0"):
        cfg.replace_run(steps=0)
    assert cfg.train.generator_lr == cfg.train.lr
    assert TrainConfig.from_dict(tiny(train={"gen_lr": 3e-4})).train.generator_lr == 3e-4


def test_experiment_configs_differ_only_in_normalizer_and_penalty():
    sn = TrainConfig.from_toml(EXPERIMENT / "train_sn.toml").to_dict()
    nosn = TrainConfig.from_toml(EXPERIMENT / "train_nosn.toml").to_dict()
    assert sn["normalizer"]["name"] == "snw" and sn["train"]["gp_weight"] == 0.0
    assert nosn["normalizer"]["name"] == "none" and nosn["train"]["gp_weight"] > 0
    assert sn["train"]["loss"] == nosn["train"]["loss"] == "wgan"
    for d in (sn, nosn):
        del d["normalizer"], d["train"]["gp_weight"]
    assert sn == nosn


@pytest.mark.parametrize("name", ["train_sn.toml", "train_nosn.toml"])
def test_experiment_configs_run(tmp_path, name):
    cfg = TrainConfig.from_toml(EXPERIMENT / name).with_overrides(
        {"run": {"steps": 2, "device": "cpu"}, "train": {"batch_size": 8},
         "probe": {"every": 0, "at": [2]}})
    summary = train(cfg, tmp_path, progress=False)
    assert summary.end_step == 2 and summary.probe_records > 0
    records = read_probes(tmp_path)
    layers = {r["layer"] for r in records if r["scope"] == "layer"}
    assert layers == set(range(cfg.net.depth + 1)) and {r["step"] for r in records} == {2}
    assert (tmp_path / "samples" / "step_0000002.png").stat().st_size > 0


# ---- losses, penalty, device --------------------------------------------------------------------

D_REAL = torch.tensor([2.0, -1.0], dtype=torch.float64)
D_FAKE = torch.tensor([0.5, -3.0], dtype=torch.float64)


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


@pytest.mark.parametrize("loss, d_expected, g_expected", [
    ("wgan", (0.5 - 3.0) / 2 - (2.0 - 1.0) / 2, -(0.5 - 3.0) / 2),
    ("hinge", (max(0, 1 - 2.0) + max(0, 1 + 1.0)) / 2 + (max(0, 1 + 0.5) + max(0, 1 - 3.0)) / 2,
     -(0.5 - 3.0) / 2),
    # -log sigmoid(t) = log(1 + e^-t);  -log(1 - sigmoid(t)) = log(1 + e^t)
    ("ns", (softplus(-2.0) + softplus(1.0)) / 2 + (softplus(0.5) + softplus(-3.0)) / 2,
     (softplus(-0.5) + softplus(3.0)) / 2),
])
def test_losses_match_hand_computed_values(loss, d_expected, g_expected):
    assert math.isclose(float(discriminator_loss(loss, D_REAL, D_FAKE)), d_expected,
                        rel_tol=1e-14)
    assert math.isclose(float(generator_loss(loss, D_FAKE)), g_expected, rel_tol=1e-14)
    # the non-saturating pair really is -log D(real) - log(1 - D(fake)) with D = sigmoid(z)
    if loss == "ns":
        s = torch.sigmoid
        direct = -(torch.log(s(D_REAL)).mean() + torch.log(1 - s(D_FAKE)).mean())
        assert math.isclose(float(direct), d_expected, rel_tol=1e-12)
    with pytest.raises(ValueError, match="`loss` must be one of"):
        discriminator_loss("wgan-gp", D_REAL, D_FAKE)


class _HalfSquare(nn.Module):
    """``D(x) = ||x||^2 / 2`` per sample: ``grad_x D = x``."""

    def forward(self, x):
        return 0.5 * (x ** 2).flatten(1).sum(1)


def test_gradient_penalty_hand_computed():
    real = torch.tensor([[[[3.0, 4.0]]], [[[1.0, 0.0]]]], dtype=torch.float64)
    fake = torch.tensor([[[[0.0, 0.0]]], [[[1.0, 2.0]]]], dtype=torch.float64)
    mix = torch.tensor([0.5, 0.25], dtype=torch.float64)
    # x_hat_0 = (1.5, 2) with norm 2.5; x_hat_1 = (1, 1.5) with norm sqrt(3.25)
    expected = ((2.5 - 1) ** 2 + (math.sqrt(3.25) - 1) ** 2) / 2
    assert math.isclose(float(gradient_penalty(_HalfSquare(), real, fake, mix).detach()), expected,
                        rel_tol=1e-14)
    # negative control: mixing the other way round gives another value
    swapped = float(gradient_penalty(_HalfSquare(), real, fake, 1 - mix).detach())
    assert not math.isclose(swapped, expected, rel_tol=1e-3)
    with pytest.raises(ValueError, match="`mix` must have shape"):
        gradient_penalty(_HalfSquare(), real, fake, mix[:1])


def test_gradient_penalty_of_a_linear_critic_and_its_weight_gradient():
    # D(x) = <w, x> + b: grad_x D = w everywhere, so GP = (||w|| - 1)^2 and
    # d GP / d w = 2 (||w|| - 1) w / ||w||  (the penalty is differentiable in the weights)
    lin = nn.Linear(4, 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.25]], dtype=torch.float64))
    critic = nn.Sequential(nn.Flatten(), lin, nn.Flatten(0))
    g = torch.Generator().manual_seed(0)
    real, fake = (torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64) for _ in range(2))
    gp = gradient_penalty(critic, real, fake, torch.rand(3, generator=g, dtype=torch.float64))
    w = lin.weight.detach().reshape(-1)
    norm = float(w.norm())
    assert math.isclose(float(gp.detach()), (norm - 1) ** 2, rel_tol=1e-13)
    (grad,) = torch.autograd.grad(gp, lin.weight)
    torch.testing.assert_close(grad.reshape(-1), 2 * (norm - 1) * w / norm, rtol=1e-12,
                               atol=1e-14)


def test_device_selection(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"`device` = 'cuda' but torch.cuda.is_available\(\)"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"`device` = 'cuda'"):  # before anything is written
        train(tiny(run={"device": "cuda"}), Path("/nonexistent/never-created"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match="`device` must be one of"):
        resolve_device("gpu")


# ---- determinism, probes, resumption ------------------------------------------------------------

def test_outputs_of_a_run(reference):
    losses = read_losses(reference)
    assert [r["step"] for r in losses] == list(range(1, 13))
    assert all(math.isfinite(v) for r in losses for v in r.values())
    records = read_probes(reference)
    assert sorted({r["step"] for r in records}) == [0, 3, 6, 9, 12]
    hessian_steps = {r["step"] for r in records if "hessian_norm" in r}
    assert hessian_steps == {0, 6, 12}
    assert {r["batch"] for r in records} == {"real", "fake"}
    assert sorted(list_checkpoints(reference)) == [4, 8, 12]
    assert (reference / "samples" / "step_0000012.png").is_file()
    assert (reference / "samples" / "real.png").is_file()
    prov = json.loads((reference / "provenance.json").read_text())
    assert prov["seed"] == 1 and prov["config"] == TrainConfig.from_dict(tiny()).to_dict()
    assert json.loads((reference / "config.json").read_text()) == prov["config"]
    timing = json.loads((reference / "timings.jsonl").read_text().splitlines()[-1])
    assert timing["end_step"] == 12 and timing["wall_s"] > 0
    # records are deterministic: no wall-clock value inside them
    assert not any("time" in key or key.endswith("_s") for r in records for key in r)


def test_same_seed_same_bytes_other_seed_other_numbers(reference, tmp_path):
    train(tiny(), tmp_path / "again", progress=False)
    for name in ("losses.csv", "probes.jsonl"):
        assert bytes_of(tmp_path / "again", name) == bytes_of(reference, name), name
    train(tiny(run={"seed": 2}, probe={"every": 0}), tmp_path / "other", progress=False)
    assert read_losses(tmp_path / "other") != read_losses(reference)


def test_probes_do_not_perturb_training(reference, tmp_path):
    train(tiny(probe={"every": 0, "hessian_every": 0}), tmp_path, progress=False)
    assert read_probes(tmp_path) == []
    assert bytes_of(tmp_path, "losses.csv") == bytes_of(reference, "losses.csv")
    a = torch.load(list_checkpoints(reference)[12], weights_only=True)
    b = torch.load(list_checkpoints(tmp_path)[12], weights_only=True)
    for part in ("disc", "gen"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert torch.equal(a["rng"]["latent"], b["rng"]["latent"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_stop_and_resume_reproduces_the_uninterrupted_bytes(reference, tmp_path):
    first = train(tiny(), tmp_path, progress=False, stop_after=7)
    assert first.stopped_early and first.end_step == 7
    assert max(list_checkpoints(tmp_path)) == 4
    assert max(r["step"] for r in read_probes(tmp_path)) == 6  # written past the checkpoint
    second = train(tiny(), tmp_path, progress=False)
    assert second.resumed and second.start_step == 4 and second.end_step == 12
    for name in ("losses.csv", "probes.jsonl"):
        assert bytes_of(tmp_path, name) == bytes_of(reference, name), name


def test_extending_a_run_equals_the_longer_run(reference, tmp_path):
    train(tiny(run={"steps": 6}), tmp_path, progress=False)
    summary = train(tiny(), tmp_path, progress=False)
    assert summary.resumed and summary.start_step == 6
    for name in ("losses.csv", "probes.jsonl"):
        assert bytes_of(tmp_path, name) == bytes_of(reference, name), name


def test_sigkill_and_resume_reproduces_the_uninterrupted_bytes(reference, tmp_path):
    script = ("import json, sys; from sntheory.lab.train import train; "
              "train(json.loads(sys.argv[1]), sys.argv[2], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(tiny()), str(tmp_path)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list_checkpoints(tmp_path):  # kill right after the first checkpoint
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the training subprocess ended or hung before its first checkpoint: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = max(list_checkpoints(tmp_path))
    assert killed_at < 12
    summary = train(tiny(), tmp_path, progress=False)
    assert summary.resumed and summary.start_step == killed_at
    for name in ("losses.csv", "probes.jsonl"):
        assert bytes_of(tmp_path, name) == bytes_of(reference, name), name


def test_resume_refuses_another_config_and_a_modified_run(reference, tmp_path):
    train(tiny(run={"steps": 4}, probe={"every": 0}), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"another config \(train.lr: 0.0001 in the run, 0.001 "
                                         r"now"):
        train(tiny(run={"steps": 8}, probe={"every": 0}, train={"lr": 1e-3}), tmp_path,
              progress=False)
    (tmp_path / "losses.csv").write_text("step\n")
    with pytest.raises(ValueError, match="losses.csv has .* fewer than"):
        train(tiny(run={"steps": 8}, probe={"every": 0}), tmp_path, progress=False)
    with pytest.raises(ValueError, match="checkpoint at step 4, beyond `\\[run\\] steps` = 3"):
        train(tiny(run={"steps": 3}, probe={"every": 0}), tmp_path, progress=False)
    # resume=False starts over, whatever was there
    summary = train(tiny(run={"steps": 3}, probe={"every": 0}, train={"lr": 1e-3}), tmp_path,
                    progress=False, resume=False)
    assert not summary.resumed and sorted(list_checkpoints(tmp_path)) == [3]
    assert [r["step"] for r in read_losses(tmp_path)] == [1, 2, 3]


def test_load_run(reference):
    run = load_run(reference)
    assert run.step == 12 and not run.disc.training and not run.gen.training
    state = torch.load(list_checkpoints(reference)[12], weights_only=True)
    for key, value in run.disc.state_dict().items():
        assert torch.equal(value, state["disc"][key]), key
    assert run.config == TrainConfig.from_dict(tiny())
    assert tuple(run.data.images.shape[1:]) == (1, 8, 8)
    assert load_run(reference, step=4).step == 4
    with pytest.raises(ValueError, match=r"checkpoints at steps \[4, 8, 12\] only"):
        load_run(reference, step=5)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(reference / "nope")


# ---- CLI ----------------------------------------------------------------------------------------

def lab_parser():
    """The parser shape of sntheory.cli with the lab's commands registered."""
    import argparse

    from sntheory.cli_lab import register, register_checks

    parser = argparse.ArgumentParser(prog="sntheory")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    check = sub.add_parser("check")
    register_checks(check.add_subparsers(dest="claim"))
    return parser


def run_cli(argv) -> int:
    args = lab_parser().parse_args([str(a) for a in argv])
    return args.lab_handler(args)


def test_cli_train_resume_and_errors(tmp_path, capsys):
    cfg = tmp_path / "exp" / "tiny.toml"
    cfg.parent.mkdir()
    cfg.write_text(BASE_TOML + "[run]\nsteps = 2\nsample_every = 0\ncheckpoint_every = 1\n"
                   "threads = 1\n[train]\nbatch_size = 8\n")
    out = tmp_path / "run"
    assert run_cli(["train", cfg, "--out", out, "--quiet", "--steps", "3"]) == 0
    assert [r["step"] for r in read_losses(out)] == [1, 2, 3]
    assert run_cli(["train", cfg, "--out", out, "--quiet", "--steps", "4"]) == 0
    assert "resumed at step 3" in capsys.readouterr().out
    assert run_cli(["train", tmp_path / "missing.toml", "--quiet"]) == 2
    assert "missing.toml" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE_TOML + "[train]\nloss = 'l2'\n")
    assert run_cli(["train", bad, "--out", tmp_path / "bad", "--quiet"]) == 2
    assert "[train] loss = 'l2'" in capsys.readouterr().err
    from sntheory.cli_lab import default_run_dir
    assert default_run_dir(cfg) == Path("runs") / "exp" / "tiny"


def test_cli_checks_print_rows_and_map_verdicts_to_exit_codes(reference, tmp_path, capsys,
                                                                monkeypatch):
    import types

    from sntheory import cli_lab
    from sntheory.report.rows import ClaimRow

    def fake_check(run_dir, *, step=None):
        verdict = "VIOLATED" if step == 99 else "HOLDS"
        return [ClaimRow("P1", str(run_dir), "layer 1", "g <= b", "none", 1.0, 0.5, slack=0.5,
                         verdict=verdict, note="a note")]

    module = types.ModuleType("fake_claims")
    module.check_fake_run = fake_check
    monkeypatch.setitem(sys.modules, "fake_claims", module)
    monkeypatch.setitem(cli_lab.LAB_CHECKS, "prop1", ("fake_claims", "check_fake_run", "fake"))
    assert run_cli(["check", "prop1", "--run", reference]) == 0
    out = capsys.readouterr().out
    assert "layer 1" in out and "HOLDS: 1" in out and "a note" in out
    assert run_cli(["check", "prop1", "--run", reference, "--step", "99",
                    "--json", tmp_path / "rows.json"]) == 1
    written = json.loads((tmp_path / "rows.json").read_text())
    assert written["rows"][0]["verdict"] == "VIOLATED"
    assert written["provenance"]["config"]["claim"] == "prop1"
    assert run_cli(["check", "prop1", "--run", reference, "--seed", "3"]) == 2
    assert "`--seed` does not apply" in capsys.readouterr().err
    assert run_cli(["check", "prop1", "--run", tmp_path / "nothing"]) == 2


def test_cli_prop1_on_a_real_run(reference, capsys):
    pytest.importorskip("sntheory.claims.prop1")
    code = run_cli(["check", "prop1", "--run", reference])
    out = capsys.readouterr().out
    assert "P1" in out and code == 0, out[-3000:]


# ---- figures ------------------------------------------------------------------------------------

def test_figures_from_a_run(reference, tmp_path):
    from sntheory.lab.figures import gradient_series, plot_gradient_norms, plot_losses

    series = gradient_series(read_probes(reference))
    assert sorted(series) == [0, 1, 2]
    for s in series.values():
        assert list(s["step"]) == [0, 3, 6, 9, 12]
        assert (s["value"] <= s["bound"]).all()  # SN run, P1 holds
    png = plot_gradient_norms({"SN": reference}, tmp_path / "fig2.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_losses({"SN": reference}, tmp_path / "losses.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no probe records"):
        plot_gradient_norms({"empty": []}, tmp_path / "x.png")
