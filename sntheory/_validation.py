"""Argument checks shared by the public API.

Every error names the argument, shows its value and states the rule, in the style of
``torch.nn.utils.parametrize``: ``ValueError: `precision` must be > 0, got -0.1``.
User input is never checked with ``assert``.
"""
from __future__ import annotations

import numbers

import numpy as np


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def require_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {_show(value)} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {_show(value)}")
    return int(value)


def require_positive_float(name: str, value: object, *, maximum: float | None = None,
                           inclusive_max: bool = False) -> float:
    """Return ``value`` as a finite float > 0 (and < or <= ``maximum``), or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number > 0, got {_show(value)} "
                        f"of type {type(value).__name__}")
    x = float(value)
    if not np.isfinite(x) or x <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {_show(value)}")
    if maximum is not None:
        if inclusive_max and x > maximum:
            raise ValueError(f"`{name}` must be in (0, {maximum}], got {_show(value)}")
        if not inclusive_max and x >= maximum:
            raise ValueError(f"`{name}` must be in (0, {maximum}), got {_show(value)}")
    return x


def require_choice(name: str, value: object, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise listing the choices."""
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {sorted(choices)}, got {_show(value)}")
    return value  # type: ignore[return-value]


def require_finite_array(name: str, array: np.ndarray) -> None:
    """Raise if ``array`` holds NaN or infinity, naming the first offending index."""
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"`{name}` must be finite, but {name}[{', '.join(map(str, bad))}] = "
                         f"{array[bad]!r} (NaN and infinity have no spectral norm)")
