"""Experiment kinds of the discriminator lab: P1, P2, T1, P3 and the paper's training figures.

Every kind trains (or reuses) small GANs with :func:`sntheory.lab.train.train`, reads the probe
records of the discriminator (:mod:`sntheory.lab.probes`) or checks trained discriminators directly
(:mod:`sntheory.claims.prop2`, :mod:`~sntheory.claims.thm1`), and returns
:class:`~sntheory.report.rows.ClaimRow` objects, figures with the bound drawn beside the measurement
(:mod:`sntheory.report.lab_training_figures`, :mod:`~sntheory.report.lab_figures`), tidy records
and a summary.

Shared training runs
--------------------
A run is named by a spec ``NORMALIZER[:SCALE][/ACTIVATION]`` (``"none"``, ``"snw"``,
``"snconv"``, ``"ssn:1.75"``, ``"bssn:1.75"``, ``"snw/scaled_relu:2"``) on top of the base
training settings every lab kind shares (:class:`LabTrainingParams`: data, network, optimiser,
steps, probe schedule). :func:`ensure_training_run` trains a run into
``<cache_dir>/lab-runs/<key>``, ``key`` a hash of the resolved :class:`~sntheory.lab.config.
TrainConfig` (plus the checkpoint and probe format versions), resuming an interrupted run from its
last checkpoint and reusing a finished one, so experiments whose base settings agree read the same
runs (p1_gradients, snw_vs_snconv, variance_training and ratio_training all read the same SNw
run). Without a cache directory (``--no-store``) runs go to a scratch folder of the process,
removed at exit (shared within one ``sntheory report``). The unnormalised run trains with the
WGAN gradient penalty (``gp_weight_unnormalized``), the normalised ones without, as the paper's
MNIST experiments did. The training device follows ``--device`` (so the kinds declare
``uses_device``); every probe and check runs in float64 on the CPU.

The kinds and their verdicts
----------------------------
* ``p1_gradients`` (P1, paper Figs. 2, 12): :func:`sntheory.claims.prop1.check_prop1` on every run
  (deterministic bounds: VIOLATED beyond round-off). Negative controls: a run whose activation
  breaks P1's hypotheses (``snw/scaled_relu:2``, Lipschitz 2), OUTSIDE-HYPOTHESES with what was
  observed, and THEORY.md's uncorrected raw-parameter bound ``(s/sigma) ||G||_F`` (it holds only
  for orthogonal projections), reported as OUTSIDE-HYPOTHESES beside the corrected bound.
* ``p2_invariance`` (P2): :func:`~sntheory.claims.prop2.check_prop2` on trained discriminators
  (biases removed, biases scaled, and -- a control -- unscaled; smooth activations as controls).
* ``t1_rescaling`` (T1, Figs. 3, 14, 15): :func:`~sntheory.claims.thm1.check_thm1` on trained
  discriminators (the identity, the hypothesis scatter, the minimiser, the excess).
* ``p3_hessian`` (P3): :func:`~sntheory.claims.prop3.check_prop3` on the Hessian probes
  (``hessian_every``) of the runs; a tanh run is the control (not piecewise linear).
* ``snw_vs_snconv`` (Figs. 4-5): a measured *trend*, not a theorem. Statement, per layer: "the
  median over probe steps of ``g_SNConv / g_SNw`` is below 1", ``g`` a gradient norm of the
  discriminator on the probe's real batch (the same images for both runs at a step: same seed,
  same probe stream). Decided by a paired sign test over the probe steps
  (:func:`paired_sign_test`: the number of steps where SNConv's gradient is the smaller one is
  Binomial(n, 1/2) if neither run tends to be smaller), one-sided both ways, Holm over layers at
  ``alpha``: HOLDS when "SNConv smaller" is significant, VIOLATED when "SNConv larger" is (the
  paper's trend reversed in this run), INCONCLUSIVE otherwise. Consecutive probe steps of one run
  are not independent, so the p-value measures how consistently the trend holds across the run,
  not a sampling error of a population.
* ``scaled_sn`` (Fig. 6): SSN with several scales (``s = 1`` is SNw itself: the shared SNw run).
  P1's kernel-gradient bound per run (deterministic), and the trend "the gradient grows with s"
  for consecutive scales, decided by the same paired sign test.
* ``variance_training`` (Figs. 7, 16, 17, 22): see :func:`variance_rows`. T2's upper bound is a
  fact about every matrix, not only random ones: ``||A||_F^2 <= rank(A) ||A||_sp^2`` gives
  ``mean_ij a_ij^2 <= ||A||_sp^2 / max(m, n)`` (and ``Var <= mean square``), so through training
  it is checked deterministically against the measured ``||w^_eff||``; against ``s^2/max(m,n)``
  it holds whenever the normaliser's estimate of the norm is exact (SNw's power iteration can
  lag: a point above the bound with ``||w^_eff|| > s`` is attributed to that lag and gives
  INCONCLUSIVE, not VIOLATED). T2's lower-bound side (Var of order ``1/max(m,n)``) is a theorem
  about i.i.d. entries only: through training it is a *measurement*, ``L_hat <= 13/3`` (T3 form for
  BSN conv layers: ``13/6``), HOLDS or INCONCLUSIVE. Unnormalised layers are OUTSIDE-HYPOTHESES
  for the paper's bound.
* ``ratio_training`` (Figs. 20, 21): R through training: ``||w^|| <= ||w~|| <= alpha ||w^||``,
  see :func:`ratio_rows` for which certified side decides each verdict.
"""
from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import math
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from ..monte_carlo.store import exclusive_lock
from ..monte_carlo.verdicts import Verdict, holm_reject
from .experiments import (ExperimentKind, ExperimentOutput, Figure, RunContext, register_kind,
                          verdict_counts)
from .rows import ClaimRow, relative_slack

__all__ = ["RunSpec", "parse_run_spec", "LabTrainingParams", "training_run_key",
           "ensure_training_run", "runs_root", "run_is_finished", "paired_sign_test",
           "trend_verdicts", "variance_rows", "ratio_rows",
           "P1GradientsParams", "P2InvarianceParams", "T1RescalingParams", "P3HessianParams",
           "SnwVsSnconvParams", "ScaledSnParams", "VarianceTrainingParams", "RatioTrainingParams",
           "run_p1_gradients", "run_p2_invariance", "run_t1_rescaling", "run_p3_hessian",
           "run_snw_vs_snconv", "run_scaled_sn", "run_variance_training", "run_ratio_training"]

# Bump when rows, records, figures or summaries of these kinds change (recomputes results).
_REVISION = 1
# Bump when the way runs are trained changes without a change to their TrainConfig.
_RUNS_REVISION = 1
_SCALED = ("ssn", "bssn")
_SN_FAMILY = ("snw", "ssn", "snconv")          # divide by ||w^|| or ||w~|| >= ||w^||
_BSN_FAMILY = ("bsn", "bssn")                   # conv: divide by (||w^|| + ||w^'||)/2
T2_L_REFERENCE = 13 / 3                         # T2's constant for Gaussian/uniform entries
T3_L_REFERENCE = 13 / 6                         # T3's constant
GRADIENT_QUANTITIES = {"grad_eff_fro_mean": "grad_eff_bound_max",
                       "grad_eff_fro_max": "grad_eff_bound_max",
                       "loss_grad_eff_fro": "loss_grad_eff_bound"}


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if math.isfinite(x) else str(x)


def _file_label(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", label).strip("_")


# ---- run specs and the shared training settings -------------------------------------------------

@dataclass(frozen=True)
class RunSpec:
    """A training run: the normaliser (with its scale for SSN/BSSN) and, optionally, an activation
    replacing the base one (the negative controls)."""

    normalizer: str
    scale: float | None = None
    activation: str | None = None

    @property
    def label(self) -> str:
        text = self.normalizer if self.scale is None else f"{self.normalizer}:{self.scale:g}"
        return text if self.activation is None else f"{text}/{self.activation}"

    @property
    def effective_scale(self) -> float:
        return 1.0 if self.scale is None else self.scale


def parse_run_spec(text: object, name: str = "runs") -> RunSpec:
    """``NORMALIZER[:SCALE][/ACTIVATION]`` -> :class:`RunSpec` (``"ssn:1.75"``,
    ``"snw/scaled_relu:2"``); errors name ``name``, the entry and the rule."""
    from ..lab.nets import parse_activation
    from ..normalizers import NORMALIZERS

    rule = ("format NORMALIZER[:SCALE][/ACTIVATION], e.g. 'snw', 'ssn:1.75', "
            "'snw/scaled_relu:2'")
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"`{name}` entries must be non-empty strings ({rule}), got {text!r}")
    head, slash, act = text.strip().partition("/")
    norm, colon, value = head.partition(":")
    norm = norm.strip()
    if norm not in NORMALIZERS:
        raise ValueError(f"`{name}` entry {text!r}: normaliser {norm!r} must be one of "
                         f"{sorted(NORMALIZERS)} ({rule})")
    scale = None
    if colon:
        if norm not in _SCALED:
            raise ValueError(f"`{name}` entry {text!r}: normaliser {norm!r} takes no scale; only "
                             f"{list(_SCALED)} do ({rule})")
        try:
            scale = float(value)
        except ValueError:
            raise ValueError(f"`{name}` entry {text!r}: the scale {value!r} must be a number > 0 "
                             f"({rule})") from None
        if not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"`{name}` entry {text!r}: the scale must be a finite number > 0, "
                             f"got {value!r}")
    elif norm in _SCALED:
        raise ValueError(f"`{name}` entry {text!r}: normaliser {norm!r} needs its scale, e.g. "
                         f"'{norm}:1.75'")
    activation = None
    if slash:
        try:
            activation = parse_activation(act.strip()).name
        except (TypeError, ValueError) as error:
            raise ValueError(f"`{name}` entry {text!r}: {error}") from None
    return RunSpec(norm, scale, activation)


def _check_specs(name: str, texts: Sequence[str], *, allow_empty: bool = False) -> list[RunSpec]:
    if isinstance(texts, str):
        raise TypeError(f"`{name}` must be a list of run specs, got the string {texts!r}")
    if not texts and not allow_empty:
        raise ValueError(f"`{name}` must name at least one run, got []")
    specs = [parse_run_spec(t, name) for t in texts]
    labels = [s.label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"`{name}` names the run(s) {dupes} more than once")
    return specs


