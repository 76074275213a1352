"""The battery's short GAN-training part: does a normalizer control the discriminator's gradients
while it trains?

:func:`run_training` trains the lab's small DCGAN pair (:mod:`sntheory.lab`: sklearn's digits at
16x16, a bias-free discriminator conv4x4/s2 32 -> conv4x4/s2 64 -> dense 1 with leaky ReLU 0.1,
WGAN loss, Adam) once per entry -- the plug-in, SNw (always: it is the reference of the
``vanishing-vs-snw`` row), BSN, BSSN (1.75), Frobenius normalization and no normalization (the last
two negative controls) -- with the same seed, data order and probe batches, and probes the
discriminator every ``probe_every`` steps (and at step 0) with
:func:`sntheory.lab.probes.probe_discriminator`: per layer and sample, the kernel gradient
``g_t(x) = ||grad_{w_t} z(x)||_F`` of the output pre-activation and its P1 bound with certified
operator-norm upper bounds ``U_i >= ||w~_i||_sp``. Training uses torch's default initialization for
every entry (``init`` / ``init_gain`` of :class:`~sntheory.plugin.battery.BatteryConfig` set the raw
weights of the Monte Carlo tests only); a plug-in that wants its own initialization sets it in its
parametrization's ``right_inverse``, which torch calls when the parametrization is attached.

Notation: ``L`` layers, ``alpha_t`` the coverage constant of layer ``t`` (claim R: 2 for a 4x4/s2
conv, 1 for a dense layer), ``s`` the normalizer's declared per-layer scale (``layer_scale``: 1 for
SN-like methods, BSSN's scale), ``B = prod_l s alpha_l`` the Lipschitz budget of the battery's
first part and ``B_SN = prod_l alpha_l`` (the budget with ``s = 1``).

The rows (``ClaimRow``, claim ``"plugin"``), one set per entry
--------------------------------------------------------------
``train-p1`` -- P1 at every probe point (a theorem for any weights: VIOLATED only on a bug).
    :func:`sntheory.claims.prop1.check_prop1` on the run's probe records: per sample and layer
    ``g_t(x) <= alpha_t prod_{i != t} U_i ||x||`` (bias-free form), the batch-loss and
    whole-network forms and the corrected raw-parameter bound (App. C); the row is VIOLATED when
    any in-hypothesis P1 row is (beyond the round-off allowance ``prop1.ROUND_OFF``), its measured
    value the worst measured/bound ratio. It is in the hypotheses for every entry, controls too.

``train-p1-normalized`` -- the SN corollary with the declared budget, which flags exploding
    gradients. If every layer has ``||w~_i|| <= s alpha_i`` (what a reshaped-norm method with scale
    ``s`` guarantees, claim R), P1 gives ``g_t(x) <= alpha_t prod_{i != t} s alpha_i ||x||
    = (B / s) ||x||``. Computed exactly from the records: without biases the P1 bound of sample
    ``j`` is ``alpha_t prod_{i != t} U_i ||x_j||``, so the ratio to the normalized bound is the
    recorded ratio times the sample-independent factor ``prod_{i != t} U_i / (s alpha_i)``, and
    its maximum over the batch sits at the same sample (``U_i = 0`` gives a zero gradient and
    ratio 0). HOLDS when the worst ratio over every probe point is ``<= 1`` (round-off
    allowance), VIOLATED otherwise: some layer norm exceeded its budget far enough to show in the
    gradients.

``train-exploding`` -- no exploding gradients: ``max g_t(x) / ||x|| <= k B_SN`` over every
    probe point, layer and sample (``k = factor_k``, default 10), i.e. within ``k`` times SN's
    own bound ``alpha_t prod_{i != t} alpha_i = B_SN``, whatever the normalizer declares. The
    ratio is the one of ``train-p1-normalized`` with ``s = 1``.

``train-vanishing-layers`` -- no layer's gradient vanishes relative to the others: with
    ``gbar_t`` the mean over the real probe batch of ``g_t(x)``, the median over probe steps of
    ``min_t gbar_t / max_t gbar_t`` is ``>= 1/k``. (Theorem 1: with equal layer norms, the
    ``g_t ||w_t||`` are equal, so SN's layers get gradients of one order.) All-zero gradients give
    0.

``train-vanishing-vs-snw`` -- no vanishing relative to SN under the same run settings: per layer
    the median over probe steps of ``gbar_t / gbar_t(SNw)`` (the same real probe images at every
    step: same seed), minimised over layers, is ``>= 1/k``. This is how normalizers that divide by
    too much show up: Frobenius normalization divides each layer by up to ``sqrt(rank)`` times its
    spectral norm, and layer ``t``'s gradient carries the product of the *other* layers' norms;
    SNConv's smaller layers (claim R: by up to ``alpha``) show up the same way on deeper nets.
    Not made for SNw itself.

``train-trained`` -- it trained: every loss finite (:func:`sntheory.lab.train.train` raises
    ``FloatingPointError`` on a non-finite loss; the run is then recorded as diverged at that
    step) and the discriminator's real-fake gap ``E z(real) - E z(fake)`` moved: the maximum of
    its running mean over ``w = max(1, steps // 20)`` steps is at least twice ``|gap|`` at step 1
    (the untrained discriminator). The criterion is scale-free, so a discriminator that learns
    with tiny weights passes (its vanishing gradients are the vanishing rows' business) and one
    whose output is stuck at a constant fails.

Verdicts of the last four rows are deterministic comparisons of quantities measured on one seeded
run (no sampling model): HOLDS inside the documented threshold, VIOLATED outside. Controls
(Frobenius, no normalization) get OUTSIDE-HYPOTHESES with the decision kept in ``extra`` (except
``train-p1``, a theorem for them too).

Runs, caching and resumption
----------------------------
Each run is trained with :func:`sntheory.lab.train.train` into ``runs_dir / <key>``; ``key`` hashes
the resolved training config, the checkpoint / probe format versions, :data:`TRAINING_REVISION`
and a fingerprint of the plug-in's code (the bytes of the file that defines it and its qualified
name; built-ins by name). A finished run is reused, an interrupted one resumes from its last
checkpoint (training is bit-for-bit reproducible on the CPU, so the records equal those of an
uninterrupted run) and a diverged one is remembered (``diverged.json``). A plug-in whose code
cannot be fingerprinted (a Module instance, a function without a source file) trains in a
temporary folder, removed afterwards. A plug-in given as a Python object is registered under a
temporary name (:func:`~sntheory.plugin.contract.register_normalizer`) while it trains, because a
training config names its normalizer by a spec (``"plugin:<spec>"``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from torch import nn

from .._validation import require_choice, require_positive_float, require_positive_int
from ..monte_carlo.store import atomic_write_text, exclusive_lock
from ..monte_carlo.verdicts import Verdict
from ..report.rows import ClaimRow
from .contract import PluginNormalizer, register_normalizer, unregister_normalizer

__all__ = ["TRAINING_REVISION", "TRAINING_TESTS", "TrainingSettings", "TrainingRun",
           "TrainingResult", "training_entries", "train_entry", "run_training", "probe_points",
           "gap_growth", "layer_balance", "ratio_to_reference", "training_rows",
           "training_part", "plot_training", "plugin_spec", "plugin_fingerprint"]

TRAINING_REVISION = 1
TRAINING_TESTS = ("train-p1", "train-p1-normalized", "train-exploding", "train-vanishing-layers",
                  "train-vanishing-vs-snw", "train-trained")
GAP_GROWTH = 2.0        # the real-fake gap must at least double (train-trained)
REFERENCE = "snw"       # the label of the vanishing-vs-snw reference run
_LOSSES = ("wgan", "hinge", "ns")


# ---- settings ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainingSettings:
    """The training runs' settings (the quick battery: 300 WGAN steps of the lab's DCGAN pair on
    digits at 16x16, probes every 50 steps; about 8 s of CPU per run on one thread).

    ``width`` / ``depth``: the DCGAN's base width and number of conv4x4/s2 layers; ``probe_batch``:
    real and fake images per probe; ``threads``: torch CPU threads of each run.
    """

    steps: int = 300
    probe_every: int = 50
    width: int = 32
    depth: int = 2
    batch_size: int = 64
    probe_batch: int = 16
    lr: float = 2e-4
    loss: str = "wgan"
    data: str = "digits"
    image_size: int = 16
    latent_dim: int = 32
    activation: str = "leaky_relu:0.1"
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("steps", "probe_every", "width", "depth", "batch_size", "probe_batch",
                     "image_size", "latent_dim", "threads"):
            require_positive_int(name, getattr(self, name))
        if self.probe_every > self.steps:
            raise ValueError(f"`probe_every` = {self.probe_every} must be <= `steps` = "
                             f"{self.steps}: the vanishing rows need probes beyond step 0")
        require_positive_float("lr", self.lr)
        require_choice("loss", self.loss, _LOSSES)
        from ..lab.nets import parse_activation

        if not parse_activation(self.activation).meets_p1_hypotheses:
            raise ValueError(f"`activation` {self.activation!r} must meet P1's hypotheses "
                             f"(1-Lipschitz, a(0) = 0): the training rows check P1")
        from ..lab.config import TrainConfig

        try:  # the network, data and optimiser settings make a valid run (checked now)
            TrainConfig.from_dict(self.train_config("none", {}, 0), source="training settings")
        except (TypeError, ValueError) as error:
            raise type(error)(f"the battery's training settings do not make a valid run: "
                              f"{error}") from None

    @property
    def checkpoint_every(self) -> int:
        """Checkpoints every other probe (resumption granularity; the last step always has one)."""
        return 2 * self.probe_every

    def train_config(self, normalizer: str, options: Mapping, seed: int) -> dict:
        """The :class:`~sntheory.lab.config.TrainConfig` dict of one run (bias-free
        discriminator: the P1 bound's paper form, and the exact normalized ratios)."""
        return {
            "run": {"seed": int(seed), "steps": self.steps, "device": "cpu",
                    "checkpoint_every": self.checkpoint_every, "sample_every": 0,
                    "threads": self.threads},
            "data": {"spec": self.data, "image_size": self.image_size, "channels": 1},
            "net": {"arch": "dcgan", "width": self.width, "depth": self.depth,
                    "activation": self.activation, "bias": False,
                    "latent_dim": self.latent_dim},
            "normalizer": {"name": normalizer, **dict(options)},
            "train": {"loss": self.loss, "gp_weight": 0.0, "lr": self.lr, "beta1": 0.5,
                      "beta2": 0.999, "n_dis": 1, "batch_size": self.batch_size},
            "probe": {"every": self.probe_every, "batch_size": self.probe_batch},
        }

    def describe(self) -> str:
        return (f"lab DCGAN (depth {self.depth}, width {self.width}, bias-free, "
                f"{self.activation}) on {self.data} {self.image_size}x{self.image_size}, "
                f"{self.steps} {self.loss.upper()} steps (Adam lr {self.lr:g}, batch "
                f"{self.batch_size}), probes every {self.probe_every} steps on "
                f"{self.probe_batch} real + {self.probe_batch} fake images")

    def to_dict(self) -> dict:
        return asdict(self)


# ---- the plug-in as a training-config spec -----------------------------------------------------

def plugin_fingerprint(plugin: PluginNormalizer) -> str | None:
    """A digest of the code that defines ``plugin`` (built-ins: their name), or ``None`` when it
    cannot be read (Module instances, objects without a source file): then nothing is cached."""
    if plugin.form == "builtin":
        text = f"builtin:{plugin.obj}"
    else:
        if isinstance(plugin.obj, nn.Module):
            return None
        try:
            path = inspect.getsourcefile(plugin.obj)
        except TypeError:
            return None
        if path is None or not Path(path).is_file():
            return None
        qualname = getattr(plugin.obj, "__qualname__", getattr(plugin.obj, "__name__", ""))
        if "<lambda>" in qualname or "<locals>" in qualname:
            return None  # two such objects in one file are indistinguishable by name
        code = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        text = f"{plugin.form}:{qualname}:{code}"
    options = json.dumps(plugin.options, sort_keys=True, default=repr)
    return hashlib.sha256(f"{text}|{options}".encode()).hexdigest()[:24]


def _absolute_file_spec(spec: str) -> str:
    if ":" not in spec:
        return spec
    left, attr = spec.rsplit(":", 1)
    if left.endswith(".py") or "/" in left or os.sep in left:
        return f"{Path(left).expanduser().resolve()}:{attr}"
    return spec


def plugin_spec(plugin: PluginNormalizer) -> tuple[str | None, dict]:
    """``(normalizer name for the training config, its options)``: a built-in's name, or
    ``"plugin:<spec>"`` for a spec string (file paths made absolute); ``(None, {})`` for a Python
    object, which :func:`train_entry` registers under a temporary name."""
    if plugin.form == "builtin":
        return str(plugin.obj), dict(plugin.options)
    source = plugin.source
    if source == "<python object>":
        return None, {}
    if source.startswith("registered:"):
        source = source[len("registered:"):]
    return f"plugin:{_absolute_file_spec(source)}", dict(plugin.options)


@contextlib.contextmanager
def _as_spec(plugin: PluginNormalizer, digest: str):
    """The plug-in's training-config name and options, registering a Python object meanwhile."""
    name, options = plugin_spec(plugin)
    if name is not None:
        yield name, options
        return
    temp = f"_sntheory_battery_{digest}"
    register_normalizer(temp, plugin, overwrite=True, validate=False)
    try:
        yield f"plugin:{temp}", {}
    finally:
        unregister_normalizer(temp)


# ---- runs --------------------------------------------------------------------------------------

@dataclass
class TrainingRun:
    """One entry's run: its probe records, losses, and where / whether it diverged."""

    label: str
    role: str
    layer_scale: float
    records: list[dict]
    losses: list[dict]
    diverged: dict | None = None        # {"step": int, "message": str}
    run_dir: str | None = None          # None when the run was not kept (uncacheable plug-in)
    config: dict = field(default_factory=dict)


def _run_key(config: dict, fingerprint: str) -> str:
    from ..lab.probes import PROBE_VERSION
    from ..lab.train import CHECKPOINT_VERSION

    payload = {"config": config, "checkpoint_version": CHECKPOINT_VERSION,
               "probe_version": PROBE_VERSION, "revision": TRAINING_REVISION,
               "normalizer_code": fingerprint}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=repr)
    return "plugin-" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _finished(run_dir: Path, steps: int) -> bool:
    from ..lab.train import list_checkpoints

    if (run_dir / "diverged.json").is_file():
        return True
    return (steps in list_checkpoints(run_dir) and (run_dir / "probes.jsonl").is_file()
            and (run_dir / "losses.csv").is_file())


