"""Verdicts for bound checks, with family-wise error control over a whole sweep.

A :class:`BoundCheck` compares a Monte Carlo estimate with a bound (``quantity <= bound`` for an
upper bound, ``>=`` for a lower bound). Each check yields two one-sided p-values:

* ``p_violation`` tests H0 "the bound holds" — small when the estimate sits significantly on the
  wrong side of the bound (beyond a relative round-off allowance ``rel_tol``);
* ``p_holds`` tests H0 "the bound fails" — small when the estimate sits significantly on the
  right side of the bound (again up to ``rel_tol``: a bound met with equality, as by a ``1 x n``
  matrix, HOLDS).

:func:`assign_verdicts` applies Holm's step-down procedure to each family over all in-hypothesis
checks of a sweep, so the probability of calling any true bound VIOLATED is at most ``alpha`` for
the whole sweep (Holm 1979; valid under any dependence), and every HOLDS is simultaneously
confident at the same level. What neither procedure decides is INCONCLUSIVE.

Checks whose hypotheses are not met (heavy tails, too-small shapes, deliberately broken
normalizers) get OUTSIDE-HYPOTHESES — shown, never counted as failures — together with what was
observed (``bound-holds`` / ``bound-fails`` / ``undecided``), decided by the same machinery on
their own family.

A check with zero standard error (a deterministic quantity) is decided by direct comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Sequence

import numpy as np
from scipy import stats

from .estimators import Estimate

__all__ = ["Verdict", "BoundCheck", "holm_reject", "assign_verdicts"]


class Verdict(str, Enum):
    HOLDS = "HOLDS"
    VIOLATED = "VIOLATED"
    INCONCLUSIVE = "INCONCLUSIVE"
    OUTSIDE_HYPOTHESES = "OUTSIDE-HYPOTHESES"

    def __str__(self) -> str:  # print the value, not "Verdict.HOLDS"
        return self.value


@dataclass
class BoundCheck:
    """One inequality between a measured quantity and its bound."""

    name: str                    # short id, e.g. "upper"
    statement: str               # human form, e.g. "Var <= 1/max{m,n}"
    direction: str               # "upper" (quantity <= bound) or "lower" (quantity >= bound)
    estimate: Estimate
    bound: float
    in_hypotheses: bool = True
    hypothesis_note: str = ""    # why it is outside the hypotheses, when it is
    rel_tol: float = 1e-12       # round-off allowance relative to |bound|
    verdict: Verdict | None = None
    observed: str | None = None  # for OUTSIDE-HYPOTHESES: bound-holds / bound-fails / undecided
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in ("upper", "lower"):
            raise ValueError(f"`direction` must be 'upper' or 'lower', got {self.direction!r}")

    def _signed_gap(self, with_tolerance: bool) -> float:
        """Positive when the estimate is on the wrong side of the bound."""
        allowance = self.rel_tol * abs(self.bound) if with_tolerance else 0.0
        if self.direction == "upper":
            return self.estimate.value - (self.bound + allowance)
        return (self.bound - allowance) - self.estimate.value

    def p_violation(self) -> float:
        gap = self._signed_gap(with_tolerance=True)
        if self.estimate.se == 0:
            return 0.0 if gap > 0 else 1.0
        return float(stats.t.sf(gap / self.estimate.se, self.estimate.df))

    def p_holds(self) -> float:
        gap = self._signed_gap(with_tolerance=True)
        if self.estimate.se == 0:
            return 0.0 if gap <= 0 else 1.0
        return float(stats.t.cdf(gap / self.estimate.se, self.estimate.df))

    @property
    def slack(self) -> float:
        """Distance from the estimate to the bound, positive on the safe side."""
        return -self._signed_gap(with_tolerance=False)

    def to_json(self) -> dict:
        low, high = self.estimate.ci(0.95)
        return {
            "name": self.name, "statement": self.statement, "direction": self.direction,
            "bound": self.bound, "estimate": self.estimate.value, "se": self.estimate.se,
            "ci_low": low, "ci_high": high, "slack": self.slack,
            "p_violation": self.p_violation(), "p_holds": self.p_holds(),
            "in_hypotheses": self.in_hypotheses, "hypothesis_note": self.hypothesis_note,
            "verdict": str(self.verdict) if self.verdict else None, "observed": self.observed,
            **self.extra,
        }


def holm_reject(p_values: Sequence[float], alpha: float) -> np.ndarray:
    """Holm's step-down procedure: which null hypotheses are rejected at family-wise ``alpha``."""
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    reject = np.zeros(k, dtype=bool)
    for rank, idx in enumerate(np.argsort(p, kind="stable")):
        if p[idx] > alpha / (k - rank):
            break
        reject[idx] = True
    return reject


def assign_verdicts(checks: Sequence[BoundCheck], alpha: float = 0.05) -> None:
    """Set ``verdict`` (and ``observed``) on every check, with Holm control per family."""
    if not 0 < alpha < 1:
        raise ValueError(f"`alpha` must be in (0, 1), got {alpha!r}")
    for in_hyp in (True, False):
        family = [c for c in checks if c.in_hypotheses == in_hyp]
        if not family:
            continue
        violated = holm_reject([c.p_violation() for c in family], alpha)
        holds = holm_reject([c.p_holds() for c in family], alpha)
        for check, v, h in zip(family, violated, holds):
            outcome = "bound-fails" if v else ("bound-holds" if h else "undecided")
            if in_hyp:
                check.verdict = (Verdict.VIOLATED if v else
                                 Verdict.HOLDS if h else Verdict.INCONCLUSIVE)
                check.observed = outcome
            else:
                check.verdict = Verdict.OUTSIDE_HYPOTHESES
                check.observed = outcome