@dataclass(frozen=True)
class LabTrainingParams:
    """The training settings every lab kind shares (defaults: the quick lab, a DCGAN pair on
    scikit-learn's digits at 16x16; ~25 ms a step on one core).

    Keep them equal across the lab configs of a profile so the runs are shared (tested). ``steps``
    for the runs, ``control_steps`` for negative-control runs; probes every ``probe_every`` steps
    (and step 0), Hessians at probe steps that are multiples of ``hessian_every`` (0: never);
    ``gp_weight_unnormalized``: the gradient penalty of the unnormalised run (the normalised ones
    train without). ``threads``: torch CPU threads of the training (0: torch's default).
    """

    data: str = "digits"
    image_size: int = 16
    channels: int = 1
    arch: str = "dcgan"
    width: int = 32
    depth: int = 2
    activation: str = "leaky_relu:0.1"
    bias: bool = True
    latent_dim: int = 32
    loss: str = "wgan"
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_dis: int = 1
    batch_size: int = 64
    gp_weight_unnormalized: float = 10.0
    steps: int = 1000
    control_steps: int = 300
    probe_every: int = 50
    hessian_every: int = 250
    probe_batch_size: int = 16
    checkpoint_every: int = 250
    threads: int = 1

    def train_config(self, spec: RunSpec | str, seed: int, *, control: bool = False,
                     device: str = "cpu") -> dict:
        """The :class:`~sntheory.lab.config.TrainConfig` dict of run ``spec``."""
        spec = parse_run_spec(spec) if isinstance(spec, str) else spec
        normalizer: dict = {"name": spec.normalizer}
        if spec.scale is not None:
            normalizer["scale"] = spec.scale
        return {
            "run": {"seed": int(seed), "steps": self.control_steps if control else self.steps,
                    "device": device, "checkpoint_every": self.checkpoint_every,
                    "sample_every": 0, "threads": self.threads},
            "data": {"spec": self.data, "image_size": self.image_size,
                     "channels": self.channels},
            "net": {"arch": self.arch, "width": self.width, "depth": self.depth,
                    "activation": spec.activation or self.activation, "bias": self.bias,
                    "latent_dim": self.latent_dim},
            "normalizer": normalizer,
            "train": {"loss": self.loss,
                      "gp_weight": self.gp_weight_unnormalized if spec.normalizer == "none"
                      else 0.0,
                      "lr": self.lr, "beta1": self.beta1, "beta2": self.beta2,
                      "n_dis": self.n_dis, "batch_size": self.batch_size},
            "probe": {"every": self.probe_every, "hessian_every": self.hessian_every,
                      "batch_size": self.probe_batch_size},
        }

    def _check_lab(self, runs: Sequence[RunSpec], controls: Sequence[RunSpec] = ()) -> None:
        """Validate the shared settings through the training config of every run."""
        from ..lab.config import TrainConfig

        for name in ("probe_every", "steps", "control_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1 (the lab kinds read probe "
                                 f"records), got {value!r}")
        for spec, control in [(s, False) for s in runs] + [(s, True) for s in controls]:
            try:
                TrainConfig.from_dict(self.train_config(spec, 0, control=control),
                                      source=f"run {spec.label!r}")
            except (TypeError, ValueError) as error:
                raise type(error)(f"the training settings do not make a valid run: "
                                  f"{error}") from None
        labels = [s.label for s in runs] + [s.label for s in controls]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"run(s) {dupes} appear both as runs and as controls")

    def lab_settings(self) -> dict:
        """The shared settings alone (what decides whether two experiments share runs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(LabTrainingParams)}


# ---- shared, resumable training runs -------------------------------------------------------------

_SCRATCH: dict[str, Path] = {}


def _scratch_root() -> Path:
    """A per-process folder for runs when there is no cache directory (removed at exit)."""
    if "root" not in _SCRATCH:
        root = Path(tempfile.mkdtemp(prefix="sntheory-lab-runs-"))
        atexit.register(shutil.rmtree, root, True)
        _SCRATCH["root"] = root
    return _SCRATCH["root"]


def training_run_key(config) -> str:
    """The folder name of a run: SHA-256 of its resolved TrainConfig and the checkpoint / probe
    format versions (24 hex digits)."""
    from ..lab.config import load_config
    from ..lab.probes import PROBE_VERSION
    from ..lab.train import CHECKPOINT_VERSION

    cfg = load_config(config)
    payload = {"config": cfg.to_dict(), "checkpoint_version": CHECKPOINT_VERSION,
               "probe_version": PROBE_VERSION, "runs_revision": _RUNS_REVISION}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def runs_root(ctx: RunContext) -> Path:
    """Where :func:`ensure_training_run` keeps runs: ``<cache_dir>/lab-runs`` or the scratch."""
    return Path(ctx.cache_dir) / "lab-runs" if ctx.cache_dir is not None else _scratch_root()


def run_is_finished(run_dir: Path, steps: int) -> bool:
    """A run is finished when it has the checkpoint of its last step and its probe records."""
    from ..lab.train import list_checkpoints

    return (steps in list_checkpoints(run_dir) and (run_dir / "probes.jsonl").is_file()
            and (run_dir / "config.json").is_file())


def ensure_training_run(train_config, ctx: RunContext) -> Path:
    """Train the run of ``train_config`` (a TrainConfig, its dict or a TOML path) unless a finished
    copy exists, and return its run directory ``runs_root(ctx) / training_run_key(config)``.

    An interrupted run resumes from its last checkpoint (``train(..., resume=True)``), and since
    training is bit-for-bit reproducible on the CPU the finished run is the uninterrupted one.
    """
    from ..lab.config import load_config
    from ..lab.train import train

    if not isinstance(ctx, RunContext):
        raise TypeError(f"`ctx` must be a RunContext, got {type(ctx).__name__}")
    cfg = load_config(train_config)
    key = training_run_key(cfg)
    root = runs_root(ctx)
    run_dir = root / key
    with exclusive_lock(root / f"{key}.lock"):
        if not run_is_finished(run_dir, cfg.run.steps):
            train(cfg, run_dir, resume=True, progress=ctx.progress)
            if not run_is_finished(run_dir, cfg.run.steps):
                raise RuntimeError(f"training run {str(run_dir)!r} did not reach step "
                                   f"{cfg.run.steps}")
    return run_dir


@dataclass(frozen=True)
class _Run:
    spec: RunSpec
    control: bool
    run_dir: Path

    @property
    def label(self) -> str:
        return self.spec.label


def _ensure_runs(params: LabTrainingParams, ctx: RunContext, runs: Sequence[RunSpec],
                 controls: Sequence[RunSpec] = ()) -> list[_Run]:
    out = []
    for spec, control in [(s, False) for s in runs] + [(s, True) for s in controls]:
        cfg = params.train_config(spec, ctx.seed, control=control, device=ctx.device)
        out.append(_Run(spec, control, ensure_training_run(cfg, ctx)))
    return out


def _probes(run: _Run) -> list[dict]:
    from ..lab.train import read_probes

    records = read_probes(run.run_dir)
    if not records:
        raise ValueError(f"run {run.label!r} ({run.run_dir}) has no probe records")
    return records


def _layer_records(probes: Iterable[dict], batch: str | None = None) -> list[dict]:
    return [r for r in probes if r.get("scope") == "layer"
            and (batch is None or r.get("batch") == batch)]


def _tidy(run: _Run, r: Mapping, values: Mapping[str, float | int | str | bool | None]) -> dict:
    """One flat record: where (run, step, batch, layer) and the named values."""
    out = {"run": run.label, "normalizer": run.spec.normalizer,
           "scale": run.spec.effective_scale, "activation": r.get("activation", ""),
           "control": run.control, "step": int(r["step"]), "batch": r.get("batch", ""),
           "layer": int(r.get("layer", -1)), "layer_label": r.get("layer_label", "")}
    out.update({k: v for k, v in values.items() if v is not None})
    return out


def _ratio(measured: float | None, bound: float | None) -> float | None:
    if measured is None or bound is None:
        return None
    if bound > 0:
        return measured / bound
    return 0.0 if measured == 0 else 1e308


def _relabel(row: ClaimRow, run: _Run, **changes) -> ClaimRow:
    return dataclasses.replace(row, setting=f"{run.label}: {row.setting}", **changes)


def _layer_shapes(run: _Run) -> list[tuple]:
    """Weight shapes and layer infos of a run's discriminator (built from its config)."""
    from ..lab.config import TrainConfig
    from ..lab.nets import build_discriminator

    cfg = TrainConfig.from_dict(json.loads((run.run_dir / "config.json").read_text()),
                                source=str(run.run_dir / "config.json"))
    disc = build_discriminator(cfg.net, "none")
    return [(tuple(layer.weight.shape), info) for layer, info in zip(disc.layers, disc.layer_info)]


def _counts_text(rows: Sequence[ClaimRow]) -> str:
    counts = verdict_counts(r for r in rows if r.hypotheses_hold)
    return (f"{counts['HOLDS']} HOLDS, {counts['VIOLATED']} VIOLATED, "
            f"{counts['INCONCLUSIVE']} INCONCLUSIVE")


def _device(ctx: RunContext) -> str:
    """Where a lab experiment ran: training on ``ctx.device``, probes and checks on the CPU."""
    if ctx.device == "cpu":
        return "cpu"
    return f"{ctx.device} (training), cpu (float64 probes and checks)"


def _title(ctx: RunContext, what: str) -> str:
    return f"{ctx.experiment}: {what} (profile {ctx.profile}, seed {ctx.seed})"


# ---- P1 ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class P1GradientsParams(LabTrainingParams):
    """``runs``: checked against P1; ``controls``: runs whose activation breaks P1's hypotheses
    (must not meet them); ``sheet_raw_bound``: also report the sheet's uncorrected App. C bound
    (as a negative control)."""

    runs: tuple[str, ...] = ("none", "snw", "snconv")
    controls: tuple[str, ...] = ("snw/scaled_relu:2",)
    sheet_raw_bound: bool = True

    def __post_init__(self) -> None:
        from ..lab.nets import parse_activation

        runs, controls = _check_specs("runs", self.runs), _check_specs(
            "controls", self.controls, allow_empty=True)
        for spec in controls:
            act = parse_activation(spec.activation or self.activation)
            if act.meets_p1_hypotheses:
                raise ValueError(f"`controls` entry {spec.label!r}: a negative control must break "
                                 f"P1's hypotheses (activation Lipschitz > 1 or a(0) != 0), but "
                                 f"{act.name} meets them; e.g. 'snw/scaled_relu:2'")
        self._check_lab(runs, controls)


