"""Mergeable sample moments and the confidence intervals built from them.

A :class:`Moments` holds the count, mean vector and co-moment matrix of per-sample statistic
vectors. Two of them merge exactly (Chan, Golub & LeVeque's pairwise update), so blocks computed
anywhere, in any order of arrival, combine into the same numbers when merged in block order.

Intervals are CLT intervals with Student-t quantiles on ``n - 1`` degrees of freedom (they widen
correctly at small ``n``). Smooth functions of several means use the delta method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from .._validation import require_positive_float

__all__ = ["Moments", "Estimate", "mean_estimate", "delta_estimate", "t_quantile"]


@dataclass(frozen=True)
class Moments:
    """Count, mean (k,) and co-moment matrix (k, k) = sum of outer products of deviations."""

    count: int
    mean: np.ndarray
    comoment: np.ndarray

    @staticmethod
    def from_samples(samples: np.ndarray) -> "Moments":
        """Moments of a ``(count, k)`` array of per-sample statistics."""
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[0] == 0:
            raise ValueError(f"`samples` must have shape (count >= 1, k), got {samples.shape}")
        if not np.isfinite(samples).all():
            raise ValueError("`samples` contains NaN or infinity: a statistic was not finite")
        mean = samples.mean(axis=0)
        centred = samples - mean
        return Moments(samples.shape[0], mean, centred.T @ centred)

    @staticmethod
    def empty(k: int) -> "Moments":
        return Moments(0, np.zeros(k), np.zeros((k, k)))

    def merge(self, other: "Moments") -> "Moments":
        """Exact pooled moments of the union of both sample sets."""
        if self.count == 0:
            return other
        if other.count == 0:
            return self
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / n)
        comoment = self.comoment + other.comoment + np.outer(delta, delta) * (
            self.count * other.count / n)
        return Moments(n, mean, comoment)

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased sample covariance of the statistics (``n - 1`` denominator)."""
        if self.count < 2:
            return np.full_like(self.comoment, np.nan)
        return self.comoment / (self.count - 1)

    def to_json(self) -> dict:
        return {"count": self.count, "mean": self.mean.tolist(),
                "comoment": self.comoment.tolist()}

    @staticmethod
    def from_json(data: dict) -> "Moments":
        return Moments(int(data["count"]), np.asarray(data["mean"], dtype=np.float64),
                       np.asarray(data["comoment"], dtype=np.float64))


def t_quantile(level: float, df: float) -> float:
    """Two-sided quantile ``t_{df}^{-1}((1 + level) / 2)``; the normal quantile when df is inf."""
    level = require_positive_float("level", level, maximum=1.0)
    q = (1 + level) / 2
    return float(stats.norm.ppf(q) if not np.isfinite(df) else stats.t.ppf(q, df))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and degrees of freedom."""

    value: float
    se: float
    df: float

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        """Two-sided ``level`` confidence interval (Student-t)."""
        if self.se == 0:
            return (self.value, self.value)
        half = t_quantile(level, self.df) * self.se
        return (self.value - half, self.value + half)

    def half_width(self, level: float = 0.95) -> float:
        low, high = self.ci(level)
        return (high - low) / 2

    def map(self, fn: Callable[[float], float], derivative: Callable[[float], float]) -> "Estimate":
        """Delta-method transform by a smooth function of one variable."""
        return Estimate(fn(self.value), abs(derivative(self.value)) * self.se, self.df)

    def scale(self, factor: float) -> "Estimate":
        return Estimate(self.value * factor, self.se * abs(factor), self.df)


def mean_estimate(moments: Moments, index: int) -> Estimate:
    """Estimate of the mean of statistic ``index``: sample mean, se = s / sqrt(n), df = n - 1."""
    n = moments.count
    if n < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {n}")
    variance = max(moments.comoment[index, index], 0.0) / (n - 1)
    return Estimate(float(moments.mean[index]), float(np.sqrt(variance / n)), float(n - 1))


def delta_estimate(moments: Moments, fn: Callable[[np.ndarray], float],
                   gradient: Callable[[np.ndarray], np.ndarray]) -> Estimate:
    """Delta-method estimate of ``fn(E[stats])``: se^2 = g^T Cov g / n with g = grad fn(mean)."""
    n = moments.count
    if n < 2:
        raise ValueError(f"need at least 2 samples for a standard error, got {n}")
    g = np.asarray(gradient(moments.mean), dtype=np.float64)
    variance = float(g @ moments.covariance @ g) / n
    return Estimate(float(fn(moments.mean)), float(np.sqrt(max(variance, 0.0))), float(n - 1))
