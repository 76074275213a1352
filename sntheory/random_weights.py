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

Gaussian entries in float64 from a ``PCG64`` stream (every block stream is one) are drawn by a
compiled copy of numpy's own algorithm, :func:`fill_standard_normal`: bit for bit the numbers
``Generator.standard_normal`` gives, and the generator is left in the same state, about three
times faster (measured, one core: 12 ms against 39 ms for the 4M numbers of a 4096 x 1024 matrix).
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

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
    "fill_standard_normal",
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
                if fill_standard_normal(rng, buffer):
                    return buffer
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
            if dtype == np.float64:
                out = np.empty(shape)
                if fill_standard_normal(rng, out):
                    return out
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


# --------------------------------------------------------------------------------------------
# Exact compiled copy of Generator.standard_normal (float64) for PCG64 streams
# --------------------------------------------------------------------------------------------
# numpy's Gaussian sampler is the 256-layer ziggurat of Marsaglia & Tsang in numpy's variant
# (numpy/random/src/distributions/distributions.c): one 64-bit draw r gives the layer
# idx = r & 0xff, the sign bit (r >> 8) & 1 and a 52-bit magnitude rabs = (r >> 9) & (2^52 - 1);
# x = +-rabs * wi[idx] is returned when rabs < ki[idx] (99% of draws), otherwise the wedge test
# (one more draw, one exp) or, in layer 0, the tail x = r + xx (two draws per attempt, log1p).
# The tables are numpy's ziggurat_constants.h; numba ships the same tables for its own
# Generator support and they are read from there.  PCG64 (XSL-RR 128/64): the state s advances
# by s <- s * MULT + inc (mod 2^128), then the output is rotr64(hi(s) ^ lo(s), hi(s) >> 58).
# The kernel below does these steps with native 128-bit integer arithmetic and a branch-free
# sign, and is checked against numpy bit for bit (here at first use, thoroughly in the tests).
_PCG64_MULT = 0x2360ED051FC65DA44385DF649FCCF645
_U64 = (1 << 64) - 1

try:
    from numba.np.random import _constants as _zig
    _ZIG_TABLES = (np.ascontiguousarray(_zig.ki_double, dtype=np.uint64),
                   np.ascontiguousarray(_zig.wi_double, dtype=np.float64),
                   np.ascontiguousarray(_zig.fi_double, dtype=np.float64))
    _ZIG_R = float(_zig.ziggurat_nor_r)
    _ZIG_INV_R = float(_zig.ziggurat_nor_inv_r)
except (ImportError, AttributeError):       # an older/newer numba without the tables
    _ZIG_TABLES = None
    _ZIG_R = _ZIG_INV_R = 0.0


@intrinsic
def _pcg64_step(typingctx, hi, lo, inc_hi, inc_lo):
    """(hi, lo) <- (hi * 2^64 + lo) * MULT + (inc_hi * 2^64 + inc_lo) mod 2^128."""
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64, types.uint64,
                                          types.uint64)

    def codegen(context, builder, signature, args):
        i128 = ir.IntType(128)
        i64 = ir.IntType(64)
        shift = ir.Constant(i128, 64)
        h, lo_, ih, il = [builder.zext(a, i128) for a in args]
        state = builder.or_(builder.shl(h, shift), lo_)
        inc = builder.or_(builder.shl(ih, shift), il)
        new = builder.add(builder.mul(state, ir.Constant(i128, _PCG64_MULT)), inc)
        return context.make_tuple(builder, signature.return_type,
                                  [builder.trunc(builder.lshr(new, shift), i64),
                                   builder.trunc(new, i64)])
    return sig, codegen


@njit(cache=True, inline="always")
def _pcg64_output(hi, lo):
    """XSL-RR output of the 128-bit state (hi, lo)."""
    x = hi ^ lo
    rot = hi >> np.uint64(58)
    return (x >> rot) | (x << ((np.uint64(64) - rot) & np.uint64(63)))