_SHEET_IDS = ("raw_grad_sheet", "raw_grad_z_sheet")
_P1_KEYS = ("grad_eff_fro_max", "grad_eff_fro_mean", "grad_eff_bound_max",
            "grad_z_kernel_ratio_max", "grad_z_expanded_ratio_max", "loss_grad_eff_fro",
            "loss_grad_eff_bound", "raw_grad_fro", "raw_grad_bound", "raw_grad_sheet_bound",
            "sn_normalized_norm", "op_norm_upper", "reshaped_norm", "alpha", "input_norm_max")


def _p1_records(run: _Run, probes: Sequence[dict]) -> list[dict]:
    out = []
    for r in probes:
        if r.get("scope") == "layer":
            values = {k: r.get(k) for k in _P1_KEYS}
            values["kernel_grad_ratio"] = r.get("grad_z_kernel_ratio_max")
            values["loss_grad_ratio"] = _ratio(r.get("loss_grad_eff_fro"),
                                               r.get("loss_grad_eff_bound"))
            values["raw_grad_ratio"] = _ratio(r.get("raw_grad_fro"), r.get("raw_grad_bound"))
            values["raw_grad_sheet_ratio"] = _ratio(r.get("raw_grad_fro"),
                                                    r.get("raw_grad_sheet_bound"))
            out.append(_tidy(run, r, values))
        elif r.get("scope") == "network":
            out.append(_tidy(run, r, {"kernel_grad_ratio": r.get("total_grad_kernel_ratio_max"),
                                      "total_grad_kernel": r.get("total_grad_kernel_at_worst"),
                                      "total_grad_kernel_bound":
                                          r.get("total_grad_kernel_bound_at_worst")}))
    return out


def _p1_row(row: ClaimRow, run: _Run) -> ClaimRow:
    if row.extra.get("statement_id") in _SHEET_IDS:
        observed = "bound-fails" if row.extra.get("n_violations") else "bound-holds"
        return _relabel(row, run, verdict=Verdict.OUTSIDE_HYPOTHESES.value,
                        hypotheses_hold=False,
                        note=("negative control: THEORY.md's uncorrected App. C form, which "
                              "holds only for an orthogonal projection (Frobenius); the "
                              "corrected bound is the raw_grad row; observed " + observed
                              + "; " + row.note),
                        extra={**row.extra, "observed": observed})
    return _relabel(row, run)


def run_p1_gradients(params: P1GradientsParams, out_dir: Path, ctx: RunContext
                     ) -> ExperimentOutput:
    """P1 rows of every run and control, the Fig. 2 panels and the bound-ratio panels."""
    from ..claims.prop1 import check_prop1
    from ..lab.figures import plot_gradient_norms
    from .lab_training_figures import bound_ratio_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs),
                        _check_specs("controls", params.controls, allow_empty=True))
    rows: list[ClaimRow] = []
    records: list[dict] = []
    probes_by_run = {}
    for run in runs:
        probes = _probes(run)
        probes_by_run[run.label] = probes
        rows += [_p1_row(row, run) for row in check_prop1(
            probes, experiment=ctx.experiment, sheet_raw_bound=params.sheet_raw_bound)]
        records += _p1_records(run, probes)
    plot_gradient_norms(probes_by_run, out_dir / "p1_gradients.png", batch="real",
                        title=_title(ctx, "per-layer gradient norms against the P1 bound"))
    bound_ratio_figure(records, out_dir / "p1_ratios.png",
                       ratios=[("kernel_grad_ratio", "", "-")],
                       ylabel="max_j ||grad_w z(x_j)||_F / P1 bound_j",
                       title=_title(ctx, "worst measured / bound per probe step"))
    figures = [
        Figure("p1_gradients.png",
               "Paper Figs. 2 and 12: one panel per run; solid: the largest per-sample gradient "
               "norm ||grad_{w_t} D(x)||_F (kernel tensor) of each layer over the real probe "
               "batch through training; dashed, same colour: that layer's P1 bound "
               "alpha_t B_{t-1}(x) prod_{i>t} ||w~_i||. Without SN the gradients and their bounds "
               "grow with the weights; with SN they stay of the order of ||x||. Every solid line "
               "must stay under its dashed line."),
        Figure("p1_ratios.png",
               "The same check as a ratio: per run and layer, the worst measured/bound over the "
               "probe batch (real and fake) at each step; the whole network in its own colour. "
               "Inside P1's hypotheses every point is at or below the red line 1. The negative "
               "control (activation scaled_relu:2, Lipschitz 2) may cross it: its forward and "
               "backward factors are up to 2 per activation beyond the bound's."),
    ]
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=figures, records=records,
                            summary=_p1_summary(runs, rows, records))


def _p1_summary(runs: Sequence[_Run], rows: Sequence[ClaimRow], records: Sequence[dict]) -> str:
    parts = [f"{len(runs)} runs. In-hypothesis rows: {_counts_text(rows)}."]
    for run in runs:
        mine = [r for r in records if r["run"] == run.label and r["layer"] >= 0
                and r["batch"] == "real"]
        if not mine:
            continue
        worst = max(r["kernel_grad_ratio"] for r in mine if "kernel_grad_ratio" in r)
        grads = defaultdict(list)
        for r in mine:
            grads[r["layer"]].append(r["grad_eff_fro_max"])
        medians = ", ".join(_fmt(float(np.median(v))) for _, v in sorted(grads.items()))
        text = (f"`{run.label}`: median over probe steps of the largest per-sample gradient, "
                f"layer by layer: [{medians}]; worst per-sample measured/bound (kernel gradient) "
                f"{_fmt(worst, 4)}")
        if run.control:
            outside = [r for r in rows if r.setting.startswith(run.label + ":")
                       and not r.hypotheses_hold and r.extra.get("statement_id")
                       not in _SHEET_IDS]
            failing = [r for r in outside if r.extra.get("observed") == "bound-fails"]
            text += (f" (negative control: {len(failing)} of {len(outside)} rows outside the "
                     f"hypotheses observed the bound failing, as a Lipschitz-2 activation can)")
        parts.append(text + ".")
    sheet = [r for r in rows if r.extra.get("statement_id") == "raw_grad_sheet"]
    if sheet:
        failing = [r for r in sheet if r.extra.get("observed") == "bound-fails"]
        worst = max(r.measured / r.bound for r in sheet if r.bound)
        parts.append(f"The sheet's raw-parameter bound (s/sigma)||G||_F is exceeded on "
                     f"{len(failing)} of {len(sheet)} layers (worst ratio {_fmt(worst, 5)}); "
                     f"the corrected bound (times ||W||_F ||grad sigma||_F / sigma) holds.")
    return " ".join(parts)


# ---- P2 ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class P2InvarianceParams(LabTrainingParams):
    """``runs``: trained discriminators to check (their latest checkpoint) on ``n_samples`` real
    images; ``n_draws`` log-normal rescalings (plus two extreme ones when ``extreme``);
    ``extra_homogeneous``: further homogeneous activations; ``smooth_controls``: negative
    controls (see :func:`sntheory.claims.prop2.check_prop2`)."""

    runs: tuple[str, ...] = ("snw", "none")
    n_samples: int = 16
    n_draws: int = 3
    extreme: bool = True
    extra_homogeneous: tuple[str, ...] = ("relu",)
    smooth_controls: tuple[str, ...] = ("tanh", "elu", "softplus", "gelu")

    def __post_init__(self) -> None:
        from ..lab.nets import parse_activation

        for name in ("n_samples", "n_draws"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}")
        for a in self.extra_homogeneous:
            if not parse_activation(a).homogeneous:
                raise ValueError(f"`extra_homogeneous` entry {a!r} is not positively "
                                 f"homogeneous; put it in `smooth_controls`")
        for a in self.smooth_controls:
            if parse_activation(a).homogeneous:
                raise ValueError(f"`smooth_controls` entry {a!r} is homogeneous: it is no "
                                 f"negative control")
        self._check_lab(_check_specs("runs", self.runs))


def run_p2_invariance(params: P2InvarianceParams, out_dir: Path, ctx: RunContext
                      ) -> ExperimentOutput:
    """:func:`check_prop2` on each trained discriminator; one figure per run."""
    from ..claims.prop2 import check_prop2, load_run_batch
    from .lab_figures import prop2_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs))
    rows, records, figures, parts = [], [], [], []
    for run in runs:
        loaded, x = load_run_batch(run.run_dir, step=None, n_samples=params.n_samples,
                                   seed=ctx.seed)
        result = check_prop2(loaded.disc, x, seed=ctx.seed, n_draws=params.n_draws,
                             extreme=params.extreme,
                             extra_homogeneous=params.extra_homogeneous,
                             controls=params.smooth_controls, experiment=ctx.experiment,
                             setting=f"{run.label} trained {loaded.step} steps",
                             step=int(loaded.step))
        rows += result.rows
        records += [{"run": run.label, **r} for r in result.records]
        name = f"p2_{_file_label(run.label)}.png"
        prop2_figure(result, out_dir / name, title=_title(ctx, f"run {run.label}"))
        figures.append(Figure(name, (
            f"P2 on the discriminator of run {run.label} after {loaded.step} steps, "
            f"{int(x.shape[0])} real images: one dot per rescaling draw (c_i > 0, prod c_i = 1, "
            f"up to 1e-3..1e3), the largest deviation |D_c(x) - D(x)| over the batch in units "
            f"of its float64 round-off bound. Blue (homogeneous activation, biases removed or "
            f"scaled by prod_{{j<=i}} c_j) must sit below the red line; orange negative "
            f"controls (unscaled biases, smooth activations) sit far above it.")))
        s = result.summary
        parts.append(f"`{run.label}` (step {loaded.step}): in-hypothesis deviations reach "
                     f"{_fmt(s['max_in_hypotheses_dev_over_bound'])} of the round-off bound "
                     f"({_fmt(s['max_in_hypotheses_dev_in_units_of_eps'])} units of 2^-53 "
                     f"relative); the negative controls deviate by at least "
                     f"{_fmt(s['min_control_dev_over_bound'])} times it.")
    summary = (f"{len(runs)} trained discriminators. In-hypothesis rows: {_counts_text(rows)}. "
               + " ".join(parts) + " The trained discriminators have biases: the bias-free rows "
               "drop them (the paper's form), the scaled rows keep them scaled as THEORY.md P2 "
               "states.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=figures, records=records,
                            summary=summary)


