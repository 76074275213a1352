"""Command-line interface: ``sntheory check thm2|thm3 ...``.

Exit codes: 0 when no in-hypothesis check is VIOLATED, 1 when one is, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
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
    p.add_argument("--no-controls", action="store_true",
                   help="default sweep without the heavy-tailed/non-symmetric controls")


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
    thm2.add_argument("--allow-outside-hypotheses", action="store_true",
                      help="run shapes with m or n below 2 (reported as outside the hypotheses)")
    _add_common(thm2)
    thm3 = claims.add_parser(
        "thm3", help="Theorem 3: variance of bidirectionally normalised (BSN) conv kernels",
        description="Theorem 3: Var of w/((||w^||+||w^'||)/2) against 4/(k (sqrt c_in + "
                    "sqrt c_out)^2), the explicit Gaussian lower bound and L_hat = 1/((fan_in + "
                    "fan_out) Var), with SNw on the same kernels. Without --kernels/--dist runs "
                    "the default sweep (24 kernel shapes, Gaussian and uniform, plus controls).")
    thm3.add_argument("--kernels", help="comma-separated c_out x c_in x kh x kw list, e.g. "
                                        "64x64x3x3,16x32x5x5")
    thm3.add_argument("--dist", help="comma-separated laws (as for thm2)")
    _add_common(thm3)
    ratio = claims.add_parser(
        "ratio", help="Claim R: ||w^|| <= ||w~|| <= alpha ||w^|| (SNw versus SNConv)",
        description="Claim R on a sweep of conv geometries (3x3/s1, 4x4/s2, 1x1, 5x5; zero and "
                    "circular padding; small and large inputs): the distribution of "
                    "||w~||/||w^|| over random kernels against [1, alpha], Var_SNConv against "
                    "[Var_SNw/alpha^2, Var_SNw], the all-ones kernel and an adversarial search.")
    ratio.add_argument("--quick", action="store_true", help="6 geometries instead of 11")
    ratio.add_argument("--kernels", type=int, default=64,
                       help="random kernels per geometry (default 64)")
    ratio.add_argument("--adversarial-steps", type=int, default=150,
                       help="gradient-ascent steps per geometry (0: skip; default 150)")
    ratio.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    ratio.add_argument("--alpha", type=float, default=0.05,
                       help="family-wise error rate of the verdicts (default 0.05)")
    ratio.add_argument("--json", metavar="PATH", help="write the records (with provenance) here")
    ratio.add_argument("--plot", metavar="PATH", help="write the figure (PNG) here")
    ratio.add_argument("--quiet", action="store_true", help="no progress bar")
    conv = sub.add_parser(
        "convnorm", help="both norms, their ratio and alpha of conv kernels or a saved model",
        description="For a kernel saved as .npy/.pt (with --input-size and the geometry flags), "
                    "every 4-D tensor of a saved state_dict (same geometry), or every Conv2d of a "
                    "model saved with torch.save(model) (with --input-shape): torch's "
                    "reshaped-kernel norm ||w^||, its transposed twin, the exact operator norm "
                    "||w~|| with its certified interval, the ratio and alpha.")
    conv.add_argument("path", help=".npy, .pt or .pth file")
    conv.add_argument("--input-size", help="HxW input of a bare kernel, e.g. 32x32")
    conv.add_argument("--input-shape", help="CxHxW input of a saved model, e.g. 3x32x32")
    conv.add_argument("--stride", type=int, default=1)
    conv.add_argument("--padding", default="0", help="pixels per side, or 'same' (default 0)")
    conv.add_argument("--padding-mode", default="zeros", help="zeros or circular")
    conv.add_argument("--dilation", type=int, default=1)
    conv.add_argument("--groups", type=int, default=1)
    conv.add_argument("--rtol", type=float, default=1e-6,
                      help="relative accuracy of the operator norm (default 1e-6)")
    conv.add_argument("--json", metavar="PATH", help="write the rows here")
    from .cli_report import register as register_report
    from .cli_lab import register as register_lab, register_checks as register_lab_checks
    from . import cli_try
    register_lab(sub)             # sntheory train CONFIG.toml
    register_lab_checks(claims)   # sntheory check prop1|prop2|thm1|prop3 --run DIR
    register_report(sub)
    cli_try.register(sub)
    return parser


def format_thm2_table(result: dict) -> str:
    from .report.tables import fmt, format_claim_table, interval

    def law(r):
        p = r["params"]
        return p["dist"] + ("" if p["normalizer"] == "sn" else f" [{p['normalizer']}]")

    columns = [
        ("shape", 10, lambda r: f"{r['params']['m']}x{r['params']['n']}"),
        ("law", -24, law),
        ("n", 7, lambda r: str(r["n_samples"])),
        ("Var [95% CI]", -32, lambda r: interval(r["estimate"], r["ci_low"], r["ci_high"], 5)),
        ("1/max", 9, lambda r: fmt(r["bounds"]["upper_1_over_max"])),
        ("L_hat [95% CI]", -22, lambda r: interval(r["L_hat"]["estimate"], r["L_hat"]["ci_low"],
                                                   r["L_hat"]["ci_high"], 3)),
        ("BaiYin", 7, lambda r: fmt(r["bai_yin_ratio"]["estimate"], 3)),
    ]
    return format_claim_table(
        result, title="Theorem 2: Var(a_bar) of A/||A||_sp, entries i.i.d.", columns=columns,
        check_names=("upper", "gauss-lb", "L-ref"),
        label=lambda p: f"{p['m']}x{p['n']}", l_ref_text="13/3", size_text="max{m,n}")


def format_thm3_table(result: dict) -> str:
    from .report.tables import fmt, format_claim_table, interval

    p_ = lambda r: r["params"]  # noqa: E731
    columns = [
        ("kernel", 13, lambda r: f"{p_(r)['c_out']}x{p_(r)['c_in']}x{p_(r)['kh']}x{p_(r)['kw']}"),
        ("law", -15, lambda r: p_(r)["dist"]),
        ("n", 7, lambda r: str(r["n_samples"])),
        ("Var_BSN [95% CI]", -34, lambda r: interval(r["estimate"], r["ci_low"], r["ci_high"], 5)),
        ("upper", 9, lambda r: fmt(r["bounds"]["upper"])),
        ("2/F", 9, lambda r: fmt(r["bounds"]["xavier_2_over_fan_sum"])),
        ("L_hat [95% CI]", -22, lambda r: interval(r["L_hat"]["estimate"], r["L_hat"]["ci_low"],
                                                   r["L_hat"]["ci_high"], 3)),
        ("Var_SNw", 10, lambda r: fmt(r["snw"]["estimate"])),
    ]
    return format_claim_table(
        result, title="Theorem 3: Var(w_bar) of w/((||w^||+||w^'||)/2) (BSN), entries i.i.d.",
        columns=columns, check_names=("upper", "gauss-lb", "L-ref", "snw-upper"),
        label=lambda p: f"{p['c_out']}x{p['c_in']}x{p['kh']}x{p['kw']}", l_ref_text="13/6",
        size_text="fan_in+fan_out")


def _thm2_cases(args: argparse.Namespace):
    from .claims import thm2
    if args.shapes is None and args.dist is None:
        cases = thm2.default_sweep(args.normalizer, controls=not args.no_controls,
                                   control_precision=max(args.precision, thm2.CONTROL_PRECISION))
    else:
        cases = thm2.cases_from_grid(
            args.shapes if args.shapes is not None else "8x8,64x32,3x200",
            args.dist if args.dist is not None else "gaussian,uniform", args.normalizer)
    thm2.make_tasks(cases, allow_outside_hypotheses=args.allow_outside_hypotheses)
    return cases


def _thm3_cases(args: argparse.Namespace):
    from .claims import thm3
    if args.kernels is None and args.dist is None:
        cases = thm3.default_sweep(controls=not args.no_controls,
                                   control_precision=max(args.precision, thm3.CONTROL_PRECISION))
    else:
        cases = thm3.cases_from_grid(
            args.kernels if args.kernels is not None else "64x64x3x3,64x32x4x4,16x16x5x5",
            args.dist if args.dist is not None else "gaussian,uniform")
    thm3.make_tasks(cases)
    return cases


def _run_variance_claim(args: argparse.Namespace) -> int:
    """``check thm2`` / ``check thm3``: validate, run (resumable), print, write JSON and figure."""
    from .claims import thm2, thm3
    from .monte_carlo import ResultStore, StoppingRule

    try:  # validate every argument before any work starts; errors here are the user's
        rule = StoppingRule(precision=args.precision, min_samples=args.min_samples,
                            max_samples=args.max_samples)
        if not 0 < args.alpha < 1:
            raise ValueError(f"`--alpha` must be in (0, 1), got {args.alpha!r}")
        if args.workers < 1:
            raise ValueError(f"`--workers` must be an integer >= 1, got {args.workers!r}")
        cases = _thm2_cases(args) if args.claim == "thm2" else _thm3_cases(args)
    except (ValueError, TypeError) as error:
        print(f"sntheory: error: {error}", file=sys.stderr)
        return 2
    store = None if args.no_store else ResultStore(args.store)
    common = dict(seed=args.seed, rule=rule, store=store, workers=args.workers,
                  alpha=args.alpha, progress=not args.quiet)
    if args.claim == "thm2":
        result = thm2.run(cases, allow_outside_hypotheses=args.allow_outside_hypotheses, **common)
        print(format_thm2_table(result))
    else:
        result = thm3.run(cases, **common)
        print(format_thm3_table(result))
    if args.json:
        from .monte_carlo import atomic_write_text
        atomic_write_text(Path(args.json), json.dumps(result, indent=1, sort_keys=True))
        print(f"records written to {args.json}")
    if args.plot:
        title = (f"sntheory check {args.claim}, seed {args.seed}, commit "
                 f"{result['provenance']['git_commit'][:12]}")
        if args.claim == "thm2":
            from .report.thm2_figure import plot_thm2
            plot_thm2(result["records"], args.plot, title=title)
        else:
            from .report.thm3_figure import plot_thm3
            plot_thm3(result["records"], args.plot, title=title)
        print(f"figure written to {args.plot}")
    return 1 if result["summary"]["any_violated"] else 0


def _dims(text: str, count: int, name: str) -> tuple[int, ...]:
    parts = text.lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        dims = ()
    if len(dims) != count or min(dims) < 1:
        shape = "x".join("HW"[-count:] if count == 2 else "CHW")
        raise ValueError(f"`{name}` must be {shape} with positive integers, got {text!r}")
    return dims


def _run_convnorm(args: argparse.Namespace) -> int:
    from .conv.geometry import ConvGeometry
    from .conv.inspect import format_convnorm_table, inspect_path

    try:
        geometry = None
        if args.input_size is not None:
            size = _dims(args.input_size, 2, "--input-size")
            if args.padding == "same":
                raise ValueError("`--padding same` needs the kernel size: pass the padding in "
                                 "pixels (e.g. 1 for 3x3)")
            try:
                padding = int(args.padding)
            except ValueError:
                raise ValueError(f"`--padding` must be an integer >= 0, got {args.padding!r}") \
                    from None
            geometry = ConvGeometry(size, args.stride, padding, args.padding_mode, args.dilation,
                                    args.groups)
        input_shape = _dims(args.input_shape, 3, "--input-shape") if args.input_shape else None
        if not 0 < args.rtol < 1:
            raise ValueError(f"`--rtol` must be in (0, 1), got {args.rtol!r}")
        rows = inspect_path(args.path, geometry=geometry, input_shape=input_shape, rtol=args.rtol)
    except (ValueError, TypeError) as error:
        print(f"sntheory: error: {error}", file=sys.stderr)
        return 2
    print(format_convnorm_table(rows))
    if args.json:
        from .monte_carlo import atomic_write_text
        from .provenance import provenance
        payload = {"rows": rows, "provenance": provenance(config=vars(args))}
        atomic_write_text(Path(args.json), json.dumps(payload, indent=1, sort_keys=True))
        print(f"rows written to {args.json}")
    return 0


def _run_ratio(args: argparse.Namespace) -> int:
    from .claims import ratio

    try:
        if args.kernels < 2:
            raise ValueError(f"`--kernels` must be an integer >= 2, got {args.kernels!r}")
        if args.adversarial_steps < 0:
            raise ValueError(f"`--adversarial-steps` must be >= 0, got {args.adversarial_steps!r}")
        if not 0 < args.alpha < 1:
            raise ValueError(f"`--alpha` must be in (0, 1), got {args.alpha!r}")
    except ValueError as error:
        print(f"sntheory: error: {error}", file=sys.stderr)
        return 2
    cases = ratio.QUICK_CASES if args.quick else ratio.DEFAULT_CASES
    result = ratio.run(cases, n_kernels=args.kernels, seed=args.seed,
                       adversarial_steps=args.adversarial_steps, alpha_fw=args.alpha,
                       progress=not args.quiet)
    print(ratio.format_table(result))
    if args.json:
        from .monte_carlo import atomic_write_text
        atomic_write_text(Path(args.json), json.dumps(result, indent=1, sort_keys=True))
        print(f"records written to {args.json}")
    if args.plot:
        from .report.ratio_figure import plot_ratio
        plot_ratio(result["records"], args.plot,
                   title=f"sntheory check ratio, seed {args.seed}, commit "
                         f"{result['provenance']['git_commit'][:12]}")
        print(f"figure written to {args.plot}")
    return 1 if result["summary"]["any_violated"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "lab_handler", None) is not None:
        return args.lab_handler(args)
    if args.command == "check" and args.claim is None:
        parser.parse_args(["check", "--help"])
    if args.command == "check" and args.claim in ("thm2", "thm3"):
        return _run_variance_claim(args)
    if args.command == "check" and args.claim == "ratio":
        return _run_ratio(args)
    if args.command == "convnorm":
        return _run_convnorm(args)
    if args.command == "report":
        from .cli_report import run as run_report
        return run_report(args)
    if args.command == "try":
        from . import cli_try
        return cli_try.run(args)
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
