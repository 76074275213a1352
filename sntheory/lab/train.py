"""Seeded, resumable GAN training for the lab, with probes of the discriminator on a schedule.

One **step** is one generator update preceded by ``n_dis`` discriminator updates (the paper's
``n_dis``). Losses, with ``z = D(x)`` the discriminator's pre-activation output
(:class:`~sntheory.lab.nets.Discriminator` returns ``z``):

* ``wgan``  — ``L_D = E z(fake) - E z(real)``, ``L_G = -E z(fake)`` (output activation: identity);
* ``hinge`` — ``L_D = E relu(1 - z(real)) + E relu(1 + z(fake))``, ``L_G = -E z(fake)``;
* ``ns``    — the non-saturating GAN with ``D = sigmoid(z)``:
  ``L_D = -E log sigmoid(z(real)) - E log(1 - sigmoid(z(fake)))
  = E softplus(-z(real)) + E softplus(z(fake))`` (since ``-log sigmoid(t) = softplus(-t)`` and
  ``-log(1 - sigmoid(t)) = softplus(t)``), ``L_G = E softplus(-z(fake))``.

Gradient penalty (WGAN-GP, Gulrajani et al. 2017), on when ``gp_weight > 0``:
``gp_weight * E (||grad_x z(x_hat)||_2 - 1)^2`` at ``x_hat = e x_real + (1 - e) x_fake``,
``e ~ U[0, 1]`` per sample. The penalty's forward pass runs the discriminator in eval mode, so a
power-iteration normalizer (SNw, ...) still makes exactly one power step per discriminator update
(the real and fake batches go through one training-mode forward together; the discriminator has no
batch-dependent layers, so concatenating them changes nothing). The forward of the generator
update runs in training mode too (as with torch's spectral_norm in the usual loop).

Randomness: every stream has its own seed derived from ``[run] seed`` with ``numpy.random.
SeedSequence([seed, tag, ...])``: initial weights (D and G), latent draws, the data order (the
dataset's resumable :class:`~sntheory.lab.data.BatchSampler`), the penalty's mixing weights,
the probe batches (one generator per probe step: ``[seed, tag, step]``) and the fixed latent of the
sample grids. Probes and sample grids work on their own batches and on copies of the generator
(in training mode, as the discriminator sees it), under ``torch.random.fork_rng``, and restore the
discriminator's mode: a run with probes trains **bit for bit** like the run without (tested).

Run directory::

    config.json        resolved config (TrainConfig.to_dict)
    provenance.json    sntheory.provenance.provenance(seed, config) of the session that started it
    losses.csv         step,d_loss,d_real,d_fake,gp,g_loss (the last D update of the step)
    probes.jsonl       one flat JSON record per (step, layer, batch) from probe_discriminator
    samples/           step_XXXXXXX.png (fixed latent), real.png
    checkpoints/       step_XXXXXXX.pt: models, optimizers, every RNG state, sampler state,
                       the probes' operator-norm warm starts, byte offsets of losses.csv /
                       probes.jsonl
    timings.jsonl      one line per session: wall time, steps/s, time in probes / samples / I/O

Checkpoints are written atomically (temporary file, fsync, ``os.replace``). Resuming loads the
latest checkpoint, truncates ``losses.csv`` and ``probes.jsonl`` to their sizes at that step and
continues: on the same device (CPU), a run killed at any point and resumed writes exactly the
bytes of the uninterrupted run (tested by comparing ``probes.jsonl`` bytes after a SIGKILL).
Records hold no wall-clock values; timings live in ``timings.jsonl`` only.
"""
from __future__ import annotations

import copy
import csv
import datetime as _dt
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import require_choice, require_positive_int
from .config import LOSSES, TrainConfig, load_config
from .nets import Discriminator, build_discriminator, build_generator

