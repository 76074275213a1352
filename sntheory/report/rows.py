"""One row of a bound-versus-measurement table: the currency every experiment hands the report.

Every claim (T2, T3, R, P1, P2, T1, P3) and every plug-in battery reduces its results to
:class:`ClaimRow` objects; the report renders them (Markdown, HTML) and counts verdicts. The verdict
vocabulary is :class:`sntheory.monte_carlo.verdicts.Verdict`: HOLDS, VIOLATED, INCONCLUSIVE,
OUTSIDE-HYPOTHESES (negative controls: shown, never counted as failures).

``slack`` is the relative margin by which the measurement sits inside its bound:
``(bound - measured) / |bound|`` for an upper bound, ``(measured - bound) / |bound|`` for a lower
bound, so a positive slack means "inside" and a negative one "beyond the bound".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..monte_carlo.verdicts import Verdict

__all__ = ["ClaimRow", "relative_slack"]


def relative_slack(measured: float, bound: float, direction: str = "upper") -> float:
    """``(bound - measured)/|bound|`` (upper) or ``(measured - bound)/|bound|`` (lower)."""
    if direction not in ("upper", "lower"):
        raise ValueError(f"`direction` must be 'upper' or 'lower', got {direction!r}")
    if bound == 0 or not math.isfinite(bound):
        return math.nan
    gap = bound - measured if direction == "upper" else measured - bound
    return gap / abs(bound)


@dataclass(frozen=True)
class ClaimRow:
    """One checked statement: what was claimed, under which hypotheses, where, and what we saw."""

    claim: str                  # THEORY.md id: "T2", "T3", "R", "P1", "P2", "T1", "P3", "plugin"
    experiment: str             # experiments/<name>
    setting: str                # e.g. "gaussian 64x32", "layer 3 (conv4x4/s2), step 500, real"
    statement: str              # the inequality, e.g. "Var <= 1/max{m,n}"
    hypotheses: str             # the hypotheses in force, e.g. "i.i.d. entries, E w^4 < inf"
    bound: float | None         # numeric bound (None when the claim is an identity / trend)
    measured: float             # point estimate or worst probe value
    ci_low: float | None = None
    ci_high: float | None = None
    slack: float | None = None  # see module docstring; positive = inside the bound
    verdict: str = Verdict.INCONCLUSIVE.value
    hypotheses_hold: bool = True
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = {v.value for v in Verdict}
        verdict = self.verdict.value if isinstance(self.verdict, Verdict) else self.verdict
        if verdict not in allowed:
            raise ValueError(f"`verdict` must be one of {sorted(allowed)}, got {self.verdict!r}")
        object.__setattr__(self, "verdict", verdict)
        if not self.hypotheses_hold and verdict not in (Verdict.OUTSIDE_HYPOTHESES.value,):
            raise ValueError(f"a row whose hypotheses do not hold must be OUTSIDE-HYPOTHESES, "
                             f"got {verdict!r} for {self.claim} {self.setting!r}")

    @property
    def counts_as_failure(self) -> bool:
        return self.verdict == Verdict.VIOLATED.value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ClaimRow":
        return cls(**data)
