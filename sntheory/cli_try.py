"""``sntheory try SPEC``: the sanity battery for a user's weight normalizer.

``SPEC`` is ``mypkg.norms:my_norm`` (importable from the current directory, as with
``python -m``), ``path/to/file.py:my_norm``, or a built-in name (``snw``, ``bssn`` ...). The
normalizer is checked against the plug-in contract, then run through the battery beside SNw, BSN,
BSSN, Frobenius normalization and LeCun / Xavier / Kaiming initialization
(:mod:`sntheory.plugin.battery`); figures and records go to ``--out``.

Exit codes: 0 when no row of the plug-in is VIOLATED, 1 when one is (the failures are listed),
2 for bad arguments or a normalizer that breaks the contract.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

__all__ = ["register", "run", "parse_option"]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``try`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``);
    the parser's default ``func`` is :func:`run`."""
    from .plugin.battery import BASELINES, INITS

    p = subparsers.add_parser(
        "try", help="run the sanity battery on a weight normalizer of your own",
        description="Check a weight normalizer against the plug-in contract, then measure whether "
                    "it controls exploding and vanishing signals as SN and BSSN do: the variance "
                    "law of normalized random weights (against LeCun, Xavier, Kaiming and T2's "
                    "1/max(m,n)), forward and backward signals through deep dense and conv stacks "
                    "at initialization, and the product of exact layer operator norms of the "
                    "lab's CIFAR discriminator. Baselines run beside it.")
    p.add_argument("spec", help="the normalizer: mypkg.norms:my_norm, path/to/file.py:my_norm, "
                                "or a built-in name (snw, bsn, bssn, frobenius, ...)")
    p.add_argument("--profile", choices=("quick", "full"), default="quick",
                   help="quick: ~1 minute on 2 cores (default); full: larger sweeps and the "
                        "paper's 32x32 discriminator")
    p.add_argument("--out", metavar="DIR",
                   help="directory for figures and records (default: sntheory-try/<name>)")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="keyword passed to the normalizer on every call (repeatable); VALUE is "
                        "read as JSON when it parses (1.75, true, \"text\"), else as a string")
    p.add_argument("--layer-scale", type=float, default=None, metavar="S",
                   help="per-layer operator-norm budget the normalizer intends (default 1; "
                        "BSSN/SSN: their scale): the Lipschitz budget is prod S*alpha_l")
    p.add_argument("--init", choices=INITS, default=None,
                   help="raw initialization of the plug-in's weights (default lecun: "
                        "N(0, 1/fan_in))")
    p.add_argument("--init-gain", type=float, default=None, metavar="G",
                   help="multiply the raw initialization's standard deviation by G (default 1)")
    p.add_argument("--baselines", default=None, metavar="LIST",
                   help=f"comma-separated baselines (default: all of {','.join(BASELINES)})")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="settings",
                   help="override a battery setting of the profile (repeatable; VALUE as JSON), "
                        "e.g. --set variance_samples=48 --set 'depths=[2,4,8]'; names: the "
                        "fields of sntheory.plugin.BatteryConfig")
    p.add_argument("--no-training", action="store_true",
                   help="skip the short GAN training part (same as --set training=false)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
    return p


def parse_option(text: str, *, flag: str = "--option") -> tuple[str, object]:
    """``NAME=VALUE`` -> ``(NAME, value)``, VALUE as JSON if it parses, else the string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise ValueError(f"`{flag}` must be NAME=VALUE with NAME a Python identifier, got "
                         f"{text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return name.strip(), parsed


def _default_out(spec: str) -> Path:
    name = spec.rsplit(":", 1)[-1] if ":" in spec else spec
    return Path("sntheory-try") / (_SAFE.sub("_", name).strip("._") or "normalizer")


def run(args: argparse.Namespace) -> int:
    """Run ``sntheory try`` for parsed ``args``; returns the exit code (0, 1 or 2)."""
    from .plugin.battery import BatteryConfig, format_summary, run_battery
    from .plugin.contract import NormalizerContractError, load_normalizer

    # Import paths resolve from the current directory, as with `python -m` (the console script
    # does not put it on sys.path by itself).
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:  # everything the user typed: arguments, settings, the normalizer and its contract
        options = dict(parse_option(t) for t in args.option)
        if args.seed < 0:
            raise ValueError(f"`--seed` must be an integer >= 0, got {args.seed}")
        settings = {}
        for text in args.settings:
            name, value = parse_option(text, flag="--set")
            settings[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value) \
                if isinstance(value, list) else value
        if args.baselines is not None:
            settings["baselines"] = tuple(b.strip() for b in args.baselines.split(",")
                                          if b.strip())
        if args.no_training:
            settings["training"] = False
        if args.init is not None:
            settings["init"] = args.init
        if args.init_gain is not None:
            settings["init_gain"] = args.init_gain
        config = BatteryConfig.from_profile(args.profile, **settings)
        plugin = load_normalizer(args.spec, options=options or None,
                                 layer_scale=args.layer_scale)
    except (NormalizerContractError, FileNotFoundError, TypeError, ValueError) as error:
        print(f"sntheory try: error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else _default_out(args.spec)
    progress = None if args.quiet else (lambda text: print(f"[sntheory try] {text} ...",
                                                           file=sys.stderr, flush=True))
    try:
        result = run_battery(plugin, config=config, seed=args.seed, out=out, progress=progress)
    except NormalizerContractError as error:  # the normalizer failed on a battery weight
        print(f"sntheory try: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(result))
    files = "battery.json, rows.csv, variance.png, depth.png, lipschitz.png"
    if result.training is not None:
        files += (", training_gradients.png, training_vanishing.png, training.csv; training runs "
                  "in training-runs/")
    print(f"\nfigures and records: {out}/ ({files})")
    return 1 if result.summary["any_plugin_violation"] else 0


def main(argv=None) -> int:
    """Stand-alone entry (``python -m sntheory.cli_try SPEC ...``) until ``sntheory try`` is
    wired into :mod:`sntheory.cli`."""
    parser = argparse.ArgumentParser(prog="sntheory")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(sub)
    args = parser.parse_args(["try", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
