"""Figure for claim R: the ratio ||w~||/||w^|| per geometry against [1, alpha]."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)

__all__ = ["plot_ratio"]


def plot_ratio(records: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """One column per geometry: the random kernels' ratios (box: 5-95%, whiskers: min-max), the
    all-ones kernel (star) and the adversarial search's best kernel (triangle), with the bounds
    1 and alpha drawn as short red lines. Read: every marker must lie between the red lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(records)) + 4, 5.5), constrained_layout=True)
    for i, r in enumerate(records):
        q = r["ratio"]["quantiles"]
        ax.vlines(i, q["min"], q["max"], color="0.4", lw=1)
        ax.add_patch(plt.Rectangle((i - 0.18, q["q05"]), 0.36, q["q95"] - q["q05"],
                                   color="tab:blue", alpha=0.5))
        ax.plot([i - 0.18, i + 0.18], [q["median"]] * 2, color="navy", lw=1.5)
        ax.plot([i - 0.35, i + 0.35], [r["alpha"]] * 2, color="crimson", lw=2)
        ax.plot([i - 0.35, i + 0.35], [1.0] * 2, color="crimson", lw=2,
                ls="-" if r["lower_bound_applies"] else ":")
        ax.plot(i, r["all_ones"]["ratio"], marker="*", color="darkorange", ms=11)
        if "adversarial" in r:
            ax.plot(i, r["adversarial"]["ratio"], marker="^", color="darkgreen", ms=8)
    ax.plot([], [], color="crimson", lw=2, label="bounds: 1 and alpha (dotted: lower bound "
                                                  "not guaranteed)")
    ax.add_patch(plt.Rectangle((0, 0), 0, 0, color="tab:blue", alpha=0.5,
                               label="random kernels: 5-95% (line: median, whiskers: min-max)"))
    ax.plot([], [], "*", color="darkorange", ms=11, label="all-ones kernel")
    ax.plot([], [], "^", color="darkgreen", ms=8, label="adversarial search (best)")
    ax.set_xticks(range(len(records)))
    ax.set_xticklabels([r["params"]["name"] for r in records], rotation=35, ha="right",
                       fontsize=8)
    ax.set_ylabel("||w~||_sp / ||w^||_sp")
    ax.set_title("Claim R: SNConv's operator norm over SNw's reshaped norm")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
