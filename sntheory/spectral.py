"""Largest singular value (spectral norm) of batches of real matrices, with error bounds.

>>> import numpy as np
>>> from sntheory.spectral import largest_singular_value
>>> a = np.random.default_rng(0).standard_normal((100, 64, 64))
>>> res = largest_singular_value(a, rtol=1e-10)
>>> res.sigma.shape, res.method
((100,), 'lanczos-gap')

Every path returns, per matrix, an estimate ``sigma`` of ``||A_k||_2 = sigma_1(A_k)`` and an
a-posteriori ``error_bound``; what the bound certifies depends on the path (see
:class:`TopSingularValue`).  Shapes: the input is ``(m, n)`` or ``(N, m, n)``; the outputs are
always ``(N,)`` arrays, ``N = 1`` for a 2-D input.  Results are deterministic, and a matrix's
result does not depend on the batch it comes in (bitwise).

Paths (``method=``)
-------------------
``"svd"``          reference: LAPACK SVD in float64 (``np.linalg.svd(compute_uv=False)``).
``"tiny"``         compiled kernel for a small side ``k = min(m, n)``: Gram matrix of the
                   small side, then repeated squaring with trace normalisation; yields a
                   rigorous two-sided bracket of sigma_1 (``sigma`` is its midpoint).
``"gram"``         batched Gram matrix of the small side + ``np.linalg.eigvalsh`` (LAPACK).
``"lanczos"``      compiled Lanczos with full reorthogonalisation on the implicit Gram
                   operator ``v -> A^T (A v)`` (one fused pass over the matrix per
                   iteration), fixed start vector, stopped when the *residual* bound
                   ``||B y - theta y||`` is below ``~2 rtol theta``.  Robust, but needs ~30-40%
                   more iterations than ``"lanczos-gap"``.
``"lanczos-gap"``  the same iteration stopped on the gap-refined bound ``r^2 / delta``
                   (Kato-Temple / Parlett), plus one confirming step.  Fast.
``"mixed"``        float64 input: ``"lanczos-gap"`` on a float32 copy (half the memory
                   traffic; the arithmetic stays float64), then float64 Lanczos steps from
                   the float32 Ritz vector until the float64 bound meets ``rtol`` (usually
                   one step, i.e. one pass over the float64 matrix; no confirming step:
                   the float32 stage has confirmed).  float32 input: same as
                   ``"lanczos-gap"``.
``"auto"``         by shape: ``"tiny"`` for a small side (k <= 8, or up to 48 when a cost
                   model says it beats Lanczos: up to ~28 for square matrices, more for
                   elongated ones), else ``"lanczos"`` (see ``_choose``; measured crossovers
                   noted there).
``"fast"``         as "auto", but ``"mixed"`` for float64 with ``m n >= 300^2`` and
                   ``"lanczos-gap"`` otherwise in place of ``"lanczos"`` (what the Monte Carlo
                   claims use).

Accuracy: for float64 input every fast path agrees with the float64 SVD to a relative
``rtol`` (default 1e-12; the round-off floor is ~1e-14), tested on >1000 random and
adversarial matrices.  Known limitation of the gap-refined paths ("lanczos-gap", "mixed", so
also "fast" for mid/large sizes): if sigma_1 and sigma_2 differ by a relative gap g smaller
than about sqrt(rtol) and the rest of the spectrum is well separated, Lanczos may stop before
it resolves the pair; ``sigma`` then lies between sigma_2 and sigma_1, so the error is at most
g, while ``error_bound`` does not see it.  ``"tiny"``, ``"gram"`` and ``"lanczos"`` have no
such blind spot (``"lanczos"``: see :class:`TopSingularValue`).

Known limitation of every Lanczos path ("lanczos", "lanczos-gap", "mixed"): misconvergence.
The Krylov space grows from one fixed start vector v0.  If v0 is nearly orthogonal to the top
right singular vector v1, the iteration can converge to sigma_2 (with a small residual and a
valid-looking gap) before the v1 component has grown enough to show; the result is then sigma_2
and the error is the gap sigma_1 - sigma_2, which ``error_bound`` does not see.  Whether it
happens depends on |v1 . v0| against the growth of the Krylov polynomial at the stopping point,
so it gets rarer the more iterations a path makes.  Measured on Gaussian 512 x 256 matrices
(|v1 . v0| ~ 2.6e-6 against a typical 0.04 in the cases examined): "lanczos-gap" at rtol 1e-10
(~36 passes) missed on 2 of 5000 (errors 4.8e-3 and 2.4e-3, each exactly sigma_2), at 1e-8 on 2,
at 1e-7 on 4, at 1e-5 on 20; "mixed" at 1e-10 (~38 passes: its float32 stage runs to rtol/4)
on 1 of 15000 (two seeds), at 1e-8 on 2 of 5000; "lanczos" ("auto": rtol 1e-12, ~55 passes) on
none of 15000.  Neither the "fast" nor the "auto" choice missed in 20000 64 x 64, 20000
128 x 128, 10000 512 x 128, 5000 256 x 256, 5000 256 x 512, 3000 400 x 300 and 3000 1024 x 256
matrices (tests/test_spectral_misconvergence.py re-measures 1000 of the 512 x 256 ones; slow).  For a Monte Carlo mean this is immaterial (a rate of ~1e-4 of samples off by
~0.5% moves the mean by ~5e-7 relative), and it is why the Monte Carlo claims keep rtol at 1e-10
rather than loosening it toward their statistical precision: at 1e-5 the rate is ten times
higher.  A start block of two or more vectors (block Lanczos) would square the miss
probability; it is not implemented (measured: a fused pass with two vectors costs 1.9x one
with a single vector on the development machine, 4096 x 1024 float32 storage, so it would not
pay for itself in fewer passes).  For a single matrix whose sigma_1 must be certain use
``method="svd"`` (or "tiny"/"gram" for small sides).

:func:`normalized_sums` returns, beside sigma_1, the two sums of ``A / sigma_1`` that a Monte
Carlo over spectrally normalised matrices needs (``||A/sigma_1||_F^2``, ``sum_ij``); on the
"mixed" path they come from the pass that makes the float32 copy, so the matrix is read once
for amax, the copy and both sums (measured on 4096 x 1024: 4.7 ms, against 6.6-7.0 ms for
the four separate reads).

float32 input is converted exactly and processed in float64 arithmetic: the stated tolerance
is the same as for float64, *relative to the float64 SVD of the float32 matrix as given*
(no float32 rounding enters the computation; float32 storage only halves the memory
traffic).  float16 is converted exactly to float32; ints and bools to float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._validation import require_choice, require_finite_array, require_positive_float
from . import _spectral_kernels as _k

__all__ = ["TopSingularValue", "NormalizedSums", "largest_singular_value",
           "largest_singular_value_svd", "normalized_sums", "stable_rank", "METHODS"]

METHODS = ("auto", "fast", "svd", "tiny", "gram", "lanczos", "lanczos-gap", "mixed")

_U = 2.0 ** -53
_SEED = 0x5EED5EED            # start vector of the Lanczos paths (fixed: deterministic output)
_MAXIT = 1000                 # Lanczos iteration cap (the Krylov dimension is <= min(m, n) + 1)

# ---- auto thresholds (measured on the development machine: AMD EPYC, 1 core, 1 BLAS
# thread, CPU time; see benchmarks/bench_spectral.py) ------------------------------------------
# Square k x k, time per matrix (tiny / lanczos-gap / gram+eigvalsh), rtol = 1e-10:
#    6x6 0.8 / 1.8 / 2.4 us,   8x8 0.83 / 2.7 / 3.7 us,   16x16 3.8 / 7.6 / 11.6 us,
#  24x24 9.2 / 11.7 / 19 us,  32x32 17 / 15.6 / 41 us,   48x48 62 / 26 / 74 us
# -> crossover tiny/lanczos at k ~ 28 for square matrices.  Elongated (ell >> k): tiny costs
# ~ ell k^2 / 2 for the Gram matrix, lanczos ~ 2 ell k per iteration, so tiny wins to larger k:
# (10, 1000) 15 / 57 us, (48, 1000) 235 / 441 us, (64, 32) 22 / 21 us.  The cost model in
# _choose reproduces these crossovers.  "gram" (LAPACK per matrix) never wins.
_TINY_MAX_K = 48
# Mixed precision pays once the float64 matrix no longer sits in the 1 MB L2 cache.  Measured
# per fused pass: 1024^2 f64 0.22 ms / f32 0.14 ms; 2048^2 1.2 / 0.6 ms; 4096^2 6.5 / 3.4 ms.
# Whole solve (lanczos-gap / mixed): 192^2 236 / 243 us, 256^2 416 / 422 us,
# 384^2 1164 / 1066 us, 512^2 2350 / 1862 us, 1024^2 12.3 / 9.8 ms -> crossover ~300^2.
_MIXED_MIN_ENTRIES = 300 * 300


@dataclass(frozen=True)
class TopSingularValue:
    """Result of :func:`largest_singular_value`.

    Attributes
    ----------
    sigma : (N,) float64
        Estimate of ``||A_k||_2``, the largest singular value of each matrix.
    error_bound : (N,) float64, >= 0
        A-posteriori bound on ``|sigma - ||A_k||_2|``.  What it certifies:

        * ``"tiny"``: rigorous.  ``[sigma - error_bound, sigma + error_bound]`` contains
          ``sigma_1`` under the standard floating-point model (every rounding error of the
          computation is accounted for with worst-case ``gamma_n`` bounds).  Exactly equal
          and clustered top singular values are handled.
        * ``"gram"``: standard rounding analysis: ``gamma_ell ||A||_F^2`` for forming the
          Gram matrix plus ``4 k u ||G||_2`` for the backward error of LAPACK's symmetric
          eigensolver (the eigensolver's constant is the usual modest-constant model, not a
          proved worst case), converted to sigma.
        * ``"lanczos"``: ``err = r + (m + n) u theta`` for the top Ritz value theta of the
          Gram operator B (``sigma = sqrt(theta)``), ``r = ||B y - theta y||`` the residual
          norm of its Ritz vector and the last term a rounding allowance for the matrix-vector
          products (usual error model, not the worst case), converted to sigma.  It certifies
          that *some* singular value lies within ``error_bound`` of ``sigma``; that this is
          sigma_1 holds unless the start vector is (nearly) orthogonal to the top singular
          vector(s).  Since a Ritz value never exceeds sigma_1, ``sigma <= sigma_1`` (up to
          the rounding allowance) always.
        * ``"lanczos-gap"`` / ``"mixed"``: ``err = min(r, r^2 / delta) + (m + n) u theta``
          with ``delta = theta - theta_2 - r_2`` the Lanczos estimate of the distance from
          theta to the rest of the spectrum (theta_2, r_2: second Ritz value and its
          residual; for "mixed" also the float32 stage's estimate, widened by the rigorous
          Weyl bound ``(2 sigma + ||E||_F) ||E||_F`` of the float32 rounding E).  The
          refinement ``r^2 / delta`` (Kato-Temple) is valid when no singular value other
          than the ones Lanczos has found lies within delta: it fails for a cluster at the
          top that the Krylov space has not resolved (relative width below ~sqrt(rtol));
          then the error is at most ``error_bound`` plus the cluster's width.
        * ``"svd"``: nominal LAPACK bound ``(m + n) u sigma``.
    method : str
        The path that produced the result.
    iterations : (N,) int64
        Squaring steps (``"tiny"``), Lanczos iterations = passes over the matrix (Lanczos
        paths; for ``"mixed"`` the float32 stage plus the float64 stage), 0 for
        ``"svd"``/``"gram"``.
    """

    sigma: np.ndarray
    error_bound: np.ndarray
    method: str
    iterations: np.ndarray = field(default=None, repr=False, compare=False)  # type: ignore


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _as_batch(a) -> tuple[np.ndarray, np.ndarray]:
    """(original ndarray, float (N, m, n) view/copy).  Raises for bad dtype/ndim/size."""
    if isinstance(a, np.ndarray):
        arr = a
    else:
        try:
            arr = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"`a` must be an array_like of real numbers with shape (m, n) or "
                            f"(N, m, n); np.asarray failed: {exc}") from None
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"`a` must be real (float64, float32, int or bool), got complex dtype "
                        f"{arr.dtype}: the spectral norm of complex matrices is not supported")
    if kind not in "biuf":
        raise TypeError(f"`a` must hold real numbers (float64, float32, int or bool), got "
                        f"dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"`a` must have shape (m, n) or (N, m, n), got ndim={arr.ndim} with "
                         f"shape {arr.shape}")
    names = ("m", "n") if arr.ndim == 2 else ("N", "m", "n")
    for name, size in zip(names, arr.shape):
        if size == 0:
            raise ValueError(f"`a` must have non-empty dimensions, got shape {arr.shape} "
                             f"({name} = 0): a matrix needs m >= 1 and n >= 1")
    if kind == "f" and arr.dtype == np.float32:
        work = arr
    elif kind == "f" and arr.dtype == np.float16:
        work = arr.astype(np.float32)                  # exact
    else:
        work = arr.astype(np.float64, copy=False)      # bool/int exact up to 2^53; longdouble rounds
    if work.ndim == 2:
        work = work[None]
    return arr, work


def _lines(work: np.ndarray) -> np.ndarray:
    """C-contiguous (N, ell, d) array whose rows are the contiguous lines of each matrix
    (rows of A if A is C-ordered, columns if F-ordered); sigma_1 is the same either way."""
    if work.flags.c_contiguous:
        return work
    t = np.swapaxes(work, 1, 2)
    if t.flags.c_contiguous:
        return t
    return np.ascontiguousarray(work)


def _raise_bad(arr: np.ndarray, amax: np.ndarray) -> None:
    """Turn the kernels' amax markers into errors (NaN/inf first, then all-zero matrices)."""
    bad = np.flatnonzero(np.isnan(amax))
    if bad.size:
        require_finite_array("a", arr)               # names the first offending index
        raise ValueError("`a` must be finite")        # pragma: no cover - unreachable
    zero = np.flatnonzero(amax == 0.0)
    if zero.size:
        where = "a" if arr.ndim == 2 else f"a[{int(zero[0])}]"
        more = f" ({zero.size} all-zero matrices in the batch)" if zero.size > 1 else ""
        raise ValueError(f"`{where}` is an all-zero matrix{more}: its spectral norm is 0, so "
                         f"the normalisation A/||A||_2 is undefined")


