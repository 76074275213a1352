"""Figures of the discriminator-lab experiments of ``sntheory report`` (matplotlib, Agg backend).

Every figure here is built from the tidy records of :mod:`sntheory.report.kinds_lab` (flat dicts,
one per run, probe step and layer) and always draws the bound beside the measurement:

* :func:`bound_ratio_figure` -- P1 / P3: measured / bound per layer through training, one panel
  per run, with the line ``1`` (a point above it breaks the bound);
* :func:`paired_gradients_figure` -- paper Figs. 4-5: per-layer gradient norms under SNw and SNConv
  through training, and their ratio with the line ``1``;
* :func:`scaled_gradients_figure` -- paper Fig. 6: per-layer gradient norms (median and
  interquartile range over the probe steps) against the SSN scale ``s``, with the P1 bound;
* :func:`variance_figure` -- paper Figs. 7, 16, 17, 22: per-layer entry variance of the effective
  weights through training against T2's ``1/max(m, n)`` (and each run's own bound);
* :func:`ratio_figure` -- paper Figs. 20, 21: ``||w~|| / ||w^||`` per conv layer through training
  between R's bounds ``1`` and ``alpha``.

They share one drawing routine, :func:`panels_figure`, on small declarative :class:`Panel` /
:class:`Line` / :class:`RefLine` objects, so each figure is a data selection plus a caption.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..lab.figures import save_figure

__all__ = ["Line", "RefLine", "Panel", "panels_figure", "bound_ratio_figure",
           "paired_gradients_figure", "scaled_gradients_figure", "variance_figure",
           "ratio_figure", "series_by"]

_COLOURS = [f"C{i}" for i in range(10)]


@dataclass
class Line:
    """One curve: ``x``, ``y``; ``band`` an optional ``(low, high)`` shaded around it."""

    x: Sequence[float]
    y: Sequence[float]
    label: str = ""
    color: str | None = None
    style: str = "-"
    marker: str | None = None
    width: float = 1.3
    band: tuple[Sequence[float], Sequence[float]] | None = None


@dataclass
class RefLine:
    """A horizontal reference (a bound): ``y`` in data units."""

    y: float
    label: str = ""
    color: str = "crimson"
    style: str = "-"
    width: float = 1.6


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    refs: list[RefLine] = field(default_factory=list)
    ylog: bool = True
    xlog: bool = False


def panels_figure(panels: Sequence[Panel], path: str | Path, *, title: str = "",
                  ncols: int | None = None, panel_size: tuple[float, float] = (4.6, 3.6),
                  sharey: bool = False) -> Path:
    """Draw ``panels`` in a grid and save a PNG at ``path`` (parent folders created)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(panels)
    if not panels:
        raise ValueError("`panels` must hold at least one Panel")
    ncols = ncols or min(len(panels), 4)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows + (0.4 if title else 0)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(panels):
            ax.set_axis_off()
            continue
        panel = panels[k]
        drawn = False
        for line in panel.lines:
            x = np.asarray(line.x, dtype=float)
            y = np.asarray(line.y, dtype=float)
            if panel.ylog:
                y = np.where(y > 0, y, np.nan)        # a zero cannot be drawn on a log axis
            if x.size == 0 or not np.isfinite(y).any():
                continue
            ax.plot(x, y, ls=line.style, color=line.color, lw=line.width, marker=line.marker,
                    ms=4, label=line.label or None)
            if line.band is not None:
                low, high = (np.asarray(b, dtype=float) for b in line.band)
                ax.fill_between(x, low, high, color=line.color, alpha=0.18, lw=0)
            drawn = True
        for ref in panel.refs:
            if math.isfinite(ref.y) and (ref.y > 0 or not panel.ylog):
                ax.axhline(ref.y, color=ref.color, ls=ref.style, lw=ref.width,
                           label=ref.label or None)
        if panel.ylog and drawn:
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            if high < 20 * low:               # under ~a decade: plain numbers, not 1.6 x 10^0
                from matplotlib.ticker import FormatStrFormatter
                ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        if panel.xlog:
            ax.set_xscale("log")
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel(panel.xlabel, fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6.5, loc="best")
    return save_figure(fig, path, title=title)


# ---- data selection ----------------------------------------------------------------------------

