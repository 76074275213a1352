"""The configuration of a lab training run: a strict, typed TOML file (or the same nested dict).

Tables and keys (defaults in brackets; every key is optional unless marked *required*)::

    [run]        seed [0], steps [1000], device ["auto" | "cpu" | "cuda"],
                 checkpoint_every [500], sample_every [500]   (0 = never),
                 threads [0] (torch CPU threads for the run; 0 = torch's default. Part of the
                 run's identity: float sums may differ between thread counts)
    [data]       spec *required* ("digits", "photo-patches", "mnist:PATH", "cifar10:PATH",
                 "npy:PATH"), image_size [16], channels [1], limit [all images],
                 options [{}] (keyword arguments of the loader, e.g. {split = "test"})
    [net]        sntheory.lab.nets.NetConfig without image_size / channels (those come from
                 [data]): arch, width, depth, activation, bias, latent_dim, gen_width
    [normalizer] name ["none"] (a key of sntheory.normalizers.NORMALIZERS); every other key is a
                 keyword argument of its attach function (n_power_iterations, eps, scale, gamma).
                 Or name = "plugin:<spec>" (a spec of sntheory.plugin.load_normalizer:
                 "pkg.mod:attr", "path/file.py:attr", a registered name), loaded and checked
                 against the plug-in contract when the file is read; the other keys are its
                 options
    [train]      loss ["wgan" | "hinge" | "ns"], gp_weight [0.0] (0 = no gradient penalty),
                 lr [1e-4], beta1 [0.5], beta2 [0.999], n_dis [1], batch_size [64],
                 gen_lr [= lr]
    [probe]      every [0] (0 = off; else steps 0, every, 2 every, ...), at [[]] (explicit steps),
                 hessian_every [0] (0 = off; Hessian probes at the probe steps that are multiples
                 of it), batch_size [16] (images of each kind per probe), options [{}]
                 (fields of sntheory.lab.probes.ProbeOptions)

A "step" is one generator update, preceded by ``n_dis`` discriminator updates.

Everything is checked when the file is read: an unknown table or key, a value of the wrong type
(``steps = "10"``, ``lr = true``) or a bad value (an unknown loss, normalizer, activation or
architecture, an image too small for the architecture, a negative learning rate) raises a
``ValueError`` / ``TypeError`` whose message names the file, the table, the key, the value and the
rule, before any work starts. :meth:`TrainConfig.to_dict` gives the resolved config (all defaults
filled in); ``TrainConfig.from_dict(cfg.to_dict()) == cfg``.
"""
from __future__ import annotations

import inspect
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from .._validation import _show
from .nets import NetConfig

try:  # Python >= 3.11
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as _toml  # type: ignore[no-redef]
    except ModuleNotFoundError:
        _toml = None

__all__ = ["TrainConfig", "RunSection", "DataSection", "NormalizerSection", "OptimSection",
           "ProbeSection", "LOSSES", "DEVICES", "load_config"]

LOSSES = ("wgan", "hinge", "ns")
DEVICES = ("auto", "cpu", "cuda")
TABLES = ("run", "data", "net", "normalizer", "train", "probe")


