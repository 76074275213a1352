"""``sntheory report``: run (or reuse) every experiment of ``experiments/`` and write the report.

Wired into :mod:`sntheory.cli` with :func:`register` (adds the sub-command) and :func:`run`
(executes it). Exit codes: 0 when no in-hypothesis row of the experiments run or reused by this
command is VIOLATED, 1 when one is, 2 for bad arguments or configs, 130 when interrupted
(finished experiments are kept; run the same command again to complete the report).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

__all__ = ["register", "run", "build_parser", "main"]

DEFAULT_STORE = ".sntheory-cache"


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to ``subparsers`` (from ``parser.add_subparsers()``)."""
    from .report.experiments import CLI_PROFILES

    p = subparsers.add_parser(
        "report", help="run every experiment of experiments/ and write reports/ (Markdown, HTML)",
        description="Run (or reuse finished results of) every experiment in experiments/*/"
                    "config.toml and write <out>/README.md (verdict table, one section per "
                    "claim with its figures), <out>/index.html (self-contained) and "
                    "<out>/<name>/ (figures, records.csv/json, resolved config, result.json). "
                    "An experiment whose config, profile and seed are unchanged is reused; an "
                    "interrupted run resumes where it stopped.")
    p.add_argument("--profile", choices=CLI_PROFILES, default="quick",
                   help="quick (2 CPU cores, minutes) or full (default: quick)")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="run only these experiments (the report still shows every finished one)")
    p.add_argument("--out", default="reports", metavar="DIR", help="report folder (default: reports)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu or cuda (default: cpu); kinds that cannot "
                                                   "use it run on the CPU and say so")
    p.add_argument("--experiments", default="experiments", metavar="DIR",
                   help="folder of experiment configs (default: experiments)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes per experiment (default: min(2, cores)); results do "
                        "not depend on it")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                   help=f"resumable Monte Carlo store (default ./{DEFAULT_STORE})")
    p.add_argument("--no-store", action="store_true", help="do not read or write a result store")
    p.add_argument("--force", action="store_true",
                   help="recompute the selected experiments even when a matching result exists")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def build_parser() -> argparse.ArgumentParser:
    """A parser with only the ``report`` sub-command (for tests and ``python -m``)."""
    parser = argparse.ArgumentParser(prog="sntheory")
    register(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def _command_line(args: argparse.Namespace) -> str:
    parts = ["sntheory report", f"--profile {args.profile}"]
    if args.out != "reports":
        parts.append(f"--out {args.out}")
    if args.experiments != "experiments":
        parts.append(f"--experiments {args.experiments}")
    if args.device != "cpu":
        parts.append(f"--device {args.device}")
    return " ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Execute ``sntheory report``; returns the exit code."""
    from .report.runner import prepare_report, run_report

    try:  # arguments and every config are validated before any work starts
        if args.workers < 1:
            raise ValueError(f"`--workers` must be an integer >= 1, got {args.workers!r}")
        prepare_report(args.experiments, profile=args.profile, only=args.only,
                       device=args.device, workers=args.workers)
    except (ValueError, TypeError, FileNotFoundError) as error:
        print(f"sntheory: error: {error}", file=sys.stderr)
        return 2
    try:  # a failure inside an experiment propagates with its traceback
        report = run_report(
            args.experiments, args.out, profile=args.profile, only=args.only, device=args.device,
            cache_dir=None if args.no_store else args.store, workers=args.workers,
            progress=not args.quiet, force=args.force, command=_command_line(args))
    except KeyboardInterrupt:
        print("sntheory: interrupted; finished experiments are kept — run the same command "
              "again to complete the report", file=sys.stderr)
        return 130
    width = max(len(r.config.name) for r in report.runs)
    for r in report.runs:
        print(f"{r.config.name:<{width}}  {r.config.claim:<4} {r.status:<6} "
              f"{r.result['wall_s']:8.1f} s  {r.verdict}")
    from .report.experiments import overall_verdict
    from .report.rows import ClaimRow
    every = [ClaimRow.from_dict(row) for res in report.results for row in res["rows"]]
    print(f"report: {report.readme} and {report.index} ({len(report.results)} experiments, "
          f"overall {overall_verdict(every)}); this run {report.wall_s:.1f} s")
    return 1 if report.any_violated else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(["report", *(argv if argv is not None else sys.argv[1:])])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
