"""Experiments of ``sntheory report``: kinds, strictly typed configs, run context, verdict logic.

An **experiment** is a folder ``experiments/<name>/`` holding one ``config.toml``::

    # <header comment: the claim/figure it serves and the exact command that regenerates it>
    [experiment]
    name = "thm2"          # must equal the folder name
    kind = "thm2"          # a registered ExperimentKind
    claim = "T2"           # THEORY.md id (T2, T3, R, P1, P2, T1, P3) or any other label
    figure = ""            # the paper figure it mirrors, e.g. "paper Fig. 7", or ""
    title = "..."
    seed = 0
    [full]                 # kind parameters of the full profile (empty table: the defaults)
    [quick]                # kind parameters of the quick profile (2 CPU cores, minutes)
    [smoke]                # optional overrides ON TOP OF [quick], for the test suite's smoke run

Parsing is strict: an unknown table or key, or a value of the wrong type, is an error that names the
file, the table and the key. Profiles resolve as ``full = defaults + [full]``,
``quick = defaults + [quick]`` and ``smoke = defaults + [quick] + [smoke]``, so the smoke run goes
through exactly the code of the quick one, only smaller.

An **experiment kind** (:class:`ExperimentKind`) is a name, a frozen dataclass of parameters (typed
fields with defaults; value checks in its ``__post_init__``) and a function
``run(params, out_dir, ctx) -> ExperimentOutput``. Kinds are registered with :func:`register_kind`
by the modules listed in :data:`KIND_MODULES`, imported on first use; an import error is raised,
never skipped.

Verdicts (shared by every kind and by the report)
-------------------------------------------------
Every checked statement becomes a :class:`~sntheory.report.rows.ClaimRow` with one of four verdicts:

* ``HOLDS`` — the inequality is confirmed: for a Monte Carlo estimate, the one-sided test of "the
  bound fails" is rejected (Holm step-down over every in-hypothesis check of the experiment, so
  all HOLDS are simultaneously confident at the family-wise level ``alpha``); for a deterministic
  quantity (a maximum over probes, a float64 identity), the value is within the bound up to the
  stated round-off allowance.
* ``VIOLATED`` — the estimate is significantly beyond the bound (same test, other side; for a
  deterministic quantity: beyond the bound by more than the allowance). A true bound is flagged
  anywhere in an experiment with probability at most ``alpha``.
* ``INCONCLUSIVE`` — neither test decides (too few samples, or a true value at the bound).
* ``OUTSIDE-HYPOTHESES`` — a hypothesis of the statement fails on purpose (heavy-tailed or
  non-symmetric entries, a too-small shape, a deliberately broken normaliser, a constant claimed
  below the true one): a **negative control**. It is shown with what was observed (the bound
  fails / holds / undecided), and never counted as a failure.

An experiment's verdict, and the report's, is :func:`overall_verdict` of its rows: VIOLATED if any
in-hypothesis row is VIOLATED, else INCONCLUSIVE if any is INCONCLUSIVE, else HOLDS; a set of rows
with no in-hypothesis row is OUTSIDE-HYPOTHESES, and an empty one INCONCLUSIVE (nothing checked).
``sntheory report`` exits with 1 exactly when an in-hypothesis row is VIOLATED.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..monte_carlo.verdicts import Verdict
from .rows import ClaimRow, relative_slack

__all__ = [
    "KIND_MODULES", "PROFILES", "CLI_PROFILES", "CLAIM_ORDER", "VERDICT_RULES",
    "Figure", "ExperimentOutput", "RunContext", "ExperimentKind", "ExperimentConfig",
    "register_kind", "get_kind", "registered_kinds", "load_kind_modules",
    "parse_params", "load_config", "read_toml",
    "overall_verdict", "verdict_counts", "deterministic_verdict", "row_from_check",
    "claim_sort_key",
]

#: Modules that register experiment kinds, imported (in this order) on first use of the registry.
#: Add a module here to make its kinds available to ``sntheory report``.
KIND_MODULES: tuple[str, ...] = (
    "sntheory.report.kinds_mc",
    "sntheory.report.kinds_lab",
    "sntheory.plugin.battery",
)

#: Profiles a config may define. ``smoke`` (optional) overrides ``quick`` for the test suite.
PROFILES: tuple[str, ...] = ("quick", "full", "smoke")
CLI_PROFILES: tuple[str, ...] = ("quick", "full")

#: Sections of the report follow THEORY.md; other claims come after, alphabetically.
CLAIM_ORDER: tuple[str, ...] = ("T2", "T3", "R", "P1", "P2", "T1", "P3")

VERDICT_RULES = (
    "HOLDS: the bound is confirmed (Monte Carlo: one-sided test, Holm step-down over all "
    "in-hypothesis checks of the experiment at family-wise alpha; deterministic quantities: within "
    "the bound up to the stated round-off allowance). VIOLATED: significantly beyond the bound "
    "(same test, other side). INCONCLUSIVE: neither test decides. OUTSIDE-HYPOTHESES: a negative "
    "control whose hypotheses fail on purpose, shown with what was observed and never counted as "
    "a failure. An experiment (and the report) is VIOLATED if any in-hypothesis row is, else "
    "INCONCLUSIVE if any is, else HOLDS.")


def claim_sort_key(claim: str) -> tuple[int, str]:
    """THEORY.md order first (T2, T3, R, P1, P2, T1, P3), then any other label alphabetically."""
    if claim in CLAIM_ORDER:
        return (CLAIM_ORDER.index(claim), "")
    return (len(CLAIM_ORDER), claim)


# ---- what a kind returns ---------------------------------------------------------------------

@dataclass(frozen=True)
class Figure:
    """A figure a kind wrote: ``path`` relative to the experiment's output folder, and a caption
    that says what to look at."""

    path: str
    caption: str

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise TypeError(f"`Figure.path` must be a non-empty relative path string, got "
                            f"{self.path!r}")
        if Path(self.path).is_absolute() or ".." in Path(self.path).parts:
            raise ValueError(f"`Figure.path` must be relative to the experiment's output folder "
                             f"(no '..'), got {self.path!r}")
        if not isinstance(self.caption, str):
            raise TypeError(f"`Figure.caption` must be a string, got {self.caption!r}")


@dataclass
class ExperimentOutput:
    """What ``kind.run`` returns.

    ``rows``: one :class:`ClaimRow` per checked statement and setting (negative controls included,
    as OUTSIDE-HYPOTHESES). ``figures``: PNG files written under ``out_dir``. ``records``: flat
    dicts (scalar values only), written as ``records.csv`` and ``records.json``; keep run times out
    of them so that the same seed gives byte-identical records. ``summary``: a short Markdown
    paragraph saying what the experiment shows. ``device``: where it actually ran.
    """

    rows: list[ClaimRow]
    figures: list[Figure] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    summary: str = ""
    device: str = "cpu"


@dataclass(frozen=True)
class RunContext:
    """Everything a kind may need besides its parameters.

    ``seed``: the experiment's master seed. ``profile``: quick, full or smoke. ``device``: the
    device asked for (``cpu``/``cuda``; kinds that cannot use it run on the CPU and say so).
    ``cache_dir``: root of the Monte Carlo :class:`~sntheory.monte_carlo.ResultStore` (``None``: no
    store). ``workers``: processes a kind may use. ``progress``/``tqdm_position``: where a kind
    draws its progress bar (the runner's bar over experiments is at position 0). ``experiment``
    and ``claim``: the config's name and claim label.
    """

    seed: int
    profile: str
    device: str = "cpu"
    cache_dir: Path | None = None
    workers: int = 1
    progress: bool = True
    tqdm_position: int = 1
    experiment: str = ""
    claim: str = ""

    def store(self):
        """The resumable Monte Carlo store under ``cache_dir`` (or ``None``)."""
        if self.cache_dir is None:
            return None
        from ..monte_carlo.store import ResultStore
        return ResultStore(self.cache_dir)

    def progress_bar(self, iterable: Iterable | None = None, *, total: int | None = None,
                     desc: str = ""):
        """A tqdm bar at this context's position (disabled without ``progress``)."""
        import sys

        from tqdm.auto import tqdm
        return tqdm(iterable, total=total, desc=desc or self.experiment, position=self.tqdm_position,
                    leave=False, disable=not self.progress, file=sys.stderr, dynamic_ncols=True)


# ---- the kind registry -----------------------------------------------------------------------

@dataclass(frozen=True)
class ExperimentKind:
    """A family of experiments: a name, a parameters dataclass and a run function.

    ``version`` (an int or a short string) enters the config hash: change it when a change to the
    kind (or to the code it drives) changes its numbers, figures or summary, so finished results
    are recomputed. ``uses_device``: the requested device enters the hash too
    (kinds that always run on the CPU leave it False, so ``--device`` does not force a rerun).
    """

    name: str
    params_type: type
    run: Callable[[Any, Path, RunContext], ExperimentOutput]
    description: str = ""
    version: int | str = 1
    uses_device: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"`ExperimentKind.name` must be a non-empty string, got {self.name!r}")
        if not (isinstance(self.params_type, type) and dataclasses.is_dataclass(self.params_type)):
            raise TypeError(f"kind {self.name!r}: `params_type` must be a dataclass type, got "
                            f"{self.params_type!r}")
        for f in dataclasses.fields(self.params_type):
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"kind {self.name!r}: parameter {f.name!r} of "
                                f"{self.params_type.__name__} needs a default (an empty profile "
                                f"table means 'the defaults')")
        if not callable(self.run):
            raise TypeError(f"kind {self.name!r}: `run` must be callable, got {self.run!r}")


