"""Readable verdict tables for the terminal, shared by every claim."""
from __future__ import annotations

import math
from typing import Callable, Sequence

__all__ = ["fmt", "short_verdict", "Column", "format_claim_table"]

Column = tuple[str, int, Callable[[dict], str]]   # header, width (negative: left-aligned), cell


def fmt(x: float | None, digits: int = 4) -> str:
    """Compact number: ``%.{digits}g``; ``inf`` for infinite or missing values."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "inf"
    return f"{x:.{digits}g}"


def short_verdict(check: dict) -> str:
    """``holds`` / ``VIOLATED`` / ``inconcl.``; ``out:fails`` / ``out:holds`` outside hypotheses."""
    v = check["verdict"]
    if v == "OUTSIDE-HYPOTHESES":
        return {"bound-fails": "out:fails", "bound-holds": "out:holds"}.get(check["observed"],
                                                                           "out:?")
    return {"HOLDS": "holds", "VIOLATED": "VIOLATED", "INCONCLUSIVE": "inconcl."}[v]


def interval(value: float, low: float, high: float, digits: int = 4) -> str:
    return f"{fmt(value, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def format_claim_table(result: dict, *, title: str, columns: Sequence[Column],
                       check_names: Sequence[str], label: Callable[[dict], str],
                       l_ref_text: str, size_text: str) -> str:
    """Header, one row per case (``columns`` then one column per check, then the verdict), the
    per-law ``L_hat`` summary, the negative controls grouped by law and check, and the totals."""
    prov = result["provenance"]
    summary = result["summary"]
    lines = [
        f"{title}  seed={prov['seed']}  precision={prov['config']['precision']:g} "
        f"(95% CI half-width, relative)",
        f"verdicts: Holm step-down, family-wise alpha={summary['alpha_familywise']:g} over "
        f"{summary['n_checks']} checks; out:fails = bound fails where its hypotheses do not hold",
        "",
    ]

    def cell(text: str, width: int) -> str:
        return f"{text:<{-width}}" if width < 0 else f"{text:>{width}}"

    all_columns = list(columns) + [(name, 9, None) for name in check_names]
    header = " ".join(cell(h, w) for h, w, _ in all_columns) + " verdict"
    lines += [header, "-" * len(header)]
    for r in result["records"]:
        checks = {c["name"]: c for c in r["checks"]}
        cells = [cell(fn(r), w) for _, w, fn in columns]
        cells += [cell(short_verdict(checks[name]), 9) for name in check_names]
        flag = "" if r["precision_reached"] else " (precision not reached)"
        lines.append(" ".join(cells) + f" {r['verdict']}{flag}")
    lines.append("")
    for law, s in summary["laws"].items():
        bounded = s["L_hat_bounded_by_L_ref"]
        text = (f"L_hat <= {l_ref_text} in every in-hypothesis case" if bounded else
                f"L_hat not shown <= {l_ref_text} in every in-hypothesis case"
                if bounded is False else "lower bound outside its hypotheses for this law")
        slope = s["log_L_hat_vs_log_size_slope"]
        lines.append(f"{law:<34} max L_hat = {fmt(s['max_L_hat'], 4)} at {s['max_L_hat_shape']}"
                     f"; slope of log L_hat vs log {size_text} = "
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
        for (dist, _), rows in fails.items():
            failing = [(r, c) for r, c in rows if c["observed"] == "bound-fails"]
            r, c = max(failing, key=lambda rc: abs(rc[1]["slack"]) / rc[1]["bound"])
            lines.append(f"  {dist}: {c['statement']} fails in {len(failing)}/{len(rows)} "
                         f"shape(s), worst {label(r['params'])} "
                         f"(Var {fmt(c['estimate'], 4)} vs bound {fmt(c['bound'], 4)}, "
                         f"L_hat {fmt(r['L_hat']['estimate'], 3)}) - {c['hypothesis_note']}")
    records = result["records"]
    lines += ["", f"{sum(r['verdict'] == 'VIOLATED' for r in records)} case(s) VIOLATED; "
                  f"{sum(r['verdict'] == 'INCONCLUSIVE' for r in records)} INCONCLUSIVE; "
                  f"{sum(r['verdict'] == 'HOLDS' for r in records)} HOLDS; "
                  f"wall time {result['wall_s']:.1f} s"
                  + (f" ({result['resumed_cases']} case(s) resumed from the store)"
                     if result["resumed_cases"] else "")]
    return "\n".join(lines)