# ---- T1 ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class T1RescalingParams(LabTrainingParams):
    """``runs``: trained discriminators; ``target_geomean``: geometric mean of spectral norms the
    scatter's rescalings keep (1 for MNIST-like runs, 1.75 for CIFAR-like ones in the paper); the
    rest: :func:`sntheory.claims.thm1.check_thm1`."""

    runs: tuple[str, ...] = ("none", "snw", "snconv")
    n_samples: int = 16
    target_geomean: float = 1.0
    n_rescalings: int = 20
    n_identity_draws: int = 3
    residual_sd_tol: float = 0.35

    def __post_init__(self) -> None:
        for name in ("n_samples", "n_rescalings", "n_identity_draws"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("target_geomean", "residual_sd_tol"):
            value = getattr(self, name)
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")
        self._check_lab(_check_specs("runs", self.runs))


def run_t1_rescaling(params: T1RescalingParams, out_dir: Path, ctx: RunContext
                     ) -> ExperimentOutput:
    """:func:`check_thm1` on each trained discriminator; the scatter and the excess figures."""
    from ..claims.prop2 import load_run_batch
    from ..claims.thm1 import check_thm1
    from .lab_figures import thm1_rescaling_figure, thm1_scatter_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs))
    rows, records, results, parts = [], [], {}, []
    for run in runs:
        loaded, x = load_run_batch(run.run_dir, step=None, n_samples=params.n_samples,
                                   seed=ctx.seed)
        result = check_thm1(loaded.disc, x, seed=ctx.seed, target_geomean=params.target_geomean,
                            n_rescalings=params.n_rescalings,
                            n_identity_draws=params.n_identity_draws,
                            residual_sd_tol=params.residual_sd_tol, experiment=ctx.experiment,
                            setting=f"{run.label} trained {loaded.step} steps",
                            step=int(loaded.step))
        rows += result.rows
        records += [{"run": run.label, **r} for r in result.records]
        results[run.label] = result
        s = result.summary
        if "excess_ratio" in s:
            parts.append(f"`{run.label}`: log-residual sd about the diagonal "
                         f"{_fmt(s['log_residual']['sd_about_diagonal'])} (tolerance "
                         f"{params.residual_sd_tol:g}), excess of equal spectral norms over the "
                         f"best rescaling {_fmt(s['excess_ratio'], 5)}; gradient identity within "
                         f"{_fmt(s['identity_max_err_over_bound'])} of its round-off bound.")
        else:
            parts.append(f"`{run.label}`: a layer has a zero gradient on this batch "
                         f"({', '.join(s.get('zero_gradient_layers', []))}).")
    thm1_scatter_figure(results, out_dir / "t1_scatter.png",
                        title=_title(ctx, "T1 hypothesis on trained discriminators"))
    thm1_rescaling_figure(results, out_dir / "t1_excess.png",
                          title=_title(ctx, "T1: equal spectral norms vs the best rescaling"))
    figures = [
        Figure("t1_scatter.png",
               f"Paper Figs. 3, 14, 15: for every pair of layers i < j and random rescaling at "
               f"geometric mean {params.target_geomean:g} of spectral norms, g_i/g_j against "
               f"||w_j||/||w_i|| (log-log), one colour per trained discriminator. Theorem 1's "
               f"class D is the red diagonal; a pair's offset from it does not depend on the "
               f"rescaling, so each pair slides along a parallel line. The legend gives the "
               f"log-residual sd (tolerance {params.residual_sd_tol:g})."),
        Figure("t1_excess.png",
               "Left: log(g_t ||w_t||_sp) per layer, centred (flat in the class D). Right: "
               "||grad D|| at equal spectral norms over the minimum over all rescalings "
               "(1 inside D) beside its bound, the check's tolerance (red tick): bars below "
               "it HOLD."),
    ]
    summary = (f"{len(runs)} trained discriminators. In-hypothesis rows: {_counts_text(rows)}. "
               + " ".join(parts) + " The identity and the AM-GM minimiser are exact statements; "
               "the hypothesis (class D) and the excess are measurements: INCONCLUSIVE, not "
               "VIOLATED, when a trained network is outside the tolerance.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=figures, records=records,
                            summary=summary)


# ---- P3 ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class P3HessianParams(LabTrainingParams):
    """``runs``: checked against P3 at their Hessian probes (``hessian_every`` > 0);
    ``controls``: runs with a smooth (not piecewise-linear) activation."""

    runs: tuple[str, ...] = ("none", "snw")
    controls: tuple[str, ...] = ("snw/tanh",)

    def __post_init__(self) -> None:
        from ..lab.nets import parse_activation

        if self.hessian_every < 1:
            raise ValueError(f"`hessian_every` must be an integer >= 1 for P3 (Hessian probes at "
                             f"the probe steps that are its multiples), got "
                             f"{self.hessian_every!r}")
        runs = _check_specs("runs", self.runs)
        controls = _check_specs("controls", self.controls, allow_empty=True)
        for spec in controls:
            act = parse_activation(spec.activation or self.activation)
            if act.piecewise_linear and act.meets_p1_hypotheses:
                raise ValueError(f"`controls` entry {spec.label!r}: a negative control must "
                                 f"break P3's hypotheses (a smooth activation, e.g. "
                                 f"'snw/tanh'), but {act.name} meets them")
        self._check_lab(runs, controls)


def run_p3_hessian(params: P3HessianParams, out_dir: Path, ctx: RunContext) -> ExperimentOutput:
    """:func:`check_prop3` on the Hessian probes of each run and control."""
    from ..claims.prop3 import check_prop3
    from .lab_training_figures import bound_ratio_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs),
                        _check_specs("controls", params.controls, allow_empty=True))
    rows, records, parts = [], [], []
    for run in runs:
        probes = _probes(run)
        rows += [_relabel(row, run) for row in check_prop3(probes, experiment=ctx.experiment)]
        mine = []
        for r in _layer_records(probes):
            if "hessian_norm" not in r:
                continue
            mine.append(_tidy(run, r, {
                "hessian_norm": r["hessian_norm"], "hessian_residual": r["hessian_residual"],
                "hessian_converged": r["hessian_converged"], "hessian_bound": r["hessian_bound"],
                "hessian_bound_curvature": r["hessian_bound_curvature"],
                "hessian_gauss_newton_norm": r["hessian_gauss_newton_norm"],
                "hessian_ratio": _ratio(r["hessian_norm"], r["hessian_bound"]),
                "hessian_ratio_curvature": _ratio(r["hessian_norm"],
                                                  r["hessian_bound_curvature"]),
                "gauss_newton_rel_gap": abs(r["hessian_norm"] - r["hessian_gauss_newton_norm"])
                / max(r["hessian_norm"], 1e-300)}))
        records += mine
        gap = max(r["gauss_newton_rel_gap"] for r in mine)
        worst = max(r["hessian_ratio_curvature"] for r in mine)
        parts.append(f"`{run.label}`{' (control)' if run.control else ''}: ||H_t|| reaches "
                     f"{_fmt(worst, 4)} of the sharper bound mean_j |s''| ||g_j||^2 and "
                     f"{_fmt(max(r['hessian_ratio'] for r in mine))} of the norm bound; the "
                     f"Gauss-Newton form matches to {gap:.1e} relative.")
    bound_ratio_figure(records, out_dir / "p3_hessian.png",
                       ratios=[("hessian_ratio_curvature", " (sharp bound)", "-"),
                               ("hessian_ratio", " (norm bound)", "--")],
                       ylabel="||H_t||_sp / bound", title=_title(ctx, "P3 Hessian probes"))
    figure = Figure("p3_hessian.png", (
        "One panel per run: ||H_t||_sp (Lanczos on Hessian-vector products of mean_j "
        "sigmoid(z(x_j)), worst batch) over its bound at each Hessian probe step, per layer. "
        "Solid: the sharp bound mean_j |s''(z_j)| ||grad_{w_t} z(x_j)||^2 (equality is possible: "
        "H_t = mean_j s''(z_j) g_j g_j^T a.e.); dashed: P3's norm bound ||s''||_inf alpha_t^2 "
        "mean_j bound_t(x_j)^2. Inside the hypotheses both stay at or below the red line 1. The "
        "tanh control is not piecewise linear: its Hessian carries an extra term."))
    summary = (f"{len(runs)} runs, Hessian probes every {params.hessian_every} steps. "
               f"In-hypothesis rows: {_counts_text(rows)}. " + " ".join(parts)
               + " For piecewise-linear networks the Gauss-Newton form is the whole Hessian "
               "(gap at round-off); for the smooth control it is not, which is why P3 needs the "
               "hypothesis.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=[figure], records=records,
                            summary=summary)


# ---- paired trend tests --------------------------------------------------------------------------

def paired_sign_test(first: Sequence[float], second: Sequence[float], *,
                     ci_level: float = 0.95) -> dict:
    """Sign test of ``d_k = log(second_k) - log(first_k)`` over paired positive values.

    Pairs with a non-positive value (no logarithm) are dropped (``n_dropped``), ties ``d = 0``
    too (``n_ties``). With ``n`` remaining pairs, ``n_less`` of them ``< 0``: under the null
    hypothesis that ``second < first`` and ``second > first`` are equally likely at every pair,
    ``n_less ~ Binomial(n, 1/2)``, so ``p_less = P(Bin(n, 1/2) >= n_less)`` tests "second tends
    to be smaller" and ``p_greater = P(Bin(n, 1/2) >= n_greater)`` the reverse. ``median_ratio`` is
    ``exp(median d)``; its distribution-free confidence interval is ``exp`` of the order
    statistics ``[d_(k), d_(n+1-k)]`` with ``k`` the largest integer such that
    ``P(Bin(n, 1/2) <= k - 1) <= (1 - ci_level)/2`` (``None`` when ``n`` is too small).
    """
    from scipy import stats

    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"`first` and `second` must be 1-D sequences of the same length, got "
                         f"shapes {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("`first` and `second` must be finite (no NaN or infinity)")
    if not 0 < ci_level < 1:
        raise ValueError(f"`ci_level` must be in (0, 1), got {ci_level!r}")
    keep = (a > 0) & (b > 0)
    d = np.log(b[keep]) - np.log(a[keep])
    ties = int(np.sum(d == 0))
    d_sorted = np.sort(d)
    d = d[d != 0]
    n_less, n_greater = int(np.sum(d < 0)), int(np.sum(d > 0))
    n = n_less + n_greater
    p_less = float(stats.binom.sf(n_less - 1, n, 0.5)) if n else 1.0
    p_greater = float(stats.binom.sf(n_greater - 1, n, 0.5)) if n else 1.0
    ci_low = ci_high = None
    m = d_sorted.size
    if m:
        tail = (1 - ci_level) / 2
        k = 0                        # the largest k with P(Bin(m, 1/2) <= k - 1) <= tail
        while k < m and stats.binom.cdf(k, m, 0.5) <= tail:
            k += 1
        if k >= 1:
            ci_low = float(math.exp(d_sorted[k - 1]))
            ci_high = float(math.exp(d_sorted[m - k]))
    return {"n_pairs": n, "n_less": n_less, "n_greater": n_greater, "n_ties": ties,
            "n_dropped": int(np.sum(~keep)), "p_less": p_less, "p_greater": p_greater,
            "median_ratio": float(math.exp(np.median(d_sorted))) if m else math.nan,
            "ci_low": ci_low, "ci_high": ci_high}


