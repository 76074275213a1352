"""Figure for claim T3: BSN variance against fan_in + fan_out, bounds as lines, CIs as bars."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

__all__ = ["plot_thm3"]


def plot_thm3(records: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Two panels against ``F = fan_in + fan_out`` (log axis), one colour per entry law.

    Left: ``F Var_BSN`` with the upper bound ``4`` (line; the exact per-case bound
    ``4F/(k (sqrt c_in + sqrt c_out)^2)`` as grey ticks), Xavier's ``2`` (dotted) and the reference
    lower bound ``1/L_ref = 6/13`` (dashed); filled markers inside the lower-bound hypotheses,
    hollow ones outside. Right: ``Var_SNw / Var_BSN`` on the same kernels: 1 for square kernels,
    above 1 when c_out > c_in (SNw's variance tracks 1/max{c_out, c_in k}).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    laws = sorted({r["params"]["dist"] for r in records})
    colours = {law: plt.cm.tab10(i % 10) for i, law in enumerate(laws)}
    for r in records:
        p = r["params"]
        fan = r["fan_in"] + r["fan_out"]
        colour = colours[p["dist"]]
        inside = any(c["name"] == "L-ref" and c["in_hypotheses"] for c in r.get("checks", []))
        style = dict(marker="o", color=colour, ms=5, capsize=2, linestyle="none",
                     mfc=colour if inside else "none")
        y = r["estimate"] * fan
        left.errorbar([fan], [y], yerr=[[y - r["ci_low"] * fan], [r["ci_high"] * fan - y]],
                      **style)
        left.plot([fan], [r["bounds"]["upper"] * fan], marker="_", color="0.4", ms=12,
                  linestyle="none")
        snw = r["snw"]
        ratio = snw["estimate"] / r["estimate"]
        right.plot([fan], [ratio], **{k: v for k, v in style.items() if k != "capsize"})
    left.axhline(4.0, color="crimson", lw=1.5, label="upper bound: F Var <= 4")
    left.axhline(2.0, color="darkgreen", lw=1.0, ls=":", label="Xavier: F Var = 2")
    left.axhline(6 / 13, color="navy", lw=1.2, ls="--",
                 label="reference lower bound: F Var >= 6/13 (L_hat <= 13/6)")
    left.plot([], [], marker="_", color="0.4", ms=12, linestyle="none",
              label="exact upper bound per kernel")
    for law in laws:
        left.plot([], [], "s", color=colours[law], label=law)
    right.axhline(1.0, color="0.3", lw=1.0)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("fan_in + fan_out = k (c_in + c_out)")
    left.set_yscale("log")
    right.set_yscale("log")
    left.set_ylabel("(fan_in + fan_out) * Var(w_bar), BSN")
    right.set_ylabel("Var_SNw / Var_BSN (same kernels)")
    left.set_title("T3: BSN variance vs. its bounds (95% CI bars)")
    right.set_title("SNw vs BSN on the same random kernels")
    left.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