@njit(cache=True, inline="always")
def _pcg64_double(hi, lo, inc_hi, inc_lo):
    """One uniform double in [0, 1) as numpy's next_double: (next_uint64 >> 11) * 2^-53."""
    hi, lo = _pcg64_step(hi, lo, inc_hi, inc_lo)
    return hi, lo, float(_pcg64_output(hi, lo) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _standard_normal_kernel(state, out, ki, wi, fi, r_tail, inv_r_tail):
    """Fill the flat float64 array ``out`` as numpy's random_standard_normal_fill does.

    ``state`` = [state_hi, state_lo, inc_hi, inc_lo] of the PCG64 stream; updated in place."""
    hi = state[0]
    lo = state[1]
    inc_hi = state[2]
    inc_lo = state[3]
    mask52 = np.uint64(0x000FFFFFFFFFFFFF)
    for i in range(out.size):
        while True:
            hi, lo = _pcg64_step(hi, lo, inc_hi, inc_lo)
            r = _pcg64_output(hi, lo)
            idx = r & np.uint64(0xFF)
            rabs = (r >> np.uint64(9)) & mask52
            sign = 1.0 - 2.0 * float((r >> np.uint64(8)) & np.uint64(1))   # exact +-1
            x = float(rabs) * wi[idx] * sign
            if rabs < ki[idx]:
                break
            if idx == 0:
                while True:
                    hi, lo, u1 = _pcg64_double(hi, lo, inc_hi, inc_lo)
                    xx = -inv_r_tail * math.log1p(-u1)
                    hi, lo, u2 = _pcg64_double(hi, lo, inc_hi, inc_lo)
                    yy = -math.log1p(-u2)
                    if yy + yy > xx * xx:
                        break
                if (rabs >> np.uint64(8)) & np.uint64(1):
                    x = -(r_tail + xx)
                else:
                    x = r_tail + xx
                break
            hi, lo, u = _pcg64_double(hi, lo, inc_hi, inc_lo)
            if (fi[idx - 1] - fi[idx]) * u + fi[idx] < math.exp(-0.5 * x * x):
                break
        out[i] = x
    state[0] = hi
    state[1] = lo


_FAST_NORMAL = {"checked": False, "ok": False}


def _run_standard_normal_kernel(bit_generator, flat: np.ndarray) -> None:
    with bit_generator.lock:
        full = bit_generator.state
        st = full["state"]
        words = np.array([st["state"] >> 64, st["state"] & _U64, st["inc"] >> 64,
                          st["inc"] & _U64], dtype=np.uint64)
        _standard_normal_kernel(words, flat, *_ZIG_TABLES, _ZIG_R, _ZIG_INV_R)
        full["state"] = {"state": (int(words[0]) << 64) | int(words[1]), "inc": st["inc"]}
        bit_generator.state = full


def _fast_normal_available() -> bool:
    """First use in a process: check the compiled sampler against numpy bit for bit (a few
    thousand draws, ~1 ms once the kernel is compiled or loaded from numba's cache).  A mismatch
    (a numpy release that changed its algorithm or tables) turns the fast path off."""
    if not _FAST_NORMAL["checked"]:
        _FAST_NORMAL["checked"] = True
        if _ZIG_TABLES is not None:
            ref_gen = np.random.Generator(np.random.PCG64(20240601))
            ours = np.random.PCG64(20240601)
            want = ref_gen.standard_normal(20000)
            got = np.empty(20000)
            _run_standard_normal_kernel(ours, got)
            _FAST_NORMAL["ok"] = (np.array_equal(got, want)
                                  and ours.state == ref_gen.bit_generator.state)
        if not _FAST_NORMAL["ok"]:
            warnings.warn("sntheory.random_weights: the compiled Gaussian sampler does not "
                          "reproduce this numpy's Generator.standard_normal; using numpy's "
                          "(same numbers, slower)", RuntimeWarning, stacklevel=3)
    return _FAST_NORMAL["ok"]


def fill_standard_normal(rng: np.random.Generator, out: np.ndarray) -> bool:
    """Fill ``out`` with exactly the numbers ``rng.standard_normal(out=out)`` would give.

    Applies to a C-contiguous float64 ``out`` and a generator whose bit generator is exactly
    ``numpy.random.PCG64`` (as every :func:`block_generator` stream is); the generator is then
    advanced exactly as numpy would advance it, and True is returned.  Otherwise nothing is
    drawn and False is returned (call ``rng.standard_normal`` then).  Thread-safe like numpy's
    method: the bit generator's lock is held while drawing.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {type(rng).__name__}")
    if not isinstance(out, np.ndarray):
        raise TypeError(f"`out` must be a numpy array, got {type(out).__name__}")
    if (type(rng.bit_generator) is not np.random.PCG64 or out.dtype != np.float64
            or not out.flags.c_contiguous or not out.flags.writeable):
        return False
    if out.size == 0:
        return True
    if not _fast_normal_available():
        return False
    _run_standard_normal_kernel(rng.bit_generator, out.reshape(-1))
    return True


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
