"""Claim R and `sntheory convnorm`: bounds, tightness, adversarial search, negative controls."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sntheory.claims import ratio
from sntheory.cli import main
from sntheory.conv.dense import dense_operator_norm
from sntheory.conv.geometry import ConvGeometry
from sntheory.monte_carlo.verdicts import assign_verdicts

CASES = (ratio._case("3x3/s1 same circular, 8x8", 4, 4, 3, 8, mode="circular"),
         ratio._case("4x4/s2 pad1, 8x8", 4, 3, 4, 8, stride=2, padding=1))


@pytest.fixture(scope="module")
def result():
    return ratio.run(CASES, n_kernels=12, seed=0, adversarial_steps=80, progress=False)


def test_random_kernels_obey_the_bounds(result):
    assert not result["summary"]["any_violated"]
    for r in result["records"]:
        q = r["ratio"]["quantiles"]
        assert 1 - 1e-6 <= q["min"] <= q["max"] <= r["alpha"] * (1 + 1e-6), r["params"]["name"]
        assert r["ratio"]["n_above_alpha"] == 0 and r["ratio"]["n_below_one"] == 0
        v = r["variance"]["snconv_over_snw"]
        assert 1 / r["alpha"] ** 2 <= v["estimate"] <= 1
        assert r["verdict"] == "HOLDS"


def test_ratio_values_match_the_dense_matrix(result):
    """The operator norms behind the ratios, recomputed from the dense expanded matrix."""
    case = CASES[1]
    w = np.random.default_rng(5).standard_normal((case.c_out, case.c_in, *case.kernel))
    from sntheory.conv.operator import conv_operator_norm
    res = conv_operator_norm(w, case.geometry, rtol=1e-8)
    dense = dense_operator_norm(w, case.geometry)
    assert res.lower <= dense * (1 + 1e-12) and dense <= res.upper * (1 + 1e-12)
    assert abs(res.value - dense) <= 1e-6 * dense


def test_all_ones_attains_alpha_on_the_torus(result):
    circular = result["records"][0]
    assert circular["alpha"] == pytest.approx(3.0)
    assert circular["all_ones"]["ratio"] == pytest.approx(3.0, rel=1e-8)


def test_adversarial_search_approaches_but_never_exceeds_alpha(result):
    for r in result["records"]:
        adv = r["adversarial"]
        assert adv["ratio"] <= r["alpha"] * (1 + 1e-6)
        assert adv["ratio"] > r["ratio"]["quantiles"]["max"]  # it does push the ratio up
    assert result["records"][0]["adversarial"]["fraction_of_alpha"] > 0.95


def test_a_too_small_alpha_is_caught(result):
    """Negative control: claiming alpha = 1.2 for a 3x3 stride-1 layer must be VIOLATED."""
    record = dict(result["records"][0], alpha=1.2)
    checks = ratio.checks_for(record)
    assign_verdicts(checks)
    verdicts = {c.name: str(c.verdict) for c in checks}
    assert verdicts["ratio<=alpha"] == "VIOLATED"
    assert verdicts["adversarial<=alpha"] == "VIOLATED"
    # Var_SNConv/Var_SNw ~ 0.4 < 1/1.2^2: the variance bracket catches it too
    assert verdicts["var>=snw/alpha^2"] == "VIOLATED"
    assert verdicts["var<=snw"] == "HOLDS"


def test_cli_ratio_writes_table_json_and_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ratio, "QUICK_CASES", CASES[:1])
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["check", "ratio", "--quick", "--kernels", "4", "--adversarial-steps", "3",
                 "--quiet", "--json", str(out_json), "--plot", str(out_png)])
    assert code == 0
    assert "Claim R" in capsys.readouterr().out
    assert json.loads(out_json.read_text())["records"][0]["alpha"] == pytest.approx(3.0)
    assert out_png.read_bytes()[:4] == b"\x89PNG"


def test_cli_ratio_bad_arguments(capsys):
    assert main(["check", "ratio", "--kernels", "1"]) == 2
    assert "--kernels" in capsys.readouterr().err


# ---- sntheory convnorm --------------------------------------------------------------------------

def test_convnorm_on_an_npy_kernel(tmp_path, capsys):
    w = np.random.default_rng(0).standard_normal((6, 4, 3, 3))
    path = tmp_path / "k.npy"
    np.save(path, w)
    out = tmp_path / "rows.json"
    code = main(["convnorm", str(path), "--input-size", "8x8", "--padding", "1",
                 "--padding-mode", "circular", "--json", str(out)])
    assert code == 0
    row = json.loads(out.read_text())["rows"][0]
    geometry = ConvGeometry((8, 8), 1, 1, "circular")
    dense = dense_operator_norm(w, geometry)
    assert row["operator_norm"] == pytest.approx(dense, rel=1e-9)
    assert row["reshaped_norm"] == pytest.approx(np.linalg.norm(w.reshape(6, -1), 2), rel=1e-12)
    assert 1 <= row["ratio"] <= row["alpha"] == pytest.approx(3.0)
    assert "ratio" in capsys.readouterr().out


def test_convnorm_on_a_saved_model_and_state_dict(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.LeakyReLU(0.1),
        torch.nn.Conv2d(8, 8, 4, stride=2, padding=1), torch.nn.LeakyReLU(0.1),
        torch.nn.Conv2d(8, 4, 3, padding=1, padding_mode="circular"))
    torch.save(model, tmp_path / "model.pt")
    out = tmp_path / "rows.json"
    assert main(["convnorm", str(tmp_path / "model.pt"), "--input-shape", "3x8x8",
                 "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["layer"] for r in rows] == ["0", "2", "4"]
    assert rows[1]["geometry"]["input_size"] == [8, 8] and rows[2]["geometry"]["input_size"] == [4, 4]
    for row, layer in zip(rows, (model[0], model[2], model[4])):
        g = ConvGeometry.from_module(layer, row["geometry"]["input_size"])
        dense = dense_operator_norm(layer.weight.detach().double().numpy(), g)
        assert row["operator_lower"] <= dense * (1 + 1e-9) and dense <= row["operator_upper"] * (1 + 1e-9)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    assert main(["convnorm", str(tmp_path / "sd.pt"), "--input-size", "8x8", "--padding", "1"]) == 0
    assert "0.weight" in capsys.readouterr().out


@pytest.mark.parametrize("make, args, message", [
    (lambda p: np.save(p / "k.npy", np.ones((3, 3, 3))), ["k.npy", "--input-size", "8x8"],
     "kernel"),
    (lambda p: np.save(p / "k.npy", np.ones((2, 2, 3, 3))), ["k.npy"], "--input-size"),
    (lambda p: (p / "bad.pt").write_bytes(b"not a torch file"), ["bad.pt", "--input-size", "8x8"],
     "could not be loaded"),
    (lambda p: None, ["missing.npy", "--input-size", "8x8"], "does not exist"),
    (lambda p: np.save(p / "k.npy", np.full((2, 2, 3, 3), np.nan)),
     ["k.npy", "--input-size", "8x8"], "finite"),
    (lambda p: np.save(p / "k.npy", np.ones((2, 2, 3, 3))), ["k.npy", "--input-size", "2x2"],
     "empty output"),
    (lambda p: np.save(p / "k.npy", np.ones((2, 2, 3, 3))), ["k.npy", "--input-size", "8by8"],
     "--input-size"),
])
def test_convnorm_bad_input(tmp_path, capsys, make, args, message):
    make(tmp_path)
    args = [str(tmp_path / args[0]), *args[1:]]
    assert main(["convnorm", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sntheory: error:") and message in err, err