__all__ = ["train", "load_run", "RunSummary", "LoadedRun", "per_sample_loss", "discriminator_loss",
           "generator_loss", "gradient_penalty", "resolve_device", "derive_seed",
           "read_losses", "read_probes", "list_checkpoints", "save_image_grid"]

CHECKPOINT_VERSION = 1
LOSS_COLUMNS = ("step", "d_loss", "d_real", "d_fake", "gp", "g_loss")
SAMPLE_GRID = 64  # images in a sample grid (8 x 8)

# stream tags for derive_seed
_DISC, _GEN, _LATENT, _BATCHES, _GP, _PROBE, _SAMPLES, _GLOBAL = range(8)


# --------------------------------------------------------------------------------------------------
# pieces with their own tests


def derive_seed(seed: int, *path: int) -> int:
    """A 62-bit seed for stream ``path`` of master seed ``seed`` (independent streams)."""
    state = np.random.SeedSequence([int(seed), *(int(p) for p in path)]).generate_state(
        1, dtype=np.uint64)
    return int(state[0] >> np.uint64(2))


def resolve_device(requested: str) -> torch.device:
    """``"auto"`` -> CUDA when ``torch.cuda.is_available()``, else CPU; ``"cuda"`` without CUDA is
    an error (never a silent fall-back)."""
    require_choice("device", requested, ("auto", "cpu", "cuda"))
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"`device` = 'cuda' but torch.cuda.is_available() is False (torch "
                         f"{torch.__version__}, CUDA build {torch.version.cuda}); use 'cpu' or "
                         f"'auto'")
    return torch.device(requested)


def per_sample_loss(z: torch.Tensor, batch: str, loss: str) -> torch.Tensor:
    """The discriminator's loss on each sample, ``(B,)``, for ``z`` = the output pre-activation.

    ``wgan``: real ``-z``, fake ``z``. ``hinge``: real ``relu(1 - z)``, fake ``relu(1 + z)``.
    ``ns`` (non-saturating, sigmoid output ``D = sigmoid(z)``): real ``-log D = softplus(-z)``,
    fake ``-log(1 - D) = softplus(z)``.
    """
    require_choice("loss", loss, LOSSES)
    require_choice("batch", batch, ("real", "fake"))
    sign = -1.0 if batch == "real" else 1.0
    if loss == "wgan":
        return sign * z
    if loss == "hinge":
        return F.relu(1.0 + sign * z)
    return F.softplus(sign * z)


