"""Command-line interface: ``sntheory check thm2 ...``.

Exit codes: 0 when no in-hypothesis check is VIOLATED, 1 when one is, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main", "build_parser"]

DEFAULT_STORE = ".sntheory-cache"


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", type=float, default=0.005,
                   help="target relative half-width of the 95%% CI of each estimate (default 0.005)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the records (with provenance) here")
    p.add_argument("--plot", metavar="PATH", help="write the figure (PNG) here")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes (default: min(2, cores)); results do not depend on it")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="family-wise error rate of the verdicts over the sweep (default 0.05)")
    p.add_argument("--min-samples", type=int, default=30, help="samples before stopping (30)")
    p.add_argument("--max-samples", type=int, default=1_000_000,
                   help="give up on the precision after this many samples (1e6)")
    p.add_argument("--store", default=DEFAULT_STORE, metavar="DIR",
                   help=f"resumable result store (default ./{DEFAULT_STORE}); a killed run "
                        "restarted with the same arguments resumes without recomputing")
    p.add_argument("--no-store", action="store_true", help="do not read or write a result store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sntheory",
        description="Executable checks of the theory of spectral normalization "
                    "(Lin, Sekar, Fanti, NeurIPS 2021).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check", help="check a claim numerically and print a verdict table",
                           description="Check a claim of the paper numerically.")
    claims = check.add_subparsers(dest="claim", metavar="CLAIM")
    thm2 = claims.add_parser(
        "thm2", help="Theorem 2: variance of spectrally normalised random matrices",
        description="Theorem 2: Var(a_bar_ij) of A/||A||_sp against 1/max{m,n}, the explicit "
                    "Gaussian lower bound, L_hat and the Bai-Yin ratio. Without --shapes/--dist "
                    "runs the default sweep (44 shapes from 2x2 to 4096x4096, Gaussian and uniform, "
                    "plus heavy-tailed and non-symmetric negative controls on 7 shapes at 2%% precision).")
    thm2.add_argument("--shapes", help="comma-separated MxN list, e.g. 8x8,64x32,3x200")
    thm2.add_argument("--dist", help="comma-separated laws: gaussian, uniform, rademacher, cauchy, "
                                     "student-t:<dof>, exponential, shifted-exponential")
    thm2.add_argument("--normalizer", default="sn",
                      help="sn (exact, the theorem), sn-power:K (K cold power iterations), "
                           "sn-scaled:c (divide by c*||A||_sp) — the last two are controls")
    thm2.add_argument("--no-controls", action="store_true",
                      help="default sweep without the heavy-tailed/non-symmetric controls")
    thm2.add_argument("--allow-outside-hypotheses", action="store_true",
                      help="run shapes with m or n below 2 (reported as outside the hypotheses)")
    _add_common(thm2)
    return parser


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf"
    return f"{x:.{digits}g}"


def _short(check: dict) -> str:
    v = check["verdict"]
    if v == "OUTSIDE-HYPOTHESES":
        return {"bound-fails": "out:fails", "bound-holds": "out:holds"}.get(check["observed"],
                                                                           "out:?")
    return {"HOLDS": "holds", "VIOLATED": "VIOLATED", "INCONCLUSIVE": "inconcl."}[v]


def format_thm2_table(result: dict) -> str:
    prov = result["provenance"]["config"]
    summary = result["summary"]
    lines = [
        f"Theorem 2: Var(a_bar) of A/||A||_sp, entries i.i.d.  seed={result['provenance']['seed']}"
        f"  precision={prov['precision']:g} (95% CI half-width, relative)",
        f"verdicts: Holm step-down, family-wise alpha={summary['alpha_familywise']:g} over "
        f"{summary['n_checks']} checks; out:fails = bound fails where its hypotheses do not hold",
        "",
    ]
    header = (f"{'shape':>10} {'law':<24} {'n':>7} {'Var [95% CI]':<32} {'1/max':>9} "
              f"{'L_hat [95% CI]':<22} {'BaiYin':>7} {'upper':>9} {'gauss-lb':>9} {'L-ref':>9} "
              f"{'verdict':<12}")
    lines += [header, "-" * len(header)]
    for r in result["records"]:
        p = r["params"]
        checks = {c["name"]: c for c in r["checks"]}
        law = p["dist"] + ("" if p["normalizer"] == "sn" else f" [{p['normalizer']}]")
        var = f"{_fmt(r['estimate'], 5)} [{_fmt(r['ci_low'], 5)}, {_fmt(r['ci_high'], 5)}]"
        lh = r["L_hat"]
        lhat = f"{_fmt(lh['estimate'], 3)} [{_fmt(lh['ci_low'], 3)}, {_fmt(lh['ci_high'], 3)}]"
        flag = "" if r["precision_reached"] else " (imprecise)"
        lines.append(
            f"{p['m']:>4}x{p['n']:<5} {law:<24} {r['n_samples']:>7} {var:<32} "
            f"{_fmt(r['bounds']['upper_1_over_max'], 4):>9} {lhat:<22} "
            f"{_fmt(r['bai_yin_ratio']['estimate'], 3):>7} {_short(checks['upper']):>9} "
            f"{_short(checks['gauss-lb']):>9} {_short(checks['L-ref']):>9} {r['verdict']:<12}{flag}")
    lines.append("")
    for law, s in summary["laws"].items():
        bounded = s["L_hat_bounded_by_L_ref"]
        text = ("L_hat <= 13/3 in every in-hypothesis case" if bounded else
                "L_hat not shown <= 13/3 in every in-hypothesis case" if bounded is False else
                "lower bound outside its hypotheses for this law")
        slope = s["log_L_hat_vs_log_size_slope"]
        lines.append(f"{law:<34} max L_hat = {_fmt(s['max_L_hat'], 4)} at {s['max_L_hat_shape']}"
                     f"; slope of log L_hat vs log max{{m,n}} = "
                     f"{'n/a' if slope is None else f'{slope:.3f}'}; {text}")
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = {}
    for r in result["records"]:
        for c in r["checks"]:
            if not c["in_hypotheses"]:
                groups.setdefault((r["params"]["dist"], c["name"]), []).append((r, c))
    fails = {k: v for k, v in groups.items() if any(c["observed"] == "bound-fails" for _, c in v)}
    if fails:
        lines += ["", "Negative controls: bounds outside their hypotheses (not violations of the "
                      "theorem):"]
        for (dist, name), rows in fails.items():
            failing = [(r, c) for r, c in rows if c["observed"] == "bound-fails"]
            r, c = max(failing, key=lambda rc: abs(rc[1]["slack"]) / rc[1]["bound"])
            lines.append(f"  {dist}: {c['statement']} fails in {len(failing)}/{len(rows)} "
                         f"shape(s), worst {r['params']['m']}x{r['params']['n']} "
                         f"(Var {_fmt(c['estimate'], 4)} vs bound {_fmt(c['bound'], 4)}, "
                         f"L_hat {_fmt(r['L_hat']['estimate'], 3)}) - {c['hypothesis_note']}")
    violated = [r for r in result["records"] if r["verdict"] == "VIOLATED"]
    lines += ["", f"{len(violated)} case(s) VIOLATED; "
                  f"{sum(r['verdict'] == 'INCONCLUSIVE' for r in result['records'])} INCONCLUSIVE; "
                  f"{sum(r['verdict'] == 'HOLDS' for r in result['records'])} HOLDS; "
                  f"wall time {result['wall_s']:.1f} s"
                  + (f" ({result['resumed_cases']} case(s) resumed from the store)"
                     if result["resumed_cases"] else "")]
    return "\n".join(lines)


def _run_thm2(args: argparse.Namespace) -> int:
    from .claims import thm2
    from .monte_carlo import ResultStore, StoppingRule

    try:  # validate every argument before any work starts; errors here are the user's
        rule = StoppingRule(precision=args.precision, min_samples=args.min_samples,
                            max_samples=args.max_samples)
        if not 0 < args.alpha < 1:
            raise ValueError(f"`--alpha` must be in (0, 1), got {args.alpha!r}")
        if args.workers < 1:
            raise ValueError(f"`--workers` must be an integer >= 1, got {args.workers!r}")
        if args.shapes is None and args.dist is None:
            cases = thm2.default_sweep(args.normalizer, controls=not args.no_controls,
                                       control_precision=max(args.precision,
                                                             thm2.CONTROL_PRECISION))
        else:
            cases = thm2.cases_from_grid(
                args.shapes if args.shapes is not None else "8x8,64x32,3x200",
                args.dist if args.dist is not None else "gaussian,uniform", args.normalizer)
        thm2.make_tasks(cases, allow_outside_hypotheses=args.allow_outside_hypotheses)
    except (ValueError, TypeError) as error:
        print(f"sntheory: error: {error}", file=sys.stderr)
        return 2
    store = None if args.no_store else ResultStore(args.store)
    result = thm2.run(cases, seed=args.seed, rule=rule, store=store, workers=args.workers,
                      alpha=args.alpha, allow_outside_hypotheses=args.allow_outside_hypotheses,
                      progress=not args.quiet)
    print(format_thm2_table(result))
    if args.json:
        from .monte_carlo import atomic_write_text
        atomic_write_text(Path(args.json), json.dumps(result, indent=1, sort_keys=True))
        print(f"records written to {args.json}")
    if args.plot:
        from .report.thm2_figure import plot_thm2
        plot_thm2(result["records"], args.plot,
                  title=f"sntheory check thm2, seed {args.seed}, commit "
                        f"{result['provenance']['git_commit'][:12]}")
        print(f"figure written to {args.plot}")
    return 1 if result["summary"]["any_violated"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "check" and args.claim is None:
        parser.parse_args(["check", "--help"])
    if args.command == "check" and args.claim == "thm2":
        return _run_thm2(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
