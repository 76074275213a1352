"""Run (or reuse) every experiment of ``experiments/`` and render the report.

For each selected experiment the runner resolves the profile's parameters and the config hash
(:meth:`ExperimentConfig.config_hash`). If ``<out>/<name>/result.json`` records the same config
hash, profile and seed (and its files are all there), the experiment is **reused**. Otherwise it
runs into a fresh temporary folder ``<out>/.tmp-<name>-<pid>-*``; when the kind returns, the runner
writes ``records.csv``, ``records.json``, ``config.toml`` (the resolved config) and, last,
``result.json`` into it, and swaps the folder into place with two renames
(``<out>/<name>`` -> ``.old-<name>-*``, temp -> ``<out>/<name>``). A run interrupted at any moment
therefore leaves each ``<out>/<name>`` either complete (old or new) or absent; a restart cleans up
temporary folders of dead runs, restores an ``.old-*`` folder whose swap was cut short, reuses
every finished experiment and computes the rest. Within an experiment, the Monte Carlo store
(``cache_dir``) lets an interrupted sweep resume case by case.

After the runs, ``README.md`` and ``index.html`` are rendered from every ``result.json`` under
``<out>`` (atomic writes).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..monte_carlo.store import atomic_write_text
from ..provenance import provenance
from .experiments import (ExperimentConfig, ExperimentOutput, Figure, RunContext, claim_sort_key,
                          get_kind, load_config, overall_verdict, verdict_counts)
from .rows import ClaimRow

__all__ = ["RESULT_FILE", "RESULT_SCHEMA", "ExperimentRun", "ReportRun", "discover_experiments",
           "select_experiments", "prepare_report", "run_experiment", "run_report", "load_results", "check_device",
           "resolved_config_toml"]

RESULT_FILE = "result.json"
RESULT_SCHEMA = 1
RESERVED_FILES = (RESULT_FILE, "records.csv", "records.json", "config.toml")
DEVICES = ("cpu", "cuda")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TMP_DIR = re.compile(r"^\.tmp-(?P<name>.+)-(?P<pid>\d+)-[A-Za-z0-9_]+$")
_OLD_DIR = re.compile(r"^\.old-(?P<name>.+)-[0-9a-f]{32}$")


@dataclass
class ExperimentRun:
    """What happened to one selected experiment in this run."""

    config: ExperimentConfig
    status: str            # "ran" or "reused"
    result: dict           # the contents of result.json
    wall_s: float          # seconds spent on it in this run (reuse: reading the file)

    @property
    def verdict(self) -> str:
        return self.result["verdict"]

    @property
    def any_violated(self) -> bool:
        return any(r["verdict"] == "VIOLATED" and r["hypotheses_hold"]
                   for r in self.result["rows"])


@dataclass
class ReportRun:
    """The outcome of :func:`run_report`."""

    out_dir: Path
    runs: list[ExperimentRun]
    results: list[dict] = field(default_factory=list)   # every result rendered
    wall_s: float = 0.0
    readme: Path | None = None
    index: Path | None = None

    @property
    def any_violated(self) -> bool:
        """Whether an in-hypothesis row of an experiment selected in this run is VIOLATED."""
        return any(run.any_violated for run in self.runs)


# ---- discovery -------------------------------------------------------------------------------

def discover_experiments(experiments_dir: str | Path) -> list[ExperimentConfig]:
    """Every ``<experiments_dir>/*/config.toml``, parsed strictly, in report order (claim as in
    THEORY.md, then name)."""
    root = Path(experiments_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"`experiments` folder {str(root)!r} does not exist")
    configs = [load_config(path) for path in sorted(root.glob("*/config.toml"))]
    if not configs:
        raise FileNotFoundError(f"no experiment configs found: {str(root)!r} has no "
                                f"*/config.toml")
    return sorted(configs, key=lambda c: (claim_sort_key(c.claim), c.name))


def select_experiments(configs: Sequence[ExperimentConfig],
                       only: Sequence[str] | None) -> list[ExperimentConfig]:
    """The configs named in ``only`` (all when ``only`` is empty); unknown names are an error."""
    if not only:
        return list(configs)
    known = {c.name: c for c in configs}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ValueError(f"`--only` names unknown experiment(s) {unknown}; known experiments: "
                         f"{sorted(known)}")
    wanted = set(only)
    return [c for c in configs if c.name in wanted]