def _train_into(config: dict, run_dir: Path, progress: bool) -> None:
    """Train (resuming) into ``run_dir``; a non-finite loss is recorded in ``diverged.json``."""
    from ..lab.train import read_losses, train

    try:
        train(config, run_dir, resume=True, progress=progress)
    except FloatingPointError as error:
        done = read_losses(run_dir)
        marker = {"step": (done[-1]["step"] if done else 0) + 1, "message": str(error)}
        atomic_write_text(run_dir / "diverged.json", json.dumps(marker, sort_keys=True))


def _read_run(run_dir: Path) -> tuple[list[dict], list[dict], dict | None]:
    from ..lab.train import read_losses, read_probes

    diverged = None
    if (run_dir / "diverged.json").is_file():
        diverged = json.loads((run_dir / "diverged.json").read_text())
    return read_probes(run_dir), read_losses(run_dir), diverged


def train_entry(entry, settings: TrainingSettings, seed: int, runs_dir: str | Path | None, *,
                progress: bool = False) -> TrainingRun:
    """Train one :class:`~sntheory.plugin.battery.Entry` (or reuse its finished run) and read it.

    ``runs_dir``: where runs are kept (``None``: a temporary folder, removed afterwards).
    """
    plugin = entry.normalizer
    fingerprint = plugin_fingerprint(plugin)
    digest = fingerprint or hashlib.sha256(repr(id(plugin)).encode()).hexdigest()[:24]
    with _as_spec(plugin, digest) as (name, options):
        config = settings.train_config(name, options, seed)
        keep = runs_dir is not None and fingerprint is not None
        root = Path(runs_dir) if keep else Path(tempfile.mkdtemp(prefix="sntheory-try-"))
        try:
            run_dir = root / _run_key(config, fingerprint or digest)
            with exclusive_lock(root / f"{run_dir.name}.lock"):
                if not _finished(run_dir, settings.steps):
                    try:
                        _train_into(config, run_dir, progress)
                    except ValueError as error:
                        if type(error) is not ValueError:   # contract errors name the plug-in
                            raise
                        raise ValueError(f"training run of {entry.label!r} in {str(run_dir)!r} "
                                         f"failed: {error}") from error
                records, losses, diverged = _read_run(run_dir)
        finally:
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
    return TrainingRun(entry.label, entry.role, float(plugin.layer_scale), records, losses,
                       diverged, str(run_dir) if keep else None, config)


