"""Pieces every claim shares: shape parsing, the case verdict, and sweep-level records."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from ..monte_carlo.verdicts import BoundCheck, Verdict

__all__ = ["parse_shapes", "case_verdict"]

_SHAPE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_shapes(text: str | Iterable, *, name: str = "shapes") -> list[tuple[int, int]]:
    """Parse ``"8x8,64x32"`` (or a list of pairs) into ``[(8, 8), (64, 32)]``.

    Every entry must be ``MxN`` with positive integers; an error names the offending entry.
    """
    if isinstance(text, str):
        entries = [e for e in text.split(",")]
        if not text.strip():
            raise ValueError(f"`{name}` must list at least one shape such as '8x8', got {text!r}")
        shapes = []
        for entry in entries:
            match = _SHAPE.match(entry)
            if not match:
                raise ValueError(f"`{name}` entry {entry.strip()!r} is malformed: each shape must "
                                 f"be MxN with positive integers, as in '64x32'")
            m, n = int(match.group(1)), int(match.group(2))
            if m <= 0 or n <= 0:
                raise ValueError(f"`{name}` entry {entry.strip()!r} is not positive: m and n must "
                                 f"be >= 1")
            shapes.append((m, n))
        return shapes
    shapes = []
    for entry in text:
        try:
            m, n = entry
        except (TypeError, ValueError):
            raise ValueError(f"`{name}` entry {entry!r} is malformed: expected a pair (m, n)") from None
        if isinstance(m, bool) or isinstance(n, bool) or int(m) != m or int(n) != n:
            raise ValueError(f"`{name}` entry {entry!r} is malformed: m and n must be integers")
        if m <= 0 or n <= 0:
            raise ValueError(f"`{name}` entry {entry!r} is not positive: m and n must be >= 1")
        shapes.append((int(m), int(n)))
    if not shapes:
        raise ValueError(f"`{name}` must list at least one shape")
    return shapes


def case_verdict(checks: Sequence[BoundCheck]) -> Verdict:
    """VIOLATED if any in-hypothesis check is; else INCONCLUSIVE if any is; else HOLDS.

    A case whose every check is outside its hypotheses is OUTSIDE-HYPOTHESES.
    """
    inside = [c.verdict for c in checks if c.in_hypotheses]
    if not inside:
        return Verdict.OUTSIDE_HYPOTHESES
    if Verdict.VIOLATED in inside:
        return Verdict.VIOLATED
    if Verdict.INCONCLUSIVE in inside:
        return Verdict.INCONCLUSIVE
    return Verdict.HOLDS
