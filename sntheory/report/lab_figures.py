"""Figures for the lab's P2 (rescaling invariance) and T1 (equal spectral norms) checks.

Each function takes what :func:`sntheory.claims.prop2.check_prop2` /
:func:`sntheory.claims.thm1.check_thm1` return (a ``LabCheckResult`` or its ``to_json()`` dict;
the T1 figures also take several, as a list or a ``{label: result}`` mapping), writes a PNG with
the Agg backend and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
import numpy as np  # noqa: E402

__all__ = ["prop2_figure", "thm1_scatter_figure", "thm1_rescaling_figure"]

def _as_dict(result) -> dict:
    if hasattr(result, "to_json"):
        return result.to_json()
    if isinstance(result, Mapping) and "records" in result:
        return dict(result)
    raise TypeError(f"`result` must be a LabCheckResult or its to_json() dict, got "
                    f"{type(result).__name__}")


def _labelled(results) -> list[tuple[str, dict]]:
    """One result, a sequence of results or a ``{label: result}`` mapping -> [(label, dict)]."""
    if hasattr(results, "to_json") or (isinstance(results, Mapping) and "records" in results):
        results = [results]
    if isinstance(results, Mapping):
        items = [(str(k), _as_dict(v)) for k, v in results.items()]
    elif isinstance(results, Sequence) and not isinstance(results, (str, bytes)):
        items = []
        for i, r in enumerate(results):
            d = _as_dict(r)
            cfg = d.get("provenance", {}).get("config", {})
            label = " ".join(str(cfg.get(k, "")) for k in ("experiment", "setting")).strip()
            items.append((label or f"network {i}", d))
    else:
        raise TypeError(f"`results` must be a result, a list of results or a mapping label -> "
                        f"result, got {type(results).__name__}")
    if not items:
        raise ValueError("`results` must hold at least one result")
    return items


def _claim(d: dict, claim: str) -> None:
    if d.get("claim") != claim:
        raise ValueError(f"expected a {claim} result, got claim {d.get('claim')!r}")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def prop2_figure(result, path, title: str | None = None) -> Path:
    """P2: for every variant (activation x bias handling), each rescaling draw's largest
    deviation ``|D_c(x_j) - D(x_j)|`` in units of its float64 round-off bound (dots, log scale;
    exact zeros drawn at the bottom), with the bound (red line at 1). In-hypothesis variants
    (blue) must sit below the line, the negative controls (orange) far above it."""
    d = _as_dict(result)
    _claim(d, "P2")
    variants: list[str] = []
    for r in d["records"]:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    floor = 1e-8
    fig, ax = plt.subplots(figsize=(max(7, 0.8 * len(variants)) + 3, 5), constrained_layout=True)
    for i, v in enumerate(variants):
        recs = [r for r in d["records"] if r["variant"] == v]
        ys = np.maximum([r["dev_over_bound"] for r in recs], floor)
        xs = i + np.linspace(-0.25, 0.25, len(recs))
        color = "tab:blue" if recs[0]["in_hypotheses"] else "tab:orange"
        ax.scatter(xs, ys, s=18, color=color, zorder=3)
    ax.axhline(1.0, color="crimson", lw=2)
    ax.set_yscale("log")
    ax.set_xticks(range(len(variants)))
    ax.set_xticklabels(variants, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("max_j |D_c(x_j) - D(x_j)| / round-off bound_j")
    ax.scatter([], [], color="tab:blue", label="hypotheses hold (homogeneous; no / scaled biases)")
    ax.scatter([], [], color="tab:orange", label="negative control (outside the hypotheses)")
    ax.plot([], [], color="crimson", lw=2, label="float64 round-off bound (first order)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("P2: rescaling invariance, c_i > 0, prod c_i = 1 (one dot per draw)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def thm1_scatter_figure(results, path, title: str | None = None) -> Path:
    """T1 hypothesis (paper Figs. 3, 14, 15): ``g_i / g_j`` against ``||w_j||_sp / ||w_i||_sp`` for
    every pair ``i < j`` and rescaling, log-log, one colour per network, with the diagonal (the
    class D). The legend gives each network's log-residual sd about the diagonal."""
    items = _labelled(results)
    fig, ax = plt.subplots(figsize=(7.5, 6), constrained_layout=True)
    lo, hi = math.inf, -math.inf
    for k, (label, d) in enumerate(items):
        _claim(d, "T1")
        pts = [r for r in d["records"] if r["kind"] == "scatter"]
        if not pts:
            continue
        xs = np.array([r["norm_ratio"] for r in pts])
        ys = np.array([r["grad_ratio"] for r in pts])
        excess = [r for r in d["records"] if r["kind"] == "excess"]
        sd = f", sd {excess[0]['log_residual_sd']:.2g}" if excess else ""
        ax.scatter(xs, ys, s=10, alpha=0.6, color=f"C{k % 10}", label=f"{label}{sd}")
        lo, hi = min(lo, xs.min(), ys.min()), max(hi, xs.max(), ys.max())
    if math.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="crimson", lw=1.5, label="diagonal (class D)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("||w_j||_sp / ||w_i||_sp")
    ax.set_ylabel("g_i / g_j   (g_t = ||grad_{w_t} mean z||_F)")
    ax.set_title("T1 hypothesis: random rescalings at a fixed geometric mean of spectral norms")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def thm1_rescaling_figure(results, path, title: str | None = None) -> Path:
    """T1 practical content. Left: ``log(g_t ||w_t||_sp)`` per layer, centred (flat at 0 in the
    class D). Right: the excess ``||grad D_{theta_c*}|| / min_c ||grad D_{theta_c}||`` per network
    (1 in D; red: the check's tolerance)."""
    items = _labelled(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    names, excess, tols = [], [], []
    n_layers = 0
    for k, (label, d) in enumerate(items):
        _claim(d, "T1")
        layers = sorted((r for r in d["records"] if r["kind"] == "layer"),
                        key=lambda r: r["layer"])
        ell = np.array([r.get("log_g_sigma", math.nan) for r in layers])
        if ell.size and np.all(np.isfinite(ell)):   # a zero layer gradient has no log
            ax1.plot(range(len(ell)), ell - ell.mean(), marker="o", color=f"C{k % 10}",
                     label=label)
            n_layers = max(n_layers, len(ell))
        ex = [r for r in d["records"] if r["kind"] == "excess"]
        if ex:
            names.append(label)
            excess.append(ex[0]["excess_ratio"])
            rows = [r for r in d.get("rows", []) if r.get("extra", {}).get("check") == "excess"]
            tols.append(rows[0]["bound"] if rows else math.nan)
    ax1.axhline(0.0, color="crimson", lw=1)
    ax1.set_xticks(range(n_layers))
    ax1.set_xlabel("layer t")
    ax1.set_ylabel("log(g_t ||w_t||_sp) - mean over layers")
    ax1.set_title("hypothesis: g_t ||w_t||_sp equal across layers")
    if n_layers:
        ax1.legend(fontsize=8)
    xs = np.arange(len(names))
    ax2.bar(xs, np.array(excess) - 1.0, bottom=1.0, color=[f"C{k % 10}" for k in range(len(names))])
    for x, t in zip(xs, tols):
        if math.isfinite(t):
            ax2.plot([x - 0.4, x + 0.4], [t, t], color="crimson", lw=2)
    ax2.axhline(1.0, color="0.3", lw=1)
    ax2.set_xticks(xs)
    ax2.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax2.set_ylabel("||grad D at equal spectral norms|| / min over rescalings")
    ax2.set_title("excess of equalising the spectral norms (red: tolerance)")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
