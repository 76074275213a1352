"""Ensembles of random matrices and conv kernels, drawn from explicitly seeded streams.

Randomness is passed in: every sampler takes a ``numpy.random.Generator``. Streams come from
:func:`block_generator`, which derives one independent ``SeedSequence`` child per
``(seed, case, block)`` triple. Because a block's stream depends only on that triple, a Monte Carlo
result is bitwise identical however the blocks are grouped into work units or spread over workers.

Distributions (entries i.i.d.; all scales are irrelevant after normalisation):

========================  ==========  =========  ==============  ===============================
name                      symmetric   mean zero  finite 4th mom  role
========================  ==========  =========  ==============  ===============================
``gaussian``              yes         yes        yes             Thm 2/3 hypotheses
``uniform``               yes         yes        yes             Thm 2/3 hypotheses (U(-1, 1))
``rademacher``            yes         yes        yes             outside the paper's lower bound
``student-t:<dof>``       yes         dof > 1    dof > 4         heavy-tailed negative control
``cauchy``                yes         no mean    no              heavy-tailed negative control
``exponential``           no          no         yes             non-symmetric, non-centred
``shifted-exponential``   no          yes        yes             Exp(1) - 1: non-symmetric only
========================  ==========  =========  ==============  ===============================
"""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ._validation import require_positive_int

__all__ = [
    "Distribution",
    "parse_distribution",
    "DISTRIBUTION_NAMES",
    "sample_matrices",
    "sample_kernels",
    "case_spawn_key",
    "block_generator",
    "scratch",
]


@dataclass(frozen=True)
class Distribution:
    """An entry distribution and the properties the theorems' hypotheses refer to."""

    name: str                 # canonical spec, e.g. "student-t:3"
    symmetric: bool           # X and -X have the same law (Thm 2/3 hypothesis)
    mean_zero: bool           # E X = 0 (and the mean exists)
    finite_fourth_moment: bool  # needed by the Bai-Yin law
    in_lower_bound_hypothesis: bool  # Gaussian or uniform: the paper's lower-bound hypothesis
    dof: float | None = None  # Student-t degrees of freedom

    def sample(self, rng: np.random.Generator, shape: Sequence[int],
               dtype: type = np.float64, *, reuse: bool = False) -> np.ndarray:
        """Draw an array of i.i.d. entries of the given shape.

        ``reuse=True`` fills this thread's scratch buffer (see :func:`scratch`) where the law allows
        it (Gaussian, uniform, exponential): the same numbers, without a fresh allocation and its
        page faults. The result is then overwritten by the next such call in the thread.
        """
        base = self.name.split(":")[0]
        if reuse and base in ("gaussian", "uniform", "exponential", "shifted-exponential"):
            buffer = scratch(shape, dtype)
            if base == "gaussian":
                return rng.standard_normal(dtype=dtype, out=buffer)
            if base == "uniform":
                rng.random(dtype=dtype, out=buffer)
                buffer *= 2
                buffer -= 1
                return buffer
            rng.standard_exponential(dtype=dtype, out=buffer)
            if base == "shifted-exponential":
                buffer -= 1
            return buffer
        if base == "gaussian":
            return rng.standard_normal(shape, dtype=dtype)
        if base == "uniform":
            out = rng.random(shape, dtype=dtype)
            out *= 2
            out -= 1
            return out
        if base == "rademacher":
            # one random bit per entry; 2*b - 1 in {-1, +1}
            bits = rng.integers(0, 2, size=shape, dtype=np.int8)
            return (2 * bits - 1).astype(dtype)
        if base == "cauchy":
            return rng.standard_cauchy(shape).astype(dtype, copy=False)
        if base == "student-t":
            return rng.standard_t(self.dof, shape).astype(dtype, copy=False)
        if base == "exponential":
            return rng.standard_exponential(shape, dtype=dtype)
        if base == "shifted-exponential":
            out = rng.standard_exponential(shape, dtype=dtype)
            out -= 1
            return out
        raise AssertionError(f"unhandled distribution {self.name!r}")  # parse_distribution guards


_SCRATCH = threading.local()