class _Table:
    """Typed reads from one table; :meth:`finish` rejects the keys nobody read."""

    def __init__(self, origin: str, name: str, data: object):
        self.where = f"{origin}[{name}]"
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise TypeError(f"{self.where} must be a table, got {_show(data)} of type "
                            f"{type(data).__name__}")
        self.data = dict(data)
        self.read: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.where} {key}"

    def _get(self, key: str, default: Any) -> Any:
        self.read.add(key)
        return self.data.get(key, default)

    def fail(self, key: str, value: object, rule: str, kind: type = ValueError):
        return kind(f"{self._key(key)} = {_show(value)}: {rule}")

    def integer(self, key: str, default: int | None, *, minimum: int = 0,
                optional: bool = False) -> int | None:
        value = self._get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.fail(key, value, f"must be an integer >= {minimum} (got type "
                                        f"{type(value).__name__})", TypeError)
        if value < minimum:
            raise self.fail(key, value, f"must be an integer >= {minimum}")
        return int(value)

    def real(self, key: str, default: float | None, *, low: float = 0.0, high: float = math.inf,
             low_open: bool = False, high_open: bool = False, optional: bool = False
             ) -> float | None:
        value = self._get(key, default)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self.fail(key, value, f"must be a number (got type {type(value).__name__})",
                            TypeError)
        x = float(value)
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if (not math.isfinite(x) or x < low or x > high or (low_open and x == low)
                or (high_open and x == high)):
            raise self.fail(key, value, f"must be a finite number in {interval}")
        return x

    def choice(self, key: str, default: str | None, choices) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, value, f"must be a string, one of {sorted(choices)} (got type "
                                        f"{type(value).__name__})", TypeError)
        if value not in choices:
            raise self.fail(key, value, f"must be one of {sorted(choices)}")
        return value

    def string(self, key: str, default: str | None) -> str:
        value = self._get(key, default)
        if value is None:
            raise self.fail(key, value, "is required (a string)")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, value, "must be a non-empty string", TypeError)
        return value

    def table(self, key: str) -> dict:
        value = self._get(key, {})
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(key, value, "must be a table (e.g. `options = {key = 1}`)", TypeError)
        return dict(value)

    def int_list(self, key: str) -> tuple[int, ...]:
        value = self._get(key, [])
        if not isinstance(value, (list, tuple)):
            raise self.fail(key, value, "must be a list of integers >= 0", TypeError)
        for item in value:
            if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < 0:
                raise self.fail(key, value, f"must be a list of integers >= 0; {item!r} is not",
                                TypeError if not isinstance(item, numbers.Integral) else
                                ValueError)
        return tuple(sorted(set(int(v) for v in value)))

    def rest(self) -> dict:
        """The keys not read so far (for tables that pass them on as keyword arguments)."""
        out = {k: v for k, v in self.data.items() if k not in self.read}
        self.read.update(out)
        return out

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise ValueError(f"{self.where} has unknown key(s) {unknown}; valid keys: "
                             f"{sorted(self.read)}")


def _wrap(where: str, error: Exception) -> Exception:
    """The same exception type with ``where`` in front (nested validators know only the key)."""
    return type(error)(f"{where}: {error}")


# --------------------------------------------------------------------------------------------------
# sections


@dataclass(frozen=True)
class RunSection:
    seed: int = 0
    steps: int = 1000
    device: str = "auto"
    checkpoint_every: int = 500
    sample_every: int = 500
    threads: int = 0

    @classmethod
    def parse(cls, t: _Table) -> "RunSection":
        out = cls(seed=t.integer("seed", 0), steps=t.integer("steps", 1000, minimum=1),
                  device=t.choice("device", "auto", DEVICES),
                  checkpoint_every=t.integer("checkpoint_every", 500),
                  sample_every=t.integer("sample_every", 500),
                  threads=t.integer("threads", 0))
        t.finish()
        return out


@dataclass(frozen=True)
class DataSection:
    spec: str = "digits"
    image_size: int = 16
    channels: int = 1
    limit: int | None = None
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, t: _Table) -> "DataSection":
        spec = t.string("spec", None)
        from .data import dataset_specs
        prefixes = [s.split(":")[0] for s in dataset_specs()]
        head = spec.partition(":")[0].strip().lower()
        if head not in prefixes:
            raise t.fail("spec", spec, f"must be one of {dataset_specs()}")
        channels = t.integer("channels", 1, minimum=1)
        if channels not in (1, 3):
            raise t.fail("channels", channels, "must be 1 (grey) or 3 (RGB)")
        out = cls(spec=spec, image_size=t.integer("image_size", 16, minimum=1),
                  channels=channels, limit=t.integer("limit", None, minimum=1, optional=True),
                  options=t.table("options"))
        t.finish()
        return out