_REGISTRY: dict[str, ExperimentKind] = {}
_LOADED: set[str] = set()


def register_kind(kind: ExperimentKind, *, replace: bool = False) -> ExperimentKind:
    """Add ``kind`` to the registry; a second kind with the same name is an error unless
    ``replace``."""
    if not isinstance(kind, ExperimentKind):
        raise TypeError(f"`kind` must be an ExperimentKind, got {kind!r}")
    if kind.name in _REGISTRY and not replace and _REGISTRY[kind.name] is not kind:
        raise ValueError(f"an experiment kind named {kind.name!r} is already registered (by "
                         f"{_REGISTRY[kind.name].run.__module__}); pass replace=True to replace it")
    _REGISTRY[kind.name] = kind
    return kind


def load_kind_modules(modules: Sequence[str] = KIND_MODULES) -> None:
    """Import every kind-providing module once. Import errors propagate, naming the module."""
    for name in modules:
        if name in _LOADED:
            continue
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ImportError(f"experiment-kind module {name!r} (listed in "
                              f"sntheory.report.experiments.KIND_MODULES) failed to import: "
                              f"{error}") from error
        _LOADED.add(name)


def registered_kinds() -> dict[str, ExperimentKind]:
    load_kind_modules()
    return dict(_REGISTRY)