def _check_finite_nonzero(arr: np.ndarray, work: np.ndarray) -> None:
    amax = np.empty(work.shape[0])
    _k.scan_batch(_lines(work), amax)
    _raise_bad(arr, amax)


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------
def _svd(arr, work) -> TopSingularValue:
    _check_finite_nonzero(arr, work)
    w64 = work.astype(np.float64, copy=False)
    # scale by an exact power of two so that the SVD never overflows/underflows
    amax = np.abs(w64).max(axis=(1, 2))
    e = np.frexp(amax)[1]
    s = np.linalg.svd(np.ldexp(w64, -e[:, None, None]), compute_uv=False)[:, 0]
    sigma = np.ldexp(s, e)
    m, n = work.shape[1:]
    bound = (m + n) * _U * sigma
    return TopSingularValue(sigma, bound, "svd", np.zeros(work.shape[0], np.int64))


def _gram(arr, work) -> TopSingularValue:
    _check_finite_nonzero(arr, work)
    w64 = work.astype(np.float64, copy=False)
    N, m, n = w64.shape
    amax = np.abs(w64).max(axis=(1, 2))
    e = np.frexp(amax)[1]
    x = np.ldexp(w64, -e[:, None, None])
    g = np.matmul(np.swapaxes(x, 1, 2), x) if m >= n else np.matmul(x, np.swapaxes(x, 1, 2))
    k, ell = min(m, n), max(m, n)
    lam = np.linalg.eigvalsh(g)[:, -1]
    tr = np.trace(g, axis1=1, axis2=2)
    gl = (ell + 2) * _U / (1 - (ell + 2) * _U)
    err = gl * tr + 4.0 * k * _U * np.abs(lam)
    lam = np.maximum(lam, 0.0)
    sq = np.sqrt(lam)
    bound = err / (sq + np.sqrt(np.maximum(lam - err, 0.0))) + 2 * _U * sq
    return TopSingularValue(np.ldexp(sq, e), np.ldexp(bound, e), "gram",
                            np.zeros(N, np.int64))


