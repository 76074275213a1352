"""``sntheory report``: configs, kinds, verdict logic, runner (reuse, interruption), rendering,
the command line and the browser check.

Every experiment config in ``experiments/`` is smoke-run (its quick profile with the config's
``[smoke]`` overrides) through the real runner into a temporary folder.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from sntheory.cli_report import build_parser, run as cli_run
from sntheory.monte_carlo.estimators import Estimate
from sntheory.monte_carlo.verdicts import BoundCheck, Verdict, assign_verdicts
from sntheory.report.experiments import (ExperimentKind, ExperimentOutput, Figure, get_kind,
                                         deterministic_verdict, load_config, load_kind_modules,
                                         overall_verdict, register_kind, row_from_check,
                                         verdict_counts)
from sntheory.report.rows import ClaimRow
from sntheory.report.runner import load_results, run_report

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
CONFIGS = sorted(EXPERIMENTS.glob("*/config.toml"))
MC_NAMES = ("thm2", "thm3", "ratio")


def _load_script():
    spec = importlib.util.spec_from_file_location(
        "check_report_browser", ROOT / "scripts" / "check_report_browser.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BROWSER_CHECK = _load_script()


# ---- toy kinds: cheap, fully controlled experiments for the runner and renderer ---------------

CALLS: dict[str, int] = {}
INTERRUPT = {"on": False}


@dataclass(frozen=True)
class ToyParams:
    measured: tuple[float, ...] = (1.0,)
    bound: float = 2.0
    setting: str = "toy"
    claim: str = "T2"
    control_measured: float | None = None   # an extra OUTSIDE-HYPOTHESES row
    figures: int = 1
    nested_record: bool = False

    def __post_init__(self) -> None:
        if self.bound <= 0:
            raise ValueError(f"`bound` must be > 0, got {self.bound!r}")


def _toy_run(params: ToyParams, out_dir: Path, ctx) -> ExperimentOutput:
    import matplotlib.pyplot as plt

    CALLS[ctx.experiment] = CALLS.get(ctx.experiment, 0) + 1
    rows = []
    for i, value in enumerate(params.measured):
        verdict, observed = deterministic_verdict(value, params.bound)
        rows.append(ClaimRow(claim=params.claim, experiment=ctx.experiment,
                             setting=f"{params.setting} #{i}", statement="x <= bound",
                             hypotheses="toy", bound=params.bound, measured=value,
                             slack=(params.bound - value) / params.bound, verdict=verdict.value,
                             extra={"observed": observed}))
    if params.control_measured is not None:
        verdict, observed = deterministic_verdict(params.control_measured, params.bound,
                                                  hypotheses_hold=False)
        rows.append(ClaimRow(claim=params.claim, experiment=ctx.experiment, setting="control",
                             statement="x <= bound", hypotheses="toy", bound=params.bound,
                             measured=params.control_measured, verdict=verdict.value,
                             hypotheses_hold=False, note="broken on purpose",
                             extra={"observed": observed}))
    figures = []
    for i in range(params.figures):
        plt.imsave(out_dir / f"fig{i}.png", np.arange(64.0 * (i + 1)).reshape(8, -1))
        figures.append(Figure(f"fig{i}.png", f"toy figure {i} of {params.setting}"))
    records = [{"i": i, "measured": v, "seed": ctx.seed} for i, v in enumerate(params.measured)]
    if params.nested_record:
        records.append({"bad": {"nested": 1}})
    return ExperimentOutput(rows=rows, figures=figures, records=records,
                            summary=f"toy with `{len(rows)}` rows")


def _toy_interrupt(params: ToyParams, out_dir: Path, ctx) -> ExperimentOutput:
    if INTERRUPT["on"]:
        (out_dir / "partial.png").write_bytes(b"half")
        raise KeyboardInterrupt
    return _toy_run(params, out_dir, ctx)


def _toy_no_rows(params, out_dir, ctx):
    return ExperimentOutput(rows=[], summary="nothing")


def _toy_missing_figure(params, out_dir, ctx):
    out = _toy_run(params, out_dir, ctx)
    out.figures.append(Figure("never_written.png", "missing"))
    return out


def _toy_nan(params, out_dir, ctx):
    out = _toy_run(params, out_dir, ctx)
    out.records.append({"value": math.nan})
    return out


for _name, _fn in (("test-toy", _toy_run), ("test-toy-interrupt", _toy_interrupt),
                   ("test-toy-no-rows", _toy_no_rows),
                   ("test-toy-missing-figure", _toy_missing_figure), ("test-toy-nan", _toy_nan)):
    register_kind(ExperimentKind(_name, ToyParams, _fn), replace=True)


def _write_config(root: Path, name: str, *, kind: str = "test-toy", claim: str = "T2",
                  seed: int = 0, quick: str = "", full: str = "", smoke: str | None = None,
                  extra_experiment: str = "", extra: str = "") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    text = (f"# toy experiment {name}\n# Regenerate: sntheory report --profile full --only {name}\n"
            f"[experiment]\nname = \"{name}\"\nkind = \"{kind}\"\nclaim = \"{claim}\"\n"
            f"figure = \"\"\ntitle = \"toy {name}\"\nseed = {seed}\n{extra_experiment}\n"
            f"[full]\n{full}\n[quick]\n{quick}\n")
    if smoke is not None:
        text += f"[smoke]\n{smoke}\n"
    text += extra
    path = folder / "config.toml"
    path.write_text(text)
    return path


def _report(exps: Path, out: Path, **kwargs):
    kwargs.setdefault("profile", "quick")
    kwargs.setdefault("progress", False)
    return run_report(exps, out, **kwargs)


# ---- every real config: header, strict parse, smoke run ---------------------------------------

@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory):
    """Shared output folder of the smoke runs (results are reused by later tests)."""
    return tmp_path_factory.mktemp("smoke_out")


def _smoke_run(config_path: Path, out: Path, tmp: Path):
    exps = tmp / f"exps_{config_path.parent.name}"
    if not exps.exists():
        shutil.copytree(config_path.parent, exps / config_path.parent.name)
    return run_report(exps, out, profile="smoke", workers=1, progress=False)


@pytest.mark.parametrize("config_path", CONFIGS, ids=[p.parent.name for p in CONFIGS])
def test_every_config_smoke_runs_through_the_real_runner(config_path, smoke_out, tmp_path):
    header = config_path.read_text().splitlines()[0]
    assert header.startswith("#"), f"{config_path}: needs a header comment"
    config = load_config(config_path)
    assert f"sntheory report --profile full --only {config.name}" in config.header, \
        f"{config_path}: the header must give the exact command"
    assert config.claim in config.header, f"{config_path}: the header must name the claim"
    for profile in ("quick", "full"):
        config.params(profile)
    report = _smoke_run(config_path, smoke_out, tmp_path)
    (run,) = report.runs
    assert run.status == "ran"
    folder = smoke_out / config.name
    result = json.loads((folder / "result.json").read_text())
    assert result["rows"], "a smoke run must check something"
    assert result["profile"] == "smoke" and result["seed"] == config.seed
    assert not run.any_violated, f"{config.name}: smoke run has VIOLATED rows: " + str(
        [r for r in result["rows"] if r["verdict"] == "VIOLATED"][:3])
    for figure in result["figures"]:
        assert (folder / figure["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert figure["caption"].strip()
    records = json.loads((folder / "records.json").read_text())
    assert len(records) == result["n_records"]
    csv_lines = (folder / "records.csv").read_text().splitlines()
    assert len(csv_lines) == len(records) + (1 if records else 0)
    resolved = tomllib.loads((folder / "config.toml").read_text())
    assert resolved["params"] == {k: v for k, v in result["config"]["params"].items()
                                  if v is not None}
    assert result["config"]["params"] == json.loads(json.dumps(
        __import__("dataclasses").asdict(config.params("smoke"))))
    for key in ("git_commit", "versions", "device", "seed", "config"):
        assert key in result["provenance"]
    assert result["command"] == f"sntheory report --profile smoke --only {config.name}"
    assert result["summary"].strip()
    assert (smoke_out / "README.md").is_file() and (smoke_out / "index.html").is_file()


def test_smoke_overrides_quick_and_quick_differs_from_full():
    config = load_config(EXPERIMENTS / "thm2" / "config.toml")
    quick, smoke, full = (config.params(p) for p in ("quick", "smoke", "full"))
    assert smoke.precision == 0.05 and quick.precision == 0.005
    assert smoke.normalizer == quick.normalizer        # not overridden: inherited from [quick]
    assert len(full.shapes) > len(quick.shapes) > len(smoke.shapes)
    assert config.config_hash("quick") != config.config_hash("smoke")


@pytest.fixture(scope="module")
def mc_report(smoke_out, tmp_path_factory):
    """The smoke results of thm2, thm3 and ratio, rendered together by one (reusing) run."""
    tmp = tmp_path_factory.mktemp("mc")
    exps = tmp / "exps"
    for name in MC_NAMES:
        shutil.copytree(EXPERIMENTS / name, exps / name)
        if not (smoke_out / name / "result.json").exists():
            _smoke_run(EXPERIMENTS / name / "config.toml", smoke_out, tmp)
    report = run_report(exps, smoke_out, profile="smoke", workers=1, progress=False)
    for other in set(p.name for p in smoke_out.iterdir() if p.is_dir()) - set(MC_NAMES):
        shutil.rmtree(smoke_out / other)           # keep only the MC experiments in this report
    report = run_report(exps, smoke_out, profile="smoke", workers=1, progress=False)
    return report


def test_mc_report_reuses_finished_results_and_renders(mc_report):
    assert [r.status for r in mc_report.runs] == ["reused"] * 3
    assert [r.config.name for r in mc_report.runs] == ["thm2", "thm3", "ratio"]
    readme = mc_report.readme.read_text()
    assert readme.index("## T2") < readme.index("## T3") < readme.index("## R ")
    assert "| claim | statement | hypotheses | setting | bound | measured [95% CI] | slack | " \
           "verdict |" in readme
    assert "**Overall verdict: HOLDS**" in readme
    total = sum(len(r["rows"]) for r in mc_report.results)
    assert f"{total} checked rows" in readme
    for name in MC_NAMES:
        assert f"({name}/{name}.png)" in readme
        assert f"sntheory report --profile smoke --only {name}" in readme
    for text in ("commit of the results", "versions:", "device:", "seeds: thm2 0",
                 "wall time:", "Regenerate:"):
        assert text in readme
    page = mc_report.index.read_text()
    assert page.count("src=\"data:image/png;base64,") == 3
    assert BROWSER_CHECK.static_problems(page) == []


def test_negative_controls_are_outside_hypotheses_and_show_the_failure(mc_report):
    rows = {r["name"]: [ClaimRow.from_dict(x) for x in r["rows"]] for r in mc_report.results}
    broken = [r for r in rows["thm2"] if "sn-scaled:0.4" in r.setting]
    upper = [r for r in broken if r.extra["check"] == "upper"]
    assert upper and all(r.verdict == "OUTSIDE-HYPOTHESES" for r in broken)
    assert all(r.extra["observed"] == "bound-fails" and r.slack < 0 for r in upper)
    shrunk = [r for r in rows["thm2"] if "sn-scaled:2.5" in r.setting
              and r.extra["check"] == "gauss-lb"]
    assert shrunk and all(r.extra["observed"] == "bound-fails" for r in shrunk)
    cauchy = [r for r in rows["thm2"] if r.setting.startswith("cauchy")
              and r.extra["check"] == "gauss-lb"]
    assert cauchy and all(not r.hypotheses_hold for r in cauchy)
    lipschitz = [r for r in rows["ratio"] if r.extra["check"] == "ratio<=1 (control)"]
    assert lipschitz and all(r.extra["observed"] == "bound-fails" for r in lipschitz)
    every = [r for rs in rows.values() for r in rs]
    assert overall_verdict(every) == Verdict.HOLDS     # controls are never counted as failures
    assert verdict_counts(every)["OUTSIDE-HYPOTHESES"] > 0
    assert not mc_report.any_violated


def test_broken_normalizer_under_test_is_violated_and_exits_1(tmp_path, capsys):
    exps = tmp_path / "exps"
    (exps / "thm2").mkdir(parents=True)
    text = (EXPERIMENTS / "thm2" / "config.toml").read_text()
    text = re.sub(r"\[quick\].*?\[smoke\]", "[quick]\nnormalizer = \"sn-scaled:0.4\"\n"
                  "shapes = [\"8x8\", \"64x32\"]\ndists = [\"gaussian\"]\nprecision = 0.05\n"
                  "control_dists = []\nbroken_normalizers = []\n\n[smoke]", text, flags=re.S)
    (exps / "thm2" / "config.toml").write_text(text)
    args = build_parser().parse_args(["report", "--experiments", str(exps), "--out",
                                      str(tmp_path / "out"), "--no-store", "--quiet",
                                      "--workers", "1"])
    assert cli_run(args) == 1
    result = json.loads((tmp_path / "out" / "thm2" / "result.json").read_text())
    upper = [r for r in result["rows"] if r["extra"]["check"] == "upper"]
    assert len(upper) == 2 and all(r["verdict"] == "VIOLATED" and r["hypotheses_hold"]
                                   for r in upper)
    assert result["verdict"] == "VIOLATED"
    assert "**Overall verdict: VIOLATED**" in (tmp_path / "out" / "README.md").read_text()
    assert "VIOLATED" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["thm2", "ratio"])
def test_same_seed_same_numbers_and_another_seed_differs(tmp_path, name):
    exps = tmp_path / "exps"
    shutil.copytree(EXPERIMENTS / name, exps / name)
    runs = []
    for out in ("a", "b"):
        run_report(exps, tmp_path / out, profile="smoke", workers=1, progress=False)
        runs.append(tmp_path / out / name)
    assert (runs[0] / "records.csv").read_bytes() == (runs[1] / "records.csv").read_bytes()
    rows = [json.loads((r / "result.json").read_text())["rows"] for r in runs]
    assert rows[0] == rows[1]
    config = exps / name / "config.toml"
    config.write_text(config.read_text().replace("seed = 0", "seed = 1"))
    report = run_report(exps, tmp_path / "a", profile="smoke", workers=1, progress=False)
    assert report.runs[0].status == "ran"            # a new seed is a new configuration
    assert (runs[0] / "records.csv").read_bytes() != (runs[1] / "records.csv").read_bytes()


# ---- the browser check ------------------------------------------------------------------------

def test_report_renders_in_a_headless_browser(mc_report, tmp_path):
    browser = BROWSER_CHECK.find_browser()
    if browser is None:
        pytest.skip("no Chromium-family browser installed (Debian: apt-get install -y chromium)")
    shot = tmp_path / "shot.png"
    failures, facts = BROWSER_CHECK.check_report(mc_report.index, browser=browser,
                                                 screenshot=shot)
    assert failures == [], failures
    assert facts["images"] == 3 and all(w > 100 for w in facts["image_widths"])
    assert facts["sections"] == sorted(MC_NAMES)
    assert facts["verdict_rows"] > 0 and facts["numeric_bounds"] == facts["verdict_rows"]
    # the checks can fail: a corrupted image and a dropped row are caught
    broken_dir = tmp_path / "broken"
    shutil.copytree(mc_report.out_dir, broken_dir)
    page = (broken_dir / "index.html").read_text()
    page = re.sub(r"(data:image/png;base64,)[A-Za-z0-9+/=]{200}", r"\1AAAA", page, count=1)
    page = re.sub(r"(<table class=\"rows\" data-experiment=\"thm3\">.*?<tbody>)\s*<tr>.*?</tr>",
                  r"\1", page, count=1, flags=re.S)
    (broken_dir / "index.html").write_text(page)
    failures, _ = BROWSER_CHECK.check_report(broken_dir / "index.html", browser=browser)
    assert any("did not decode" in f for f in failures), failures
    assert any("'thm3': the page shows" in f for f in failures), failures


def test_static_check_flags_external_references():
    page = ('<html><head><link rel="stylesheet" href="https://x/y.css"></head><body>'
            '<img src="http://example.com/a.png"><a href="#ok">ok</a></body></html>')
    problems = BROWSER_CHECK.static_problems(page)
    assert any("http://example.com/a.png" in p for p in problems)
    assert any("<link>" in p for p in problems)
    assert not any("#ok" in p for p in problems)


# ---- verdict logic ----------------------------------------------------------------------------

def _row(verdict: str, inside: bool = True) -> ClaimRow:
    return ClaimRow(claim="T2", experiment="e", setting="s", statement="x <= 1", hypotheses="h",
                    bound=1.0, measured=0.5, verdict=verdict, hypotheses_hold=inside)


def test_overall_verdict_rules():
    assert overall_verdict([_row("HOLDS"), _row("HOLDS")]) == Verdict.HOLDS
    assert overall_verdict([_row("HOLDS"), _row("INCONCLUSIVE")]) == Verdict.INCONCLUSIVE
    assert overall_verdict([_row("INCONCLUSIVE"), _row("VIOLATED")]) == Verdict.VIOLATED
    outside = _row("OUTSIDE-HYPOTHESES", inside=False)
    assert overall_verdict([_row("HOLDS"), outside]) == Verdict.HOLDS
    assert overall_verdict([outside]) == Verdict.OUTSIDE_HYPOTHESES
    assert overall_verdict([]) == Verdict.INCONCLUSIVE
    counts = verdict_counts([_row("HOLDS"), outside, _row("VIOLATED")])
    assert counts == {"HOLDS": 1, "VIOLATED": 1, "INCONCLUSIVE": 0, "OUTSIDE-HYPOTHESES": 1}
    with pytest.raises(ValueError, match="OUTSIDE-HYPOTHESES"):
        _row("VIOLATED", inside=False)     # a control can never count as a failure


def test_deterministic_verdict_can_fail():
    assert deterministic_verdict(1.0, 1.0) == (Verdict.HOLDS, "bound-holds")
    assert deterministic_verdict(1.0 + 1e-12, 1.0, rel_tol=1e-9)[0] == Verdict.HOLDS
    assert deterministic_verdict(1.001, 1.0, rel_tol=1e-9) == (Verdict.VIOLATED, "bound-fails")
    assert deterministic_verdict(0.9, 1.0, "lower")[0] == Verdict.VIOLATED
    assert deterministic_verdict(1.1, 1.0, "lower")[0] == Verdict.HOLDS
    assert deterministic_verdict(2.0, 1.0, hypotheses_hold=False) == \
        (Verdict.OUTSIDE_HYPOTHESES, "bound-fails")
    with pytest.raises(ValueError, match="measured"):
        deterministic_verdict(math.nan, 1.0)
    with pytest.raises(ValueError, match="direction"):
        deterministic_verdict(1.0, 1.0, "sideways")


def test_row_from_check_keeps_violations_and_marks_controls():
    df = 999
    checks = [BoundCheck("upper", "x <= 1", "upper", Estimate(1.5, 0.01, df), 1.0),
              BoundCheck("upper", "x <= 1", "upper", Estimate(0.5, 0.01, df), 1.0),
              BoundCheck("lower", "x >= 1", "lower", Estimate(0.5, 0.01, df), 1.0,
                         in_hypotheses=False, hypothesis_note="heavy tails")]
    assign_verdicts(checks)
    rows = [row_from_check(c.to_json(), claim="T2", experiment="e", setting=f"s{i}",
                           hypotheses="h") for i, c in enumerate(checks)]
    assert [r.verdict for r in rows] == ["VIOLATED", "HOLDS", "OUTSIDE-HYPOTHESES"]
    assert rows[0].slack == pytest.approx(-0.5) and rows[1].slack == pytest.approx(0.5)
    assert rows[0].ci_low < 1.5 < rows[0].ci_high
    assert rows[2].note == "heavy tails" and rows[2].extra["observed"] == "bound-fails"
    control = row_from_check(checks[0].to_json(), claim="T2", experiment="e", setting="broken",
                             hypotheses="h", control_reason="broken normaliser")
    assert control.verdict == "OUTSIDE-HYPOTHESES" and not control.hypotheses_hold
    assert control.extra["observed"] == "bound-fails" and "broken normaliser" in control.note
    assert overall_verdict(rows) == Verdict.VIOLATED
    assert overall_verdict([rows[1], rows[2], control]) == Verdict.HOLDS


# ---- strict configs ---------------------------------------------------------------------------

@pytest.mark.parametrize("edit, error, pattern", [
    (dict(extra_experiment="colour = \"red\""), ValueError, r"\[experiment\]: unknown key 'colour'"),
    (dict(quick="bound = 2.0\nbund = 3.0"), ValueError, r"\[quick\]: unknown key 'bund'"),
    (dict(full="setting = 3"), TypeError, r"\[full\]: `setting` must be a string, got 3"),
    (dict(quick="measured = [1.0, \"x\"]"), TypeError, r"`measured`\[1\] must be a number"),
    (dict(quick="measured = 1.0"), TypeError, r"`measured` must be list of number"),
    (dict(quick="figures = true"), TypeError, r"`figures` must be an integer"),
    (dict(quick="bound = -1.0"), ValueError, r"\[quick\]: `bound` must be > 0"),
    (dict(smoke="bound = -1.0"), ValueError, r"\[smoke\]: `bound` must be > 0"),
    (dict(extra="[other]\nx = 1\n"), ValueError, r"unknown top-level key or table 'other'"),
    (dict(seed=-1), ValueError, r"`seed` must be an integer >= 0"),
    (dict(kind="no-such-kind"), ValueError, r"unknown experiment kind 'no-such-kind'"),
])
def test_config_errors_name_file_table_and_key(tmp_path, edit, error, pattern):
    path = _write_config(tmp_path, "toy", **edit)
    with pytest.raises(error, match=pattern) as info:
        load_config(path)
    assert str(path) in str(info.value) or "kind" in pattern


def test_config_structure_errors(tmp_path):
    path = _write_config(tmp_path, "toy")
    path.write_text(path.read_text().replace("[full]", "[fulll]"))
    with pytest.raises(ValueError, match="unknown top-level key or table 'fulll'"):
        load_config(path)
    path.write_text("[experiment]\nname = \"toy\"\n[quick]\n[full]\n")
    with pytest.raises(ValueError, match=r"\[experiment\]: missing key 'kind'"):
        load_config(path)
    path.write_text("[experiment\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)
    other = _write_config(tmp_path, "folder")
    other.write_text(other.read_text().replace('name = "folder"', 'name = "elsewhere"'))
    with pytest.raises(ValueError, match="must equal the folder name 'folder'"):
        load_config(other)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "absent" / "config.toml")
    ok = load_config(_write_config(tmp_path, "ints", quick="measured = [1, 2]\nbound = 3"))
    assert ok.params("quick").measured == (1.0, 2.0)        # integers are numbers
    assert isinstance(ok.params("quick").bound, float)


def test_kind_registry_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_kind(ExperimentKind("test-toy", ToyParams, _toy_interrupt))
    with pytest.raises(ImportError, match="sntheory.no_such_module"):
        load_kind_modules(("sntheory.no_such_module",))

    @dataclass(frozen=True)
    class NoDefault:
        x: int

    with pytest.raises(TypeError, match="needs a default"):
        ExperimentKind("test-nodefault", NoDefault, _toy_run)
    assert {"thm2", "thm3", "ratio"} <= set(__import__(
        "sntheory.report.experiments", fromlist=["x"]).registered_kinds())
    assert get_kind("thm2").params_type.__name__ == "Thm2Params"


def test_mc_kind_parameters_are_validated(tmp_path):
    path = _write_config(tmp_path, "t2", kind="thm2", quick="shapes = [\"1x8\"]")
    with pytest.raises(ValueError, match="1x8"):
        load_config(path)
    path = _write_config(tmp_path, "t2b", kind="thm2", quick="broken_normalizers = [\"sn\"]")
    with pytest.raises(ValueError, match="broken_normalizers"):
        load_config(path)
    path = _write_config(tmp_path, "r", kind="ratio", quick="geometries = [\"7x7/s9\"]")
    with pytest.raises(ValueError, match="geometries.*7x7/s9"):
        load_config(path)
    path = _write_config(tmp_path, "t3", kind="thm3", quick="precision = 0.0")
    with pytest.raises(ValueError, match="precision"):
        load_config(path)


# ---- the runner: reuse, atomicity, interruption -------------------------------------------------

def test_reuse_and_rerun_rules(tmp_path):
    exps, out = tmp_path / "exps", tmp_path / "out"
    path = _write_config(exps, "toy_reuse", quick="measured = [1.0]")
    CALLS.pop("toy_reuse", None)
    assert _report(exps, out).runs[0].status == "ran"
    assert _report(exps, out).runs[0].status == "reused"
    assert CALLS["toy_reuse"] == 1
    assert _report(exps, out, force=True).runs[0].status == "ran"
    assert _report(exps, out, profile="full").runs[0].status == "ran"     # other profile
    assert _report(exps, out, profile="full").runs[0].status == "reused"
    path.write_text(path.read_text().replace("[full]\n", "[full]\nbound = 5.0\n"))
    assert _report(exps, out, profile="full").runs[0].status == "ran"     # config changed
    (out / "toy_reuse" / "result.json").write_text("{ truncated")
    assert _report(exps, out, profile="full").runs[0].status == "ran"     # unreadable result
    (out / "toy_reuse" / "fig0.png").unlink()
    assert _report(exps, out, profile="full").runs[0].status == "ran"     # a file is missing
    assert CALLS["toy_reuse"] == 6
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_interrupted_run_keeps_finished_experiments_and_completes(tmp_path):
    exps, out = tmp_path / "exps", tmp_path / "out"
    _write_config(exps, "a_first", claim="T2")
    _write_config(exps, "b_second", claim="T3", kind="test-toy-interrupt")
    CALLS.pop("a_first", None)
    CALLS.pop("b_second", None)
    INTERRUPT["on"] = True
    try:
        with pytest.raises(KeyboardInterrupt):
            _report(exps, out)
    finally:
        INTERRUPT["on"] = False
    assert (out / "a_first" / "result.json").is_file()
    assert not (out / "b_second").exists()                        # nothing half-written
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # a crash between the two renames of a swap, and a temp folder of a dead process
    os.replace(out / "a_first", out / f".old-a_first-{'0' * 32}")
    (out / ".tmp-b_second-999999999-abc").mkdir()
    report = _report(exps, out)
    assert [(r.config.name, r.status) for r in report.runs] == [("a_first", "reused"),
                                                                ("b_second", "ran")]
    assert CALLS == {**CALLS, "a_first": 1, "b_second": 1}
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "a_first", "b_second",
                                                     "index.html"]


def test_kind_output_is_validated_and_leaves_no_partial_folder(tmp_path):
    exps, out = tmp_path / "exps", tmp_path / "out"
    cases = [("test-toy-no-rows", ValueError, "no rows"),
             ("test-toy-missing-figure", FileNotFoundError, "never_written.png"),
             ("test-toy-nan", ValueError, "NaN")]
    for kind, error, pattern in cases:
        shutil.rmtree(exps, ignore_errors=True)
        _write_config(exps, "bad", kind=kind)
        with pytest.raises(error, match=pattern):
            _report(exps, out)
        assert not (out / "bad").exists()
        assert not [p for p in out.iterdir() if p.name.startswith(".")]
    shutil.rmtree(exps)
    _write_config(exps, "bad", quick="nested_record = true")
    with pytest.raises(TypeError, match=r"records\[1\]\['bad'\] must be a scalar"):
        _report(exps, out)


# ---- rendering --------------------------------------------------------------------------------

def test_rendering_escapes_orders_claims_and_counts(tmp_path):
    exps, out = tmp_path / "exps", tmp_path / "out"
    nasty = "<script>alert(1)</script> | a&b"
    _write_config(exps, "zz_other", claim="X9", quick="claim = \"X9\"")
    _write_config(exps, "p1_toy", claim="P1", quick="claim = \"P1\"\nmeasured = [1.0, 3.0]")
    _write_config(exps, "t2_toy", claim="T2",
                  quick=f"setting = {json.dumps(nasty)}\ncontrol_measured = 5.0\nfigures = 2")
    report = _report(exps, out)
    assert [r.config.name for r in report.runs] == ["t2_toy", "p1_toy", "zz_other"]
    assert report.any_violated                                    # p1_toy measured 3 > 2
    readme = report.readme.read_text()
    assert readme.index("## T2") < readme.index("## P1") < readme.index("## X9")
    assert "**Overall verdict: VIOLATED**" in readme
    assert "3 HOLDS, 1 VIOLATED, 0 INCONCLUSIVE, 1 OUTSIDE-HYPOTHESES" in readme
    assert "&lt;script>alert(1)&lt;/script> \\| a&b" in readme
    assert "bound fails in 1 of 1 (not counted as failures)" in readme
    page = report.index.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; | a&amp;b" in page
    assert page.count("data:image/png;base64,") == 4
    assert "<code>2</code> rows" in page                          # inline Markdown of the summary
    assert BROWSER_CHECK.static_problems(page) == []
    results = load_results(out)
    assert [r["name"] for r in results] == ["t2_toy", "p1_toy", "zz_other"]


# ---- command line -----------------------------------------------------------------------------

def test_cli_argument_errors_exit_2(tmp_path, capsys):
    exps = tmp_path / "exps"
    _write_config(exps, "toy_cli")
    base = ["report", "--experiments", str(exps), "--out", str(tmp_path / "out"), "--quiet"]
    parser = build_parser()
    assert cli_run(parser.parse_args(base + ["--only", "nosuch"])) == 2
    assert "unknown experiment(s) ['nosuch']" in capsys.readouterr().err
    assert cli_run(parser.parse_args(["report", "--experiments", str(tmp_path / "none"),
                                      "--quiet"])) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli_run(parser.parse_args(base + ["--workers", "0"])) == 2
    with pytest.raises(SystemExit) as info:
        parser.parse_args(base + ["--profile", "smoke"])
    assert info.value.code == 2
    import torch
    if not torch.cuda.is_available():
        assert cli_run(parser.parse_args(base + ["--device", "cuda"])) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()                     # nothing ran
    assert cli_run(parser.parse_args(base + ["--only", "toy_cli"])) == 0
    out = capsys.readouterr().out
    assert "toy_cli" in out and "HOLDS" in out


def test_cli_module_entry_point_prints_help():
    import subprocess
    done = subprocess.run([sys.executable, "-m", "sntheory.cli_report", "--help"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    assert "--profile" in done.stdout and "--only" in done.stdout