def get_kind(name: str) -> ExperimentKind:
    kinds = registered_kinds()
    if name not in kinds:
        raise ValueError(f"unknown experiment kind {name!r}; registered kinds: {sorted(kinds)} "
                         f"(a kind is registered by a module listed in "
                         f"sntheory.report.experiments.KIND_MODULES)")
    return kinds[name]


# ---- strict typed parsing --------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "nothing (omit the key)"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(
        tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (from TOML) as type ``tp``, or a TypeError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except TypeError as error:
                errors.append(error)
        raise TypeError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"{where} must be {_type_name(tp)} (a TOML array), got {value!r} of "
                            f"type {type(value).__name__}")
        item = args[0] if args else Any
        items = [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be a boolean (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{where} must be an integer, got {value!r} of type "
                            f"{type(value).__name__}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{where} must be a number, got {value!r} of type "
                            f"{type(value).__name__}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r} of type "
                            f"{type(value).__name__}")
        return value
    raise TypeError(f"{where}: parameters of type {tp!r} are not supported in configs "
                    f"(use int, float, str, bool or tuples of them)")


def parse_params(params_type: type, *tables: tuple[str, Mapping[str, Any]]) -> Any:
    """Build ``params_type`` from the defaults overridden by each ``(where, table)`` in turn.

    Unknown keys and values of the wrong type raise errors that name ``where`` (e.g.
    ``experiments/thm2/config.toml [quick]``) and the key; the dataclass's own ``__post_init__``
    checks values, and its errors are re-raised with the same prefix.
    """
    hints = typing.get_type_hints(params_type)
    names = [f.name for f in dataclasses.fields(params_type)]
    values: dict[str, Any] = {}
    for where, table in tables:
        for key, value in table.items():
            if key not in hints or key not in names:
                raise ValueError(f"{where}: unknown key {key!r}; the parameters of "
                                 f"{params_type.__name__} are {names}")
            values[key] = _convert(value, hints[key], f"{where}: `{key}`")
    try:
        return params_type(**values)
    except (TypeError, ValueError) as error:
        where = " + ".join(w for w, _ in tables) or params_type.__name__
        raise type(error)(f"{where}: {error}") from error


def read_toml(path: Path) -> dict:
    """Parse a TOML file; a syntax error names the file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise ImportError("reading experiment configs needs Python >= 3.11 (tomllib) or the "
                              "`tomli` package") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {str(path)!r} does not exist")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error


_EXPERIMENT_FIELDS: dict[str, type] = {"name": str, "kind": str, "claim": str, "figure": str,
                                       "title": str, "seed": int}


@dataclass(frozen=True)
class ExperimentConfig:
    """One parsed ``experiments/<name>/config.toml``."""

    path: Path
    name: str
    kind: str
    claim: str
    figure: str
    title: str
    seed: int
    tables: Mapping[str, Mapping[str, Any]]   # raw profile tables: quick, full and maybe smoke
    header: str = ""                          # the leading comment block

    def _layers(self, profile: str) -> list[tuple[str, Mapping[str, Any]]]:
        if profile not in PROFILES:
            raise ValueError(f"`profile` must be one of {list(PROFILES)}, got {profile!r}")
        if profile == "smoke":
            return [(f"{self.path} [quick]", self.tables["quick"]),
                    (f"{self.path} [smoke]", self.tables.get("smoke", {}))]
        return [(f"{self.path} [{profile}]", self.tables[profile])]

    def params(self, profile: str) -> Any:
        """The kind's parameters for ``profile`` (defaults overridden by the profile's table)."""
        return parse_params(get_kind(self.kind).params_type, *self._layers(profile))

    def resolved(self, profile: str, device: str = "cpu") -> dict:
        """Experiment fields, profile and fully resolved parameters: what determines the numbers."""
        kind = get_kind(self.kind)
        out = {"experiment": {"name": self.name, "kind": self.kind, "claim": self.claim,
                              "figure": self.figure, "title": self.title, "seed": self.seed},
               "profile": profile, "kind_version": kind.version,
               "params": _jsonable(dataclasses.asdict(self.params(profile)))}
        if kind.uses_device:
            out["device"] = device
        return out

    def config_hash(self, profile: str, device: str = "cpu") -> str:
        """SHA-256 of :meth:`resolved` (canonical JSON). The sntheory commit is not part of it:
        a finished result is reused until its configuration or its kind's version changes."""
        text = json.dumps(self.resolved(profile, device), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def command(self, profile: str) -> str:
        return f"sntheory report --profile {profile} --only {self.name}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate one config file (tables, keys, types, the kind and every profile)."""
    path = Path(path)
    data = read_toml(path)
    allowed = ("experiment", "quick", "full", "smoke")
    if "experiment" not in data:
        raise ValueError(f"{path}: not a `sntheory report` experiment config: it has no "
                         f"[experiment] table (found {sorted(data)}). Every "
                         f"experiments/<name>/config.toml needs [experiment], [full] and [quick] "
                         f"(see sntheory/report/experiments.py); a config for another command "
                         f"belongs in a file of another name")
    for key in data:
        if key not in allowed:
            raise ValueError(f"{path}: unknown top-level key or table {key!r}; allowed tables: "
                             f"{list(allowed)}")
    for key in ("experiment", "quick", "full"):
        if key not in data:
            raise ValueError(f"{path}: missing table [{key}] (an empty [{key}] table means the "
                             f"kind's defaults)")
    for key in allowed:
        if key in data and not isinstance(data[key], dict):
            raise TypeError(f"{path}: `{key}` must be a table ([{key}]), got {data[key]!r}")
    exp = data["experiment"]
    for key in exp:
        if key not in _EXPERIMENT_FIELDS:
            raise ValueError(f"{path} [experiment]: unknown key {key!r}; allowed keys: "
                             f"{list(_EXPERIMENT_FIELDS)}")
    fields = {}
    for key, tp in _EXPERIMENT_FIELDS.items():
        if key not in exp:
            raise ValueError(f"{path} [experiment]: missing key {key!r} ({_type_name(tp)})")
        fields[key] = _convert(exp[key], tp, f"{path} [experiment]: `{key}`")
    if fields["name"] != path.parent.name:
        raise ValueError(f"{path} [experiment]: `name` must equal the folder name "
                         f"{path.parent.name!r}, got {fields['name']!r}")
    if fields["seed"] < 0:
        raise ValueError(f"{path} [experiment]: `seed` must be an integer >= 0, got "
                         f"{fields['seed']!r}")
    if not fields["claim"].strip():
        raise ValueError(f"{path} [experiment]: `claim` must be a non-empty label such as 'T2'")
    header = "\n".join(line for line in _leading_comments(path))
    config = ExperimentConfig(path=path, tables={k: data[k] for k in allowed[1:] if k in data},
                              header=header, **fields)
    for profile in PROFILES:           # every profile must parse now, not halfway through a run
        config.params(profile)
    return config


def _leading_comments(path: Path) -> list[str]:
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            lines.append(line.lstrip("#").strip())
        elif line.strip():
            break
    return lines


# ---- verdict logic ---------------------------------------------------------------------------

def verdict_counts(rows: Iterable[ClaimRow]) -> dict[str, int]:
    """Rows per verdict, all four verdicts present (0 when absent)."""
    counts = {v.value: 0 for v in Verdict}
    for row in rows:
        counts[row.verdict] += 1
    return counts


def overall_verdict(rows: Iterable[ClaimRow]) -> Verdict:
    """VIOLATED if any in-hypothesis row is, else INCONCLUSIVE if any is, else HOLDS; rows that
    are all negative controls give OUTSIDE-HYPOTHESES; no rows at all give INCONCLUSIVE."""
    rows = list(rows)
    inside = [r.verdict for r in rows if r.hypotheses_hold]
    if not rows:
        return Verdict.INCONCLUSIVE
    if not inside:
        return Verdict.OUTSIDE_HYPOTHESES
    if Verdict.VIOLATED.value in inside:
        return Verdict.VIOLATED
    if Verdict.INCONCLUSIVE.value in inside:
        return Verdict.INCONCLUSIVE
    return Verdict.HOLDS


def deterministic_verdict(measured: float, bound: float, direction: str = "upper", *,
                          rel_tol: float = 1e-9, abs_tol: float = 0.0,
                          hypotheses_hold: bool = True) -> tuple[Verdict, str]:
    """Verdict of an exactly computed quantity against its bound; returns ``(verdict, observed)``.

    Beyond the bound by more than ``rel_tol |bound| + abs_tol`` (the round-off allowance) is
    ``bound-fails``; otherwise ``bound-holds``. Inside the hypotheses that is VIOLATED / HOLDS;
    outside, OUTSIDE-HYPOTHESES with the observation. A NaN or infinite ``measured`` is an error,
    not a verdict.
    """
    if direction not in ("upper", "lower"):
        raise ValueError(f"`direction` must be 'upper' or 'lower', got {direction!r}")
    for name, value in (("measured", measured), ("bound", bound)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
            raise ValueError(f"`{name}` must be a real number, got {value!r}")
    if not math.isfinite(measured):
        raise ValueError(f"`measured` must be finite, got {measured!r}")
    if rel_tol < 0 or abs_tol < 0:
        raise ValueError(f"`rel_tol` and `abs_tol` must be >= 0, got {rel_tol!r}, {abs_tol!r}")
    allowance = rel_tol * abs(bound) + abs_tol
    gap = measured - bound if direction == "upper" else bound - measured
    observed = "bound-fails" if gap > allowance else "bound-holds"
    if not hypotheses_hold:
        return Verdict.OUTSIDE_HYPOTHESES, observed
    return (Verdict.VIOLATED if observed == "bound-fails" else Verdict.HOLDS), observed


_OBSERVED_FROM_VERDICT = {"VIOLATED": "bound-fails", "HOLDS": "bound-holds",
                          "INCONCLUSIVE": "undecided"}


def row_from_check(check: Mapping[str, Any], *, claim: str, experiment: str, setting: str,
                   hypotheses: str, statement: str | None = None,
                   control_reason: str | None = None, interval: bool = True,
                   extra: Mapping[str, Any] | None = None) -> ClaimRow:
    """A :class:`ClaimRow` from a decided check (``BoundCheck.to_json()``).

    ``control_reason``: this check belongs to a negative control whose hypotheses fail for the
    given reason (e.g. a deliberately broken normaliser) even though the check itself was decided
    as in-hypothesis; the row becomes OUTSIDE-HYPOTHESES and keeps what was observed.
    ``interval=False`` drops the CI. ``note`` says why a row is outside its hypotheses;
    ``extra["observed"]`` what was seen (bound-holds / bound-fails / undecided).
    """
    verdict = check["verdict"]
    if verdict is None:
        raise ValueError(f"check {check.get('name')!r} of {experiment} {setting!r} has no verdict "
                         f"yet: run assign_verdicts first")
    observed = check.get("observed") or _OBSERVED_FROM_VERDICT.get(verdict, "undecided")
    inside = bool(check["in_hypotheses"]) and control_reason is None
    notes = []
    if not check["in_hypotheses"]:
        notes.append(check.get("hypothesis_note") or "outside the hypotheses")
    if control_reason:
        notes.append(control_reason)
    estimate, bound = float(check["estimate"]), float(check["bound"])
    slack = relative_slack(estimate, bound, check["direction"])
    return ClaimRow(
        claim=claim, experiment=experiment, setting=setting,
        statement=statement if statement is not None else check["statement"],
        hypotheses=hypotheses, bound=bound, measured=estimate,
        ci_low=float(check["ci_low"]) if interval and check["se"] > 0 else None,
        ci_high=float(check["ci_high"]) if interval and check["se"] > 0 else None,
        slack=slack if math.isfinite(slack) else None,
        verdict=verdict if inside else Verdict.OUTSIDE_HYPOTHESES.value,
        hypotheses_hold=inside, note="; ".join(notes),
        extra={"check": check["name"], "direction": check["direction"], "observed": observed,
               "p_violation": check["p_violation"], "p_holds": check["p_holds"],
               **(dict(extra) if extra else {})})