def series_by(records: Iterable[Mapping], keys: Sequence[str], value: str, *,
              reduce: str = "max", where: Mapping | None = None) -> dict[tuple, tuple]:
    """``{key tuple: (steps, values)}``: ``value`` per ``step`` for each combination of ``keys``,
    steps sorted; several records at one step (e.g. the real and fake batches) are combined by
    ``reduce`` (``max``, ``min`` or ``mean``). Records lacking ``value`` are skipped; ``where``
    keeps only records whose fields equal the given values."""
    if reduce not in ("max", "min", "mean"):
        raise ValueError(f"`reduce` must be 'max', 'min' or 'mean', got {reduce!r}")
    fn = {"max": max, "min": min, "mean": lambda v: sum(v) / len(v)}[reduce]
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if value not in r or r[value] is None:
            continue
        if where and any(r.get(k) != v for k, v in where.items()):
            continue
        groups[tuple(r[k] for k in keys)][int(r["step"])].append(float(r[value]))
    out = {}
    for key, by_step in groups.items():
        steps = sorted(by_step)
        out[key] = (np.array(steps), np.array([fn(by_step[s]) for s in steps]))
    return out


def _layer_labels(records: Iterable[Mapping]) -> dict[int, str]:
    labels: dict[int, str] = {}
    for r in records:
        if r.get("layer", -1) >= 0:
            labels.setdefault(int(r["layer"]), str(r.get("layer_label", f"layer {r['layer']}")))
    return dict(sorted(labels.items()))


def _runs(records: Iterable[Mapping]) -> list[str]:
    seen: list[str] = []
    for r in records:
        if r["run"] not in seen:
            seen.append(r["run"])
    return seen


# ---- figures -------------------------------------------------------------------------------------

def bound_ratio_figure(records: Sequence[Mapping], path: str | Path, *,
                       ratios: Sequence[tuple[str, str, str]], ylabel: str,
                       title: str = "") -> Path:
    """One panel per run: ``measured / bound`` per layer through training, the line 1 in red.

    ``ratios``: ``(record key, legend suffix, line style)`` triples, each a ratio field of the
    tidy records (already measured / bound; the worst of the batches at a step is drawn).
    """
    panels = []
    labels = _layer_labels(records)
    for run in _runs(records):
        rows = [r for r in records if r["run"] == run]
        panel = Panel(run, "generator step", ylabel,
                      refs=[RefLine(1.0, "bound (ratio 1)")])
        for key, suffix, style in ratios:
            series = series_by(rows, ("layer",), key)
            for i, layer in enumerate(sorted(series)):
                steps, values = series[layer]
                name = "network" if layer[0] < 0 else f"{layer[0]}: {labels.get(layer[0], '')}"
                panel.lines.append(Line(steps, values, f"{name}{suffix}",
                                        _COLOURS[i % len(_COLOURS)], style, "o"))
        panels.append(panel)
    return panels_figure(panels, path, title=title, sharey=True)


def paired_gradients_figure(records: Sequence[Mapping], path: str | Path, *, first: str,
                            second: str, title: str = "") -> Path:
    """Paper Figs. 4-5. One panel per layer: the gradient norm under ``first`` (solid) and
    ``second`` (dashed) through training; last panel: their ratio second / first per layer,
    with the line 1 (below it: ``second``'s gradients are smaller)."""
    labels = _layer_labels(records)
    panels = []
    ratio_panel = Panel(f"{second} / {first}", "generator step", "gradient-norm ratio",
                        refs=[RefLine(1.0, "equal gradients")])
    for i, (layer, label) in enumerate(labels.items()):
        rows = [r for r in records if r["layer"] == layer]
        c = _COLOURS[i % len(_COLOURS)]
        a = series_by(rows, (), f"grad_{first}")
        b = series_by(rows, (), f"grad_{second}")
        ratio = series_by(rows, (), "ratio")
        panel = Panel(f"layer {layer}: {label}", "generator step", "||grad_w D||_F")
        if a:
            panel.lines.append(Line(*a[()], first, c, "-"))
        if b:
            panel.lines.append(Line(*b[()], second, c, "--"))
        panels.append(panel)
        if ratio:
            ratio_panel.lines.append(Line(*ratio[()], f"{layer}: {label}", c, "-", "o"))
    panels.append(ratio_panel)
    return panels_figure(panels, path, title=title)