def discriminator_loss(loss: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss from its outputs ``z`` on real and fake batches (module docstring)."""
    require_choice("loss", loss, LOSSES)
    return (per_sample_loss(d_real, "real", loss).mean()
            + per_sample_loss(d_fake, "fake", loss).mean())


def generator_loss(loss: str, d_fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss from the discriminator's outputs ``z`` on a fake batch."""
    require_choice("loss", loss, LOSSES)
    if loss == "ns":
        return F.softplus(-d_fake).mean()
    return -d_fake.mean()


def gradient_penalty(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     mix: torch.Tensor) -> torch.Tensor:
    """``E (||grad_x D(x_hat)||_2 - 1)^2`` at ``x_hat = mix * real + (1 - mix) * fake``.

    ``mix`` has one weight per sample ``(B,)``; the graph is kept (``create_graph``) so the
    penalty can be differentiated with respect to the discriminator's weights.
    """
    if real.shape != fake.shape:
        raise ValueError(f"`real` and `fake` must have the same shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if mix.shape != real.shape[:1]:
        raise ValueError(f"`mix` must have shape ({real.shape[0]},), got {tuple(mix.shape)}")
    m = mix.reshape(-1, *([1] * (real.dim() - 1)))
    x_hat = (m * real.detach() + (1 - m) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x_hat).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


@contextmanager
def _mode(module: nn.Module, training: bool):
    """Temporarily set ``module``'s mode (restoring every submodule's flag afterwards)."""
    flags = [(m, m.training) for m in module.modules()]
    module.train(training)
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def save_image_grid(images: torch.Tensor, path: Path, *, title: str = "",
                    columns: int = 8) -> None:
    """Save ``images`` ``(N, C, H, W)`` in ``[-1, 1]`` as a PNG grid (matplotlib, Agg)."""
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    x = images.detach().to("cpu", torch.float32).clamp(-1, 1).add(1).mul(0.5).numpy()
    n, c, h, w = x.shape
    rows = -(-n // columns)
    grid = np.ones((rows * (h + 1) + 1, columns * (w + 1) + 1, c), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, columns)
        grid[1 + r * (h + 1):1 + r * (h + 1) + h, 1 + q * (w + 1):1 + q * (w + 1) + w] = \
            x[i].transpose(1, 2, 0)
    fig = Figure(figsize=(4, 4 * grid.shape[0] / grid.shape[1] + (0.3 if title else 0)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.93 if title else 1))
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------------
# run directory


@dataclass(frozen=True)
class RunSummary:
    """What one call of :func:`train` did (timings are wall-clock; records hold none)."""

    run_dir: Path
    start_step: int              # step the session started from (0, or the checkpoint's)
    end_step: int                # last completed step
    total_steps: int             # [run] steps
    resumed: bool
    stopped_early: bool          # stop_after ended the session before total_steps
    device: str
    wall_s: float
    train_s: float               # time in training steps only
    probe_s: float
    steps_per_s: float           # session steps / wall time
    train_steps_per_s: float     # session steps / time in training steps
    probe_records: int           # records written this session
    last_losses: dict = field(default_factory=dict)


@dataclass
class LoadedRun:
    """A trained run: its config, models (eval mode, CPU unless asked), step and dataset."""

    config: TrainConfig
    disc: Discriminator
    gen: nn.Module
    step: int
    data: Any                    # sntheory.lab.data.ImageDataset
    run_dir: Path | None = None


_OUTPUTS = ("config.json", "provenance.json", "losses.csv", "probes.jsonl", "timings.jsonl")


def list_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{step: path}`` of the checkpoints in ``run_dir/checkpoints``."""
    out = {}
    folder = Path(run_dir) / "checkpoints"
    if folder.is_dir():
        for p in folder.glob("step_*.pt"):
            try:
                out[int(p.stem[len("step_"):])] = p
            except ValueError:
                continue
    return dict(sorted(out.items()))


def read_losses(run_dir: str | Path) -> list[dict]:
    """The rows of ``losses.csv`` (step as int, the rest as float)."""
    path = Path(run_dir) / "losses.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no losses.csv in run directory {str(run_dir)!r}")
    with path.open(newline="") as f:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f)]


def read_probes(run_dir: str | Path) -> list[dict]:
    """The records of ``probes.jsonl``."""
    path = Path(run_dir) / "probes.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no probes.jsonl in run directory {str(run_dir)!r}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_text(obj) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"


def _comparable(cfg: dict) -> dict:
    """The config without what a resume may change: the number of steps and the device."""
    out = json.loads(json.dumps(cfg))
    out["run"].pop("steps", None)
    out["run"].pop("device", None)
    return out


def _config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            diffs.append(f"{prefix}{key}: {va!r} in the run, {vb!r} now")
    return diffs


# --------------------------------------------------------------------------------------------------
# the trainer


class _Trainer:
    def __init__(self, cfg: TrainConfig, device: torch.device):
        from .data import load_dataset

        self.cfg = cfg
        self.device = device
        seed = cfg.run.seed
        try:
            self.data = load_dataset(cfg.data.spec, image_size=cfg.data.image_size,
                                     channels=cfg.data.channels, seed=seed,
                                     limit=cfg.data.limit, **cfg.data.options)
        except (TypeError, ValueError, FileNotFoundError) as error:
            raise type(error)(f"{cfg.source}: [data] spec = {cfg.data.spec!r}: {error}") from None
        if cfg.probe.batch_size > self.data.num_images and self._probing:
            raise ValueError(f"{cfg.source}: [probe] batch_size = {cfg.probe.batch_size}: must be "
                             f"<= the number of images ({self.data.num_images})")
        self.images = self.data.images.to(device)
        self.disc = build_discriminator(cfg.net, cfg.normalizer.name,
                                        normalizer_kwargs=cfg.normalizer.kwargs,
                                        seed=derive_seed(seed, _DISC)).to(device)
        self.gen = build_generator(cfg.net, seed=derive_seed(seed, _GEN)).to(device)
        t = cfg.train
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=t.generator_lr,
                                      betas=(t.beta1, t.beta2))
        self.g_latent = torch.Generator().manual_seed(derive_seed(seed, _LATENT))
        self.g_gp = torch.Generator().manual_seed(derive_seed(seed, _GP))
        self.sampler = self.data.batches(t.batch_size, seed=derive_seed(seed, _BATCHES))
        self.step = 0
        self.probe_steps = frozenset(cfg.probe.steps(cfg.run.steps))
        self.probe_timings: dict[str, float] = {}
        self.probe_cache = None
        if self._probing:
            from .probes import OperatorNormCache
            self.probe_cache = OperatorNormCache()  # warm starts: part of the checkpoint

    @property
    def _probing(self) -> bool:
        return bool(self.cfg.probe.every or self.cfg.probe.at)

    # ---- randomness ---------------------------------------------------------------------------
    def _latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # drawn on the CPU: the same numbers whatever the device
        return torch.randn(n, self.cfg.net.latent_dim, generator=generator).to(self.device)

    def _real_batch(self) -> torch.Tensor:
        return self.images[self.sampler.next_indices().to(self.device)]

    def _generate(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)`` on a copy of G in training mode (batch-norm statistics of G untouched)."""
        gen = copy.deepcopy(self.gen).train()
        with torch.no_grad():
            return gen(z)

    # ---- one step -----------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        t = self.cfg.train
        batch = t.batch_size
        self.disc.train()
        self.gen.train()
        for _ in range(t.n_dis):
            real = self._real_batch()
            with torch.no_grad():
                fake = self.gen(self._latent(batch, self.g_latent))
            out = self.disc(torch.cat([real, fake]))  # one training-mode forward: one power step
            d_real, d_fake = out[:batch], out[batch:]
            loss_d = discriminator_loss(t.loss, d_real, d_fake)
            gp = torch.zeros((), device=self.device)
            if t.gp_weight > 0:
                mix = torch.rand(batch, generator=self.g_gp).to(self.device)
                with _mode(self.disc, False):
                    gp = gradient_penalty(self.disc, real, fake, mix)
                loss_total = loss_d + t.gp_weight * gp
            else:
                loss_total = loss_d
            self.opt_d.zero_grad(set_to_none=True)
            loss_total.backward()
            self.opt_d.step()
        self.disc.requires_grad_(False)
        try:
            fake = self.gen(self._latent(batch, self.g_latent))
            loss_g = generator_loss(t.loss, self.disc(fake))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        finally:
            self.disc.requires_grad_(True)
        self.step += 1
        values = torch.stack([loss_total.detach(), d_real.detach().mean(),
                              d_fake.detach().mean(), gp.detach(), loss_g.detach()]).cpu()
        stats = dict(zip(LOSS_COLUMNS[1:], (float(v) for v in values.tolist())))
        bad = [k for k, v in stats.items() if not np.isfinite(v)]
        if bad:
            raise FloatingPointError(f"training diverged at step {self.step}: {bad} not finite "
                                     f"({stats}); lower `[train] lr` or add a normalizer")
        return stats

    # ---- probes and samples -------------------------------------------------------------------
    def probe_batches(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The real and fake probe batches of ``step`` (their own generator: no training draw)."""
        g = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, _PROBE, step))
        n = self.cfg.probe.batch_size
        index = torch.randperm(self.data.num_images, generator=g)[:n]
        real = self.images[index.to(self.device)]
        fake = self._generate(self._latent(n, g))
        return real, fake

    def probe(self, step: int) -> list[dict]:
        from .probes import probe_discriminator

        opts = self.cfg.probe.probe_options(hessian=self.cfg.probe.hessian_at(step))
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), _mode(self.disc, self.disc.training):
            real, fake = self.probe_batches(step)
            records = probe_discriminator(self.disc, real, fake, step=step,
                                          loss=self.cfg.train.loss, options=opts,
                                          cache=self.probe_cache, timings=self.probe_timings)
        return list(records)

    def samples(self, step: int, path: Path) -> None:
        g = torch.Generator().manual_seed(derive_seed(self.cfg.run.seed, _SAMPLES))
        images = self._generate(self._latent(SAMPLE_GRID, g))
        save_image_grid(images, path, title=f"step {step}, {self.cfg.normalizer.name}, "
                                            f"{self.cfg.train.loss}")

    # ---- checkpoints --------------------------------------------------------------------------
    def state(self, offsets: dict[str, int]) -> dict:
        rng = {"torch": torch.get_rng_state(), "latent": self.g_latent.get_state(),
               "gp": self.g_gp.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"version": CHECKPOINT_VERSION, "step": self.step, "config": self.cfg.to_dict(),
                "disc": self.disc.state_dict(), "gen": self.gen.state_dict(),
                "opt_d": self.opt_d.state_dict(), "opt_g": self.opt_g.state_dict(),
                "rng": rng, "sampler": self.sampler.state_dict(), "offsets": dict(offsets),
                "probe_cache": None if self.probe_cache is None else
                self.probe_cache.state_dict()}

    def load_state(self, state: dict, *, models_only: bool = False) -> None:
        self.disc.load_state_dict(state["disc"])
        self.gen.load_state_dict(state["gen"])
        self.step = int(state["step"])
        if models_only:
            return
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.g_latent.set_state(rng["latent"])
        self.g_gp.set_state(rng["gp"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.sampler.load_state_dict(state["sampler"])
        if self.probe_cache is not None and state.get("probe_cache") is not None:
            self.probe_cache.load_state_dict(state["probe_cache"])


def _load_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not a version-{CHECKPOINT_VERSION} sntheory lab checkpoint")
    return state


def _prepare_fresh(run_dir: Path) -> None:
    """Remove the outputs of an earlier run in ``run_dir`` (only files this module writes)."""
    for name in _OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    for pattern, folder in (("step_*.pt*", "checkpoints"), ("*.png", "samples")):
        for p in (run_dir / folder).glob(pattern):
            p.unlink()


def _truncate(path: Path, size: int, step: int) -> None:
    actual = path.stat().st_size if path.exists() else -1
    if actual < size:
        raise ValueError(f"{path} has {max(actual, 0)} bytes, fewer than the {size} it had at the "
                         f"checkpoint of step {step}: the run directory was modified; start over "
                         f"with resume=False (CLI: --no-resume)")
    with open(path, "r+b") as f:
        f.truncate(size)


def train(config, run_dir: str | Path, *, resume: bool = True, progress: bool = True,
          stop_after: int | None = None) -> RunSummary:
    """Train the GAN of ``config`` (a :class:`TrainConfig`, a dict or a TOML path) in ``run_dir``.

    ``resume``: continue from the latest checkpoint in ``run_dir`` (its config must match, except
    ``[run] steps`` / ``device``); ``False`` deletes the earlier run's outputs and starts over.
    ``stop_after``: end the session after that many steps, without any further write, as a kill
    would (for tests of resumption). Returns a :class:`RunSummary`.
    """
    cfg = load_config(config)
    if stop_after is not None:
        stop_after = require_positive_int("stop_after", stop_after)
    with _torch_threads(cfg.run.threads):
        return _train(cfg, Path(run_dir), resume, progress, stop_after)


@contextmanager
def _torch_threads(count: int):
    """``torch.set_num_threads(count)`` for the block (0: leave torch's setting alone)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if count:
            torch.set_num_threads(before)


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, progress: bool,
           stop_after: int | None) -> RunSummary:
    device = resolve_device(cfg.run.device)
    session_start = time.perf_counter()
    cpu_start = time.process_time()
    utc_start = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "config.json"

    checkpoints = list_checkpoints(run_dir) if resume else {}
    if resume and config_path.is_file():
        diffs = _config_differences(_comparable(json.loads(config_path.read_text())),
                                    _comparable(cfg.to_dict()))
        if diffs:
            raise ValueError(f"run directory {str(run_dir)!r} holds a run with another config "
                             f"({'; '.join(diffs)}); use another directory or resume=False "
                             f"(CLI: --no-resume)")
    trainer = _Trainer(cfg, device)
    torch.manual_seed(derive_seed(cfg.run.seed, _GLOBAL))
    losses_path, probes_path = run_dir / "losses.csv", run_dir / "probes.jsonl"
    resumed = False
    if checkpoints:
        last = max(checkpoints)
        if last > cfg.run.steps:
            raise ValueError(f"run directory {str(run_dir)!r} has a checkpoint at step {last}, "
                             f"beyond `[run] steps` = {cfg.run.steps}; raise steps or start over "
                             f"with resume=False")
        state = _load_checkpoint(checkpoints[last])
        trainer.load_state(state)
        _truncate(losses_path, state["offsets"]["losses.csv"], last)
        _truncate(probes_path, state["offsets"]["probes.jsonl"], last)
        resumed = True
    else:
        _prepare_fresh(run_dir)
        losses_path.write_text(",".join(LOSS_COLUMNS) + "\n")
        probes_path.write_text("")
        _atomic_bytes(run_dir / "provenance.json", _json_text(
            _provenance(cfg, device)).encode())
    _atomic_bytes(config_path, _json_text(cfg.to_dict()).encode())

    start = trainer.step
    timer = {"train_s": 0.0, "probe_s": 0.0, "hessian_probe_s": 0.0, "sample_s": 0.0,
             "checkpoint_s": 0.0}
    n_records = 0
    stats: dict[str, float] = {}
    losses_file = open(losses_path, "a", newline="")
    probes_file = open(probes_path, "a")

    def probe(step: int) -> int:
        t0 = time.perf_counter()
        records = trainer.probe(step)
        lines = []
        for record in records:
            try:
                lines.append(json.dumps(record, sort_keys=True, allow_nan=False))
            except (TypeError, ValueError) as error:
                raise ValueError(f"probe record at step {step} is not flat finite JSON "
                                 f"({error}): {record!r}") from None
        probes_file.write("".join(line + "\n" for line in lines))
        key = "hessian_probe_s" if cfg.probe.hessian_at(step) else "probe_s"
        timer[key] += time.perf_counter() - t0
        return len(lines)

    def samples(step: int) -> None:
        t0 = time.perf_counter()
        trainer.samples(step, run_dir / "samples" / f"step_{step:07d}.png")
        timer["sample_s"] += time.perf_counter() - t0

    def checkpoint() -> None:
        t0 = time.perf_counter()
        for f in (losses_file, probes_file):
            f.flush()
            os.fsync(f.fileno())
        offsets = {"losses.csv": losses_path.stat().st_size,
                   "probes.jsonl": probes_path.stat().st_size}
        buffer = io.BytesIO()
        torch.save(trainer.state(offsets), buffer)
        folder = run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        _atomic_bytes(folder / f"step_{trainer.step:07d}.pt", buffer.getvalue())
        timer["checkpoint_s"] += time.perf_counter() - t0

    from tqdm.auto import tqdm

    stopped = False
    total = cfg.run.steps
    bar = tqdm(total=total, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{cfg.normalizer.name}/{cfg.train.loss}")
    try:
        if start == 0:
            save_image_grid(trainer.images[:SAMPLE_GRID], run_dir / "samples" / "real.png",
                            title=f"real images: {cfg.data.spec}")
            if 0 in trainer.probe_steps:
                n_records += probe(0)
            if cfg.run.sample_every:
                samples(0)
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            stats = trainer.train_step()
            timer["train_s"] += time.perf_counter() - t0
            losses_file.write(",".join([str(step)] + [repr(stats[k]) for k in LOSS_COLUMNS[1:]])
                              + "\n")
            if step in trainer.probe_steps:
                n_records += probe(step)
            if (cfg.run.sample_every and step % cfg.run.sample_every == 0) or step == total:
                samples(step)
            if (cfg.run.checkpoint_every and step % cfg.run.checkpoint_every == 0) \
                    or step == total:
                checkpoint()
            bar.update(1)
            if step % 25 == 0 or step == total:
                bar.set_postfix(d_loss=f"{stats['d_loss']:.3g}", g_loss=f"{stats['g_loss']:.3g}")
            if stop_after is not None and step - start >= stop_after and step < total:
                stopped = True
                break
    finally:
        bar.close()
        losses_file.close()
        probes_file.close()

    wall = time.perf_counter() - session_start
    cpu = time.process_time() - cpu_start  # this process's CPU time: robust on a shared machine
    done = trainer.step - start
    timing = {"utc_start": utc_start, "start_step": start, "end_step": trainer.step,
              "steps": done, "device": str(device), "stopped_early": stopped,
              "wall_s": wall, "cpu_s": cpu, **timer,
              "steps_per_s": done / wall if wall > 0 else float("nan"),
              "train_steps_per_s": done / timer["train_s"] if timer["train_s"] > 0 else None,
              "probe_parts_s": dict(trainer.probe_timings),
              "torch_threads": torch.get_num_threads()}
    with open(run_dir / "timings.jsonl", "a") as f:
        f.write(json.dumps(timing, sort_keys=True) + "\n")
    return RunSummary(run_dir=run_dir, start_step=start, end_step=trainer.step, total_steps=total,
                      resumed=resumed, stopped_early=stopped, device=str(device), wall_s=wall,
                      train_s=timer["train_s"], probe_s=timer["probe_s"] + timer[
                          "hessian_probe_s"],
                      steps_per_s=done / wall if wall > 0 else 0.0,
                      train_steps_per_s=done / timer["train_s"] if timer["train_s"] else 0.0,
                      probe_records=n_records, last_losses=stats)


def _provenance(cfg: TrainConfig, device: torch.device) -> dict:
    from ..provenance import provenance

    record = provenance(cfg.run.seed, cfg.to_dict())
    record["torch_device"] = str(device)
    if device.type == "cuda":
        record["cuda_device"] = torch.cuda.get_device_name(device)
    return record


def load_run(run_dir: str | Path, step: int | None = None, *, device: str = "cpu") -> LoadedRun:
    """The models of a run at checkpoint ``step`` (default: the latest), in eval mode.

    The config is read from the checkpoint itself (what the models were trained with); ``data``
    is the run's dataset, loaded as the run loaded it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no checkpoint "
                                f"(checkpoints/step_*.pt)")
    if step is None:
        step = max(checkpoints)
    elif step not in checkpoints:
        raise ValueError(f"`step` = {step!r}: run {str(run_dir)!r} has checkpoints at steps "
                         f"{sorted(checkpoints)} only")
    state = _load_checkpoint(checkpoints[step])
    cfg = TrainConfig.from_dict(state["config"], source=str(checkpoints[step]))
    trainer = _Trainer(cfg, resolve_device(device))  # the config as trained; models on `device`
    trainer.load_state(state, models_only=True)
    trainer.disc.eval()
    trainer.gen.eval()
    return LoadedRun(config=cfg, disc=trainer.disc, gen=trainer.gen, step=step,
                     data=trainer.data, run_dir=run_dir)
