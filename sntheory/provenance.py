"""Where a number came from: versions, device, git commit, seed and config.

Every result file written by sntheory embeds :func:`provenance` so a report can be audited and
regenerated. Versions are read from package metadata, so recording torch's version does not import
torch.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

__all__ = ["provenance", "git_commit", "package_versions", "device_description"]

_PACKAGES = ("sntheory", "numpy", "scipy", "numba", "matplotlib", "torch", "threadpoolctl")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages sntheory uses (read once per process)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> tuple[tuple[str, str], ...]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return tuple(versions.items())


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """``<sha>`` of the sntheory checkout, ``<sha>+dirty`` with uncommitted changes, else 'unknown'.

    Changes under ``reports/`` do not count: regenerating the committed reports rewrites them
    while the run is in progress, and they do not influence any number.
    """
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude)reports"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty.strip() else "")


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_description() -> dict[str, object]:
    return {"kind": "cpu", "cpu": _cpu_model(), "logical_cores": os.cpu_count(),
            "platform": platform.platform(), "machine": platform.machine()}


def provenance(seed: int | None = None, config: dict | None = None) -> dict[str, object]:
    """A JSON-able record of seed, config, versions, device, git commit, time and command."""
    return {
        "seed": seed,
        "config": config or {},
        "versions": package_versions(),
        "device": device_description(),
        "git_commit": git_commit(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "utc_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