def trend_verdicts(tests: Sequence[dict], alpha: float, *, expect: str) -> list[tuple[str, str]]:
    """``(verdict, observed)`` per :func:`paired_sign_test` result: Holm's step-down over the
    family at ``alpha``, once for the claimed direction (rejections: HOLDS) and once for the
    reverse (rejections: VIOLATED); neither: INCONCLUSIVE. ``expect``: ``"less"`` (the claim is
    that ``second`` is smaller) or ``"greater"``."""
    if expect not in ("less", "greater"):
        raise ValueError(f"`expect` must be 'less' or 'greater', got {expect!r}")
    if not tests:
        return []
    p_hold = [t["p_less"] if expect == "less" else t["p_greater"] for t in tests]
    p_fail = [t["p_greater"] if expect == "less" else t["p_less"] for t in tests]
    holds, fails = holm_reject(p_hold, alpha), holm_reject(p_fail, alpha)
    out = []
    for h, f in zip(holds, fails):
        if f:
            out.append((Verdict.VIOLATED.value, "bound-fails"))
        elif h:
            out.append((Verdict.HOLDS.value, "bound-holds"))
        else:
            out.append((Verdict.INCONCLUSIVE.value, "undecided"))
    return out


def _series(records: Sequence[dict], run: str, layer: int, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in records if r["run"] == run and r["layer"] == layer
            and key in r}


def _paired(records: Sequence[dict], first: str, second: str, layer: int) -> tuple:
    """``(steps, first values, second values)`` at the probe steps both runs have."""
    a = _series(records, first, layer, "grad")
    b = _series(records, second, layer, "grad")
    steps = sorted(set(a) & set(b))
    if not steps:
        raise ValueError(f"runs {first!r} and {second!r} have no probe step in common for layer "
                         f"{layer}: nothing to pair (same `probe_every` needed)")
    return steps, [a[s] for s in steps], [b[s] for s in steps]


def _check_trend_params(quantity: str, batch: str, alpha: float) -> None:
    if quantity not in GRADIENT_QUANTITIES:
        raise ValueError(f"`quantity` must be one of {sorted(GRADIENT_QUANTITIES)}, got "
                         f"{quantity!r}")
    if batch not in ("real", "fake"):
        raise ValueError(f"`batch` must be 'real' (the same images for every run at a step) or "
                         f"'fake', got {batch!r}")
    if isinstance(alpha, bool) or not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}")


_TREND_HYPOTHESES = (
    "a measured trend the paper reports, not a theorem: same seed, data order and probe batches "
    "in every run; probe steps paired by step (consecutive steps of a run are dependent: the "
    "p-value measures how consistently the trend holds across the run)")


def _gradient_records(run: _Run, probes: Sequence[dict], quantity: str, batch: str) -> list[dict]:
    out = []
    for r in _layer_records(probes, batch):
        out.append(_tidy(run, r, {"grad": r.get(quantity),
                                  "grad_bound": r.get(GRADIENT_QUANTITIES[quantity])}))
    return out


# ---- SNw versus SNConv ---------------------------------------------------------------------------

@dataclass(frozen=True)
class SnwVsSnconvParams(LabTrainingParams):
    """Compare the gradient norms of run ``second`` with those of run ``first`` (default: SNConv
    against SNw) layer by layer across probe steps. ``quantity``: a per-layer gradient field of
    the probe records (``grad_eff_fro_mean``: mean over the batch of ``||grad_{w_t} z(x_j)||_F``);
    ``batch``: ``real`` (identical images in both runs at a step) or ``fake``; ``alpha``:
    family-wise level (Holm over layers)."""

    first: str = "snw"
    second: str = "snconv"
    quantity: str = "grad_eff_fro_mean"
    batch: str = "real"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        _check_trend_params(self.quantity, self.batch, self.alpha)
        a, b = parse_run_spec(self.first, "first"), parse_run_spec(self.second, "second")
        if a.label == b.label:
            raise ValueError(f"`first` and `second` must be different runs, got {a.label!r} twice")
        self._check_lab([a, b])


def run_snw_vs_snconv(params: SnwVsSnconvParams, out_dir: Path, ctx: RunContext
                      ) -> ExperimentOutput:
    """Paired sign test per layer: is ``second``'s gradient smaller than ``first``'s?"""
    from .lab_training_figures import paired_gradients_figure

    first, second = parse_run_spec(params.first, "first"), parse_run_spec(params.second, "second")
    runs = _ensure_runs(params, ctx, [first, second])
    grads = []
    for run in runs:
        grads += _gradient_records(run, _probes(run), params.quantity, params.batch)
    layers = sorted({(r["layer"], r["layer_label"]) for r in grads})
    tests, records = [], []
    for layer, label in layers:
        steps, a, b = _paired(grads, first.label, second.label, layer)
        tests.append(paired_sign_test(a, b))
        for s, ga, gb in zip(steps, a, b):
            records.append({"step": s, "layer": layer, "layer_label": label,
                            f"grad_{first.label}": ga, f"grad_{second.label}": gb,
                            "ratio": _ratio(gb, ga),
                            "quantity": params.quantity, "batch": params.batch})
    verdicts = trend_verdicts(tests, params.alpha, expect="less")
    rows = []
    claim = ctx.claim or "R"
    statement = (f"trend (paper Figs. 4-5): median over probe steps of g_{second.label} / "
                 f"g_{first.label} < 1, g = {params.quantity} ({params.batch} batch); paired "
                 f"sign test, Holm over layers at {params.alpha:g}")
    for (layer, label), test, (verdict, observed) in zip(layers, tests, verdicts):
        m = test["median_ratio"]
        rows.append(ClaimRow(
            claim=claim, experiment=ctx.experiment,
            setting=f"layer {layer} ({label}), {test['n_pairs']} probe steps",
            statement=statement, hypotheses=_TREND_HYPOTHESES, bound=1.0,
            measured=m if math.isfinite(m) else 1.0, ci_low=test["ci_low"],
            ci_high=test["ci_high"],
            slack=relative_slack(m, 1.0, "upper") if math.isfinite(m) else None,
            verdict=verdict,
            note=(f"{second.label} smaller at {test['n_less']} of {test['n_pairs']} steps, larger "
                  f"at {test['n_greater']} (p = {test['p_less']:.2g} for smaller, "
                  f"{test['p_greater']:.2g} for larger; {test['n_ties']} ties, "
                  f"{test['n_dropped']} zero gradients dropped)"),
            extra={"check": "paired-sign-test", "observed": observed, **test}))
    paired_gradients_figure(records, out_dir / "snw_vs_snconv.png",
                            first=first.label, second=second.label,
                            title=_title(ctx, f"{params.quantity}, {params.batch} batch"))
    figure = Figure("snw_vs_snconv.png", (
        f"Paper Figs. 4-5. One panel per layer: {params.quantity} (the gradient of D with "
        f"respect to the layer's effective weight on the {params.batch} probe batch) through "
        f"training under {first.label} (solid) and {second.label} (dashed). Last panel: the ratio "
        f"{second.label}/{first.label} per layer beside the trend's bound 1 (red); below it, "
        f"{second.label}'s "
        f"gradients are the smaller (the vanishing-gradient story: SNConv divides by "
        f"||w~|| >= ||w^||, up to alpha times more than SNw)."))
    medians = ", ".join(f"layer {layer}: {_fmt(t['median_ratio'])} ({t['n_less']}/{t['n_pairs']} "
                        f"steps smaller)" for (layer, _), t in zip(layers, tests))
    summary = (f"Median ratio {second.label}/{first.label} of {params.quantity} over the probe "
               f"steps, {medians}. Rows: {_counts_text(rows)} (HOLDS: the paper's trend is "
               f"significant in this run; INCONCLUSIVE: too few or mixed steps; VIOLATED: "
               f"significantly reversed). A measurement of a trend, not a theorem: R only says "
               f"SNConv's divisor is between 1 and alpha times SNw's.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=[figure], records=records,
                            summary=summary)


# ---- scaled SN -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScaledSnParams(LabTrainingParams):
    """SSN with ``scales`` (increasing; ``1`` is SNw itself and uses the SNw run): P1's bound per
    run, and the trend "the gradient grows with s" between consecutive scales (paired sign test,
    Holm over layers and pairs at ``alpha``)."""

    scales: tuple[float, ...] = (0.7, 1.0, 1.75, 3.0)
    quantity: str = "grad_eff_fro_mean"
    batch: str = "real"
    alpha: float = 0.05

    def __post_init__(self) -> None:
        _check_trend_params(self.quantity, self.batch, self.alpha)
        if len(self.scales) < 2:
            raise ValueError(f"`scales` must list at least two scales, got {list(self.scales)}")
        for s in self.scales:
            if not math.isfinite(s) or s <= 0:
                raise ValueError(f"`scales` entries must be finite numbers > 0, got {s!r}")
        if any(b <= a for a, b in zip(self.scales, self.scales[1:])):
            raise ValueError(f"`scales` must be strictly increasing, got {list(self.scales)}")
        self._check_lab(self.specs())

    def specs(self) -> list[RunSpec]:
        return [RunSpec("snw") if s == 1.0 else RunSpec("ssn", float(s)) for s in self.scales]