@dataclass(frozen=True)
class NormalizerSection:
    name: str = "none"
    kwargs: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, t: _Table) -> "NormalizerSection":
        from ..normalizers import NORMALIZERS
        raw = t.data.get("name", "none")
        if isinstance(raw, str) and raw.startswith("plugin:"):
            return cls._parse_plugin(t)
        name = t.choice("name", "none", NORMALIZERS)
        kwargs = t.rest()
        params = inspect.signature(NORMALIZERS[name].attach).parameters
        # input_size is SNConv's geometry, filled in by build_discriminator from the net
        accepted = [p for p in params if p not in ("module", "name", "input_size")]
        for key in sorted(kwargs):
            if key not in accepted:
                raise ValueError(f"{t.where} has key {key!r}, which normalizer {name!r} does not "
                                 f"take; it takes {accepted} (plus `name`)")
        required = [p for p in accepted if params[p].default is inspect.Parameter.empty
                    and p not in kwargs]
        if required:
            raise ValueError(f"{t.where} name = {name!r} needs key(s) {required} (e.g. "
                             f"`{required[0]} = 1.5`)")
        return cls(name=name, kwargs=kwargs)

    @classmethod
    def _parse_plugin(cls, t: _Table) -> "NormalizerSection":
        """``name = "plugin:<spec>"``: the other keys are the plug-in's options; the spec is
        loaded and checked against the plug-in contract now (before any work starts)."""
        from ..plugin.contract import NormalizerContractError, load_normalizer
        name = t.string("name", None)
        spec = name[len("plugin:"):].strip()
        if not spec:
            raise t.fail("name", name, "'plugin:' must be followed by a spec: 'pkg.mod:attr', "
                                       "'path/file.py:attr' or a registered name")
        kwargs = t.rest()
        try:
            load_normalizer(spec, options=kwargs or None)
        except NormalizerContractError as error:   # keeps its class and `failure` code
            raise type(error)(f"{t.where} name = {name!r}: {error}", error.failure) from None
        except (TypeError, ValueError, FileNotFoundError) as error:
            raise type(error)(f"{t.where} name = {name!r}: {error}") from None
        return cls(name=name, kwargs=kwargs)

    def to_dict(self) -> dict:
        return {"name": self.name, **self.kwargs}


@dataclass(frozen=True)
class OptimSection:
    loss: str = "wgan"
    gp_weight: float = 0.0
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_dis: int = 1
    batch_size: int = 64
    gen_lr: float | None = None

    @classmethod
    def parse(cls, t: _Table) -> "OptimSection":
        out = cls(loss=t.choice("loss", "wgan", LOSSES),
                  gp_weight=t.real("gp_weight", 0.0),
                  lr=t.real("lr", 1e-4, low_open=True),
                  beta1=t.real("beta1", 0.5, high=1.0, high_open=True),
                  beta2=t.real("beta2", 0.999, high=1.0, high_open=True),
                  n_dis=t.integer("n_dis", 1, minimum=1),
                  batch_size=t.integer("batch_size", 64, minimum=1),
                  gen_lr=t.real("gen_lr", None, low_open=True, optional=True))
        t.finish()
        return out

    @property
    def generator_lr(self) -> float:
        return self.lr if self.gen_lr is None else self.gen_lr


@dataclass(frozen=True)
class ProbeSection:
    every: int = 0
    at: tuple[int, ...] = ()
    hessian_every: int = 0
    batch_size: int = 16
    options: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, t: _Table) -> "ProbeSection":
        out = cls(every=t.integer("every", 0), at=t.int_list("at"),
                  hessian_every=t.integer("hessian_every", 0),
                  batch_size=t.integer("batch_size", 16, minimum=1),
                  options=t.table("options"))
        t.finish()
        if out.options:
            try:
                out.probe_options(hessian=False)
            except (TypeError, ValueError) as error:
                raise _wrap(f"{t.where} options", error) from None
        return out

    def steps(self, total: int) -> tuple[int, ...]:
        """The probe steps in ``[0, total]``: multiples of ``every`` (with 0) and ``at``."""
        chosen = set(s for s in self.at if s <= total)
        if self.every:
            chosen.update(range(0, total + 1, self.every))
        return tuple(sorted(chosen))

    def hessian_at(self, step: int) -> bool:
        return bool(self.hessian_every) and step % self.hessian_every == 0

    def probe_options(self, *, hessian: bool):
        """The :class:`sntheory.lab.probes.ProbeOptions` of one probe step."""
        from .probes import ProbeOptions
        names = {f.name for f in fields(ProbeOptions)}
        opts = dict(self.options)
        if "hessian" in names:
            if "hessian" in opts:
                raise ValueError("`hessian` is set by the schedule (`hessian_every`), not in "
                                 "`options`")
            opts["hessian"] = hessian
        unknown = sorted(set(opts) - names)
        if unknown:
            raise ValueError(f"unknown ProbeOptions field(s) {unknown}; valid: {sorted(names)}")
        return ProbeOptions(**opts)


# --------------------------------------------------------------------------------------------------
# the whole config