def scratch(shape: Sequence[int], dtype: type = np.float64) -> np.ndarray:
    """This thread's reusable buffer of ``shape`` (only the most recent shape is kept)."""
    shape = tuple(int(s) for s in shape)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.shape != shape or buffer.dtype != np.dtype(dtype):
        buffer = np.empty(shape, dtype=dtype)
        _SCRATCH.buffer = buffer
    return buffer


DISTRIBUTION_NAMES = ("gaussian", "uniform", "rademacher", "cauchy", "student-t:<dof>",
                      "exponential", "shifted-exponential")


def parse_distribution(spec: str | Distribution) -> Distribution:
    """Parse a distribution name such as ``"gaussian"`` or ``"student-t:2.5"``.

    Raises ``ValueError`` naming the argument and listing the accepted names.
    """
    if isinstance(spec, Distribution):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"`dist` must be a string such as 'gaussian', got {spec!r}")
    text = spec.strip().lower()
    fixed = {
        "gaussian": Distribution("gaussian", True, True, True, True),
        "normal": Distribution("gaussian", True, True, True, True),
        "uniform": Distribution("uniform", True, True, True, True),
        "rademacher": Distribution("rademacher", True, True, True, False),
        "cauchy": Distribution("cauchy", True, False, False, False),
        "exponential": Distribution("exponential", False, False, True, False),
        "shifted-exponential": Distribution("shifted-exponential", False, True, True, False),
    }
    if text in fixed:
        return fixed[text]
    if text.startswith("student-t:") or text.startswith("t:"):
        raw = text.split(":", 1)[1]
        try:
            dof = float(raw)
        except ValueError:
            raise ValueError(f"`dist` {spec!r}: the Student-t degrees of freedom must be a "
                             f"number > 0, as in 'student-t:3', got {raw!r}") from None
        if not np.isfinite(dof) or dof <= 0:
            raise ValueError(f"`dist` {spec!r}: the Student-t degrees of freedom must be a "
                             f"finite number > 0, got {dof}")
        name = f"student-t:{dof:g}"
        return Distribution(name, True, dof > 1, dof > 4, False, dof=dof)
    raise ValueError(f"`dist` must be one of {', '.join(DISTRIBUTION_NAMES)}; got {spec!r}")


def sample_matrices(dist: str | Distribution, m: int, n: int, count: int,
                    rng: np.random.Generator, dtype: type = np.float64) -> np.ndarray:
    """Draw ``count`` random ``m x n`` matrices with i.i.d. entries: shape ``(count, m, n)``."""
    m = require_positive_int("m", m)
    n = require_positive_int("n", n)
    count = require_positive_int("count", count)
    return parse_distribution(dist).sample(rng, (count, m, n), dtype)


def sample_kernels(dist: str | Distribution, c_out: int, c_in: int, kh: int, kw: int, count: int,
                   rng: np.random.Generator, dtype: type = np.float64) -> np.ndarray:
    """Draw ``count`` random conv kernels: shape ``(count, c_out, c_in, kh, kw)``."""
    dims = [require_positive_int(name, v) for name, v in
            (("c_out", c_out), ("c_in", c_in), ("kh", kh), ("kw", kw), ("count", count))]
    c_out, c_in, kh, kw, count = dims
    return parse_distribution(dist).sample(rng, (count, c_out, c_in, kh, kw), dtype)


def case_spawn_key(params: Mapping) -> tuple[int, ...]:
    """A stable 128-bit key (four uint32 words) for a case's parameters.

    Computed from canonical JSON with SHA-256, so it is the same in every process, on every
    machine and in every Python version (unlike ``hash()``).
    """
    blob = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(blob).digest()
    return tuple(int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4))


def block_generator(seed: int, case_key: Sequence[int], block: int) -> np.random.Generator:
    """The independent random stream of one block of one case.

    ``SeedSequence(seed, spawn_key=(*case_key, block))`` is exactly the child that
    ``SeedSequence(seed).spawn`` would produce along that path, so streams of different cases and
    blocks are independent in the sense numpy guarantees for spawned sequences.
    """
    seed = require_positive_int("seed", seed, minimum=0)
    block = require_positive_int("block", block, minimum=0)
    sequence = np.random.SeedSequence(seed, spawn_key=(*case_key, block))
    return np.random.Generator(np.random.PCG64(sequence))