def run_scaled_sn(params: ScaledSnParams, out_dir: Path, ctx: RunContext) -> ExperimentOutput:
    """P1 rows of every SSN run and the gradient-versus-scale trend rows."""
    from ..claims.prop1 import check_prop1
    from .lab_training_figures import scaled_gradients_figure

    runs = _ensure_runs(params, ctx, params.specs())
    rows: list[ClaimRow] = []
    records: list[dict] = []
    depth = 0
    for run in runs:
        probes = _probes(run)
        for row in check_prop1(probes, experiment=ctx.experiment):
            if row.extra.get("statement_id") in ("grad_z_kernel", "total_grad_kernel"):
                rows.append(_relabel(row, run))
        records += _gradient_records(run, probes, params.quantity, params.batch)
        depth = max(depth, 1 + max(r["layer"] for r in _layer_records(probes)))
    layers = sorted({(r["layer"], r["layer_label"]) for r in records})
    pairs = list(zip(runs, runs[1:]))
    tests, where = [], []
    for layer, label in layers:
        for low, high in pairs:
            _, a, b = _paired(records, low.label, high.label, layer)
            tests.append(paired_sign_test(a, b))
            where.append((layer, label, low, high))
    verdicts = trend_verdicts(tests, params.alpha, expect="greater")
    claim = ctx.claim or "P1"
    statement = (f"trend (paper Fig. 6): the gradient grows with the SSN scale: median over "
                 f"probe steps of g(s_b) / g(s_a) > 1 for consecutive scales s_a < s_b, "
                 f"g = {params.quantity} ({params.batch} batch); paired sign test, Holm at "
                 f"{params.alpha:g}")
    for (layer, label, low, high), test, (verdict, observed) in zip(where, tests, verdicts):
        s_a, s_b = low.spec.effective_scale, high.spec.effective_scale
        homogeneous = (s_b / s_a) ** (depth - 1)
        m = test["median_ratio"]
        rows.append(ClaimRow(
            claim=claim, experiment=ctx.experiment,
            setting=f"layer {layer} ({label}), s {s_a:g} -> {s_b:g}, {test['n_pairs']} probe "
                    f"steps",
            statement=statement, hypotheses=_TREND_HYPOTHESES, bound=1.0,
            measured=m if math.isfinite(m) else 1.0, ci_low=test["ci_low"],
            ci_high=test["ci_high"],
            slack=relative_slack(m, 1.0, "lower") if math.isfinite(m) else None,
            verdict=verdict,
            note=(f"larger at {test['n_greater']} of {test['n_pairs']} steps (p = "
                  f"{test['p_greater']:.2g}; reversed p = {test['p_less']:.2g}); at equal raw "
                  f"weights a bias-free homogeneous net would give (s_b/s_a)^(L-1) = "
                  f"{_fmt(homogeneous)}"),
            extra={"check": "paired-sign-test", "observed": observed, "scale_low": s_a,
                   "scale_high": s_b, "homogeneous_factor": homogeneous, **test}))
    scaled_gradients_figure(records, out_dir / "scaled_sn.png",
                            title=_title(ctx, f"SSN scales {list(params.scales)}"))
    figure = Figure("scaled_sn.png", (
        f"Paper Fig. 6. One panel per layer: {params.quantity} on the {params.batch} probe batch "
        f"against the SSN scale s (log-log; median over probe steps, shaded interquartile "
        f"range) and, dashed, the median of its P1 bound (largest over the batch). s = 1 is "
        f"SNw. Last panel: the whole network's gradient through training per scale. The P1 "
        f"bound grows like s^(L-1); the measured gradients must stay under it."))
    by_scale = defaultdict(list)
    for r in records:
        by_scale[r["scale"]].append(r["grad"])
    medians = ", ".join(f"s = {s:g}: {_fmt(float(np.median(v)))}"
                        for s, v in sorted(by_scale.items()))
    p1 = [r for r in rows if r.claim == "P1" and r.extra.get("statement_id")]
    summary = (f"{len(runs)} runs (s = 1 is the SNw run). Median gradient over layers and "
               f"steps: {medians}. P1 rows: {_counts_text(p1)}. Trend rows "
               f"(s_a -> s_b): {_counts_text([r for r in rows if r not in p1])}; a measured "
               f"trend, not a theorem.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=[figure], records=records,
                            summary=summary)


# ---- variance through training -------------------------------------------------------------------

@dataclass(frozen=True)
class VarianceTrainingParams(LabTrainingParams):
    """``runs``: whose per-layer effective-weight variance is followed through training;
    ``rel_tol``: round-off allowance of the deterministic bounds."""

    runs: tuple[str, ...] = ("none", "snw", "snconv", "ssn:0.7", "ssn:1.75", "ssn:3",
                             "bssn:1.75")
    rel_tol: float = 1e-9

    def __post_init__(self) -> None:
        if not 0 < self.rel_tol < 1e-3:
            raise ValueError(f"`rel_tol` must be in (0, 1e-3), got {self.rel_tol!r}")
        self._check_lab(_check_specs("runs", self.runs))


def _variance_point(run_normalizer: str, scale: float, shape: tuple, r: Mapping) -> dict:
    """The bounds of one (run, step, layer) point (see :func:`variance_rows`)."""
    conv = len(shape) == 4
    if conv:
        c_out, c_in, kh, kw = shape
        k = kh * kw
        m, n = c_out, c_in * k
    else:
        m, n = shape
    var = float(r["eff_weight_var"])
    hat = float(r["reshaped_norm"])
    point = {"var": var, "mean_sq": float(r["eff_weight_mean_sq"]), "m": m, "n": n,
             "rank_bound": hat ** 2 / max(m, n), "t2_var_bound": 1.0 / max(m, n),
             "normalized_norm": hat}
    if run_normalizer in _BSN_FAMILY and conv:
        sigma_w = (hat + float(r["reshaped_norm_transposed"])) / 2
        point.update(family="bsn", form="T3", normalized_norm=sigma_w,
                     paper_bound=4 * scale ** 2 / (k * (math.sqrt(c_in) + math.sqrt(c_out)) ** 2),
                     l_hat=sigma_w ** 2 / ((c_in * k + c_out * k) * var) if var > 0 else 1e308,
                     l_reference=T3_L_REFERENCE)
    else:
        family = ("sn" if run_normalizer in _SN_FAMILY + _BSN_FAMILY else "none")
        point.update(family=family, form="T2", paper_bound=scale ** 2 / max(m, n),
                     l_hat=hat ** 2 / (max(m, n) * var) if var > 0 else 1e308,
                     l_reference=T2_L_REFERENCE)
    return point


_VAR_STATEMENTS = {
    "rank": "Var(w_eff entries) <= mean square <= ||w^_eff||_sp^2 / max(m,n), any matrix "
            "(||A||_F^2 <= rank ||A||_sp^2)",
    "T2": "T2 upper bound through training (paper Figs. 7, 16, 17, 22): Var(w_eff entries) <= "
          "s^2 / max(m,n) for a layer normalised to spectral norm s",
    "T3": "T3 upper bound through training: Var(w_eff entries) <= 4 s^2 / (k (sqrt c_in + "
          "sqrt c_out)^2) for a conv layer normalised by s / ((||w^|| + ||w^'||)/2)",
    "L-T2": "measurement: through training the weights keep a random matrix's spread: L_hat = "
            "||w^_eff||^2/(max(m,n) Var) <= 13/3 (T2's constant for i.i.d. Gaussian/uniform "
            "entries; min(m,n)/stable rank for zero-mean entries)",
    "L-T3": "measurement: through training the kernel keeps a random kernel's spread: L_hat = "
            "((||w^|| + ||w^'||)/2)^2/((fan_in + fan_out) Var) <= 13/6 (T3's constant for "
            "i.i.d. entries)",
}