def _tiny(arr, work, rtol) -> TopSingularValue:
    N = work.shape[0]
    sigma = np.empty(N)
    bound = np.empty(N)
    amax = np.empty(N)
    steps = np.empty(N, np.int64)
    _k.tiny_batch(np.ascontiguousarray(work), rtol, sigma, bound, amax, steps)
    _raise_bad(arr, amax)
    return TopSingularValue(sigma, bound, "tiny", steps)


def _rho_coef(lines: np.ndarray) -> float:
    return float(lines.shape[1] + lines.shape[2])


def _lanczos(arr, work, rtol, gap: bool) -> TopSingularValue:
    lines = _lines(work)
    N = lines.shape[0]
    sigma = np.empty(N)
    bound = np.empty(N)
    amax = np.empty(N)
    its = np.empty(N, np.int64)
    _k.lanczos_batch(lines, rtol, _MAXIT, _SEED, _rho_coef(lines), gap, sigma, bound, amax,
                     its)
    _raise_bad(arr, amax)
    return TopSingularValue(sigma, bound, "lanczos-gap" if gap else "lanczos", its)


def _mixed_with_sums(arr, work, rtol) -> tuple[TopSingularValue, np.ndarray, np.ndarray]:
    """The "mixed" path for float64 input, plus ||A||_F^2 / sigma^2 and sum(A) / sigma from
    the pass that makes the float32 copy (see _spectral_kernels.mixed_batch)."""
    lines = _lines(work)
    N = lines.shape[0]
    sigma = np.empty(N)
    bound = np.empty(N)
    amax = np.empty(N)
    its = np.empty(N, np.int64)
    its64 = np.empty(N, np.int64)
    fro2 = np.empty(N)
    total = np.empty(N)
    _k.mixed_batch(lines, rtol, _MAXIT, _SEED, _rho_coef(lines), sigma, bound, amax, its, its64,
                   fro2, total)
    _raise_bad(arr, amax)
    return TopSingularValue(sigma, bound, "mixed", its + its64), fro2, total


