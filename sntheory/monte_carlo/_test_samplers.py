"""Synthetic samplers with known answers, for the engine's tests.

They live in the package (not under ``tests/``) because pool workers are started with the 'spawn'
method and import a sampler by its path ``"module:function"`` from a fresh interpreter.

Every sampler follows the engine's contract ``sampler(params, rng, count) -> (count, k) array``.
Optional parameters shared by all of them:

* ``"log"``: a file path; one line ``"<count>\\n"`` is appended per call, so a test can count how
  many blocks were computed (the path is part of the case's parameters, hence of its key);
* ``"sleep"``: seconds to sleep per call, so a test can kill a sweep part way.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["normal", "exponential", "bernoulli", "uniform", "ratio_pair", "constant"]


def _side_effects(params: dict, count: int) -> None:
    log = params.get("log")
    if log:
        with open(log, "a") as handle:
            handle.write(f"{count}\n")
    pause = params.get("sleep", 0)
    if pause:
        time.sleep(float(pause))


def normal(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """One statistic ~ N(mu, sd^2)."""
    _side_effects(params, count)
    return (params["mu"] + params["sd"] * rng.standard_normal(count))[:, None]


def exponential(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """One statistic ~ Exp(mean = scale): skewed, mean = scale, variance = scale^2."""
    _side_effects(params, count)
    return (params["scale"] * rng.standard_exponential(count))[:, None]


def bernoulli(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """One statistic ~ Bernoulli(p) (0.0 / 1.0)."""
    _side_effects(params, count)
    return (rng.random(count) < params["p"]).astype(np.float64)[:, None]


def uniform(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """One statistic ~ U(low, high)."""
    _side_effects(params, count)
    return rng.uniform(params["low"], params["high"], count)[:, None]


def ratio_pair(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """Two correlated statistics (a, b): b ~ N(mu_b, 1), a = ratio * b + N(0, noise^2).

    E[a] / E[b] = ratio, a smooth function of two means (for delta-method estimates).
    """
    _side_effects(params, count)
    b = params["mu_b"] + rng.standard_normal(count)
    a = params["ratio"] * b + params["noise"] * rng.standard_normal(count)
    return np.column_stack([a, b])


def constant(params: dict, rng: np.random.Generator, count: int) -> np.ndarray:
    """A deterministic statistic equal to ``value`` (standard error 0)."""
    _side_effects(params, count)
    return np.full((count, 1), float(params["value"]))
