"""The command line: help, the readable table, JSON records, exit codes and argument errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sntheory.cli import main

QUICK = ["--precision", "0.03", "--no-store", "--quiet", "--workers", "1"]


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "sntheory.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "check" in out
    out = subprocess.run([sys.executable, "-m", "sntheory.cli", "check", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "thm2" in out


def test_check_thm2_prints_table_and_writes_json_and_plot(tmp_path, capsys):
    out_json, out_png = tmp_path / "out.json", tmp_path / "fig.png"
    code = main(["check", "thm2", "--shapes", "8x8,64x32,3x200", "--dist", "gaussian,uniform",
                 "--seed", "0", "--json", str(out_json), "--plot", str(out_png), *QUICK])
    assert code == 0
    text = capsys.readouterr().out
    assert "64x32" in text and "HOLDS" in text and "L_hat" in text
    data = json.loads(out_json.read_text())
    assert len(data["records"]) == 6
    record = data["records"][0]
    for key in ("claim", "params", "estimate", "ci_low", "ci_high", "bounds", "verdict",
                "n_samples", "seed"):
        assert key in record
    assert data["provenance"]["seed"] == 0
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread
    assert imread(out_png).shape[0] > 200


def test_violation_gives_nonzero_exit_code(capsys):
    code = main(["check", "thm2", "--shapes", "8x8", "--dist", "gaussian",
                 "--normalizer", "sn-scaled:0.4", *QUICK])
    assert code == 1
    assert "VIOLATED" in capsys.readouterr().out


def test_heavy_tails_are_reported_as_outside_hypotheses(capsys):
    code = main(["check", "thm2", "--shapes", "32x32", "--dist", "cauchy", *QUICK])
    assert code == 0
    text = capsys.readouterr().out
    assert "out:fails" in text
    assert "not violations of the theorem" in text and "heavy-tailed" in text


@pytest.mark.parametrize("args, message", [
    (["--shapes", "0x8"], "shapes"),
    (["--shapes=-3x8"], "shapes"),
    (["--shapes", "8x8x8"], "malformed"),
    (["--shapes", "1x8"], "outside Theorem 2's hypotheses"),
    (["--dist", "lognormal"], "dist"),
    (["--dist", "student-t:zero"], "degrees of freedom"),
    (["--precision", "0"], "precision"),
    (["--precision", "-0.1"], "precision"),
    (["--normalizer", "frobenius"], "normalizer"),
    (["--workers", "0"], "workers"),
    (["--alpha", "1.5"], "alpha"),
])
def test_bad_arguments_fail_with_one_clear_message(args, message, capsys):
    code = main(["check", "thm2", *args, "--no-store", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sntheory: error:") and message in err
    assert err.count("\n") == 1  # one line, no traceback