def training_entries(plugin_entry, baselines: Sequence[str]) -> list:
    """The entries that train: the plug-in, SNw (always: the vanishing-vs-snw reference), BSN,
    BSSN and Frobenius when among ``baselines``, and no normalization when any ``*-init``
    baseline is (the Monte Carlo part's initialization controls become one control here:
    torch's default initialization, nothing normalized). A plug-in labelled as a baseline
    becomes ``"<label> (plug-in)"``, as in :func:`~sntheory.plugin.battery.run_battery`."""
    from .battery import Entry, baseline_entries
    from .contract import load_normalizer

    wanted = [b for b in ("snw", "bsn", "bssn", "frobenius") if b in baselines or b == REFERENCE]
    references = baseline_entries(wanted)
    if plugin_entry.label in {e.label for e in references} | {"none"}:
        plugin_entry = dataclasses.replace(plugin_entry, label=f"{plugin_entry.label} (plug-in)")
    entries = [plugin_entry, *references]
    if any(b.endswith("-init") for b in baselines):
        entries.append(Entry("none", load_normalizer("none"), role="control",
                             control_reason="no normalizer: torch's default initialization; "
                                            "nothing bounds the weights as training moves them"))
    return entries


def run_training(entries: Sequence, settings: TrainingSettings, seed: int,
                 runs_dir: str | Path | None = None, *, progress=None) -> list[TrainingRun]:
    """Train every entry (same seed: same data order and probe images). ``progress``: an
    optional ``callable(str)``."""
    say = progress or (lambda text: None)
    runs = []
    for entry in entries:
        say(f"training {entry.label} ({settings.steps} steps)")
        runs.append(train_entry(entry, settings, seed, runs_dir))
    return runs