def _mixed(arr, work, rtol) -> TopSingularValue:
    if work.dtype == np.float32:
        return _lanczos(arr, work, rtol, gap=True)
    return _mixed_with_sums(arr, work, rtol)[0]


def _choose(shape: tuple[int, int], dtype, fast: bool = False) -> str:
    """The path "auto" (``fast=False``) or "fast" takes for this shape (whole batch).

    "auto" only takes paths whose accuracy does not depend on the gap below sigma_1 ("tiny",
    residual-stopped "lanczos"). "fast" also takes the gap-refined paths, which stop ~30-40%
    sooner but may stop inside an unresolved top cluster (see :class:`TopSingularValue`).
    """
    m, n = shape
    k, ell = min(m, n), max(m, n)
    if k <= 8:
        return "tiny"
    if k <= _TINY_MAX_K:
        # cost model in units of multiply-adds (constants fitted to the measured kernels):
        # tiny: Gram ell*k^2/2 + ~5 squarings at ~1.2 k^3; lanczos: ~min(k+1, 30) iterations
        # of 2*ell*k (fused pass) + reorthogonalisation.
        tiny_cost = 0.5 * ell * k * k + 6.0 * k ** 3
        its = min(k + 1, 30)
        lanczos_cost = its * (2.0 * ell * k + 2.0 * its * max(ell, k)) + 2000.0 * its
        if tiny_cost <= lanczos_cost:
            return "tiny"
    if not fast:
        return "lanczos"
    if dtype == np.float64 and m * n >= _MIXED_MIN_ENTRIES:
        return "mixed"
    return "lanczos-gap"


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def _dispatch(arr, work, method: str, rtol: float) -> TopSingularValue:
    if method in ("auto", "fast"):
        method = _choose(work.shape[1:], work.dtype, fast=method == "fast")
    if method == "svd":
        return _svd(arr, work)
    if method == "gram":
        return _gram(arr, work)
    if method == "tiny":
        return _tiny(arr, work, rtol)
    if method == "lanczos":
        return _lanczos(arr, work, rtol, gap=False)
    if method == "lanczos-gap":
        return _lanczos(arr, work, rtol, gap=True)
    return _mixed(arr, work, rtol)