def check_device(device: str) -> str:
    """``cpu``, or ``cuda`` when torch sees a CUDA device; anything else is an error."""
    if device not in DEVICES:
        raise ValueError(f"`device` must be one of {list(DEVICES)}, got {device!r}")
    if device == "cuda":
        try:
            import torch
        except ImportError:
            raise ValueError("`device` 'cuda' needs torch, which is not installed") from None
        if not torch.cuda.is_available():
            raise ValueError("`device` 'cuda' was asked for, but torch sees no CUDA device "
                             "(torch.cuda.is_available() is False); use --device cpu")
    return device


# ---- files -----------------------------------------------------------------------------------

def _clean_json(value: Any, where: str) -> Any:
    """Reject NaN anywhere (no silent NaN); tuples become lists."""
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{where} is NaN; a result must not hide a failed computation")
    if isinstance(value, dict):
        return {k: _clean_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _row_json(row: ClaimRow, where: str) -> dict:
    data = row.to_dict()
    if data["slack"] is not None and math.isnan(data["slack"]):
        data["slack"] = None     # relative slack is undefined for a zero or infinite bound
    return _clean_json(data, where)


def _records_csv(records: list[dict]) -> str:
    columns: list[str] = []
    for record in records:
        for key in record:
            if key not in columns:
                columns.append(key)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return buffer.getvalue()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if not isinstance(value, float) or math.isfinite(value) else (
            "inf" if value > 0 else "-inf")
    if isinstance(value, str):
        return json.dumps(value)   # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        raise TypeError("TOML has no null: a resolved parameter must not be None")
    raise TypeError(f"cannot write {value!r} of type {type(value).__name__} as TOML")


def resolved_config_toml(config: ExperimentConfig, resolved: dict) -> str:
    """The resolved config as TOML: what ``config.toml`` plus the profile amount to."""
    lines = [f"# Resolved configuration of experiment {config.name!r}, profile "
             f"{resolved['profile']!r} (source: {config.path.as_posix()}).",
             f"# Regenerate: {config.command(resolved['profile'])}",
             f"profile = {_toml_value(resolved['profile'])}",
             f"kind_version = {_toml_value(resolved['kind_version'])}"]
    if "device" in resolved:
        lines.append(f"device = {_toml_value(resolved['device'])}")
    lines += ["", "[experiment]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in resolved["experiment"].items()]
    lines += ["", "[params]"]
    for key, value in resolved["params"].items():
        if value is None:
            lines.append(f"# {key}: not set")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some file systems cannot fsync a directory; the renames are still atomic
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _recover(out_dir: Path) -> None:
    """Remove temporary folders of dead runs; restore an ``.old-*`` folder whose swap was cut."""
    if not out_dir.is_dir():
        return
    for entry in sorted(out_dir.iterdir()):
        if not entry.is_dir():
            continue
        tmp = _TMP_DIR.match(entry.name)
        if tmp:
            pid = int(tmp.group("pid"))
            if pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(entry)
            continue
        old = _OLD_DIR.match(entry.name)
        if old:
            dest = out_dir / old.group("name")
            if dest.exists():
                shutil.rmtree(entry)
            else:
                os.replace(entry, dest)


def _install(tmp: Path, dest: Path) -> None:
    """Move the finished folder ``tmp`` to ``dest`` (two renames; see the module docstring)."""
    old = None
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{uuid.uuid4().hex}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    _fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old)


def _read_result(path: Path) -> dict | None:
    """A finished result, or None when absent or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != RESULT_SCHEMA:
        return None
    return data


def _reusable(result: dict | None, folder: Path, config_hash: str, profile: str,
              seed: int) -> bool:
    if result is None:
        return False
    if (result.get("config_hash"), result.get("profile"), result.get("seed")) != \
            (config_hash, profile, seed):
        return False
    files = [f["path"] for f in result.get("figures", [])] + list(RESERVED_FILES)
    return all((folder / name).is_file() for name in files)


# ---- running ---------------------------------------------------------------------------------

def _validate_output(output: Any, kind_name: str, tmp: Path) -> ExperimentOutput:
    where = f"experiment kind {kind_name!r}"
    if not isinstance(output, ExperimentOutput):
        raise TypeError(f"{where}: run() must return an ExperimentOutput, got "
                        f"{type(output).__name__}")
    if not output.rows:
        raise ValueError(f"{where}: run() returned no rows; every experiment must check "
                         f"something")
    for i, row in enumerate(output.rows):
        if not isinstance(row, ClaimRow):
            raise TypeError(f"{where}: rows[{i}] must be a ClaimRow, got {type(row).__name__}")
    for figure in output.figures:
        if not isinstance(figure, Figure):
            raise TypeError(f"{where}: figures must be Figure objects, got {figure!r}")
        path = tmp / figure.path
        if figure.path in RESERVED_FILES:
            raise ValueError(f"{where}: figure name {figure.path!r} is reserved")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: figure {figure.path!r} was not written to the "
                                    f"experiment's folder")
        with open(path, "rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                raise ValueError(f"{where}: figure {figure.path!r} is not a PNG file")
    for i, record in enumerate(output.records):
        if not isinstance(record, dict):
            raise TypeError(f"{where}: records[{i}] must be a dict, got {type(record).__name__}")
        for key, value in record.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: records[{i}] has a non-string key {key!r}")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise TypeError(f"{where}: records[{i}][{key!r}] must be a scalar (str, int, "
                                f"float, bool or None) so that records are flat, got "
                                f"{type(value).__name__}")
    for name in RESERVED_FILES:
        if (tmp / name).exists():
            raise ValueError(f"{where}: run() wrote {name!r}, a file name the runner reserves")
    if not isinstance(output.summary, str):
        raise TypeError(f"{where}: summary must be a string, got {type(output.summary).__name__}")
    return output


def run_experiment(config: ExperimentConfig, out_dir: str | Path, *, profile: str,
                   device: str = "cpu", cache_dir: str | Path | None = None, workers: int = 1,
                   progress: bool = False, force: bool = False, tqdm_position: int = 1,
                   log=None) -> ExperimentRun:
    """Reuse ``<out_dir>/<name>`` if its result matches, else run the experiment atomically."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    kind = get_kind(config.kind)
    params = config.params(profile)
    resolved = config.resolved(profile, device)
    config_hash = config.config_hash(profile, device)
    dest = out_dir / config.name
    existing = _read_result(dest / RESULT_FILE)
    if not force and _reusable(existing, dest, config_hash, profile, config.seed):
        return ExperimentRun(config, "reused", existing, time.perf_counter() - started)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".tmp-{config.name}-{os.getpid()}-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp creates 0700; the report folder is for everyone
    try:
        ctx = RunContext(seed=config.seed, profile=profile, device=device,
                         cache_dir=Path(cache_dir) if cache_dir is not None else None,
                         workers=workers, progress=progress, tqdm_position=tqdm_position,
                         experiment=config.name, claim=config.claim)
        output = _validate_output(kind.run(params, tmp, ctx), kind.name, tmp)
        wall_s = time.perf_counter() - started
        where = f"experiment {config.name!r}"
        rows = [_row_json(row, f"{where} rows[{i}]") for i, row in enumerate(output.rows)]
        records = _clean_json(output.records, f"{where} records")
        counts = verdict_counts(output.rows)
        result = {
            "schema": RESULT_SCHEMA, "name": config.name, "kind": config.kind,
            "kind_version": kind.version, "claim": config.claim, "title": config.title,
            "figure": config.figure, "profile": profile, "seed": config.seed,
            "config_hash": config_hash, "config": resolved, "command": config.command(profile),
            "device_requested": device, "device": output.device, "wall_s": wall_s,
            "verdict": str(overall_verdict(output.rows)), "counts": counts,
            "summary": output.summary,
            "figures": [{"path": f.path, "caption": f.caption} for f in output.figures],
            "n_records": len(records), "rows": rows,
            "provenance": provenance(seed=config.seed, config=resolved),
        }
        atomic_write_text(tmp / "records.json", json.dumps(records, indent=1))
        atomic_write_text(tmp / "records.csv", _records_csv(records))
        atomic_write_text(tmp / "config.toml", resolved_config_toml(config, resolved))
        atomic_write_text(tmp / RESULT_FILE, json.dumps(result, indent=1))   # written last
        _install(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExperimentRun(config, "ran", result, time.perf_counter() - started)


def load_results(out_dir: str | Path) -> list[dict]:
    """Every finished ``<out_dir>/*/result.json`` (folders starting with '.' are skipped), in
    report order. An unreadable result is an error naming the file."""
    out_dir = Path(out_dir)
    results = []
    if not out_dir.is_dir():
        return results
    for path in sorted(out_dir.glob("*/" + RESULT_FILE)):
        if path.parent.name.startswith("."):
            continue
        data = _read_result(path)
        if data is None:
            raise ValueError(f"{path}: not a readable sntheory result (schema {RESULT_SCHEMA}); "
                             f"delete the folder or rerun the experiment")
        results.append(data)
    return sorted(results, key=lambda r: (claim_sort_key(r["claim"]), r["name"]))


def prepare_report(experiments_dir: str | Path, *, profile: str, only: Sequence[str] | None,
                   device: str, workers: int) -> tuple[list[ExperimentConfig],
                                                       list[ExperimentConfig]]:
    """Validate everything a report run needs before any work starts: the device, ``workers``,
    every config (strictly) and every selected experiment's parameters for ``profile``.
    Returns ``(all configs, selected configs)``; errors are ValueError / TypeError /
    FileNotFoundError naming what is wrong."""
    check_device(device)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"`workers` must be an integer >= 1, got {workers!r}")
    configs = discover_experiments(experiments_dir)
    selected = select_experiments(configs, only)
    for config in selected:
        config.params(profile)          # raises for a bad profile name or bad parameters
    return configs, selected


def run_report(experiments_dir: str | Path = "experiments", out_dir: str | Path = "reports", *,
               profile: str = "quick", only: Sequence[str] | None = None, device: str = "cpu",
               cache_dir: str | Path | None = None, workers: int = 1, progress: bool = True,
               force: bool = False, render: bool = True, command: str | None = None) -> ReportRun:
    """Run or reuse the selected experiments, then render README.md and index.html.

    Every config is parsed (and every profile resolved) before anything runs, so a typo fails
    fast. ``command`` is the command line to print as "regenerate with" (default: built from the
    arguments).
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    out_dir = Path(out_dir)
    configs, selected = prepare_report(experiments_dir, profile=profile, only=only,
                                       device=device, workers=workers)
    out_dir.mkdir(parents=True, exist_ok=True)
    _recover(out_dir)
    runs: list[ExperimentRun] = []
    bar = tqdm(total=len(selected), desc="experiments", unit="exp", position=0,
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        for config in selected:
            bar.set_postfix_str(config.name)
            run = run_experiment(config, out_dir, profile=profile, device=device,
                                 cache_dir=cache_dir, workers=workers, progress=progress,
                                 force=force, tqdm_position=1)
            runs.append(run)
            if progress:
                how = ("reused (config unchanged)" if run.status == "reused"
                       else f"ran in {run.wall_s:.1f} s")
                tqdm.write(f"{config.name}: {how}, {run.verdict}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
    report = ReportRun(out_dir=out_dir, runs=runs, wall_s=time.perf_counter() - started)
    if render:
        from .render import write_report
        report.results = load_results(out_dir)
        status = _result_status(report.results, configs, device)
        if command is None:
            command = f"sntheory report --profile {profile} --out {out_dir.as_posix()}"
        meta = {"command": command, "profile": profile, "wall_s": report.wall_s,
                "ran": [r.config.name for r in runs if r.status == "ran"],
                "reused": [r.config.name for r in runs if r.status == "reused"],
                "status": status,
                "provenance": provenance(config={"profile": profile, "only": list(only or []),
                                                 "device": device})}
        report.readme, report.index = write_report(out_dir, report.results, meta)
        report.wall_s = time.perf_counter() - started
    return report


def _result_status(results: list[dict], configs: Sequence[ExperimentConfig],
                   device: str) -> dict[str, str]:
    """'' for a result that matches its current config; else why it may be out of date."""
    by_name = {c.name: c for c in configs}
    status = {}
    for result in results:
        config = by_name.get(result["name"])
        if config is None:
            status[result["name"]] = "no config in experiments/ any more"
        elif config.config_hash(result["profile"], device) != result["config_hash"]:
            status[result["name"]] = "config changed since this result was computed"
        else:
            status[result["name"]] = ""
    return status