# ---- derived quantities ------------------------------------------------------------------------

def probe_points(records: Sequence[dict], layer_scale: float = 1.0) -> list[dict]:
    """One flat record per (step, batch, layer) with the normalized ratios (module docstring).

    ``sn_ratio`` = ``max_j g_t(x_j) / (B_SN ||x_j||)``; ``budget_ratio`` =
    ``max_j g_t(x_j) / ((B/s) ||x_j||) = sn_ratio / s^(L-1)``; ``p1_ratio`` the recorded
    ``grad_z_kernel_ratio_max``. Needs bias-free records (``has_bias`` false).
    """
    require_positive_float("layer_scale", layer_scale)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r.get("scope") != "layer":
            continue
        if r["has_bias"]:
            raise ValueError(f"probe record at step {r['step']} has biases: the normalized P1 "
                             f"ratios are exact only for bias-free discriminators")
        groups.setdefault((r["step"], r["batch"]), []).append(r)
    points = []
    for (step, batch), layer_recs in sorted(groups.items()):
        layer_recs = sorted(layer_recs, key=lambda r: r["layer"])
        n = len(layer_recs)
        if [r["layer"] for r in layer_recs] != list(range(n)) or n != layer_recs[0]["n_layers"]:
            raise ValueError(f"probe records of step {step} ({batch}) do not cover layers "
                             f"0..{layer_recs[0]['n_layers'] - 1} exactly once")
        upper = [r["op_norm_upper"] for r in layer_recs]
        alpha = [r["alpha"] for r in layer_recs]
        b_sn = math.prod(alpha)
        for t, r in enumerate(layer_recs):
            factor = math.prod(upper[i] / alpha[i] for i in range(n) if i != t)
            sn_ratio = r["grad_z_kernel_ratio_max"] * factor
            points.append({
                "step": int(step), "batch": batch, "layer": t, "layer_label": r["layer_label"],
                "n_layers": n, "alpha": alpha[t], "op_norm_upper": upper[t],
                "b_sn": b_sn, "grad_eff_fro_max": r["grad_eff_fro_max"],
                "grad_eff_fro_mean": r["grad_eff_fro_mean"],
                "grad_eff_bound_max": r["grad_eff_bound_max"],
                "input_norm_max": r["input_norm_max"],
                "p1_ratio": r["grad_z_kernel_ratio_max"], "sn_ratio": sn_ratio,
                "budget_ratio": sn_ratio / layer_scale ** (n - 1),
                "budget_bound_max": b_sn * layer_scale ** (n - 1) * r["input_norm_max"],
            })
    return points