def _check_sigma_finite(arr, work, res: TopSingularValue) -> None:
    if not np.all(np.isfinite(res.sigma)):
        b = int(np.flatnonzero(~np.isfinite(res.sigma))[0])
        where = "a" if arr.ndim == 2 else f"a[{b}]"
        raise ValueError(f"the largest singular value of `{where}` exceeds the float64 range "
                         f"(max |entry| = {np.abs(work[b]).max():.3e}); rescale the input")


def largest_singular_value(a, *, method: str = "auto", rtol: float = 1e-12) -> TopSingularValue:
    """Largest singular value of each matrix of ``a`` with an a-posteriori error bound.

    Parameters
    ----------
    a : array_like, shape (m, n) or (N, m, n)
        Real matrices: float64 or float32 (kept), float16 (converted exactly to float32),
        integers and bools (converted to float64).  Every matrix must be finite and not
        all zero (``A/||A||_2`` would be undefined).
    method : {"auto", "fast", "svd", "tiny", "gram", "lanczos", "lanczos-gap", "mixed"}
        Path to use; "auto" picks by shape and dtype among the paths whose accuracy does not
        depend on the gap below sigma_1 ("tiny", "lanczos"): relative error <= rtol always
        (with the caveats of :class:`TopSingularValue`). "fast" may also pick the gap-refined
        "lanczos-gap"/"mixed" (30-40% fewer passes): relative error <= rtol when the relative
        gap (sigma_1 - sigma_2)/sigma_1 exceeds ~sqrt(rtol), and at most that gap otherwise
        -- the right trade for Monte Carlo over random matrices, not for adversarial ones.
        Every Lanczos path can, rarely, converge to sigma_2 when the fixed start vector is
        nearly orthogonal to the top singular vector (measured rates in the module
        docstring); use "svd" when one matrix's sigma_1 must be certain.
    rtol : float in (0, 1)
        Target relative accuracy of the iterative paths ("tiny" and the Lanczos paths): they
        stop once ``error_bound <= rtol * sigma`` (or at the round-off floor, ~1e-14, if rtol
        is below it; the Lanczos paths also stop after 1000 iterations: the returned
        ``error_bound`` may then exceed ``rtol * sigma``; it is always reported honestly).
        "svd" and "gram" ignore it.

    Returns
    -------
    TopSingularValue
        ``sigma`` and ``error_bound`` of shape (N,) (N = 1 for 2-D input), ``method``.

    Raises
    ------
    TypeError
        Non-numeric or complex dtype, or ``rtol`` not a real number.
    ValueError
        Wrong ndim, a zero-size dimension, NaN/inf (the first offending index is named), an
        all-zero matrix (its batch index is named), unknown ``method``, ``rtol`` outside (0, 1),
        or a largest singular value beyond the float64 range.
    """
    require_choice("method", method, METHODS)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    arr, work = _as_batch(a)
    res = _dispatch(arr, work, method, rtol)
    _check_sigma_finite(arr, work, res)
    return res