def scaled_gradients_figure(records: Sequence[Mapping], path: str | Path, *,
                            title: str = "") -> Path:
    """Paper Fig. 6. One panel per layer: median over probe steps of the gradient norm against
    the SSN scale ``s`` (log-log; shaded: interquartile range over the steps) and, dashed, the
    median of its P1 bound; last panel: the gradient norm through training, one line per
    scale (the network's layers summed in quadrature)."""
    labels = _layer_labels(records)
    scales = sorted({float(r["scale"]) for r in records})
    panels = []
    for i, (layer, label) in enumerate(labels.items()):
        c = _COLOURS[i % len(_COLOURS)]
        med, lo, hi, bound = [], [], [], []
        for s in scales:
            g = np.array([r["grad"] for r in records if r["layer"] == layer and r["scale"] == s])
            b = np.array([r["grad_bound"] for r in records
                          if r["layer"] == layer and r["scale"] == s])
            med.append(np.median(g) if g.size else math.nan)
            lo.append(np.quantile(g, 0.25) if g.size else math.nan)
            hi.append(np.quantile(g, 0.75) if g.size else math.nan)
            bound.append(np.median(b) if b.size else math.nan)
        panels.append(Panel(f"layer {layer}: {label}", "SSN scale s", "||grad_w D||_F",
                            [Line(scales, med, "median over steps", c, "-", "o", band=(lo, hi)),
                             Line(scales, bound, "P1 bound (median)", c, "--", "s")],
                            xlog=True))
    through = Panel("whole network", "generator step", "sqrt(sum_t ||grad_{w_t} D||^2)")
    for k, s in enumerate(scales):
        rows = [r for r in records if r["scale"] == s]
        per_step: dict[int, float] = defaultdict(float)
        for r in rows:
            per_step[int(r["step"])] += float(r["grad"]) ** 2
        steps = sorted(per_step)
        through.lines.append(Line(steps, [math.sqrt(per_step[t]) for t in steps], f"s = {s:g}",
                                  _COLOURS[k % len(_COLOURS)]))
    panels.append(through)
    return panels_figure(panels, path, title=title)


def variance_figure(records: Sequence[Mapping], path: str | Path, *, title: str = "") -> Path:
    """Paper Figs. 7, 16, 17, 22. One panel per layer: the entry variance of the effective
    weight through training, one line per run, T2's ``1/max(m, n)`` in red and, dotted in the
    run's colour, a run's own bound where it differs (``s^2/max(m, n)`` for SSN, T3's
    ``4 s^2/(k (sqrt c_in + sqrt c_out)^2)`` for BSN/BSSN conv layers)."""
    labels = _layer_labels(records)
    runs = _runs(records)
    panels = []
    for layer, label in labels.items():
        rows = [r for r in records if r["layer"] == layer]
        t2 = next((r["t2_var_bound"] for r in rows), math.nan)
        panel = Panel(f"layer {layer}: {label}", "generator step", "Var(w_eff entries)",
                      refs=[RefLine(t2, "T2: 1/max(m,n)")])
        for k, run in enumerate(runs):
            c = _COLOURS[k % len(_COLOURS)]
            series = series_by(rows, (), "eff_weight_var", where={"run": run})
            if not series:
                continue
            panel.lines.append(Line(*series[()], run, c))
            own = series_by(rows, (), "paper_bound", where={"run": run})
            if own and not np.allclose(own[()][1], t2, rtol=1e-12, atol=0):
                panel.lines.append(Line(*own[()], "", c, ":", width=1.0))
        panels.append(panel)
    return panels_figure(panels, path, title=title)


def ratio_figure(records: Sequence[Mapping], path: str | Path, *, title: str = "") -> Path:
    """Paper Figs. 20, 21. One panel per conv layer: ``||w~|| / ||w^||`` (the converged operator
    norm over the reshaped-kernel norm) through training, one line per run, between R's bounds:
    ``alpha`` (red) and 1 (grey, drawn where the lower bound applies). Every line must stay
    between them."""
    labels = _layer_labels(records)
    runs = _runs(records)
    panels = []
    for layer, label in labels.items():
        rows = [r for r in records if r["layer"] == layer]
        if not rows:
            continue
        alpha = rows[0]["alpha"]
        refs = [RefLine(alpha, f"alpha = {alpha:.4g}")]
        if rows[0].get("lower_bound_applies", False):
            refs.append(RefLine(1.0, "1 (lower bound)", color="0.4", style="--"))
        panel = Panel(f"layer {layer}: {label}", "generator step", "||w~||_sp / ||w^||_sp",
                      refs=refs, ylog=False)
        for k, run in enumerate(runs):
            series = series_by(rows, (), "ratio", where={"run": run})
            if series:
                panel.lines.append(Line(*series[()], run, _COLOURS[k % len(_COLOURS)], "-",
                                        "o"))
        panels.append(panel)
    if not panels:
        raise ValueError("`records` hold no conv layer: the ratio figure needs one")
    return panels_figure(panels, path, title=title)
