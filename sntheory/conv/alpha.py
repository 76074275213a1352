"""The coverage constant ``alpha`` of THEORY.md R: ``||w^|| <= ||w~|| <= alpha ||w^||``.

Upper bound (what ``alpha`` must count)
---------------------------------------
Write the layer as ``(w~ x)_q = w^ patch_q(x)`` for every output position ``q``, where
``patch_q(x)`` is the vector of the ``c_in kh kw`` values that output ``q`` reads (tap ``(u, v)``
of output ``(i, j)`` reads padded position ``(i s_h + u d_h, j s_w + v d_w)``, which is either a
padding zero or an input pixel). Then, per group (the operator is block diagonal over groups,
``w^_k`` = the rows of group ``k``, a row block of ``w^``)::

    ||w~ x||^2 = sum_q ||w^_k patch_q(x)||^2 <= max_k ||w^_k||^2 sum_q ||patch_q(x)||^2
               = max_k ||w^_k||^2 sum_{pixels t} c(t) ||x_t||^2  <=  alpha^2 ||w^||^2 ||x||^2

where ``x_t`` is the channel vector of pixel ``t`` and ``c(t)`` the number of **(output position,
kernel tap) pairs** that read pixel ``t``. So ``alpha^2 = max_t c(t)`` -- reads counted with
multiplicity: with circular padding one output position can read the same pixel through several
taps when the dilated kernel is wider than the input (e.g. input width 2, kernel 3, circular
padding 1: taps 0 and 2 of output 0 both read pixel 1), and each such read contributes its own
term to ``||patch_q(x)||^2``. The middle equality is exact, so ``max_t c(t)`` is the smallest
constant this argument can give. ``c`` factorises over the axes, ``c(t_h, t_w) = c_h(t_h) c_w(t_w)``,
so ``alpha = sqrt(max c_h * max c_w)``. ``max_positions`` reports the count without multiplicity
(distinct output positions reading a pixel; the same as ``alpha^2`` whenever no output reads a
pixel twice, in particular for zero padding).

Tightness: if every pixel has the same coverage (``uniform``) and no output reads a padding zero
(e.g. exact circular geometries), the all-ones kernel on a constant image attains
``||w~ 1|| = alpha ||w^|| ||1||``. Without uniform coverage alpha need not be attained (3x3 stride 2
on a torus: pixels are read 4, 2 or 1 times).

Generic bound ``alpha_bound``
-----------------------------
``alpha_bound = sqrt(ceil(kh g_h / s_h) ceil(kw g_w / s_w))`` with ``g = gcd(d, s)`` (dilation-aware;
``sqrt(ceil(kh/sh) ceil(kw/sw))`` for ``d = 1``: 3 for 3x3/s1, 2 for 4x4/s2). Proof (one axis, zero
padding): a read of pixel ``t`` by tap ``u`` of output ``i`` means ``i s + u d = t + p``; for each ``u``
at most one ``i`` solves it, and only taps with ``u d = t + p (mod s)`` can; these ``u`` form one
residue class modulo ``s / g``, which has at most ``ceil(k g / s)`` members in ``[0, k)``. The same
holds for circular layers that are exact torus convolutions (``s`` divides ``n`` and
``n_out = n / s``: ``i s = t + p - u d (mod n)`` has exactly one solution ``i`` when ``s`` divides the
right side). Other circular layers can exceed it, because padded copies of a pixel are read
again (a 1x1 kernel with circular padding ``p = n`` reads every pixel 3 times).

Lower bound ``||w^|| <= ||w~||`` (``lower_bound_applies``)
---------------------------------------------------------
Claim: it holds (per group: ``max_k ||w^_k|| <= ||w~||``, which is ``||w^||`` for ``groups = 1``)
whenever some output position ``q0`` reads ``kh kw`` pairwise distinct input pixels and no
padding zero. Proof: let ``v`` be a unit top right singular vector of ``w^_k`` for the group ``k``
attaining ``max_k ||w^_k||``, viewed as ``(c_in_g, kh, kw)``. Put ``x`` = 0 except on group ``k``'s
input channels at the pixels read by ``q0``, where tap ``(u, v)`` reads the value ``v[:, u, v]``.
Distinct pixels make ``x`` well defined with ``||x|| = ||v|| = 1``, and ``(w~ x)_{q0} = w^_k v``,
so ``||w~|| >= ||w~ x|| >= ||w^_k v|| = ||w^_k||``.

* Zero padding: taps always read distinct positions, so the condition is that ``q0``'s receptive
  field lies wholly inside the unpadded input; per axis, with ``i0 = ceil(p / s)``:
  ``i0 < n_out`` and ``i0 s - p + d (k - 1) <= n - 1``.
* Circular padding: no read ever hits a zero, and output ``i`` reads pixels
  ``(i s + u d - p) mod n``, which are pairwise distinct iff ``u d`` are distinct modulo ``n`` for
  ``u < k``, i.e. ``n / gcd(d, n) >= k`` -- the same for every output position. So for circular
  geometries, exact or not, the lower bound holds iff the dilated kernel does not overlap itself
  on the torus. It does **not** always hold for exact circular geometries: input 2, kernel 3,
  padding 1, stride 1 is an exact torus convolution, and the kernel ``[1, 0, -1]`` gives
  ``w~ = 0`` while ``||w^|| = sqrt 2``.

When the condition fails the lower bound may still hold, or not (zero padding: input 1x1, 3x3
kernel, padding 1 -- the single output reads only the centre tap, so ``||w~|| = ||w[:, :, 1, 1]||``,
smaller than ``||w^||`` for generic kernels).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import require_positive_int
from .geometry import ConvGeometry, _pair

__all__ = ["AlphaResult", "coverage_alpha", "axis_coverage"]


@dataclass(frozen=True)
class AlphaResult:
    """Result of :func:`coverage_alpha` (all counts are exact integers).

    Attributes
    ----------
    alpha : float
        ``sqrt(max over pixels of the number of (output position, tap) reads)``.
    alpha_bound : float
        ``sqrt(ceil(kh g_h / s_h) ceil(kw g_w / s_w))``, ``g = gcd(dilation, stride)``; an upper
        bound on ``alpha`` for zero padding and exact circular geometries.
    lower_bound_applies : bool
        Whether the proof of ``||w^|| <= ||w~||`` applies (per group for ``groups > 1``).
    reason : str
        Why it applies (an output position that witnesses it) or why not.
    coverage_h, coverage_w : (H,), (W,) int arrays
        Reads per input row / column with multiplicity; ``c(t_h, t_w) = c_h(t_h) c_w(t_w)``.
    positions_h, positions_w : (H,), (W,) int arrays
        Distinct output rows / columns reading each input row / column.
    max_positions : int
        Max over pixels of the number of distinct output positions reading it.
    uniform : bool
        Every pixel is read equally often (then the all-ones kernel on a constant image attains
        ``alpha`` when no output reads padding zeros).
    output_size : (int, int)
    """

    alpha: float
    alpha_bound: float
    lower_bound_applies: bool
    reason: str
    coverage_h: np.ndarray = field(repr=False)
    coverage_w: np.ndarray = field(repr=False)
    positions_h: np.ndarray = field(repr=False)
    positions_w: np.ndarray = field(repr=False)
    max_positions: int = 0
    uniform: bool = False
    output_size: tuple = (0, 0)

    def coverage(self) -> np.ndarray:
        """(H, W) int array: reads of each pixel with multiplicity (``alpha^2`` is its max)."""
        return np.outer(self.coverage_h, self.coverage_w)


def axis_coverage(n: int, k: int, stride: int, padding: int, dilation: int, mode: str,
                  n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """One axis: (reads per pixel with multiplicity, distinct output positions per pixel)."""
    i = np.arange(n_out)[:, None]
    u = np.arange(k)[None, :]
    r = i * stride + u * dilation - padding               # (n_out, k) unpadded coordinate
    if mode == "zeros":
        valid = (r >= 0) & (r < n)
    else:
        r = np.mod(r, n)
        valid = np.ones_like(r, dtype=bool)
    rows = np.broadcast_to(i, r.shape)[valid]
    cols = r[valid]
    reads = np.bincount(cols, minlength=n).astype(np.int64)
    hit = np.zeros((n_out, n), dtype=bool)
    hit[rows, cols] = True
    return reads, hit.sum(axis=0).astype(np.int64)


def _axis_lower(n, k, s, p, d, mode, n_out, axis):
    """(applies, text) for one axis (see the module docstring)."""
    if mode == "circular":
        period = n // math.gcd(d, n)
        if period >= k:
            return True, (f"{axis}: the {k} taps (dilation {d}) are distinct modulo the input "
                          f"size {n}, so every output reads distinct pixels")
        return False, (f"{axis}: the {k} taps (dilation {d}) overlap modulo the input size {n} "
                       f"(taps u and u + {period} read the same pixel), so no output reads "
                       f"{k} distinct pixels")
    i0 = -(-p // s)
    last = i0 * s - p + d * (k - 1)
    if i0 < n_out and last <= n - 1:
        return True, (f"{axis}: output {i0} reads input {i0 * s - p}..{last} "
                      f"(inside 0..{n - 1})")
    if i0 >= n_out:
        return False, (f"{axis}: every output reads padding (the first output clear of the "
                       f"padding would be {i0}, but there are only {n_out})")
    return False, (f"{axis}: no output's receptive field fits inside the unpadded input: the "
                   f"first output clear of the left padding ({i0}) reads up to {last} > {n - 1}")


def coverage_alpha(geometry: ConvGeometry, kernel_size) -> AlphaResult:
    """Exact ``alpha``, the generic ``alpha_bound`` and the lower-bound condition of a geometry.

    Parameters
    ----------
    geometry : ConvGeometry
        Input size, stride, padding (zeros or circular), dilation, groups.
    kernel_size : int or (kh, kw)

    Returns
    -------
    AlphaResult

    Raises
    ------
    TypeError, ValueError
        ``geometry`` not a :class:`ConvGeometry`; bad ``kernel_size``; empty output.

    >>> g = ConvGeometry.same((32, 32), 3)
    >>> coverage_alpha(g, 3).alpha
    3.0
    >>> coverage_alpha(ConvGeometry((32, 32), stride=2, padding=1), 4).alpha
    2.0
    """
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a ConvGeometry, got {type(geometry).__name__}")
    kh, kw = _pair("kernel_size", kernel_size, 1)
    for v in (kh, kw):
        require_positive_int("kernel_size", v)
    out = geometry.output_size((kh, kw))
    per_axis = []
    for axis, n, k, s, p, d, n_out in zip(("height", "width"), geometry.input_size, (kh, kw),
                                          geometry.stride, geometry.padding, geometry.dilation,
                                          out):
        reads, pos = axis_coverage(n, k, s, p, d, geometry.padding_mode, n_out)
        ok, text = _axis_lower(n, k, s, p, d, geometry.padding_mode, n_out, axis)
        per_axis.append((reads, pos, ok, text, -(-k * math.gcd(d, s) // s)))
    (rh, ph, okh, th, bh), (rw, pw, okw, tw, bw) = per_axis
    alpha = math.sqrt(int(rh.max()) * int(rw.max()))
    applies = okh and okw
    reason = "; ".join(t for t, ok in ((th, okh), (tw, okw)) if ok == applies)
    if applies:
        reason = "an output position reads only distinct input pixels (" + reason + ")"
        if geometry.groups > 1:
            reason += (f"; with groups = {geometry.groups} the bound holds for the per-group "
                       f"norm max_k ||w^_k|| (reshaped_kernel_norm(w, groups=...)), not "
                       f"torch's full reshape")
    else:
        reason = "no output position reads only distinct input pixels: " + reason
    uniform = bool(rh.min() * rw.min() == rh.max() * rw.max())    # of the 2-D map (>= 0)
    return AlphaResult(alpha=alpha, alpha_bound=math.sqrt(bh * bw), lower_bound_applies=applies,
                       reason=reason, coverage_h=rh, coverage_w=rw, positions_h=ph,
                       positions_w=pw, max_positions=int(ph.max() * pw.max()), uniform=uniform,
                       output_size=out)