@dataclass(frozen=True)
class TrainConfig:
    """A validated training run: ``run``, ``data``, ``net``, ``normalizer``, ``train``, ``probe``.

    ``net`` is the full :class:`NetConfig` (its ``image_size`` / ``channels`` taken from [data]).
    """

    run: RunSection
    data: DataSection
    net: NetConfig
    normalizer: NormalizerSection
    train: OptimSection
    probe: ProbeSection
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "<dict>") -> "TrainConfig":
        """Parse and validate the nested dict of a TOML file (``source`` names it in errors)."""
        origin = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise TypeError(f"{origin}the config must be a table of tables, got "
                            f"{type(data).__name__}")
        unknown = sorted(set(data) - set(TABLES))
        if unknown:
            raise ValueError(f"{origin}unknown table(s) {unknown}; valid tables: {list(TABLES)}")
        if "data" not in data:
            raise ValueError(f"{origin}[data] is required (at least `spec`, e.g. "
                             f"spec = \"digits\")")
        run = RunSection.parse(_Table(origin, "run", data.get("run")))
        dsec = DataSection.parse(_Table(origin, "data", data.get("data")))
        net_table = _Table(origin, "net", data.get("net"))
        for key in ("image_size", "channels"):
            if key in net_table.data:
                raise net_table.fail(key, net_table.data[key],
                                     "belongs in [data] (the network is built for the images "
                                     "the data section produces)")
        try:
            net = NetConfig.from_dict({**net_table.data, "image_size": dsec.image_size,
                                       "channels": dsec.channels}, where="net")
        except (TypeError, ValueError) as error:
            raise _wrap(f"{origin}[net] (with [data] image_size = {dsec.image_size}, "
                        f"channels = {dsec.channels})", error) from None
        normalizer = NormalizerSection.parse(_Table(origin, "normalizer", data.get("normalizer")))
        optim = OptimSection.parse(_Table(origin, "train", data.get("train")))
        probe = ProbeSection.parse(_Table(origin, "probe", data.get("probe")))
        return cls(run, dsec, net, normalizer, optim, probe, source=source)

    @classmethod
    def from_toml(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        if _toml is None:  # pragma: no cover - Python 3.10 without tomli
            raise ModuleNotFoundError("reading TOML needs Python >= 3.11 or `pip install tomli`")
        try:
            data = _toml.loads(path.read_text(encoding="utf-8"))
        except _toml.TOMLDecodeError as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict:
        """The resolved config as nested plain data (JSON-able; ``None`` for unset options)."""
        net = self.net.to_dict()
        del net["image_size"], net["channels"]
        return {
            "run": _plain(self.run),
            "data": _plain(self.data),
            "net": net,
            "normalizer": self.normalizer.to_dict(),
            "train": _plain(self.train),
            "probe": {**_plain(self.probe), "at": list(self.probe.at)},
        }

    def with_overrides(self, overrides: Mapping[str, Mapping[str, Any]]) -> "TrainConfig":
        """A new config with ``{table: {key: value}}`` replaced, validated like a file."""
        data = self.to_dict()
        for table, values in overrides.items():
            if table not in data:
                raise ValueError(f"unknown table {table!r} in overrides; valid: {list(TABLES)}")
            data[table] = {**data[table], **dict(values)}
        return TrainConfig.from_dict(data, source=f"{self.source} (with overrides)")

    def replace_run(self, **changes) -> "TrainConfig":
        """Shortcut for ``[run]`` overrides (``steps``, ``device``, ...)."""
        return self.with_overrides({"run": changes}) if changes else replace(self)


def _plain(section) -> dict:
    out = {}
    for f in fields(section):
        value = getattr(section, f.name)
        out[f.name] = dict(value) if isinstance(value, dict) else value
    return out


def load_config(path_or_config) -> TrainConfig:
    """A :class:`TrainConfig` from a TOML path, a nested dict, or a TrainConfig (returned as is)."""
    if isinstance(path_or_config, TrainConfig):
        return path_or_config
    if isinstance(path_or_config, Mapping):
        return TrainConfig.from_dict(path_or_config)
    if isinstance(path_or_config, (str, Path)):
        return TrainConfig.from_toml(path_or_config)
    raise TypeError(f"`config` must be a TrainConfig, a dict or a path to a TOML file, got "
                    f"{type(path_or_config).__name__}")