def variance_rows(points: Sequence[dict], *, experiment: str, claim_setting: str,
                  rel_tol: float = 1e-9) -> list[ClaimRow]:
    """The variance rows of one (run, layer) from its points (one per probe step, with the run's
    ``scale`` and the fields of :func:`_variance_point`).

    1. ``rank`` (deterministic, every layer of every run): ``Var <= mean square <=
       ||w^_eff||^2/max(m,n)``; VIOLATED beyond ``rel_tol``.
    2. ``T2`` / ``T3`` (the paper's bound; SN-type layers): ``Var <= s^2/max(m,n)`` (T3 form for
       BSN conv layers). It follows from 1. whenever the normalised norm is at most ``s``; a
       point above the bound is VIOLATED only where the measured normalised norm is ``<= s``
       (1 + rel_tol), and INCONCLUSIVE where the normaliser's estimate lags (torch's power
       iteration estimates the norm from below). Unnormalised layers: OUTSIDE-HYPOTHESES.
    3. ``L-T2`` / ``L-T3`` (a measurement; SN-type layers): ``max_steps L_hat <= reference``:
       HOLDS, else INCONCLUSIVE (T2's lower bound is a theorem about i.i.d. entries only).
       ``L_hat`` uses the measured normalised norm in place of ``s``
       (``||w^_eff||^2 / (max(m,n) Var)``, about ``min(m,n) / stable rank``): it is scale-free,
       so SNConv's smaller effective scale (R: ``||w^_eff|| = ||w^||/||w~||`` is in
       ``[1/alpha, 1]``) does not read as a collapse of the spread.
    """
    if not points:
        raise ValueError("`points` must hold at least one probe point")
    p0 = points[0]
    family, form, scale = p0["family"], p0["form"], p0["scale"]
    steps = [p["step"] for p in points]
    span = f"steps {min(steps)}-{max(steps)}" if len(set(steps)) > 1 else f"step {steps[0]}"
    setting = f"{claim_setting}, {len(points)} probe points ({span})"
    claim_id = "T3" if form == "T3" else "T2"
    rows = []

    # 1. the deterministic rank bound
    ratios = [p["var"] / p["rank_bound"] if p["rank_bound"] > 0 else
              (1e308 if p["var"] > 0 else 0.0) for p in points]
    k = int(np.argmax(ratios))
    bad = sum(r > 1 + rel_tol for r in ratios)
    w = points[k]
    rows.append(ClaimRow(
        claim=claim_id, experiment=experiment, setting=setting, statement=_VAR_STATEMENTS["rank"],
        hypotheses="none (any matrix; ||w^_eff|| measured by the probe)",
        bound=w["rank_bound"], measured=w["var"],
        slack=relative_slack(w["var"], w["rank_bound"], "upper"),
        verdict=Verdict.VIOLATED.value if bad else Verdict.HOLDS.value,
        note=(f"{'VIOLATED at %d points; ' % bad if bad else ''}worst at step {w['step']}: Var "
              f"{w['var']:.6g} vs ||w^||^2/max(m,n) = {w['rank_bound']:.6g} (ratio "
              f"{ratios[k]:.6g})"),
        extra={"check": "rank", "n_points": len(points), "n_violations": bad,
               "worst_step": w["step"], "ratio_max": ratios[k]}))

    # 2. the paper's bound
    ratios = [p["var"] / p["paper_bound"] for p in points]
    k = int(np.argmax(ratios))
    w = points[k]
    above = [p for p, r in zip(points, ratios) if r > 1 + rel_tol]
    exact = [p for p in above if p["normalized_norm"] <= scale * (1 + rel_tol)]
    lagging = [p for p in above if p not in exact]
    how = ("SNw/SSN (||w^||, power iteration), SNConv (||w~|| >= ||w^||)" if form == "T2"
           else "BSN/BSSN ((||w^|| + ||w^'||)/2)")
    hyp = f"the layer's normaliser divides by its spectral norm (scale s = {scale:g}): {how}"
    detail = (f"worst at step {w['step']}: Var {w['var']:.6g} vs {w['paper_bound']:.6g} (ratio "
              f"{ratios[k]:.6g}); normalised norm up to "
              f"{max(p['normalized_norm'] for p in points):.9g} (target {scale:g})")
    extra = {"check": form, "n_points": len(points), "n_above": len(above),
             "n_above_with_exact_norm": len(exact), "worst_step": w["step"],
             "ratio_max": ratios[k], "scale": scale}
    if family == "none":
        observed = "bound-fails" if above else "bound-holds"
        extra["observed"] = observed
        rows.append(ClaimRow(
            claim=claim_id, experiment=experiment, setting=setting,
            statement=_VAR_STATEMENTS[form], hypotheses=hyp, bound=w["paper_bound"],
            measured=w["var"], slack=relative_slack(w["var"], w["paper_bound"], "upper"),
            verdict=Verdict.OUTSIDE_HYPOTHESES.value, hypotheses_hold=False,
            note=f"outside the hypotheses: unnormalised layer; observed {observed}; " + detail,
            extra=extra))
    else:
        if exact:
            verdict = Verdict.VIOLATED.value
            note = f"VIOLATED at {len(exact)} points with the norm at most s; " + detail
        elif lagging:
            verdict = Verdict.INCONCLUSIVE.value
            note = (f"{len(lagging)} points above the bound where the normalised norm exceeds s "
                    f"(the normaliser's estimate lags); " + detail)
        else:
            verdict = Verdict.HOLDS.value
            note = detail
        rows.append(ClaimRow(
            claim=claim_id, experiment=experiment, setting=setting,
            statement=_VAR_STATEMENTS[form], hypotheses=hyp, bound=w["paper_bound"],
            measured=w["var"], slack=relative_slack(w["var"], w["paper_bound"], "upper"),
            verdict=verdict, note=note, extra=extra))

    # 3. the measurement L_hat
    ls = [p["l_hat"] for p in points]
    k = int(np.argmax(ls))
    ref = p0["l_reference"]
    name = f"L-{form}"
    note = (f"max over steps at step {points[k]['step']}: L_hat {ls[k]:.4g} (at the first probe "
            f"step {ls[0]:.4g}); reference {ref:.4g}")
    extra = {"check": name, "l_hat_max": ls[k], "l_hat_first": ls[0], "reference": ref}
    hyp = ("none proven: trained weights are not i.i.d., so T2/T3's lower bound does not apply; "
           "a measurement of the paper's reading of Fig. 7")
    if family == "none":
        extra["observed"] = "bound-fails" if ls[k] > ref else "bound-holds"
        rows.append(ClaimRow(
            claim=claim_id, experiment=experiment, setting=setting, statement=_VAR_STATEMENTS[name],
            hypotheses=hyp, bound=ref, measured=ls[k], slack=relative_slack(ls[k], ref, "upper"),
            verdict=Verdict.OUTSIDE_HYPOTHESES.value, hypotheses_hold=False,
            note="outside: unnormalised layer; " + note, extra=extra))
    else:
        inside = ls[k] <= ref
        rows.append(ClaimRow(
            claim=claim_id, experiment=experiment, setting=setting, statement=_VAR_STATEMENTS[name],
            hypotheses=hyp, bound=ref, measured=ls[k], slack=relative_slack(ls[k], ref, "upper"),
            verdict=Verdict.HOLDS.value if inside else Verdict.INCONCLUSIVE.value,
            note=note if inside else ("beyond the i.i.d. reference: the trained matrix's stable "
                                      "rank fell; a measurement, not a violation; " + note),
            extra=extra))
    return rows


def run_variance_training(params: VarianceTrainingParams, out_dir: Path, ctx: RunContext
                          ) -> ExperimentOutput:
    """Per-layer effective-weight variance through training against T2's (and T3's) bounds."""
    from .lab_training_figures import variance_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs))
    rows, records = [], []
    for run in runs:
        shapes = _layer_shapes(run)
        by_layer = defaultdict(list)
        for r in _layer_records(_probes(run), "real"):
            shape, info = shapes[r["layer"]]
            point = _variance_point(run.spec.normalizer, run.spec.effective_scale, shape, r)
            point.update(step=int(r["step"]), scale=run.spec.effective_scale)
            by_layer[(r["layer"], r["layer_label"])].append(point)
            records.append(_tidy(run, r, {
                "eff_weight_var": point["var"], "eff_weight_mean_sq": point["mean_sq"],
                "raw_weight_var": r["raw_weight_var"], "m": point["m"], "n": point["n"],
                "t2_var_bound": point["t2_var_bound"], "rank_bound": point["rank_bound"],
                "paper_bound": point["paper_bound"], "bound_form": point["form"],
                "normalized_norm": point["normalized_norm"], "l_hat": point["l_hat"],
                "l_reference": point["l_reference"]}))
        for (layer, label), points in sorted(by_layer.items()):
            rows += variance_rows(points, experiment=ctx.experiment,
                                  claim_setting=f"{run.label}: layer {layer} ({label})",
                                  rel_tol=params.rel_tol)
    variance_figure(records, out_dir / "variance_training.png",
                    title=_title(ctx, "effective-weight variance through training"))
    figure = Figure("variance_training.png", (
        "Paper Figs. 7, 16, 17, 22. One panel per layer: the entry variance of the effective "
        "weight through training, one line per run; red: T2's bound 1/max(m,n) for the "
        "reshaped m x n weight; dotted in a run's colour: that run's own bound where it differs "
        "(s^2/max(m,n) for SSN with scale s; T3's 4 s^2/(k (sqrt c_in + sqrt c_out)^2) for "
        "BSN/BSSN conv layers). Every normalised run must stay under its bound; the "
        "unnormalised run (none) is not covered and may drift."))
    l_rows = [r for r in rows if r.extra.get("check", "").startswith("L-") and r.hypotheses_hold]
    worst_l = max(l_rows, key=lambda r: r.measured) if l_rows else None
    parts = [f"{len(runs)} runs. In-hypothesis rows: {_counts_text(rows)}."]
    upper = [r for r in rows if r.extra.get("check") in ("T2", "T3") and r.hypotheses_hold
             and "(dense 1)" not in r.setting]
    if upper:
        closest = max(upper, key=lambda r: r.measured / r.bound)
        parts.append(f"Normalised conv and hidden layers reach at most "
                     f"{_fmt(100 * closest.measured / closest.bound, 4)}% of the paper's bound "
                     f"({closest.setting.split(',')[0]}); a dense layer with one output is "
                     f"rank one, so its mean square sits exactly at the bound.")
    if worst_l is not None:
        parts.append(f"L_hat through training reaches {_fmt(worst_l.measured, 4)} "
                     f"({worst_l.setting.split(',')[0]}; i.i.d. reference "
                     f"{_fmt(worst_l.bound, 4)}).")
    l_out = [r for r in rows if r.extra.get("check", "").startswith("L-")
             and not r.hypotheses_hold]
    if l_out:
        top = max(l_out, key=lambda r: r.measured)
        parts.append(f"Without normalisation L_hat reaches {_fmt(top.measured, 4)} "
                     f"({top.setting.split(',')[0]}; outside the hypotheses).")
    outside = [r for r in rows if not r.hypotheses_hold and r.extra.get("check") in ("T2", "T3")]
    if outside:
        fails = sum(r.extra.get("observed") == "bound-fails" for r in outside)
        parts.append(f"Unnormalised layers: {fails} of {len(outside)} exceed 1/max(m,n) "
                     f"somewhere in training (outside the hypotheses).")
    parts.append("The upper bounds are deterministic facts about every matrix (stable rank <= "
                 "rank); the L_hat rows are measurements.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=[figure], records=records,
                            summary=" ".join(parts))


# ---- the ratio ||w~|| / ||w^|| through training --------------------------------------------------

@dataclass(frozen=True)
class RatioTrainingParams(LabTrainingParams):
    """``runs``: whose conv layers' ``||w~|| / ||w^||`` is followed through training;
    ``rel_tol``: round-off allowance; ``alpha_one_control``: also report the constant 1 in place
    of ``alpha`` (SNw's implicit claim) as a negative control."""

    runs: tuple[str, ...] = ("none", "snw", "snconv", "ssn:1.75", "bssn:1.75")
    rel_tol: float = 1e-9
    alpha_one_control: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.rel_tol < 1e-3:
            raise ValueError(f"`rel_tol` must be in (0, 1e-3), got {self.rel_tol!r}")
        self._check_lab(_check_specs("runs", self.runs))


