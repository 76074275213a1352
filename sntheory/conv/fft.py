"""Exact operator norms and spectra of circularly padded conv layers (Fourier / polyphase).

Why it is exact
---------------
With circular padding ``p``, output position ``i`` of a layer with stride ``s`` and dilation
``d`` reads input rows ``(i s - p + u d) mod n`` (``u`` the kernel tap, ``n`` the input size).
When ``s`` divides ``n``, split the input into its ``s`` phases ``x_r[a] = x[a s + r]``
(``a`` in ``Z_m``, ``m = n / s``) and write ``u d - p = s a_u + r_u`` (``0 <= r_u < s``). Then

    y[i] = sum_u w_u x_{r_u}[i + a_u]          (indices mod m)

for every ``i`` in ``Z_m``: a convolution on the torus ``Z_m`` from ``s`` input phases. With
numpy's DFT ``X(g) = sum_a x[a] exp(-2 pi i g a / m)`` this becomes, frequency by frequency,

    Y(g) = K(g) [X_0(g); ...; X_{s-1}(g)],    K(g) = [K_0(g) ... K_{s-1}(g)],
    K_r(g) = sum_{u : r_u = r} w_u exp(+2 pi i g a_u / m)

(``w_u`` the ``c_out x c_in`` tap matrices; in 2-D the phases and frequencies are pairs).
The DFT is unitary up to a factor common to both sides, so the singular values of the layer
are the union over the ``m_h m_w`` frequencies of those of the ``c_out x (c_in s_h s_w)``
matrices ``K(g)`` (stride 1: THEORY.md's ``K(f)``, up to the sign convention ``f -> -f``
and the offset phase ``exp(-2 pi i g p / n)``, neither of which changes singular values).
This holds when the layer's output covers the torus exactly once: ``H_out = n / s``, i.e.
``n + 2p - d (k - 1) - 1`` in ``[n - s, n - 1]`` (for stride 1: ``2p = d (k - 1)``, the
'full' circular padding).  See :func:`circular_is_exact` for the other cases.

Groups make the operator block diagonal: its norm is the max over groups, its spectrum the
union.  Real kernels give ``K(-g) = conj(K(g))``: only half of the frequencies are solved.

Paths of :func:`circular_operator_norm`
---------------------------------------
``"svd"``   the published recipe (Sedghi, Gupta, Long, ICLR 2019): the 2-D FFT of the
            (polyphase) kernel zero-padded to the torus, then a full float64 SVD of every
            per-frequency matrix, all ``m_h m_w`` of them.  Reference.
``"auto"``  compiled Lanczos on ``K(g)^H K(g)`` for the frequencies one by one (each
            matrix is built from the taps right before it is solved and stays in cache),
            half of the frequencies only, processed in rounds in decreasing order of the
            cheap bound ``||K(g)||_F``; frequencies that cannot hold the maximum are dropped
            (see "Pruning").  The others stop when the residual bound meets ``rtol``.
``"fast"``  as ``"auto"``, stopping on the gap-refined (Kato-Temple) bound ``r^2/delta``
            with one confirming step (like ``sntheory.spectral``'s "lanczos-gap"): ~25%
            fewer passes per solved frequency on random kernels (a few % overall, since
            most frequencies stop on the pruning test); may stop inside an unresolved
            cluster of top singular values of *one* frequency whose relative width is below
            ~sqrt(rtol).

Measured (benchmarks/bench_conv.py, one core, (c, c, 3, 3) Gaussian kernels, n x n torus):
c = 256, n = 32: 0.55-0.65 s against ~14 s for the published recipe (~22x), relative
difference ~1e-15; c = 64, n = 32: 0.04 s against 0.34 s.  Per frequency, building K(g)
from the taps costs about one Lanczos pass; a pass over a 256 x 256 complex matrix runs at
~30 Gflop/s (L2-resident), and a random kernel needs ~30 passes per frequency.

Error bounds (``error_bound``)
------------------------------
``"svd"``: nominal LAPACK bound ``(m + n) u sigma``.  Lanczos paths: for the frequencies
that were solved, the residual (or gap-refined) bound of ``sntheory.spectral``'s Lanczos
paths, in sigma units, plus a rounding allowance for building ``K(g)`` from the taps
(``gamma_{T+3} sqrt(T) ||w||_F``, ``T`` taps).  It certifies that a singular value of
``K(g)`` lies within the bound of the Ritz value; that it is the largest one holds unless
the start vector is (nearly) orthogonal to the top singular vector -- the caveat of every
Krylov method, see :class:`sntheory.spectral.TopSingularValue`.  The reported interval is
``[L, max_g (sigma_g + e_g)]`` over the solved frequencies, ``L`` the largest Ritz value
(a Ritz value never exceeds sigma_1: that end holds unconditionally), both ends widened by
the build allowance.

Pruning
-------
Let ``L`` be the best certified lower bound found so far (a Ritz value never exceeds
``sigma_1``).  A frequency is dropped without being solved when ``||K(g)||_F < L``
(rigorous), and its Lanczos run is stopped early once the start vector ``v`` provably has
almost no weight above ``L^2`` in the spectrum of ``B = K^H K``: for the orthonormal
polynomials ``p_k`` of the Lanczos recurrence and any ``t`` above the top Ritz value,

    mu_v([t, inf)) <= 1 / sum_{k < n} p_k(t)^2

(Christoffel-Markov: ``q(x) = sum_k p_k(t) p_k(x) / sum_k p_k(t)^2`` has all its zeros below
``t``, so ``q >= 1`` on ``[t, inf)``, and ``int q^2 dmu = ||q(B) v||^2`` is that ratio).
The top singular vector of a uniformly random complex unit start vector has weight below
``eps`` with probability at most ``(d - 1) eps``; the run stops once the bound is below
``eps = prune_risk / d``, so a frequency is dropped wrongly with probability at most
``prune_risk`` (default 1e-10; the start vector is a fixed draw of a complex Gaussian
vector, normalised -- uniform on the sphere -- made independently of the kernel).
``prune=False`` solves every frequency.

Conventions: kernels are ``(c_out, c_in / groups, kh, kw)`` or batched
``(N, c_out, c_in / groups, kh, kw)``; results mirror the input (no batch axis for a single
kernel).  float64 throughout (float32 kernels are converted exactly).
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, replace

import numpy as np
from numba import get_num_threads, njit, prange

from .._spectral_kernels import _second_ritz, _tri_kth, _tri_last_component
from .._validation import require_choice, require_positive_float
from .geometry import ConvGeometry, _pair, as_kernel_batch

__all__ = ["CircularNorm", "circular_is_exact", "circular_symbol", "circular_operator_norm",
           "circular_singular_values", "circular_layer_norm", "circular_bound_setup",
           "half_frequencies", "METHODS"]

METHODS = ("auto", "fast", "svd")

_FM = {"reassoc", "contract"}
_U = 2.0 ** -53
_SEED = 0xC0FFEE5EED          # start vector of the Lanczos runs (fixed: deterministic output)
_MAXIT = 1000                 # Lanczos iteration cap (Krylov dimension <= d anyway)
_ROUND_SIZES = (2, 8, 32, 128, 512)   # frequencies per round (then 2048 per round): fixed,
# so that which frequencies are pruned never depends on the number of threads


# --------------------------------------------------------------------------------------------
# result type
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CircularNorm:
    """Operator norm of circular conv layers (see the module docstring for the guarantees).

    Shapes mirror the input: scalars for one kernel, ``(N,)`` arrays (``frequency``:
    ``(N, 2)``) for a batch.

    Attributes
    ----------
    value : float or (N,) float64
        ``||w~||_2`` (times ``bound_factor`` for a non-exact geometry, see ``exact``).
    error_bound : float or (N,) float64
        A-posteriori bound on ``|value - ||w~||_2|`` (for a non-exact geometry: on the
        distance to the certified upper bound ``bound_factor * torus norm``).
    method : str
        ``"svd"``, ``"auto"`` or ``"fast"``.
    frequency : (2,) or (N, 2) int64
        A frequency ``(g_h, g_w)`` on the ``(n_h / s_h) x (n_w / s_w)`` grid where the
        maximum is attained (up to ``K(-g) = conj K(g)``), in the convention of
        :func:`circular_symbol`.
    group : int or (N,) int64
        The group holding the maximum.
    iterations : int or (N,) int64
        Lanczos passes over per-frequency matrices, summed over frequencies and groups
        (0 for ``"svd"``).
    pruned : int or (N,) int64
        Frequencies (of the half set, summed over groups) dropped before convergence.
    n_frequencies : int
        Frequencies considered per kernel (half set times groups; all frequencies times
        groups for ``"svd"``).
    exact : bool
        False when the layer's geometry is not a full torus convolution
        (:func:`circular_layer_norm` with ``exact_only=False``): ``value`` is then a
        certified *upper bound* on the layer norm.
    reason : str
        Why the geometry is (not) exact.
    bound_factor : float
        ``sqrt`` of the largest number of output positions reading the same torus
        position (1 when exact or when no output row repeats).
    """

    value: np.ndarray
    error_bound: np.ndarray
    method: str
    frequency: np.ndarray
    group: np.ndarray
    iterations: np.ndarray
    pruned: np.ndarray
    n_frequencies: int
    exact: bool = True
    reason: str = ""
    bound_factor: float = 1.0


# --------------------------------------------------------------------------------------------
# geometry of the torus
# --------------------------------------------------------------------------------------------
def _kernel_size_pair(kernel_size) -> tuple[int, int]:
    if isinstance(kernel_size, (tuple, list)) and len(kernel_size) == 4:
        kernel_size = tuple(kernel_size)[2:]          # a kernel shape was passed
    return _pair("kernel_size", kernel_size, 1)


def circular_is_exact(geometry: ConvGeometry, kernel_size) -> tuple[bool, str]:
    """Whether the circular layer is exactly a (strided) convolution on the input torus.

    Output position ``i`` reads input rows ``(i s - p + u d) mod n``.  The operator is the
    full torus convolution (so :func:`circular_operator_norm` on ``torus_size = input_size``
    gives its exact norm and spectrum) iff, in each direction, ``s`` divides ``n`` and
    ``H_out * s == n``: every torus position is an output position exactly once.  Otherwise
    output rows are dropped (``H_out * s < n``: a restriction, the torus norm is an upper
    bound) or repeated (``H_out * s > n``: the wrap-around visits some positions twice, the
    torus norm times ``sqrt(max repeats)`` is an upper bound) -- see
    :func:`circular_bound_setup`.

    Parameters
    ----------
    geometry : ConvGeometry
    kernel_size : int, pair, or a kernel shape ``(c_out, c_in_g, kh, kw)``

    Returns
    -------
    (bool, str)
        The verdict and a sentence saying why (naming the direction and the numbers).
    """
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a ConvGeometry, got {type(geometry).__name__}")
    kh, kw = _kernel_size_pair(kernel_size)
    if geometry.padding_mode != "circular":
        return False, (f"padding_mode is {geometry.padding_mode!r}, not 'circular': the layer "
                       f"is a compression of a torus convolution, not one")
    out = geometry.output_size((kh, kw))              # raises for an empty output
    problems = []
    for axis, n, s, p, d, k, o in zip(("height", "width"), geometry.input_size,
                                      geometry.stride, geometry.padding, geometry.dilation,
                                      (kh, kw), out):
        full = d * (k - 1)
        if n % s:
            problems.append(f"stride {s} does not divide input {axis} {n}")
        elif o * s < n:
            problems.append(f"{axis}: circular padding {p} is less than full (2p = {2 * p} < "
                            f"d(k-1) = {full}): the {o} output rows cover {o} of the {n // s} "
                            f"torus positions (a restriction)")
        elif o * s > n:
            problems.append(f"{axis}: circular padding {p} is more than full (2p = {2 * p} > "
                            f"d(k-1) + s - 1 = {full + s - 1}): the {o} output rows wrap around "
                            f"the {n // s} torus positions and repeat some")
    if problems:
        return False, "; ".join(problems)
    return True, (f"exact: stride {geometry.stride} divides input {geometry.input_size} and "
                  f"the output {out} covers the torus once")


def circular_bound_setup(geometry: ConvGeometry, kernel_size):
    """Torus setup whose norm bounds a circular layer from above, for any circular geometry.

    In each direction, output row ``i`` of the layer equals row ``t(i)`` of a torus
    convolution: with stride ``s`` on the torus ``Z_{n/s}`` (``t = i mod n/s``) when ``s``
    divides ``n``, else with stride 1 on ``Z_n`` (``t = i s mod n``).  The layer is that torus
    operator with its rows selected, row ``t`` taken ``m(t)`` times, so
    ``||w~|| <= sqrt(max m) * ||torus operator||`` (``w~^T w~ = sum_t m(t) r_t r_t^T``), with
    equality when the geometry is exact (every ``m(t) = 1``).

    Returns
    -------
    (torus_stride, factor) : ((int, int), float)
        Stride to pass to :func:`circular_operator_norm` on ``torus_size =
        geometry.input_size`` and ``factor = sqrt(max m_h * max m_w)``.
    """
    if geometry.padding_mode != "circular":
        raise ValueError(f"`geometry.padding_mode` must be 'circular' for a torus bound, got "
                         f"{geometry.padding_mode!r}")
    kh, kw = _kernel_size_pair(kernel_size)
    out = geometry.output_size((kh, kw))
    strides, mult = [], 1
    for n, s, o in zip(geometry.input_size, geometry.stride, out):
        if n % s == 0:
            t = np.arange(o) % (n // s)
            strides.append(s)
        else:
            t = (np.arange(o) * s) % n
            strides.append(1)
        mult *= int(np.bincount(t).max())
    return (strides[0], strides[1]), math.sqrt(mult)


def _torus_args(torus_size, stride, dilation):
    n = _pair("torus_size", torus_size, 1)
    s = _pair("stride", stride, 1)
    d = _pair("dilation", dilation, 1)
    for axis, ni, si in zip(("height", "width"), n, s):
        if ni % si:
            raise ValueError(f"`stride` {s} must divide `torus_size` {n} (polyphase "
                             f"decomposition), but {si} does not divide the {axis} {ni}")
    return n, s, d


def _taps(kernel_size, torus, stride, dilation, offset=(0, 0)):
    """Tap ``(u, v)`` (C order) -> (phase block ``r_h s_w + r_w``, ``a_h mod m_h``,
    ``a_w mod m_w``) with ``u d - offset = s a + r``."""
    kh, kw = kernel_size
    out = []
    for k, n, s, d, off in zip((kh, kw), torus, stride, dilation, offset):
        e = np.arange(k) * d - off
        r = e % s
        a = ((e - r) // s) % (n // s)
        out.append((r, a))
    (rh, ah), (rw, aw) = out
    blk = (rh[:, None] * stride[1] + rw[None, :]).reshape(-1)
    a1 = np.repeat(ah, kw)
    a2 = np.tile(aw, kh)
    return blk.astype(np.int64), a1, a2


def half_frequencies(grid) -> tuple[np.ndarray, np.ndarray]:
    """Representatives of the frequencies of ``Z_{m_h} x Z_{m_w}`` modulo ``g ~ -g``.

    Returns ``(freqs (F, 2) int64, multiplicity (F,) int64)``: multiplicity 2 when ``-g`` is
    another frequency, 1 when ``g = -g``; the multiplicities sum to ``m_h m_w``.
    """
    m1, m2 = grid
    g1 = np.arange(m1)
    rows = []
    for g2 in range(m2 // 2 + 1):
        if (2 * g2) % m2 == 0:                       # the column is its own conjugate
            keep = g1[g1 <= m1 // 2]
        else:
            keep = g1
        rows.append(np.stack([keep, np.full(keep.shape, g2)], axis=1))
    f = np.concatenate(rows).astype(np.int64)
    self_conj = ((2 * f[:, 0]) % m1 == 0) & ((2 * f[:, 1]) % m2 == 0)
    return f, np.where(self_conj, 1, 2).astype(np.int64)


def _phases(freqs, a1, a2, grid):
    """``(F, T)`` complex: ``exp(+2 pi i (g_h a_h / m_h + g_w a_w / m_w))``, from exact
    integer residues (each factor is a correctly rounded table entry up to ~1 ulp)."""
    m1, m2 = grid
    e1 = np.exp(2j * np.pi * np.arange(m1) / m1)
    e2 = np.exp(2j * np.pi * np.arange(m2) / m2)
    return e1[(freqs[:, :1] * a1[None, :]) % m1] * e2[(freqs[:, 1:] * a2[None, :]) % m2]


def _prepare(w, torus_size, stride, dilation, groups):
    wb, single = as_kernel_batch(w)
    wb = wb.astype(np.float64, copy=False)
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ValueError(f"`groups` must be an integer >= 1, got {groups!r}")
    groups = int(groups)
    c_out = wb.shape[1]
    if c_out % groups:
        raise ValueError(f"`groups` = {groups} must divide c_out = {c_out} (kernel shape "
                         f"{wb.shape[1:]})")
    n, s, d = _torus_args(torus_size, stride, dilation)
    return wb, single, n, s, d, groups


def _group_taps(wb, g, groups):
    """(N, T, c_out_g, c_in_g) tap matrices of group g (T = kh kw in C order)."""
    N, c_out, cig, kh, kw = wb.shape
    cog = c_out // groups
    wg = wb[:, g * cog:(g + 1) * cog]
    return wg.reshape(N, cog, cig, kh * kw).transpose(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# symbol and spectrum
# --------------------------------------------------------------------------------------------
def circular_symbol(w, torus_size, stride=(1, 1), dilation=(1, 1), offset=(0, 0), *,
                    groups: int = 1) -> np.ndarray:
    """Per-frequency transfer matrices ``K(g)`` of a circular conv layer on a torus.

    For an input ``x`` of shape ``(c_in, n_h, n_w)``, the layer with circular padding
    ``offset`` (its output restricted to one period, ``n / s`` positions per direction)
    satisfies exactly, at every frequency ``g`` of the ``(m_h, m_w) = (n_h/s_h, n_w/s_w)``
    grid (numpy's DFT convention),

        fft2(y)[:, g] = K(g) @ X(g),   X[c * s_h s_w + r_h s_w + r_w](g) =
                                       fft2(x[c, r_h::s_h, r_w::s_w])[g]

    (stride 1: ``X = fft2(x)``).  ``offset`` (the circular padding ``p``) only multiplies
    each ``K(g)`` by a unit phase for stride 1 and permutes phase blocks for larger strides;
    singular values do not depend on it.

    Returns
    -------
    complex128 array
        ``(m_h m_w, c_out, c_in s_h s_w)`` with frequency index ``g_h m_w + g_w``; with
        ``groups > 1`` ``(groups, m_h m_w, c_out/groups, c_in_g s_h s_w)`` (group ``j``'s
        block of the block-diagonal operator); a leading ``N`` for a kernel batch.
    """
    wb, single, n, s, d, groups = _prepare(w, torus_size, stride, dilation, groups)
    off = _pair("offset", offset, 0)
    kh, kw = wb.shape[3:]
    grid = (n[0] // s[0], n[1] // s[1])
    S = s[0] * s[1]
    blk, a1, a2 = _taps((kh, kw), n, s, d, off)
    g1, g2 = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    freqs = np.stack([g1.reshape(-1), g2.reshape(-1)], axis=1)
    ph = _phases(freqs, a1, a2, grid)                               # (F, T)
    onehot = np.zeros((blk.size, S))
    onehot[np.arange(blk.size), blk] = 1.0
    out = []
    for g in range(groups):
        taps = _group_taps(wb, g, groups)                           # (N, T, co, ci)
        K = np.einsum("ft,tb,ntoc->nfocb", ph, onehot, taps)
        out.append(K.reshape(K.shape[0], K.shape[1], K.shape[2], -1))
    res = out[0] if groups == 1 else np.stack(out, axis=1)
    return res[0] if single else res


def circular_singular_values(w, torus_size, stride=(1, 1), dilation=(1, 1),
                             groups: int = 1) -> np.ndarray:
    """All singular values of the circular layer on the torus, sorted descending.

    Full float64 SVD of ``K(g)`` on half of the frequencies (``K(-g) = conj K(g)`` has the
    same singular values, counted twice).  Length ``groups * m_h m_w * min(c_out_g,
    c_in_g s_h s_w)`` = ``min(rows, cols)`` of the layer's matrix (group by group);
    shape ``(len,)`` for one kernel, ``(N, len)`` for a batch.
    """
    wb, single, n, s, d, groups = _prepare(w, torus_size, stride, dilation, groups)
    N, c_out, cig, kh, kw = wb.shape
    grid = (n[0] // s[0], n[1] // s[1])
    S = s[0] * s[1]
    blk, a1, a2 = _taps((kh, kw), n, s, d)
    freqs, mult = half_frequencies(grid)
    ph = _phases(freqs, a1, a2, grid)
    onehot = np.zeros((blk.size, S))
    onehot[np.arange(blk.size), blk] = 1.0
    cog = c_out // groups
    per = max(1, int(4_000_000 // max(1, cog * cig * S)))         # frequencies per chunk
    amax = np.abs(wb).max(axis=(1, 2, 3, 4))
    e = np.where(amax > 0, np.frexp(amax)[1], 0)              # exact scaling: no overflow
    ws = np.ldexp(wb, -e[:, None, None, None, None])
    parts = []
    for g in range(groups):
        taps = _group_taps(ws, g, groups)
        for lo in range(0, freqs.shape[0], per):
            K = np.einsum("ft,tb,ntoc->nfocb", ph[lo:lo + per], onehot, taps)
            sv = np.linalg.svd(K.reshape(N, K.shape[1], cog, cig * S), compute_uv=False)
            parts.append(np.repeat(sv, mult[lo:lo + per], axis=1).reshape(N, -1))
    sv = np.ldexp(-np.sort(-np.concatenate(parts, axis=1), axis=1), e[:, None])
    return sv[0] if single else sv


# --------------------------------------------------------------------------------------------
# compiled kernels: build K(g) from the taps, Lanczos on K^H K
# --------------------------------------------------------------------------------------------
@njit(fastmath=_FM, cache=True, error_model="numpy")
def _build(A, blk, cr, ci, transpose, Xr, Xi):
    """X = K(g) (or K(g)^H if transpose), planar complex, from the taps; cr + i ci are the
    tap phases ``exp(+2 pi i g . a_t / m)`` of the frequency.

    Not transposed: A is (c_out, T, c_in), X[o, b c_in + q] = sum_{t in b} A[o,t,q] ph_t.
    Transposed:     A is (c_in, T, c_out), X[b c_in + q, o] = sum_{t in b} A[q,t,o] conj ph_t.
    """
    R, T, C = A.shape
    for i in range(Xr.shape[0]):
        for j in range(Xr.shape[1]):
            Xr[i, j] = 0.0
            Xi[i, j] = 0.0
    for r in range(R):
        for t in range(T):
            b = blk[t]
            c = cr[t]
            if transpose:
                row = b * R + r
                off = 0
                s = -ci[t]
            else:
                row = r
                off = b * C
                s = ci[t]
            a = A[r, t]
            # slices, not computed indices: numba's negative-index wrap-around on off + j
            # would keep LLVM from vectorising the loop (3x slower)
            xr = Xr[row, off:off + C]
            xi = Xi[row, off:off + C]
            for j in range(C):
                x = a[j]
                xr[j] += x * c
                xi[j] += x * s


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _gram_apply_c(Xr, Xi, vr, vi, wr, wi):
    """w = X^H (X v) in one pass over the rows of X (planar complex, 4 rows at a time: the 4
    dot products with v, then the 4 rows, still in cache, are added into w)."""
    ell, d = Xr.shape
    for j in range(d):
        wr[j] = 0.0
        wi[j] = 0.0
    i = 0
    while i + 4 <= ell:
        a0r = 0.0
        a0i = 0.0
        a1r = 0.0
        a1i = 0.0
        a2r = 0.0
        a2i = 0.0
        a3r = 0.0
        a3i = 0.0
        for j in range(d):
            vrj = vr[j]
            vij = vi[j]
            a0r += Xr[i, j] * vrj - Xi[i, j] * vij
            a0i += Xr[i, j] * vij + Xi[i, j] * vrj
            a1r += Xr[i + 1, j] * vrj - Xi[i + 1, j] * vij
            a1i += Xr[i + 1, j] * vij + Xi[i + 1, j] * vrj
            a2r += Xr[i + 2, j] * vrj - Xi[i + 2, j] * vij
            a2i += Xr[i + 2, j] * vij + Xi[i + 2, j] * vrj
            a3r += Xr[i + 3, j] * vrj - Xi[i + 3, j] * vij
            a3i += Xr[i + 3, j] * vij + Xi[i + 3, j] * vrj
        for j in range(d):
            wr[j] += (Xr[i, j] * a0r + Xi[i, j] * a0i + Xr[i + 1, j] * a1r
                      + Xi[i + 1, j] * a1i + Xr[i + 2, j] * a2r + Xi[i + 2, j] * a2i
                      + Xr[i + 3, j] * a3r + Xi[i + 3, j] * a3i)
            wi[j] += (Xr[i, j] * a0i - Xi[i, j] * a0r + Xr[i + 1, j] * a1i
                      - Xi[i + 1, j] * a1r + Xr[i + 2, j] * a2i - Xi[i + 2, j] * a2r
                      + Xr[i + 3, j] * a3i - Xi[i + 3, j] * a3r)
        i += 4
    while i < ell:
        a0r = 0.0
        a0i = 0.0
        for j in range(d):
            a0r += Xr[i, j] * vr[j] - Xi[i, j] * vi[j]
            a0i += Xr[i, j] * vi[j] + Xi[i, j] * vr[j]
        for j in range(d):
            wr[j] += Xr[i, j] * a0r + Xi[i, j] * a0i
            wi[j] += Xr[i, j] * a0i - Xi[i, j] * a0r
        i += 1


@njit(cache=True, error_model="numpy")
def _log_christoffel(alpha, beta, n, t):
    """``log sum_{k<n} p_k(t)^2`` for the orthonormal polynomials of the Lanczos recurrence
    ``beta_k p_{k+1} = (x - alpha_k) p_k - beta_{k-1} p_{k-1}``, ``p_0 = 1``, at a point ``t``
    above the top Ritz value (all ``p_k(t) > 0`` there); ratios keep it from overflowing.
    Returns -1 if a ratio is not positive (t not above the zeros: no conclusion)."""
    lp = 0.0
    acc = 0.0                       # log of the running sum, p_0^2 = 1
    ratio = 1.0
    for k in range(n - 1):
        if k == 0:
            ratio = (t - alpha[0]) / beta[0]
        else:
            ratio = ((t - alpha[k]) - beta[k - 1] / ratio) / beta[k]
        if not (ratio > 0.0):
            return -1.0
        lp += math.log(ratio)
        two = 2.0 * lp
        if two > acc:
            acc = two + math.log1p(math.exp(acc - two))
        else:
            acc = acc + math.log1p(math.exp(two - acc))
    return acc


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _lanczos_c(Xr, Xi, v0r, v0i, tol, maxit, Vr, Vi, alpha, beta, wr, wi, hr, hi, tz, tw,
               tx, twork, prune_lam, log_inv_eps, rho_coef, quad):
    """Lanczos with full reorthogonalisation on B = X^H X (complex Hermitian, planar storage;
    alpha and beta are real) from the unit vector v0, as ``_spectral_kernels._lanczos_one``.

    Returns (theta1, err_lam, iterations, status): status 0 converged (error bound in sigma
    units <= tol * sigma, or the Krylov space is exhausted), 1 pruned (the Christoffel bound
    puts less than exp(-log_inv_eps) of the start vector's weight above prune_lam), 2
    iteration cap reached.
    """
    ell, d = Xr.shape
    for j in range(d):
        Vr[0, j] = v0r[j]
        Vi[0, j] = v0i[j]
    theta1 = 0.0
    err = np.inf
    theta2 = 0.0
    gap_used = 0.0
    last_gap = 0
    lo2 = 0.0
    b2nd = 0.0
    slast = 1.0
    confirming = False
    status = 2
    it = 0
    for jj in range(maxit):
        it = jj + 1
        _gram_apply_c(Xr, Xi, Vr[jj], Vi[jj], wr, wi)
        if jj > 0:
            bprev = beta[jj - 1]
            for t in range(d):
                wr[t] -= bprev * Vr[jj - 1, t]
                wi[t] -= bprev * Vi[jj - 1, t]
        a = 0.0
        for t in range(d):
            a += Vr[jj, t] * wr[t] + Vi[jj, t] * wi[t]
        alpha[jj] = a
        for t in range(d):
            wr[t] -= a * Vr[jj, t]
            wi[t] -= a * Vi[jj, t]
        # full reorthogonalisation (classical Gram-Schmidt, second pass only when needed)
        nrm0 = 0.0
        for t in range(d):
            nrm0 += wr[t] * wr[t] + wi[t] * wi[t]
        nrm1 = nrm0
        for rep in range(2):
            for i in range(jj + 1):
                sr = 0.0
                si = 0.0
                for t in range(d):
                    sr += Vr[i, t] * wr[t] + Vi[i, t] * wi[t]
                    si += Vr[i, t] * wi[t] - Vi[i, t] * wr[t]
                hr[i] = sr
                hi[i] = si
            for i in range(jj + 1):
                sr = hr[i]
                si = hi[i]
                for t in range(d):
                    wr[t] -= sr * Vr[i, t] - si * Vi[i, t]
                    wi[t] -= sr * Vi[i, t] + si * Vr[i, t]
            nrm1 = 0.0
            for t in range(d):
                nrm1 += wr[t] * wr[t] + wi[t] * wi[t]
            if nrm1 > 0.5 * nrm0:
                break
            nrm0 = nrm1
        bj = math.sqrt(nrm1)
        beta[jj] = bj
        n = jj + 1
        # ---- top Ritz value and residual (as in _spectral_kernels._lanczos_one) -------------
        if n == 1:
            theta1 = alpha[0]
        else:
            tprev = theta1
            hh = 0.5 * (tprev - alpha[jj])
            cpl = beta[jj - 1] * slast
            lo1 = 0.5 * (tprev + alpha[jj]) + math.sqrt(hh * hh + cpl * cpl)
            up1 = (max(tprev, alpha[jj]) + beta[jj - 1]) * (1.0 + 4.0 * _U)
            lo1 = min(max(lo1, tprev), up1)
            theta1 = _tri_kth(alpha, beta, n, 1, tprev, up1, lo1, 0.0, tprev)
            b2nd = tprev
        slast = _tri_last_component(alpha, beta, n, theta1, tz)
        r1 = bj * slast
        rho = rho_coef * _U * abs(theta1)
        breakdown = bj <= 8.0 * _U * abs(theta1) * math.sqrt(d) or n >= d
        err_lin = r1 + rho
        err = err_lin
        if (quad and n >= 2 and r1 * r1 <= 2.0 * tol * theta1 * (theta1 - lo2)
                and (gap_used <= 0.0 or r1 * r1 <= 4.0 * tol * theta1 * gap_used
                     or jj - last_gap >= 4)):
            pole2 = lo2 if last_gap == jj - 1 and lo2 > 0.0 else np.nan
            theta2, z2 = _second_ritz(alpha, beta, n, theta1, lo2, b2nd, theta2, pole2, tw,
                                      tx, twork)
            lo2 = theta2
            r2 = bj * z2
            delta = theta1 - theta2 - r2
            gap_used = delta
            last_gap = jj
            if delta > r1:
                err = min(err_lin, r1 * r1 / delta + rho)
        sq = math.sqrt(max(theta1, 0.0))
        err_sig = err / (sq + math.sqrt(max(theta1 - err, 0.0))) if sq > 0.0 else math.sqrt(err)
        if breakdown:
            status = 0
            break
        if err_sig <= tol * sq:
            if confirming or not quad:
                status = 0
                break
            confirming = True
        else:
            confirming = False
        # ---- pruning: weight of v0 above prune_lam (Christoffel-Markov) -------------------
        tp = prune_lam - rho
        if n >= 2 and tp > theta1 * (1.0 + 1e-9):
            if _log_christoffel(alpha, beta, n, tp) >= log_inv_eps:
                status = 1
                break
        if jj + 1 < maxit:
            inv = 1.0 / bj
            for t in range(d):
                Vr[jj + 1, t] = wr[t] * inv
                Vi[jj + 1, t] = wi[t] * inv
    return theta1, err, it, status


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _solve_chunk(A, blk, ph_r, ph_i, transpose, ell, d, order, chunk, nchunks, prune_lam,
                 log_inv_eps, tol, maxit, v0r, v0i, rho_coef, quad, theta_out, err_out, it_out,
                 status_out):
    """Lanczos for the frequencies ``order[chunk::nchunks]`` (indices into ph_r/ph_i); each
    frequency's computation is independent of the others, of the chunking and of threads."""
    F = order.shape[0]
    mx = min(maxit, d)
    Xr = np.empty((ell, d))
    Xi = np.empty((ell, d))
    Vr = np.empty((mx + 1, d))
    Vi = np.empty((mx + 1, d))
    alpha = np.empty(mx + 1)
    beta = np.empty(mx + 1)
    wr = np.empty(d)
    wi = np.empty(d)
    hr = np.empty(mx + 1)
    hi = np.empty(mx + 1)
    tz = np.empty(2 * mx + 2)
    tw = np.empty(mx + 1)
    tx = np.empty(mx + 1)
    twork = np.empty((4, mx + 1))
    for idx in range(chunk, F, nchunks):
        f = order[idx]
        _build(A, blk, ph_r[f], ph_i[f], transpose, Xr, Xi)
        th, err, it, st = _lanczos_c(Xr, Xi, v0r, v0i, tol, mx, Vr, Vi, alpha, beta, wr, wi,
                                     hr, hi, tz, tw, tx, twork, prune_lam, log_inv_eps,
                                     rho_coef, quad)
        theta_out[f] = th
        err_out[f] = err
        it_out[f] = it
        status_out[f] = st


@njit(parallel=True, cache=True, error_model="numpy")
def _solve_parallel(A, blk, ph_r, ph_i, transpose, ell, d, order, nchunks, prune_lam,
                    log_inv_eps, tol, maxit, v0r, v0i, rho_coef, quad, theta_out, err_out,
                    it_out, status_out):
    for c in prange(nchunks):
        _solve_chunk(A, blk, ph_r, ph_i, transpose, ell, d, order, c, nchunks, prune_lam,
                     log_inv_eps, tol, maxit, v0r, v0i, rho_coef, quad, theta_out, err_out,
                     it_out, status_out)


@functools.lru_cache(maxsize=64)
def _start_vector(d: int):
    """Fixed complex start vector: a normalised complex Gaussian draw (uniform on the unit
    sphere of C^d, the model of the pruning probability bound), read-only."""
    z = np.random.default_rng([_SEED, d]).standard_normal((2, d))
    z /= np.sqrt(np.sum(z * z))
    z.setflags(write=False)
    return z[0], z[1]


def _solve(A, blk, ph_r, ph_i, transpose, ell, d, order, prune_lam, log_inv_eps, tol, quad,
           rho_coef, theta, err, iters, status):
    """Threads only for enough work: starting a parallel region costs up to a scheduler time
    slice when the other cores are busy, far more than a small problem."""
    work = order.size * ell * d * min(d, 40)                # ~ multiply-adds of the Lanczos runs
    nthreads = min(get_num_threads(), order.size)
    v0r, v0i = _start_vector(d)
    args = (prune_lam, log_inv_eps, tol, _MAXIT, v0r, v0i, rho_coef, quad, theta, err, iters,
            status)
    if nthreads > 1 and work > 2e7:
        _solve_parallel(A, blk, ph_r, ph_i, transpose, ell, d, order, nthreads, *args)
    else:
        _solve_chunk(A, blk, ph_r, ph_i, transpose, ell, d, order, 0, 1, *args)


# --------------------------------------------------------------------------------------------
# one problem (one kernel, one group)
# --------------------------------------------------------------------------------------------
def _gamma(n: int) -> float:
    return n * _U / (1.0 - n * _U)


def _fast_problem(taps, blk, S, ph, rtol, quad, prune, prune_risk):
    """Largest singular value over the frequencies of one group of one kernel.

    taps: (T, co, ci) float64; ph: (F, T) complex (half set).  Returns (sigma, error bound,
    index of the frequency, Lanczos passes, frequencies pruned)."""
    T, co, ci = taps.shape
    F = ph.shape[0]
    amax = float(np.abs(taps).max())
    if amax == 0.0:
        return 0.0, 0.0, 0, 0, 0
    e = int(np.frexp(amax)[1])
    ts = np.ldexp(taps, -e)                                    # exact scaling: max in [1/2, 1)
    ncol = ci * S
    transpose = ncol > co
    ell, d = (ncol, co) if transpose else (co, ncol)
    A = np.ascontiguousarray(ts.transpose(2, 0, 1) if transpose else ts.transpose(1, 0, 2))
    # cheap rigorous upper bounds: ||K(g)||_F^2 = sum_b |sum_{t in b} ph_t w_t|_F^2
    gram = np.einsum("toc,soc->ts", ts, ts) * (blk[:, None] == blk[None, :])
    fro = np.sqrt(np.maximum(np.einsum("ft,ts,fs->f", ph.conj(), gram, ph).real, 0.0))
    fro = fro * (1.0 + 4 * _gamma(T * T + co * ci)) + 1e-300
    # rounding of K(g) built from the taps: |dK_oc| <= gamma_{T+3} sum_t |w_t,oc|
    build_err = _gamma(T + 3) * math.sqrt(T) * float(np.sqrt(np.sum(ts * ts)))
    ph_r = np.ascontiguousarray(ph.real)
    ph_i = np.ascontiguousarray(ph.imag)
    theta = np.zeros(F)
    err = np.full(F, np.inf)
    iters = np.zeros(F, np.int64)
    status = np.full(F, -1, np.int64)                          # -1 not run, 3 cheap-pruned
    order = np.argsort(-fro, kind="stable")
    log_inv_eps = math.log(max(d, 2) / prune_risk)
    rho_coef = float(2 * (ell + d) + T)
    lower = 0.0                           # certified for the computed K: max sigma_1 >= lower
    start = 0
    r = 0
    while start < F:
        size = _ROUND_SIZES[r] if r < len(_ROUND_SIZES) else 2048
        r += 1
        sl = order[start:start + size]
        start += size
        if prune and lower > 0.0:
            cheap = fro[sl] < lower
            status[sl[cheap]] = 3
            sl = sl[~cheap]
        if sl.size == 0:
            continue
        plam = lower * lower if prune else 0.0
        _solve(A, blk, ph_r, ph_i, transpose, ell, d, np.ascontiguousarray(sl), plam,
               log_inv_eps, rtol, quad, rho_coef, theta, err, iters, status)
        # a Ritz value never exceeds sigma_1^2 (Cauchy interlacing), converged or not
        lower = max(lower, float(np.sqrt(max(theta[sl].max(), 0.0) * (1.0 - rho_coef * _U))))
    done = np.flatnonzero((status == 0) | (status == 2))
    th = np.maximum(theta[done], 0.0)
    sq = np.sqrt(th)
    den = sq + np.sqrt(np.maximum(th - err[done], 0.0))
    eb = np.where(den > 0, err[done] / np.where(den > 0, den, 1.0), np.sqrt(err[done]))
    eb = eb * (1.0 + 8 * _U) + 2 * _U * sq + build_err
    k = int(np.argmax(sq))
    value = float(sq[k])
    lo = lower - build_err
    hi = float(np.max(sq + eb))
    bound = max(value - lo, hi - value, 0.0)
    npruned = int(np.count_nonzero((status == 1) | (status == 3)))
    return (math.ldexp(value, e), math.ldexp(bound, e), int(done[k]), int(iters.sum()),
            npruned)


def _svd_problem(taps_full, blk, S, grid, a1, a2):
    """Published recipe for one group of one kernel: FFT of the zero-padded polyphase kernel,
    full SVD at every frequency.  taps_full: (T, co, ci).  Returns (sigma, bound, index)."""
    T, co, ci = taps_full.shape
    m1, m2 = grid
    amax = float(np.abs(taps_full).max())
    if amax == 0.0:
        return 0.0, 0.0, 0
    e = int(np.frexp(amax)[1])                                 # exact scaling: no overflow
    P = np.zeros((co, ci, S, m1, m2))                          # polyphase kernel on the torus
    for t in range(T):                                         # taps may wrap: accumulate
        P[:, :, blk[t], a1[t], a2[t]] += np.ldexp(taps_full[t], -e)
    # numpy's fft2 gives sum_a P[a] exp(-2 pi i g a / m) = K(-g): same singular values
    Kf = np.fft.fft2(P)                                        # (co, ci, S, m1, m2)
    best, arg = -1.0, 0
    for g1 in range(m1):
        Kg = np.ascontiguousarray(Kf[:, :, :, g1, :].transpose(3, 0, 1, 2)).reshape(m2, co, -1)
        s1 = np.linalg.svd(Kg, compute_uv=False)[:, 0]
        j = int(np.argmax(s1))
        if s1[j] > best:
            best, arg = float(s1[j]), ((-g1) % m1) * m2 + ((-j) % m2)
    best = math.ldexp(best, e)
    return best, (co + ci * S + T) * _U * best, arg


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def circular_operator_norm(w, torus_size, stride=(1, 1), dilation=(1, 1), groups: int = 1,
                           rtol: float = 1e-10, *, method: str = "auto", prune: bool = True,
                           prune_risk: float = 1e-10) -> CircularNorm:
    """Exact operator norm of the circular (strided, dilated, grouped) convolution on a torus.

    The norm is ``max_g sigma_1(K(g))`` over the frequencies of the ``(n_h/s_h, n_w/s_w)``
    grid and over groups (module docstring).  It is the norm of a circular ``Conv2d`` layer
    with input ``torus_size`` when :func:`circular_is_exact` holds, and a certified upper
    bound for any layer that is a compression of this torus convolution (zero padding on a
    torus ``>= n + d (k - 1)``; see ``sntheory.conv.operator``).

    Parameters
    ----------
    w : array_like or torch.Tensor
        ``(c_out, c_in_g, kh, kw)`` or a batch ``(N, c_out, c_in_g, kh, kw)``; finite reals.
    torus_size : int or (int, int)
        ``(n_h, n_w)``, divisible by ``stride``.  The kernel may be larger than the torus
        (its taps then wrap around and add up).
    stride, dilation : int or (int, int)
    groups : int
        Must divide ``c_out``; the input has ``groups * c_in_g`` channels.
    rtol : float in (0, 1)
        Target relative accuracy of the Lanczos paths (``error_bound <= ~rtol * value``,
        down to the round-off floor ~1e-14); ignored by ``"svd"``.
    method : {"auto", "fast", "svd"}
        See the module docstring.
    prune : bool
        Drop frequencies that cannot hold the maximum (Lanczos paths).
    prune_risk : float in (0, 1)
        Probability bound (over the random start vector) that one pruned frequency held
        more than the maximum found.

    Returns
    -------
    CircularNorm
    """
    require_choice("method", method, METHODS)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    prune_risk = require_positive_float("prune_risk", prune_risk, maximum=1.0)
    wb, single, n, s, d, groups = _prepare(w, torus_size, stride, dilation, groups)
    N, c_out, cig, kh, kw = wb.shape
    grid = (n[0] // s[0], n[1] // s[1])
    S = s[0] * s[1]
    blk, a1, a2 = _taps((kh, kw), n, s, d)
    if method == "svd":
        nfreq = grid[0] * grid[1]
    else:
        freqs, _ = half_frequencies(grid)
        ph = _phases(freqs, a1, a2, grid)
        nfreq = freqs.shape[0]
    vals = np.zeros((N, groups))
    ebs = np.zeros((N, groups))
    fq = np.zeros((N, groups, 2), np.int64)
    iters = np.zeros(N, np.int64)
    pruned = np.zeros(N, np.int64)
    for g in range(groups):
        taps = _group_taps(wb, g, groups)
        for b in range(N):
            tb = np.ascontiguousarray(taps[b])
            if method == "svd":
                sg, eb, idx = _svd_problem(tb, blk, S, grid, a1, a2)
                fq[b, g] = (idx // grid[1], idx % grid[1])
            else:
                sg, eb, idx, it, npr = _fast_problem(tb, blk, S, ph, rtol, method == "fast",
                                                     prune, prune_risk)
                fq[b, g] = freqs[idx]
                iters[b] += it
                pruned[b] += npr
            vals[b, g], ebs[b, g] = sg, eb
    # the norm is the max over groups: it lies in [max(v - e), max(v + e)]
    group = np.argmax(vals, axis=1)
    value = vals[np.arange(N), group]
    bound = np.maximum(value - np.max(vals - ebs, axis=1), np.max(vals + ebs, axis=1) - value)
    freq = fq[np.arange(N), group]
    res = CircularNorm(value, bound, method, freq, group, iters, pruned, nfreq * groups)
    if single:
        res = replace(res, value=float(value[0]), error_bound=float(bound[0]),
                      frequency=freq[0], group=int(group[0]), iterations=int(iters[0]),
                      pruned=int(pruned[0]))
    return res


def circular_layer_norm(w, geometry: ConvGeometry, *, rtol: float = 1e-10,
                        method: str = "auto", exact_only: bool = True) -> CircularNorm:
    """Operator norm of a circular-padding conv layer given by its geometry.

    Exact (``result.exact``) when :func:`circular_is_exact` holds.  Otherwise: with
    ``exact_only=True`` a ValueError gives the reason; with ``exact_only=False`` the result
    is the certified upper bound ``bound_factor * (torus norm)`` of
    :func:`circular_bound_setup` with ``exact=False`` (zero padding: ``sntheory.conv.operator``).
    """
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a ConvGeometry, got {type(geometry).__name__}")
    if geometry.padding_mode != "circular":
        raise ValueError(f"circular_layer_norm needs `geometry.padding_mode` = 'circular', got "
                         f"{geometry.padding_mode!r} (zero padding: sntheory.conv.operator)")
    wb, _ = as_kernel_batch(w)
    geometry.check_kernel(wb.shape[1:])
    exact, reason = circular_is_exact(geometry, wb.shape[3:])
    if exact:
        res = circular_operator_norm(w, geometry.input_size, geometry.stride,
                                     geometry.dilation, geometry.groups, rtol, method=method)
        return replace(res, exact=True, reason=reason)
    if exact_only:
        raise ValueError(f"the circular layer is not a full torus convolution, so the FFT "
                         f"norm is not exact: {reason}. Pass exact_only=False for a certified "
                         f"upper bound")
    torus_stride, factor = circular_bound_setup(geometry, wb.shape[3:])
    res = circular_operator_norm(w, geometry.input_size, torus_stride, geometry.dilation,
                                 geometry.groups, rtol, method=method)
    return replace(res, value=res.value * factor, error_bound=res.error_bound * factor,
                   exact=False, reason=reason, bound_factor=factor)