@dataclass(frozen=True)
class NormalizedSums:
    """Result of :func:`normalized_sums`: ``sigma_1`` of each matrix and two sums of the
    spectrally normalised matrix ``A_bar = A / sigma_1``.

    Attributes
    ----------
    top : TopSingularValue
        ``sigma``, ``error_bound``, ``method``, ``iterations`` as from
        :func:`largest_singular_value`.
    frobenius_sq : (N,) float64
        ``||A_bar||_F^2 = ||A||_F^2 / sigma_1^2``, the stable rank (in [1, min(m, n)] up to
        the relative error of sigma, ~2 rtol).
    entry_sum : (N,) float64
        ``sum_ij A_bar_ij = sum_ij A_ij / sigma_1``.
    """

    top: TopSingularValue
    frobenius_sq: np.ndarray
    entry_sum: np.ndarray


def normalized_sums(a, *, method: str = "auto", rtol: float = 1e-12) -> NormalizedSums:
    """``sigma_1``, ``||A/sigma_1||_F^2`` and ``sum_ij (A/sigma_1)_ij`` for each matrix of ``a``.

    What a Monte Carlo over spectrally normalised matrices needs per sample, with the fewest
    reads of each matrix: on the "mixed" path (float64 input, ``method="fast"`` for
    ``m n >= 300^2``) the two sums come from the pass that makes the float32 copy, so the
    matrix is not read again for them; on the other paths one extra pass computes them.  Both
    sums are formed from the matrix scaled by an exact power of two, so they neither overflow
    nor underflow.  Arguments, checks and errors as :func:`largest_singular_value`.
    """
    require_choice("method", method, METHODS)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    arr, work = _as_batch(a)
    chosen = method
    if method in ("auto", "fast"):
        chosen = _choose(work.shape[1:], work.dtype, fast=method == "fast")
    if chosen == "mixed" and work.dtype == np.float64:
        res, fro2, total = _mixed_with_sums(arr, work, rtol)
        _check_sigma_finite(arr, work, res)
        return NormalizedSums(res, fro2, total)
    res = _dispatch(arr, work, chosen, rtol)
    _check_sigma_finite(arr, work, res)
    N = work.shape[0]
    amax = np.empty(N)
    fro2 = np.empty(N)
    total = np.empty(N)
    _k.sums_batch(_lines(work), amax, fro2, total)
    # the sums are of 2^-e A with amax in [2^(e-1), 2^e): scale sigma the same way (exact)
    e = np.frexp(amax)[1]
    sigma_scaled = np.ldexp(res.sigma, -e)
    return NormalizedSums(res, fro2 / (sigma_scaled * sigma_scaled), total / sigma_scaled)


def largest_singular_value_svd(a) -> np.ndarray:
    """Reference: sigma_1 of each matrix by a full float64 SVD; (N,) array (N = 1 for 2-D)."""
    arr, work = _as_batch(a)
    return _svd(arr, work).sigma


def stable_rank(a, **kw) -> np.ndarray:
    """``||A||_F^2 / ||A||_2^2`` of each matrix (in [1, min(m, n)]); (N,) array.

    ``normalized_sums(a, **kw).frobenius_sq``: the spectral norm comes from
    :func:`largest_singular_value` (keyword arguments are passed on, e.g. ``method`` or
    ``rtol``); the Frobenius norm is computed with exact power-of-two scaling, so neither
    overflows nor underflows.  The relative error is about ``2 rtol``.
    """
    return normalized_sums(a, **kw).frobenius_sq
