"""Figures of training runs (matplotlib, Agg backend; nothing is shown on screen).

* :func:`plot_gradient_norms` — paper Fig. 2 / 12: the norm of the gradient of ``D`` with respect to
  each layer's effective weight through training, one panel per run (e.g. without and with SN),
  every layer against its own P1 bound (dashed, same colour). A point above its dashed line is a
  violation of Prop. 1 (checked, with verdicts, by ``sntheory check prop1``); the figure shows the
  paper's qualitative point: without SN some layers' gradients sit far above the others', with SN
  all of them stay under their bounds.
* :func:`plot_losses` — the training curves of one or more runs (``losses.csv``).

Both read the run directory's files (``probes.jsonl``, ``losses.csv``) or take records directly.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_gradient_norms", "plot_losses", "gradient_series", "save_figure"]



def save_figure(fig, path: str | Path, *, title: str = "", dpi: int = 110) -> Path:
    """Give ``fig`` its suptitle, lay it out and write it as a PNG (parent folders created)."""
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path

def _records(source) -> list[dict]:
    if isinstance(source, (str, Path)):
        from .train import read_probes
        return read_probes(source)
    return list(source)


def gradient_series(records: Sequence[dict], *, batch: str = "real",
                    value_key: str = "grad_eff_fro_max", bound_key: str = "grad_eff_bound_max"
                    ) -> dict[int, dict[str, np.ndarray]]:
    """``{layer: {"step", "value", "bound", "label"}}`` from the per-layer probe records
    (``scope="layer"``) of one batch kind, steps sorted.

    Defaults: ``grad_eff_fro_max`` = ``max_j ||grad_{w_t} z(x_j)||_F`` over the probe batch (the
    kernel-tensor gradient autograd gives) and ``grad_eff_bound_max`` = ``max_j`` of its P1 bound
    ``alpha_t B_{t-1}(x_j) prod_{i>t} ||w~_i||`` (sntheory.lab.probes). Each sample's gradient is
    under its own bound, so the maximum gradient is under the maximum bound.
    """
    rows: dict[int, list[tuple[int, float, float]]] = defaultdict(list)
    labels: dict[int, str] = {}
    for r in records:
        if r.get("scope", "layer") != "layer" or r.get("batch", batch) != batch \
                or value_key not in r:
            continue
        layer = int(r["layer"])
        bound = r.get(bound_key)
        rows[layer].append((int(r["step"]), float(r[value_key]),
                            float("nan") if bound is None else float(bound)))
        labels.setdefault(layer, str(r.get("layer_label") or r.get("label") or f"layer {layer}"))
    out = {}
    for layer in sorted(rows):
        steps, values, bounds = (np.array(col) for col in zip(*sorted(rows[layer])))
        out[layer] = {"step": steps, "value": values, "bound": bounds,
                      "label": f"{layer + 1}: {labels[layer]}"}
    return out


def plot_gradient_norms(runs: Mapping[str, object], path: str | Path, *, batch: str = "real",
                        value_key: str = "grad_eff_fro_max", bound_key: str = "grad_eff_bound_max",
                        title: str = "") -> Path:
    """One panel per run (``{panel title: run directory or probe records}``), shared log y-axis.

    Solid: ``value_key`` per layer through training; dashed: that layer's ``bound_key``.
    """
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not runs:
        raise ValueError("`runs` must name at least one run")
    series = {name: gradient_series(_records(src), batch=batch, value_key=value_key,
                                    bound_key=bound_key) for name, src in runs.items()}
    empty = [name for name, s in series.items() if not s]
    if empty:
        raise ValueError(f"runs {empty} have no probe records with {value_key!r} for batch "
                         f"{batch!r} (probes off? set [probe] every)")
    fig = Figure(figsize=(5.2 * len(series), 4.0))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(series), sharey=True, squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for ax, (name, layers) in zip(axes, series.items()):
        for i, (layer, s) in enumerate(layers.items()):
            c = colours[i % len(colours)]
            ax.plot(s["step"], s["value"], color=c, lw=1.3, label=s["label"])
            if np.isfinite(s["bound"]).any():
                ax.plot(s["step"], s["bound"], color=c, lw=1.0, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("generator step")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel(f"||grad_w D(x)||_F per layer (max over the {batch} probe batch)")
    axes[0].plot([], [], color="k", ls="--", lw=1.0, label="P1 bound (per layer)")
    axes[0].legend(fontsize=7, loc="best")
    return save_figure(fig, path, title=title)


def plot_losses(runs: Mapping[str, str | Path], path: str | Path, *, title: str = "") -> Path:
    """Discriminator loss and ``E D(real) - E D(fake)`` through training, one line per run."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .train import read_losses

    if not runs:
        raise ValueError("`runs` must name at least one run")
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    ax_loss, ax_gap = fig.subplots(1, 2)
    for name, run_dir in runs.items():
        rows = read_losses(run_dir)
        if not rows:
            raise ValueError(f"run {name!r} ({run_dir}) has no rows in losses.csv")
        step = np.array([r["step"] for r in rows])
        width = max(1, len(rows) // 100)  # running mean over ~1% of the run
        kernel = np.ones(width) / width

        def smooth(v):
            return np.convolve(v, kernel, mode="valid")

        s = step[width - 1:]
        ax_loss.plot(s, smooth(np.array([r["d_loss"] for r in rows])), label=name, lw=1)
        ax_gap.plot(s, smooth(np.array([r["d_real"] - r["d_fake"] for r in rows])), label=name,
                    lw=1)
    ax_loss.set_title("discriminator loss (incl. penalty)", fontsize=9)
    ax_gap.set_title("E D(real) - E D(fake)", fontsize=9)
    for ax in (ax_loss, ax_gap):
        ax.set_xlabel("generator step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path, title=title)