def ratio_rows(points: Sequence[Mapping], *, experiment: str, setting: str, alpha: float,
               lower_bound_applies: bool, rel_tol: float = 1e-9,
               alpha_one_control: bool = False) -> list[ClaimRow]:
    """R rows of one conv layer through training from its probe points (``op_norm_lower``,
    ``op_norm_upper``, ``op_norm_converged``, ``reshaped_norm``, ``step``; optional
    ``op_norm_exact``).

    Which side decides (the probe caps its certified upper bound, and the value, at
    ``alpha ||w^||`` -- that cap is one of its certificates -- so neither can testify for the
    upper side of R):

    * ``||w~|| <= alpha ||w^||``: VIOLATED when a certified **lower** bound of ``||w~||`` exceeds
      ``alpha ||w^|| (1 + rel_tol)`` (then the true norm does); HOLDS when no point does and every
      Lanczos run converged (its Ritz vector's certified lower bound then sits within the
      Lanczos tolerance of the true norm); INCONCLUSIVE when an unconverged point leaves it open.
    * ``||w^|| <= ||w~||`` (only where R's lower bound applies): VIOLATED when a certified
      **upper** bound falls below ``||w^|| (1 - rel_tol)``; HOLDS when every certified lower bound
      is at least that; INCONCLUSIVE otherwise.
    * control ``||w~|| <= ||w^||`` (alpha dropped): OUTSIDE-HYPOTHESES, bound-fails when a
      certified lower bound exceeds ``||w^|| (1 + rel_tol)``.
    """
    if not points:
        raise ValueError("`points` must hold at least one probe point")
    if not math.isfinite(alpha) or alpha < 1:
        raise ValueError(f"`alpha` must be a finite number >= 1, got {alpha!r}")
    hats = np.array([float(p["reshaped_norm"]) for p in points])
    lower = np.array([float(p["op_norm_lower"]) for p in points]) / np.where(hats > 0, hats, 1)
    upper = np.array([float(p["op_norm_upper"]) for p in points]) / np.where(hats > 0, hats, 1)
    value = np.array([float(p.get("op_norm_exact", p["op_norm_lower"])) for p in points]) \
        / np.where(hats > 0, hats, 1)
    converged = np.array([bool(p["op_norm_converged"]) for p in points])
    live = hats > 0                          # a zero kernel has no ratio
    steps = [p["step"] for p in points]
    span = f"steps {min(steps)}-{max(steps)}" if len(set(steps)) > 1 else f"step {steps[0]}"
    where = f"{setting}, alpha = {alpha:.4g}, {int(live.sum())} probe points ({span})"
    rows = []
    common = {"alpha": alpha, "n_points": int(live.sum()),
              "n_unconverged": int(np.sum(live & ~converged))}

    # upper side
    k = int(np.argmax(np.where(live, lower, -np.inf)))
    bad = live & (lower > alpha * (1 + rel_tol))
    open_ = live & ~converged & ~bad
    if bad.any():
        verdict, note = Verdict.VIOLATED.value, f"VIOLATED at {int(bad.sum())} points; "
    elif open_.any():
        verdict, note = Verdict.INCONCLUSIVE.value, (f"{int(open_.sum())} points with an "
                                                     f"unconverged Lanczos run; ")
    else:
        verdict, note = Verdict.HOLDS.value, ""
    note += (f"largest certified lower bound of the ratio {lower[k]:.9g} at step {steps[k]} "
             f"({100 * lower[k] / alpha:.3f}% of alpha); converged values up to "
             f"{np.max(value[live]) if live.any() else 0:.9g}")
    rows.append(ClaimRow(
        claim="R", experiment=experiment, setting=where,
        statement="through training (paper Figs. 20, 21): ||w~||_sp <= alpha ||w^||_sp",
        hypotheses="any kernel and geometry", bound=alpha, measured=float(lower[k]),
        slack=relative_slack(float(lower[k]), alpha, "upper"), verdict=verdict, note=note,
        extra={"check": "upper", "ratio_value_max": float(np.max(value[live])) if live.any()
               else 0.0, **common}))

    if lower_bound_applies:
        k = int(np.argmin(np.where(live, lower, np.inf)))
        bad = live & (upper < 1 - rel_tol)
        fine = ~live | (lower >= 1 - rel_tol)
        verdict = (Verdict.VIOLATED.value if bad.any() else
                   Verdict.HOLDS.value if fine.all() else Verdict.INCONCLUSIVE.value)
        rows.append(ClaimRow(
            claim="R", experiment=experiment, setting=where,
            statement="through training: ||w^||_sp <= ||w~||_sp",
            hypotheses="an output position's receptive field lies wholly inside the unpadded "
                       "input (checked for the geometry)",
            bound=1.0, measured=float(lower[k]),
            slack=relative_slack(float(lower[k]), 1.0, "lower"), verdict=verdict,
            note=(f"{'VIOLATED at %d points; ' % int(bad.sum()) if bad.any() else ''}smallest "
                  f"certified lower bound of the ratio {lower[k]:.9g} at step {steps[k]}"),
            extra={"check": "lower", **common}))

    if alpha_one_control:
        k = int(np.argmax(np.where(live, lower, -np.inf)))
        fails = bool(np.any(live & (lower > 1 + rel_tol)))
        observed = "bound-fails" if fails else "bound-holds"
        rows.append(ClaimRow(
            claim="R", experiment=experiment, setting=where,
            statement="control: through training ||w~||_sp <= ||w^||_sp (alpha dropped)",
            hypotheses="the claim needs the factor alpha; SNw implicitly assumes 1",
            bound=1.0, measured=float(lower[k]),
            slack=relative_slack(float(lower[k]), 1.0, "upper"),
            verdict=Verdict.OUTSIDE_HYPOTHESES.value, hypotheses_hold=False,
            note=(f"negative control: constant 1 claimed instead of alpha = {alpha:.4g}; "
                  f"observed {observed} (largest certified lower bound {lower[k]:.6g})"),
            extra={"check": "ratio<=1 (control)", "observed": observed, **common}))
    return rows


def run_ratio_training(params: RatioTrainingParams, out_dir: Path, ctx: RunContext
                       ) -> ExperimentOutput:
    """R on every conv layer of every run at every probe step."""
    from ..conv.alpha import coverage_alpha
    from .lab_training_figures import ratio_figure

    runs = _ensure_runs(params, ctx, _check_specs("runs", params.runs))
    rows, records = [], []
    for run in runs:
        shapes = _layer_shapes(run)
        by_layer = defaultdict(list)
        for r in _layer_records(_probes(run), "real"):
            if r["kind"] != "conv":
                continue
            by_layer[r["layer"]].append(r)
        for layer, points in sorted(by_layer.items()):
            shape, info = shapes[layer]
            cov = coverage_alpha(info.geometry, shape[-2:])
            alpha = float(points[0]["alpha"])
            if not math.isclose(alpha, cov.alpha, rel_tol=1e-12):
                raise ValueError(f"run {run.label!r} layer {layer}: the probe's alpha {alpha!r} "
                                 f"differs from the geometry's {cov.alpha!r}")
            rows += ratio_rows(points, experiment=ctx.experiment,
                               setting=f"{run.label}: layer {layer} ({info.label})",
                               alpha=alpha, lower_bound_applies=cov.lower_bound_applies,
                               rel_tol=params.rel_tol,
                               alpha_one_control=params.alpha_one_control)
            for r in points:
                hat = r["reshaped_norm"]
                records.append(_tidy(run, r, {
                    "reshaped_norm": hat, "op_norm_exact": r.get("op_norm_exact"),
                    "op_norm_lower": r["op_norm_lower"], "op_norm_upper": r["op_norm_upper"],
                    "op_norm_converged": r["op_norm_converged"], "alpha": alpha,
                    "lower_bound_applies": bool(cov.lower_bound_applies),
                    "ratio": _ratio(r.get("op_norm_exact", r["op_norm_lower"]), hat),
                    "ratio_certified_lower": _ratio(r["op_norm_lower"], hat),
                    "fraction_of_alpha": _ratio(r.get("op_norm_exact", r["op_norm_lower"]),
                                                hat * alpha)}))
    if not records:
        raise ValueError("no run has a conv layer: ratio_training needs conv layers (arch "
                         "'dcgan' or 'cifar-cnn')")
    ratio_figure(records, out_dir / "ratio_training.png",
                 title=_title(ctx, "||w~|| / ||w^|| through training"))
    figure = Figure("ratio_training.png", (
        "Paper Figs. 20, 21. One panel per conv layer: ||w~||_sp / ||w^||_sp (the layer's operator "
        "norm over the reshaped-kernel norm SNw divides by) through training, one line per run, "
        "between R's bounds 1 (grey, where the lower bound applies) and alpha (red). SNConv "
        "divides by ||w~||, so its effective weights are smaller than SNw's by this factor. "
        "Every line must stay between the two bounds."))
    counts = _counts_text(rows)
    fractions = defaultdict(float)
    for r in records:
        fractions[r["run"]] = max(fractions[r["run"]], r["fraction_of_alpha"])
    text = ", ".join(f"{run}: {100 * f:.2f}%" for run, f in fractions.items())
    control = [r for r in rows if not r.hypotheses_hold]
    summary = (f"{len(runs)} runs, conv layers only (dense layers have alpha = 1 and equal "
               f"norms). In-hypothesis rows: {counts}. Largest ||w~||/||w^|| as a fraction of "
               f"alpha: {text}.")
    if control:
        fails = sum(r.extra.get("observed") == "bound-fails" for r in control)
        summary += (f" Negative control (alpha dropped): ||w~|| > ||w^|| on {fails} of "
                    f"{len(control)} layers, so SNw does not make a conv layer 1-Lipschitz.")
    return ExperimentOutput(device=_device(ctx), rows=rows, figures=[figure], records=records,
                            summary=summary)


# ---- registration --------------------------------------------------------------------------------

def _version() -> str:
    from ..lab.probes import PROBE_VERSION
    from ..lab.train import CHECKPOINT_VERSION

    return f"kinds_lab-{_REVISION}/probe-{PROBE_VERSION}/checkpoint-{CHECKPOINT_VERSION}"


def _register(name: str, params_type: type, run, description: str) -> ExperimentKind:
    return register_kind(ExperimentKind(name, params_type, run, description=description,
                                        version=_version(), uses_device=True))


P1_KIND = _register("p1_gradients", P1GradientsParams, run_p1_gradients,
                    "P1: per-layer gradient norms through training against their bounds")
P2_KIND = _register("p2_invariance", P2InvarianceParams, run_p2_invariance,
                    "P2: rescaling invariance of trained discriminators")
T1_KIND = _register("t1_rescaling", T1RescalingParams, run_t1_rescaling,
                    "T1: equal spectral norms minimise the gradient, on trained discriminators")
P3_KIND = _register("p3_hessian", P3HessianParams, run_p3_hessian,
                    "P3: per-layer Hessian norms through training against their bounds")
SNW_VS_SNCONV_KIND = _register("snw_vs_snconv", SnwVsSnconvParams, run_snw_vs_snconv,
                               "Figs. 4-5: gradient norms under SNw and SNConv, paired by step")
SCALED_SN_KIND = _register("scaled_sn", ScaledSnParams, run_scaled_sn,
                           "Fig. 6: gradient norms under scaled SN against the scale")
VARIANCE_KIND = _register("variance_training", VarianceTrainingParams, run_variance_training,
                          "Figs. 7, 16, 17, 22: weight variance through training vs T2/T3")
RATIO_TRAINING_KIND = _register("ratio_training", RatioTrainingParams, run_ratio_training,
                                "Figs. 20, 21: ||w~||/||w^|| through training vs alpha")
