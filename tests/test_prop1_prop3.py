"""Claims P1 and P3 from probe records: verdicts, negative controls, run directories, errors."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from sntheory.claims.prop1 import ROUND_OFF, check_prop1, check_prop1_run
from sntheory.claims.prop3 import check_prop3, check_prop3_run
from sntheory.lab.nets import NetConfig, build_discriminator
from sntheory.lab.probes import OperatorNormCache, ProbeOptions, probe_discriminator
from sntheory.report.rows import ClaimRow

from test_lab_probes import aligned_mlp

TINY = dict(arch="dcgan", image_size=8, width=4, depth=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data(seed, n=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 1, 8, 8, generator=g) * 0.5


def _train_and_probe(normalizer, bias, *, activation="leaky_relu:0.1", steps=(0, 10, 20),
                     hessian=False, seed=0, loss="wgan"):
    """A brief WGAN-style training of a tiny discriminator on fixed data, probed on a schedule."""
    cfg = NetConfig(**TINY, bias=bias, activation=activation)
    disc = build_discriminator(cfg, normalizer, seed=seed)
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.5, 0.999))
    real, fake = _data(seed + 1)
    real = real * 0.3 + 0.5
    cache = OperatorNormCache()
    records = []
    for step in range(max(steps) + 1):
        if step in steps:
            records += probe_discriminator(disc, real, fake, step=step, loss=loss, cache=cache,
                                           options=ProbeOptions(hessian=hessian))
        opt.zero_grad()
        (disc(fake).mean() - disc(real).mean()).backward()
        opt.step()
    return records


def _verdicts(rows, statement=None):
    return {r.verdict for r in rows if statement is None or r.extra["statement_id"] == statement}


@pytest.mark.parametrize("normalizer,bias", [("none", False), ("snw", True), ("snconv", False),
                                             ("bsn", True)])
def test_p1_holds_on_trained_nets(normalizer, bias):
    records = _train_and_probe(normalizer, bias)
    rows = check_prop1(records, experiment="unit")
    assert rows and all(isinstance(r, ClaimRow) for r in rows)
    assert "VIOLATED" not in _verdicts(rows)
    for r in rows:
        if r.extra["statement_id"] == "sn_corollary" or r.extra["statement_id"].startswith(
                "total_sn"):
            continue                         # power-iteration lag can put these outside
        assert r.verdict == "HOLDS", (r.setting, r.statement, r.note)
        assert r.extra["n_points"] >= 6      # 3 steps x 2 batches
        assert r.slack is None or r.slack >= -ROUND_OFF
    ids = {r.extra["statement_id"] for r in rows}
    assert {"grad_z_expanded", "grad_z_kernel", "loss_grad", "raw_grad", "raw_grad_z",
            "total_grad_expanded"} <= ids
    assert ("grad_bias_param" in ids) == bias
    assert ("sn_corollary" in ids) == (normalizer in ("snw", "snconv"))
    steps = {r.extra["worst"]["step"] for r in rows}
    assert steps <= {0, 10, 20}


def test_sn_corollary_outside_when_power_iteration_lags():
    records = _train_and_probe("snw", False, steps=(0, 10))
    rows = [r for r in check_prop1(records) if r.extra["statement_id"] == "sn_corollary"]
    assert rows
    norms = [r["sn_normalized_norm"] for r in records if "sn_normalized_norm" in r]
    above = any(n > 1 + ROUND_OFF for n in norms)
    for row in rows:
        if above and row.extra["n_points_outside_hypotheses"] == row.extra["n_points"]:
            assert row.verdict == "OUTSIDE-HYPOTHESES" and not row.hypotheses_hold
        assert row.verdict != "VIOLATED"


def test_lipschitz_two_is_outside_and_fails_and_mislabelled_records_are_violated():
    disc, x = aligned_mlp("scaled_relu:2")
    records = probe_discriminator(disc, x, x * 0.5, step=3)
    rows = check_prop1(records, experiment="neg")
    grad_rows = [r for r in rows if r.extra["statement_id"] == "grad_z_expanded"]
    assert len(grad_rows) == 3
    for r in grad_rows:
        assert r.verdict == "OUTSIDE-HYPOTHESES" and not r.hypotheses_hold
        assert r.extra["observed"] == "bound-fails"
        assert r.extra["worst"]["ratio"] == pytest.approx(4.0, rel=1e-12)   # 2^(L-1)
        assert "bound-fails" in r.note
    assert not any(r.counts_as_failure for r in rows)
    # the same records claiming a 1-Lipschitz activation: the check must call the violation,
    # with layer, step, batch, sample and margin
    lied = copy.deepcopy(records)
    for r in lied:
        r["meets_p1_hypotheses"] = True
        r["activation_lipschitz"] = 1.0
    rows = check_prop1(lied, experiment="neg")
    bad = [r for r in rows if r.verdict == "VIOLATED"]
    assert {r.extra["statement_id"] for r in bad} >= {"grad_z_expanded", "grad_z_kernel",
                                                       "total_grad_expanded"}
    v = next(r for r in bad if r.extra["statement_id"] == "grad_z_expanded").extra["violations"]
    assert v and {"step", "batch", "layer", "sample", "margin"} <= set(v[0])
    assert v[0]["step"] == 3 and v[0]["margin"] == pytest.approx(3.0, rel=1e-12)
    assert any(r.counts_as_failure for r in rows)


def test_tolerance_passes_an_exactly_tight_net_and_catches_a_1e6_excess():
    disc, x = aligned_mlp("relu")
    rows = check_prop1(probe_discriminator(disc, x, x, step=0))
    tight = [r for r in rows if r.extra["statement_id"] == "grad_z_expanded"]
    assert all(r.verdict == "HOLDS" for r in tight)
    assert all(abs(r.extra["worst"]["ratio"] - 1) < 1e-13 for r in tight)
    disc, x = aligned_mlp("scaled_relu:1.000001")
    lied = probe_discriminator(disc, x, x, step=0)
    for r in lied:
        r["meets_p1_hypotheses"] = True
    rows = check_prop1(lied)
    assert all(r.verdict == "VIOLATED" for r in rows
               if r.extra["statement_id"] == "grad_z_expanded")


def test_sheet_raw_bound_fails_while_the_corrected_one_holds():
    records = _train_and_probe("snw", True, steps=(0, 5))
    rows = check_prop1(records, experiment="raw", sheet_raw_bound=True)
    sheet = [r for r in rows if r.extra["statement_id"] in ("raw_grad_sheet", "raw_grad_z_sheet")]
    corrected = [r for r in rows if r.extra["statement_id"] in ("raw_grad", "raw_grad_z")]
    assert any(r.verdict == "VIOLATED" for r in sheet)
    assert all(r.verdict == "HOLDS" for r in corrected)
    assert max(r.extra["sheet_ratio_max"] for r in corrected) > 1 + 1e-3
    # by default the sheet's form is not a row (only its worst ratio, in extra)
    default = check_prop1(records, experiment="raw")
    assert not any("sheet" in r.extra["statement_id"] for r in default)


def test_p3_holds_for_leaky_relu_and_is_outside_for_tanh():
    rows = check_prop3(_train_and_probe("snw", True, steps=(0, 5), hessian=True, loss="ns"))
    layer_rows = [r for r in rows if r.extra["statement_id"] != "hessian_cross"]
    assert len(layer_rows) == 6 and all(r.verdict == "HOLDS" for r in layer_rows)
    assert all(r.extra["gauss_newton_rel_gap_max"] < 1e-6 for r in layer_rows)
    tanh = check_prop3(_train_and_probe("snw", True, steps=(0,), hessian=True,
                                        activation="tanh"))
    assert all(r.verdict == "OUTSIDE-HYPOTHESES" and not r.hypotheses_hold for r in tanh)
    curvature = [r for r in tanh if r.extra["statement_id"] == "hessian_curvature"]
    # the a.e. identity H = mean s'' g g^T is what fails for a smooth activation
    assert any(r.extra["observed"] == "bound-fails" for r in curvature)
    assert max(r.extra["gauss_newton_rel_gap_max"] for r in curvature) > 1e-3


def test_p3_cross_blocks_and_a_violation():
    cfg = NetConfig(**TINY, activation="relu")
    disc = build_discriminator(cfg, "none", seed=5)
    real, fake = _data(5, n=4)
    records = probe_discriminator(disc, real, fake, step=1, loss="ns",
                                  options=ProbeOptions(hessian=True, hessian_cross_layer=True))
    rows = check_prop3(records)
    cross = [r for r in rows if r.extra["statement_id"] == "hessian_cross"]
    assert len(cross) == 3
    assert all(r.verdict == "OUTSIDE-HYPOTHESES" and r.bound is None and r.measured > 0
               for r in cross)
    shrunk = copy.deepcopy(records)        # a bound 1e-6 below the measured norm is caught
    for r in shrunk:
        if "hessian_bound_curvature" in r:
            r["hessian_bound_curvature"] = r["hessian_norm"] * (1 - 1e-6)
    bad = [r for r in check_prop3(shrunk) if r.extra["statement_id"] == "hessian_curvature"]
    assert all(r.verdict == "VIOLATED" for r in bad)
    assert bad[0].extra["violations"][0]["step"] == 1


def test_run_directory_readers(tmp_path):
    records = _train_and_probe("none", False, steps=(0,), hessian=True)
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "config.toml").write_text("# test\n")
    lines = [json.dumps(r) for r in records] + [json.dumps({"kind": "other record"})]
    (run / "probes.jsonl").write_text("\n".join(lines) + "\n")
    rows = check_prop1_run(run)
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in
                                           check_prop1(records, experiment="run-a")]
    assert all(r.experiment == "run-a" for r in rows)
    assert [r.verdict for r in check_prop3_run(run)] == [r.verdict for r in check_prop3(records)]
    with pytest.raises(FileNotFoundError, match="probes.jsonl"):
        check_prop1_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        check_prop3_run(tmp_path / "missing")


def test_bad_records_are_rejected():
    with pytest.raises(ValueError, match="no probe records"):
        check_prop1([{"kind": "other"}])
    with pytest.raises(TypeError, match=r"`records\[0\]` must be a dict"):
        check_prop1([3])
    with pytest.raises(TypeError, match="list of probe records"):
        check_prop1({"probe_version": 1})
    with pytest.raises(ValueError, match="Hessian measurements"):
        check_prop3(_train_and_probe("none", False, steps=(0,)))
    with pytest.raises(ValueError, match="`experiment`"):
        check_prop3([], experiment="")
