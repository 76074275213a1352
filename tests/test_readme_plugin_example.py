"""The README's plug-in example runs, on the try_example config's small `smoke` settings, and the
bad idea it shows is flagged while SNw (a baseline in the same run) is not."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path


import sntheory.plugin as plugin
from sntheory.plugin import contract
from sntheory.report.experiments import load_config, load_kind_modules

ROOT = Path(__file__).resolve().parents[1]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- plugin-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python block after <!-- plugin-example -->"
    return match.group(1)


def test_readme_plugin_example_flags_the_bad_idea(tmp_path, monkeypatch, capsys):
    load_kind_modules()
    smoke = load_config(ROOT / "experiments/try_example/config.toml").params("smoke").config()
    overrides = {f.name: getattr(smoke, f.name) for f in dataclasses.fields(smoke)
                 if f.name not in ("profile", "baselines")}
    real_try = plugin.try_normalizer
    results = []

    def small_try(spec, *, profile="quick", out=None, **kw):
        assert profile == "quick"          # the README promises the quick profile
        result = real_try(spec, profile=profile, out=tmp_path / Path(out).name,
                          baselines=("snw",), **overrides, **kw)
        results.append(result)
        return result

    monkeypatch.setattr(plugin, "try_normalizer", small_try)
    code = _readme_example()
    try:
        exec(compile(code, "README.md:plugin-example", "exec"), {"__name__": "readme_example"})
    finally:
        contract.unregister_normalizer("frobenius-x100")
    printed = capsys.readouterr().out
    (result,) = results
    bad = [r for r in result.rows if r.extra.get("normalizer") == "frobenius-x100"]
    snw = [r for r in result.rows if r.extra.get("normalizer") == "snw"]
    assert bad and snw
    flagged = [r for r in bad if r.verdict == "VIOLATED"]
    assert flagged, "the bad idea must be flagged"
    assert any("vanish" in " ".join(map(str, r.extra.get("flags", []))) + r.statement + r.note
               for r in flagged)
    assert not [r for r in snw if r.verdict == "VIOLATED"]
    assert f"{len(flagged)} rows flag a failure" in printed
    assert (tmp_path / "try-frobenius-x100" / "battery.json").is_file()
