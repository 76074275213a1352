"""Command-line entry points of the discriminator lab, registered into ``sntheory``'s parser.

* ``sntheory train CONFIG.toml [--out DIR] [--device D] [--steps N] [--no-resume] [--quiet]``
  trains the GAN of a config (:func:`sntheory.lab.train.train`); a second call with the same
  arguments resumes from the latest checkpoint.
* ``sntheory check prop1|prop2|thm1|prop3 --run DIR [--step N] [--seed S] [--json OUT]`` checks a
  claim on a trained run (``sntheory.claims.<claim>.check_<claim>_run``) and prints a table of
  :class:`~sntheory.report.rows.ClaimRow`.

Exit codes: 0 when no row is VIOLATED, 1 when one is, 2 for bad arguments (a missing config or run
directory, an invalid config).

Every sub-command stores its handler as ``lab_handler`` in the parsed namespace;
``sntheory.cli.main`` runs ``args.lab_handler(args)`` when it is set.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

__all__ = ["register", "register_checks", "run_train", "run_check", "format_claim_rows",
           "default_run_dir", "LAB_CHECKS"]

# claim id -> (module, function, help)
LAB_CHECKS = {
    "prop1": ("sntheory.claims.prop1", "check_prop1_run",
              "Prop. 1: per-layer gradient norms of a trained discriminator against their bound"),
    "prop2": ("sntheory.claims.prop2", "check_prop2_run",
              "Prop. 2: rescaling invariance of a trained discriminator"),
    "thm1": ("sntheory.claims.thm1", "check_thm1_run",
             "Theorem 1: equal spectral norms minimize the gradient (trained discriminator)"),
    "prop3": ("sntheory.claims.prop3", "check_prop3_run",
              "Prop. 3: per-layer Hessian norms of a trained discriminator against their bound"),
}


def _error(message: str) -> int:
    print(f"sntheory: error: {message}", file=sys.stderr)
    return 2


def default_run_dir(config_path: str | Path) -> Path:
    """``runs/<config's folder>/<config's stem>``, e.g. ``runs/lab_mnist/config``."""
    path = Path(config_path)
    return Path("runs") / (path.resolve().parent.name or "run") / path.stem


# --------------------------------------------------------------------------------------------------
# train


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to ``sntheory``'s top-level sub-parsers; returns the new parser."""
    p = subparsers.add_parser(
        "train", help="train a GAN of the discriminator lab from a TOML config (resumable)",
        description="Train the GAN described by a TOML config (see sntheory/lab/config.py and "
                    "experiments/lab_mnist/). Writes losses.csv, probes.jsonl, sample grids, "
                    "checkpoints, provenance.json and timings.jsonl to the run directory; run the "
                    "same command again to resume from the latest checkpoint.")
    p.add_argument("config", help="TOML config file")
    p.add_argument("--out", metavar="DIR",
                   help="run directory (default: runs/<config folder>/<config stem>)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="override [run] device")
    p.add_argument("--steps", type=int, metavar="N", help="override [run] steps")
    p.add_argument("--no-resume", action="store_true",
                   help="delete the run directory's earlier outputs and start over")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(lab_handler=run_train)
    return p


def run_train(args: argparse.Namespace) -> int:
    from .lab.config import TrainConfig
    from .lab.train import train

    try:
        cfg = TrainConfig.from_toml(args.config)
        overrides = {}
        if args.steps is not None:
            overrides["steps"] = args.steps
        if args.device is not None:
            overrides["device"] = args.device
        cfg = cfg.replace_run(**overrides)
        run_dir = Path(args.out) if args.out else default_run_dir(args.config)
        summary = train(cfg, run_dir, resume=not args.no_resume, progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return _error(str(error))
    losses = ", ".join(f"{k} {v:.4g}" for k, v in summary.last_losses.items())
    verb = "resumed at step %d, " % summary.start_step if summary.resumed else ""
    print(f"{run_dir}: {verb}step {summary.end_step}/{summary.total_steps} on {summary.device}, "
          f"{summary.wall_s:.1f} s ({summary.steps_per_s:.1f} steps/s, "
          f"{summary.probe_s:.1f} s in probes, {summary.probe_records} probe records)")
    if losses:
        print(f"last losses: {losses}")
    return 0


# --------------------------------------------------------------------------------------------------
# checks on trained runs


def register_checks(claims_subparsers) -> None:
    """Add ``prop1``, ``prop2``, ``thm1``, ``prop3`` to the ``sntheory check`` sub-parsers."""
    for claim, (_, _, text) in LAB_CHECKS.items():
        p = claims_subparsers.add_parser(
            claim, help=text,
            description=f"{text}. Loads the run's checkpoint (sntheory.lab.train.load_run) and "
                        f"prints one row per checked statement with its bound, measurement, "
                        f"slack and verdict.")
        p.add_argument("--run", required=True, metavar="DIR", help="training run directory")
        p.add_argument("--step", type=int, metavar="N",
                       help="checkpoint step (default: the latest)")
        p.add_argument("--seed", type=int, metavar="S",
                       help="seed of the check's own draws (default: the check's)")
        p.add_argument("--json", metavar="PATH", help="write records, rows and provenance here")
        p.set_defaults(lab_handler=run_check, lab_claim=claim)


def _rows_of(result) -> list:
    from .report.rows import ClaimRow

    rows = getattr(result, "rows", None)
    if rows is None and isinstance(result, dict):
        rows = result.get("rows")
    if rows is None:
        rows = result
    out = []
    for row in rows:
        out.append(row if isinstance(row, ClaimRow) else ClaimRow.from_dict(dict(row)))
    return out


def _to_json(result, rows, args: argparse.Namespace) -> dict:
    if hasattr(result, "to_json"):
        return result.to_json()
    if isinstance(result, dict) and "provenance" in result:
        return result
    from .provenance import provenance
    config = {"claim": args.lab_claim, "run": str(args.run), "step": args.step,
              "seed": args.seed}
    return {"rows": [r.to_dict() for r in rows], "provenance": provenance(args.seed, config)}


def format_claim_rows(rows, *, title: str = "") -> str:
    """A plain-text table of :class:`ClaimRow` objects (one line each) and a verdict count."""
    from .report.tables import fmt

    header = ("claim", "setting", "statement", "bound", "measured", "slack", "verdict")
    table = [header]
    for r in rows:
        table.append((r.claim, r.setting, r.statement, fmt(r.bound), fmt(r.measured),
                      "" if r.slack is None else f"{r.slack:+.3g}",
                      r.verdict + ("" if not r.note else " *")))
    widths = [min(max(len(str(line[i])) for line in table), 60) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c)[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [title] if title else []
    out += [line(header), line(["-" * w for w in widths])]
    out += [line(cells) for cells in table[1:]]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.verdict] = counts.get(r.verdict, 0) + 1
    out.append(", ".join(f"{v}: {n}" for v, n in sorted(counts.items())) or "no rows")
    notes = [(i, r.note) for i, r in enumerate(rows, 1) if r.note]
    out += [f"* row {i}: {note}" for i, note in notes]
    return "\n".join(out)


def run_check(args: argparse.Namespace) -> int:
    module_name, function_name, text = LAB_CHECKS[args.lab_claim]
    run_dir = Path(args.run)
    if not run_dir.is_dir():
        return _error(f"`--run` {str(run_dir)!r} is not a directory (expected a training run "
                      f"written by `sntheory train`)")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        return _error(f"check {args.lab_claim!r} is not available in this installation "
                      f"({module_name} is missing)")
    check = getattr(module, function_name)
    accepted = inspect.signature(check).parameters
    kwargs = {}
    for name in ("step", "seed"):
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            return _error(f"`--{name}` does not apply to `check {args.lab_claim}` (it reads "
                          f"every probe record of the run)")
        kwargs[name] = value
    try:
        result = check(run_dir, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as error:
        return _error(str(error))
    rows = _rows_of(result)
    print(format_claim_rows(rows, title=f"{text} -- run {run_dir}"))
    if args.json:
        from .monte_carlo import atomic_write_text
        atomic_write_text(Path(args.json), json.dumps(_to_json(result, rows, args), indent=1,
                                                      sort_keys=True))
        print(f"records written to {args.json}")
    return 1 if any(r.counts_as_failure for r in rows) else 0
