"""Figure for claim T2: normalised variance against size, bounds as lines, CIs as bars."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

__all__ = ["plot_thm2"]

_MARKERS = {"square": "o", "wide": ">", "tall": "v"}


def _aspect(m: int, n: int) -> str:
    return "square" if m == n else ("wide" if n > m else "tall")


def plot_thm2(records: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """Two panels against ``max{m,n}`` (log axis), one colour per entry law / normaliser.

    Left: ``max{m,n} Var`` with the paper's upper bound (1), the reference lower bound
    ``1/L_ref = 3/13`` and the explicit Gaussian lower bound ``max/((sqrt m + sqrt n)^2 + 1)``
    (open grey markers, one per Gaussian case). Right: the Bai-Yin ratio
    ``(sqrt m + sqrt n)^2 Var`` with its limit 1. Error bars are 95% CIs; filled markers are cases
    inside the lower-bound hypotheses, hollow ones negative controls.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    laws = sorted({f'{r["params"]["dist"]} / {r["params"]["normalizer"]}' for r in records})
    colours = {law: plt.cm.tab10(i % 10) for i, law in enumerate(laws)}
    for r in records:
        p = r["params"]
        m, n = p["m"], p["n"]
        big = max(m, n)
        scale_by = (math.sqrt(m) + math.sqrt(n)) ** 2
        law = f'{p["dist"]} / {p["normalizer"]}'
        inside = any(c["name"] == "L-ref" and c["in_hypotheses"] for c in r.get("checks", []))
        style = dict(marker=_MARKERS[_aspect(m, n)], color=colours[law], ms=5, capsize=2,
                     linestyle="none", mfc=colours[law] if inside else "none")
        for ax, scale in ((left, big), (right, scale_by)):
            y = r["estimate"] * scale
            err = [[y - r["ci_low"] * scale], [r["ci_high"] * scale - y]]
            ax.errorbar([big], [y], yerr=err, **style)
        if p["dist"] == "gaussian":
            left.plot([big], [big * r["bounds"]["gaussian_lower"]], marker="_", color="0.4",
                      ms=12, linestyle="none")
    left.axhline(1.0, color="crimson", lw=1.5, label="upper bound: Var <= 1/max{m,n}")
    left.axhline(3 / 13, color="navy", lw=1.2, ls="--",
                 label="reference lower bound: max*Var >= 3/13 (L_hat <= 13/3)")
    left.plot([], [], marker="_", color="0.4", ms=12, linestyle="none",
              label="explicit Gaussian lower bound (per case)")
    right.axhline(1.0, color="darkgreen", lw=1.5, label="Bai-Yin limit: 1")
    for law in laws:
        left.plot([], [], "s", color=colours[law], label=law)
    for aspect, marker in _MARKERS.items():
        right.plot([], [], marker, color="0.3", mfc="none", label=f"{aspect} (m{'=' if aspect == 'square' else '<' if aspect == 'wide' else '>'}n)")
    left.set_xscale("log")
    left.set_yscale("log")
    right.set_xscale("log")
    right.set_yscale("log")
    left.set_xlabel("max{m, n}")
    right.set_xlabel("max{m, n}")
    left.set_ylabel("max{m,n} * Var(a_bar)")
    right.set_ylabel("(sqrt m + sqrt n)^2 * Var(a_bar)")
    left.set_title("T2: normalised variance vs. its bounds (95% CI bars)")
    right.set_title("Bai-Yin ratio: the prediction the bounds bracket")
    left.legend(fontsize=7, loc="lower left")
    right.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