def layer_balance(points: Sequence[dict]) -> dict[int, float]:
    """``{step: min_t gbar_t / max_t gbar_t}`` on the real batch (0 when every gradient is 0)."""
    by_step: dict[int, list[float]] = {}
    for p in points:
        if p["batch"] == "real":
            by_step.setdefault(p["step"], []).append(p["grad_eff_fro_mean"])
    return {s: (min(g) / max(g) if max(g) > 0 else 0.0) for s, g in sorted(by_step.items())}


def ratio_to_reference(points: Sequence[dict], reference: Sequence[dict]) -> dict[int, dict]:
    """``{layer: {step: gbar_t / gbar_t(reference)}}`` on the real batch, at the steps both runs
    probed (a reference gradient of 0 leaves the step out)."""
    ref = {(p["step"], p["layer"]): p["grad_eff_fro_mean"] for p in reference
           if p["batch"] == "real"}
    out: dict[int, dict] = {}
    for p in points:
        key = (p["step"], p["layer"])
        if p["batch"] == "real" and key in ref and ref[key] > 0:
            out.setdefault(p["layer"], {})[p["step"]] = p["grad_eff_fro_mean"] / ref[key]
    return out


def gap_growth(losses: Sequence[dict], steps: int) -> dict:
    """The ``train-trained`` measurement: the real-fake gap ``d_real - d_fake`` per step, its
    running mean over ``w = max(1, steps // 20)`` steps, and ``growth = max running mean /
    |gap at step 1|`` (``inf`` when the first gap is 0 and a later one is positive, 0 when no
    gap is ever positive)."""
    require_positive_int("steps", steps)
    gap = np.array([r["d_real"] - r["d_fake"] for r in losses], dtype=np.float64)
    window = max(1, steps // 20)
    if gap.size == 0:
        return {"window": window, "first": 0.0, "max_running": 0.0, "growth": 0.0,
                "final_running": 0.0}
    w = min(window, gap.size)
    running = np.convolve(gap, np.ones(w) / w, mode="valid")
    first, top = float(gap[0]), float(running.max())
    if top <= 0:
        growth = 0.0
    elif first == 0:
        growth = math.inf
    else:
        growth = top / abs(first)
    return {"window": window, "first": first, "max_running": top, "growth": growth,
            "final_running": float(running[-1])}


# ---- rows --------------------------------------------------------------------------------------

@dataclass
class TrainingResult:
    """Rows, per-entry summaries, probe points (flat, with ``normalizer``) and the runs."""

    rows: list[ClaimRow]
    summary: dict
    points: list[dict]
    runs: list[TrainingRun]


def _p1_row(entry, run: TrainingRun, settings: TrainingSettings, hyp: str):
    from ..claims.prop1 import ROUND_OFF, check_prop1
    from .battery import _row

    p1 = check_prop1(run.records, experiment="plugin-battery")
    inside = [r for r in p1 if r.hypotheses_hold]
    worst = max(inside, key=lambda r: r.measured / r.bound if r.bound else 0.0)
    ratio = worst.measured / worst.bound if worst.bound else 0.0
    bad = [r for r in inside if r.verdict == Verdict.VIOLATED.value]
    verdict = Verdict.VIOLATED if bad else Verdict.HOLDS
    note = (f"{len(inside)} P1 statements checked at every probe point; worst: "
            f"{worst.extra['statement_id']} on {worst.setting} (ratio {ratio:.4g})")
    if bad:
        note = (f"VIOLATED: {', '.join(sorted({r.extra['statement_id'] for r in bad}))}; "
                + note)
    elif ratio > 1 - 1e-6:
        note += ("; a ratio of 1 within round-off is an equality, not a violation: the "
                 "raw-parameter bound c max(1, ||W||_F ||grad log c||) ||G|| is attained when "
                 "the projection factor is 1 (a 1 x n dense layer, Frobenius, no "
                 "normalization) and G is orthogonal to W")
    return _row(entry, "train-p1", setting=f"training, {settings.steps} steps, P1",
                statement="P1 at every probe point: ||grad_{w_t} z(x)||_F <= alpha_t "
                          "prod_{i!=t} ||w~_i|| ||x|| per sample (expanded, kernel, batch-loss, "
                          "whole-network and corrected raw-parameter forms)",
                hypotheses=hyp + "; certified operator-norm upper bounds",
                flags="P1 violated (a bug: the bound holds for any weights)", bound=1.0,
                measured=ratio, ci=None, direction="upper", verdict=verdict, note=note,
                always_in_hypotheses=True,
                extra={"p1_rows": len(inside), "p1_violated": len(bad),
                       "round_off": ROUND_OFF, "worst_statement": worst.extra["statement_id"]})


def training_rows(entry, run: TrainingRun, settings: TrainingSettings, factor_k: float,
                  reference: TrainingRun | None) -> tuple[list[ClaimRow], dict]:
    """The rows of one entry's run (module docstring) and its summary (JSON-able)."""
    from ..claims.prop1 import ROUND_OFF
    from .battery import _row

    if not run.records:
        raise ValueError(f"training run of {entry.label!r} has no probe records")
    k = factor_k
    s = run.layer_scale
    points = probe_points(run.records, s)
    n_layers = points[0]["n_layers"]
    b_sn = points[0]["b_sn"]
    steps_probed = sorted({p["step"] for p in points})
    hyp = (f"{settings.describe()}; internal activations 1-Lipschitz with a(0) = 0")
    if run.diverged:
        hyp += f"; diverged at step {run.diverged['step']} (probes up to step {steps_probed[-1]})"
    rows = [_p1_row(entry, run, settings, hyp)]

    worst_budget = max(points, key=lambda p: p["budget_ratio"])
    budget = b_sn * s ** (n_layers - 1)
    usage = max(p["op_norm_upper"] / (s * p["alpha"]) for p in points)
    rows.append(_row(
        entry, "train-p1-normalized", setting=f"training, {settings.steps} steps, SN corollary",
        statement=f"per-layer gradient <= (B/s) ||x|| = {budget:.4g} ||x|| per sample (SN "
                  f"corollary with the declared budget ||w~_i|| <= s alpha_i, s = {s:g})",
        hypotheses=hyp + "; the normalizer keeps ||w~_i|| <= s alpha_i (its declared budget)",
        flags="exploding gradients: layer norms beyond the declared budget s*alpha",
        bound=1.0, measured=worst_budget["budget_ratio"], ci=None, direction="upper",
        verdict=Verdict.HOLDS if worst_budget["budget_ratio"] <= 1 + ROUND_OFF
        else Verdict.VIOLATED,
        note=f"worst at step {worst_budget['step']}, {worst_budget['batch']} batch, layer "
             f"{worst_budget['layer']} ({worst_budget['layer_label']}): max_j g/((B/s)||x_j||) "
             f"= {worst_budget['budget_ratio']:.4g}; largest ||w~_i|| / (s alpha_i) over the run "
             f"(certified upper bounds) {usage:.4g}",
        extra={"budget": budget, "layer_scale": s, "budget_usage_max": usage}))

    worst_sn = max(points, key=lambda p: p["sn_ratio"])
    rows.append(_row(
        entry, "train-exploding", setting=f"training, {settings.steps} steps, max over training",
        statement=f"max_t,x ||grad_{{w_t}} z(x)||_F / ||x|| <= k B_SN = {k:g} x {b_sn:g} "
                  f"(k times SN's bound prod_l alpha_l)",
        hypotheses=hyp, flags="exploding gradients (beyond k times SN's bound)",
        bound=k, measured=worst_sn["sn_ratio"], ci=None, direction="upper",
        verdict=Verdict.HOLDS if worst_sn["sn_ratio"] <= k else Verdict.VIOLATED,
        note=f"measured in units of B_SN ||x|| = {b_sn:g} ||x||; worst at step "
             f"{worst_sn['step']}, {worst_sn['batch']} batch, layer {worst_sn['layer']} "
             f"({worst_sn['layer_label']}): largest gradient {worst_sn['grad_eff_fro_max']:.4g} "
             f"(||x|| <= {worst_sn['input_norm_max']:.4g})",
        extra={"b_sn": b_sn}))

    balance = layer_balance(points)
    balance_median = float(statistics.median(balance.values()))
    worst_step = min(balance, key=balance.get)
    rows.append(_row(
        entry, "train-vanishing-layers", setting=f"training, {len(balance)} probe steps, layers",
        statement=f"median over probe steps of min_t gbar_t / max_t gbar_t >= 1/k = {1 / k:g} "
                  f"(gbar_t: mean per-sample gradient of layer t, real batch)",
        hypotheses=hyp, flags="vanishing gradients in some layers (relative to the others)",
        bound=1 / k, measured=balance_median, ci=None, direction="lower",
        verdict=Verdict.HOLDS if balance_median >= 1 / k else Verdict.VIOLATED,
        note=f"per step min {balance[worst_step]:.3g} (step {worst_step}) to max "
             f"{max(balance.values()):.3g}",
        extra={"balance": {str(k_): v for k_, v in balance.items()}}))

    summary = {"role": run.role, "layer_scale": s, "steps_probed": steps_probed,
               "diverged": run.diverged, "p1_ratio_max": rows[0].measured,
               "p1_kernel_ratio_max": max(p["p1_ratio"] for p in points),
               "budget_ratio_max": worst_budget["budget_ratio"],
               "sn_ratio_max": worst_sn["sn_ratio"], "layer_balance_median": balance_median,
               "b_sn": b_sn, "budget": budget, "run_dir": run.run_dir}
    if reference is not None and reference is not run:
        ratios = ratio_to_reference(points, probe_points(reference.records,
                                                         reference.layer_scale))
        medians = {t: float(statistics.median(v.values())) for t, v in sorted(ratios.items())}
        worst_layer = min(medians, key=medians.get)
        label = points[[p["layer"] for p in points].index(worst_layer)]["layer_label"]
        rows.append(_row(
            entry, "train-vanishing-vs-snw",
            setting=f"training, {len(ratios[worst_layer])} probe steps, against SNw",
            statement=f"min over layers of the median over probe steps of gbar_t / "
                      f"gbar_t(SNw) >= 1/k = {1 / k:g} (same real probe images)",
            hypotheses=hyp + "; SNw trained with the same settings and seed",
            flags="vanishing gradients (relative to SNw)", bound=1 / k,
            measured=medians[worst_layer], ci=None, direction="lower",
            verdict=Verdict.HOLDS if medians[worst_layer] >= 1 / k else Verdict.VIOLATED,
            note=f"worst layer {worst_layer} ({label}); medians per layer: "
                 + ", ".join(f"{v:.3g}" for v in medians.values()),
            extra={"medians": {str(t): v for t, v in medians.items()}}))
        summary["vs_snw_median_min"] = medians[worst_layer]
        summary["vs_snw_medians"] = {str(t): v for t, v in medians.items()}

    gap = gap_growth(run.losses, settings.steps)
    moved = gap["growth"] >= GAP_GROWTH
    trained = moved and run.diverged is None
    what = (f"diverged at step {run.diverged['step']} ({run.diverged['message']}); "
            if run.diverged else "losses finite at every step; ")
    rows.append(_row(
        entry, "train-trained", setting=f"training, {settings.steps} steps, losses",
        statement=f"losses finite and the real-fake gap moved: max running mean (over "
                  f"{gap['window']} steps) of E z(real) - E z(fake) >= {GAP_GROWTH:g} |gap at "
                  f"step 1|",
        hypotheses=hyp, flags="did not train (diverged, or the real-fake gap did not move)",
        bound=GAP_GROWTH, measured=min(gap["growth"], 1e308), ci=None, direction="lower",
        verdict=Verdict.HOLDS if trained else Verdict.VIOLATED,
        note=what + f"gap at step 1 {gap['first']:.3g}, max running mean "
                    f"{gap['max_running']:.3g}, final {gap['final_running']:.3g}",
        extra={"gap": {k_: (v if math.isfinite(v) else 1e308) for k_, v in gap.items()},
               "diverged_at": run.diverged["step"] if run.diverged else None}))
    summary["gap"] = rows[-1].extra["gap"]
    summary["decisions"] = {v: sum(r.extra["decision"] == v for r in rows)
                            for v in ("HOLDS", "VIOLATED", "INCONCLUSIVE")}
    summary["flagged"] = [r.extra["flags"] + f" [{r.setting}]" for r in rows
                          if r.extra["decision"] == Verdict.VIOLATED.value]
    return rows, summary


def training_part(plugin_entry, baselines: Sequence[str], settings: TrainingSettings,
                  factor_k: float, seed: int, runs_dir: str | Path | None = None, *,
                  progress=None) -> TrainingResult:
    """Train the plug-in and the baselines and make every row (:func:`training_rows`)."""
    entries = training_entries(plugin_entry, baselines)
    runs = run_training(entries, settings, seed, runs_dir, progress=progress)
    reference = next(r for r, e in zip(runs, entries) if e.label == REFERENCE)
    rows, summary, points = [], {}, []
    for entry, run in zip(entries, runs):
        e_rows, e_summary = training_rows(entry, run, settings, factor_k, reference)
        rows.extend(e_rows)
        summary[entry.label] = e_summary
        points.extend({"normalizer": entry.label, **p}
                      for p in probe_points(run.records, run.layer_scale))
    return TrainingResult(rows, summary, points, runs)


# ---- figures -----------------------------------------------------------------------------------

def plot_training(result: TrainingResult, out: str | Path, *, factor_k: float,
                  plugin: str) -> dict[str, Path]:
    """``training_gradients.png`` (paper Fig. 2 per normalizer: each layer's largest per-sample
    gradient through training, its P1 bound dashed, the normalized bound ``(B/s) max||x||`` and
    the exploding threshold ``k B_SN max||x||`` in grey) and ``training_vanishing.png`` (the
    per-step ratio to SNw of each entry's weakest layer, the layer balance, and the real-fake
    gap's running mean relative to its value at step 1, each with its row's threshold)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [r.label for r in result.runs]
    by_label = {label: [p for p in result.points if p["normalizer"] == label and
                        p["batch"] == "real"] for label in labels}
    paths = {}

    cols = min(3, len(labels))
    rows_n = -(-len(labels) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows_n))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows_n, cols, sharey=True, squeeze=False).ravel()
    for ax, label in zip(axes, labels):
        pts = by_label[label]
        for t in sorted({p["layer"] for p in pts}):
            lp = sorted((p for p in pts if p["layer"] == t), key=lambda p: p["step"])
            steps = [p["step"] for p in lp]
            c = f"C{t % 10}"
            ax.plot(steps, [p["grad_eff_fro_max"] for p in lp], color=c, lw=1.4, marker="o",
                    ms=3, label=f"{t + 1}: {lp[0]['layer_label']}")
            ax.plot(steps, [p["grad_eff_bound_max"] for p in lp], color=c, lw=1.0, ls="--")
        first = sorted((p for p in pts if p["layer"] == 0), key=lambda p: p["step"])
        steps = [p["step"] for p in first]
        ax.plot(steps, [p["budget_bound_max"] for p in first], color="0.35", lw=1.2, ls=":",
                label="(B/s) max||x||")
        ax.plot(steps, [factor_k * p["b_sn"] * p["input_norm_max"] for p in first],
                color="0.6", lw=1.2, ls="-.", label=f"{factor_k:g} B_SN max||x||")
        ax.set_yscale("log")
        ax.set_title(label + ("  (plug-in)" if label == plugin else ""), fontsize=9)
        ax.set_xlabel("generator step")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    axes[0].set_ylabel("max_j ||grad_{w_t} z(x_j)||_F (real probe batch)")
    fig.suptitle("Per-layer gradient norms through training; dashed: each layer's P1 bound "
                 "(exact operator norms)", fontsize=9)
    fig.tight_layout()
    paths["training_gradients"] = out / "training_gradients.png"
    fig.savefig(paths["training_gradients"], dpi=110)

    fig = Figure(figsize=(14, 4.0))
    FigureCanvasAgg(fig)
    ax_ref, ax_bal, ax_gap = fig.subplots(1, 3)
    reference = by_label.get(REFERENCE, [])
    for i, label in enumerate(labels):
        c = f"C{i % 10}"
        lw = 2.2 if label == plugin else 1.1
        ratios = ratio_to_reference(by_label[label], reference)
        if ratios and label != REFERENCE:
            steps = sorted(set.intersection(*(set(v) for v in ratios.values())))
            ax_ref.plot(steps, [min(v[s] for v in ratios.values()) for s in steps], color=c,
                        lw=lw, marker="o", ms=3, label=label)
        balance = layer_balance(by_label[label])
        ax_bal.plot(list(balance), list(balance.values()), color=c, lw=lw, marker="o", ms=3,
                    label=label)
        run = next(r for r in result.runs if r.label == label)
        gap = np.array([r["d_real"] - r["d_fake"] for r in run.losses])
        if gap.size and gap[0] != 0:
            w = min(max(1, len(gap) // 20), gap.size)
            running = np.convolve(gap, np.ones(w) / w, "valid") / abs(gap[0])
            ax_gap.plot(np.arange(w, gap.size + 1), running, color=c, lw=lw, label=label)
    for ax in (ax_ref, ax_bal):
        ax.axhline(1 / factor_k, color="k", lw=1.2, ls="--", label=f"1/k = {1 / factor_k:g}")
        ax.set_yscale("log")
        ax.set_xlabel("generator step")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_ref.set_title("weakest layer: min_t gbar_t / gbar_t(SNw)", fontsize=9)
    ax_bal.set_title("layer balance: min_t gbar_t / max_t gbar_t", fontsize=9)
    ax_gap.axhline(GAP_GROWTH, color="k", lw=1.2, ls="--", label=f"x{GAP_GROWTH:g}")
    ax_gap.set_yscale("symlog", linthresh=1.0)
    ax_gap.set_title("real-fake gap (running mean) / |gap at step 1|", fontsize=9)
    ax_gap.set_xlabel("generator step")
    ax_gap.grid(True, alpha=0.3)
    ax_gap.legend(fontsize=7)
    fig.tight_layout()
    paths["training_vanishing"] = out / "training_vanishing.png"
    fig.savefig(paths["training_vanishing"], dpi=110)
    return paths
