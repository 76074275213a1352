"""The operator norm ``||w~||_sp`` of conv layers, with a certified interval.

>>> import torch
>>> from sntheory.conv.geometry import ConvGeometry
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<...>
>>> w = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False).weight
>>> res = conv_operator_norm(w, ConvGeometry.same((16, 16), 3))
>>> bool(res.lower <= res.value <= res.upper), res.method
(True, 'lanczos')

Paths (``method=``)
-------------------
``"fft"``      circular padding where :func:`sntheory.conv.fft.circular_is_exact` holds: the layer
               *is* a (strided) convolution on the torus, whose norm
               :func:`sntheory.conv.fft.circular_operator_norm` computes exactly (block
               circulant / polyphase). ``lower, upper = value -+ error_bound``.
``"dense"``    the expanded matrix (:func:`sntheory.conv.dense.expanded_matrix`) and
               :func:`sntheory.spectral.largest_singular_value` (``"tiny"`` or ``"gram"``: paths
               that bracket sigma_1 itself, not just some singular value): exact, for small
               layers. ``"auto"`` takes it for zero padding / non-exact circular layers whose
               matrix has at most ``DENSE_AUTO_MAX_ENTRIES`` entries.
``"lanczos"``  every other layer (zero padding of any amount, circular layers that are not
               torus convolutions): block Lanczos on the real operator for the value and a
               certified lower bound, certified upper bounds from tori (below).
``"auto"``     ``"fft"`` if exact circular, else ``"dense"`` if small, else ``"lanczos"``.

The Lanczos path
----------------
*Operator.* ``A x`` is ``torch.nn.functional.conv2d`` in float64 (``dtype="float32"``: the
iteration's convolutions in float32, see :func:`conv_operator_norm`; circular padding: ``F.pad``
with ``mode='circular'``, then a valid convolution); ``A^T y`` is ``conv_transpose2d`` (stride 1)
or, for strides, a stride-1 ``conv2d`` with the flipped polyphase components of the (dilated)
kernel followed by a pixel shuffle (``_Ops._polyphase_adjoint_weight``; faster than torch's
strided transpose), the rows/columns the strided forward pass never reads getting zeros; for
circular padding then the adjoint of the padding (the wrapped borders are added back onto the
pixels they copy). Groups are split: the operator is block diagonal over groups, so its norm is
the max over groups of the per-group norms, and each group is an independent operator of the
batch (all operators of a batch run together as one grouped convolution).

*Iteration.* Block Lanczos on ``A^T A`` (one forward and one adjoint convolution per block step,
on a batch of ``b`` vectors), with full reorthogonalisation (against the last two blocks,
then one classical Gram-Schmidt pass over the whole basis, repeated when it removes more than
~half of a vector: DGKS) and thick restart (the top third of the Ritz vectors are kept when the
basis reaches ``basis_size`` vectors). Inputs of at most 64 entries use ``b = 1`` and run to the
full Krylov space (exact up to rounding).

*Start block and block size* (:func:`_start_block`). The top singular values of a conv layer come
in near-degenerate clusters: the torus operator's top singular value belongs to the conjugate
pair ``K(f*)``, ``K(-f*) = conj K(f*)`` (a 2-dimensional real invariant subspace: the real and
imaginary parts of the plane wave of ``K(f*)``'s top right singular vector), which zero padding
splits by ~1e-5 relative; symmetric kernels tie several frequencies exactly, and a kernel with
dilation ``d`` has ``d_h d_w`` exact copies of every peak of its symbol. A single-vector Lanczos
from a random start was measured to settle on ``sigma_2`` of such a pair (error 1.5e-5) with a
residual small enough to pass any residual test; a block at least as large as the cluster
resolves it from any start block that has a component along each member. So ``b`` = 2 per
exactly tied frequency and at least ``2 d_h d_w``, plus one spare direction (between 3 and 9:
the stopping test below trusts only clusters smaller than the block), and the start vectors are
random combinations of the real and imaginary parts of the plane waves of all torus frequencies
within 2% of the top (restricted to the input window: the torus used for the upper bound, with
the input at offset ``p``), plus 25% random noise -- each candidate, any of which may hold the
layer's maximum once the boundary perturbs the torus spectrum, gets weight O(1).

*Stopping (the value).* The top Ritz value ``theta_1`` of ``A^T A`` is accepted when the
quadratic residual bound for a Ritz cluster is below ``rtol theta_1``:
``min_k ||R_k||^2 / (theta_k - theta_{k+1} - r_{k+1})`` over the top ``k < b`` Ritz vectors
(``R_k`` their block residual, ``r_j`` single residuals; Mathias 1998 / Li & Li 2013: each
``|lambda_i - theta_i| <= ||R||^2 / gap`` when the rest of the spectrum lies below
``theta_{k+1} + r_{k+1}``), or the plain residual ``r_1``, whichever is smaller. The quadratic
bound is used only across gaps ``>= sqrt(rtol) theta_1``: across smaller ones the gap estimate
is fragile (a hypothesis-found layer with three identical decoupled blocks, each with a top
triple 3e-5 apart, passed it 5e-6 off, its six-member Ritz cluster filling the block of six
and hiding three more members), and the residual ``r_1 <= rtol theta_1`` is required,
which a Ritz value mixing two eigenvalues cannot meet. This is a convergence criterion, not a
certificate: like every Lanczos test it assumes the Krylov space has seen the top of the
spectrum. ``value = sqrt(theta_1)``, relative error ``~ rtol / 2``. The
iteration also stops when the certified interval is already narrower than ``rtol`` (e.g. 1x1
kernels, where the torus bound is exact), or after ``max_iter`` block steps (``note`` says so).

*Certified lower bound.* ``lower = ||A y|| / ||y||`` for the final Ritz vector ``y``, evaluated
with ``conv2d`` and reduced by a rounding allowance: ``|fl(A y) - A y| <= gamma_{2K} |A| |y|``
elementwise (``K = c_in_g kh kw``, the length of the dot products; any summation order obeys
this, so the bound holds for torch's im2col/GEMM float64 convolution), with ``|A||y|`` computed as
the convolution of ``|w|`` with ``|y|``; then the rounding of the two norms.

*Certified upper bound* (``upper`` = the minimum of):

1. *Tori (zero padding).* One axis (the 2-D case is the tensor product): place the input at
   positions ``p .. p + n - 1`` of a torus of size ``L`` with zeros elsewhere, and run the stride-
   ``s`` circular correlation ``z_j = sum_u w_u X_{(j s + u d) mod L}``, ``j < L / s``. Output
   ``j < n_out`` of the layer reads padded positions ``t = j s + u d <= (n_out - 1) s + d (k - 1)
   <= n + 2 p - 1``. If ``L >= n + p``, a read ``t < L`` sees ``X_t`` = the padded input at ``t``
   (the input occupies ``[p, p + n)``, zeros elsewhere), and a read ``t >= L`` wraps to
   ``t - L <= p - 1``, a zero, as is the padded input at ``t >= n + p`` -- so the left and right
   zero paddings can share the torus's ``L - n >= p`` zeros. If also ``L >= s n_out`` and
   ``s | L``, the layer's outputs are torus outputs ``0 .. n_out - 1``. Hence
   ``w~ = P_out T_L E_in`` with ``E_in`` an isometric embedding and ``P_out`` a coordinate
   restriction: a compression, ``||w~|| <= ||T_L||``. Sizes ``L_min, L_min + s, ...``
   (``L_min`` = the smallest multiple of ``s`` with ``L >= max(n + p, s n_out)``), the minimum
   over ``n_tori`` of them; ``||T_L||`` + its error bound from ``circular_operator_norm``
   (certified as that function documents: its per-frequency Lanczos runs carry the usual
   Krylov start-vector caveat).
2. *The input torus (circular, not exact;* :func:`sntheory.conv.fft.circular_bound_setup`*).*
   Output ``i`` reads ``(i s + u d - p) mod n``. If
   ``s | n``, output ``i`` equals output ``i mod (n/s)`` of the stride-``s`` torus convolution on
   ``n`` (input rolled by ``p``, an orthogonal map); otherwise output ``i`` equals output
   ``(i s) mod n`` of the stride-1 torus convolution. So ``w~ = D T`` with ``D`` duplicating or
   dropping rows; ``||w~|| <= sqrt(m_h m_w) ||T||``, ``m`` the largest row multiplicity per axis.
3. *Unrolled circular padding.* ``w~ = C P`` with ``P`` the circular padding (``||P||`` =
   sqrt of the largest number of copies of a pixel) and ``C`` a valid convolution on the padded
   input, bounded by 1. with ``p = 0``.
4. ``alpha max_k ||w^_k||`` (THEORY.md R), always valid (``sntheory.conv.alpha``).

Bounds 2 and 3 are loose when the stride does not divide the input (the stride-1 torus;
relative width ~0.3 measured), the value is not affected.

Accuracy measured against the dense SVD (``tests/test_conv_operator.py``; ~24,000 hypothesis
examples in a stress run): Lanczos values within 2.6e-7 relative at ``rtol = 1e-6``, the
paper's CIFAR layers within 2e-8 (``benchmarks/bench_conv_zero_padding.py``, < 2 s per layer).
Known limitation: very long 1-D signals with few channels (e.g. 1 x 1000, one channel) have a
top spectrum clustered below 1e-6 that the stopping test cannot resolve in ``max_iter`` steps:
``converged`` is then False (the value was still within ~2e-6).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import sys
from dataclasses import dataclass, field

import numpy as np

from .._validation import require_choice, require_positive_float, require_positive_int
from ..spectral import largest_singular_value
from .alpha import coverage_alpha
from .geometry import ConvGeometry, as_kernel_batch, _pair
from .reshaped import reshaped_norms_with_bounds

__all__ = ["ConvNormResult", "conv_operator_norm", "layer_norms", "METHODS",
           "DENSE_AUTO_MAX_ENTRIES", "zero_padding_tori"]

METHODS = ("auto", "fft", "dense", "lanczos")
DTYPES = ("float64", "float32")
DENSE_AUTO_MAX_ENTRIES = 1 << 18       # per group and kernel: 2 MB of float64
_DENSE_MAX_ENTRIES = 50_000_000        # method="dense" refuses more (all kernels together)
_U = 2.0 ** -53
_EXACT_WIDTH = 1e-8                    # `exact` means: certified to this relative width
_BASIS_BYTES = 192 << 20               # memory for the Lanczos bases of one chunk of kernels
_MODE_BYTES = 64 << 20                 # memory for the transfer matrices of one chunk
_SEED = 0x5EED_C0DE

torch = F = None                       # imported on first use: torch is an optional dependency


def _load_torch():
    global torch, F
    if torch is None:
        try:
            import torch as _torch
            import torch.nn.functional as _F
        except ImportError as exc:                          # pragma: no cover - env specific
            raise ImportError("the Lanczos path of conv_operator_norm applies the layer with "
                              "torch.nn.functional.conv2d: install torch (see README)") from exc
        torch, F = _torch, _F
    return torch


@contextlib.contextmanager
def _blas_threads(n):
    """Pin BLAS (numpy, scipy) and numba to ``n`` threads (None: leave them alone)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits
    import numba
    old = numba.get_num_threads()
    # numba.set_num_threads can reset torch's intra-op thread count (shared OpenMP runtime):
    # remember it and put it back, or a caller's torch pinning is silently undone.
    torch_old = torch.get_num_threads() if torch is not None else None
    try:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        if torch_old is not None:
            torch.set_num_threads(torch_old)
        with threadpool_limits(limits=n):
            yield
    finally:
        numba.set_num_threads(old)
        if torch_old is not None:
            torch.set_num_threads(torch_old)


@contextlib.contextmanager
def _torch_threads(n):
    """Pin torch's intra-op threads to ``n`` (None: leave them alone); restored afterwards."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(n)
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------
# result
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConvNormResult:
    """Result of :func:`conv_operator_norm`.

    For a single 4-D kernel the numeric fields are Python scalars, for a batch ``(N,)`` arrays.

    Attributes
    ----------
    value : best estimate of ``||w~||_sp`` (exact path: the exact value; Lanczos: the converged
        Ritz value, relative error ~``rtol / 2``).
    lower, upper : certified interval, ``lower <= ||w~||_sp <= upper`` (rounding accounted for).
    exact : the interval pins the norm to a relative width ``<= 1e-8``.
    rel_width : ``(upper - lower) / lower`` (inf when ``lower = 0``).
    converged : the value met the stopping rule (always True on the exact paths).
    iterations : operator applications ``A^T A`` per kernel (0 on the exact paths).
    method : ``"fft"``, ``"dense"`` or ``"lanczos"``.
    note : why the result is (not) exact, which bound gave ``upper``, torus sizes.
    """

    value: object
    lower: object
    upper: object
    exact: object
    rel_width: object
    converged: object
    iterations: object = field(repr=False)
    method: str = ""
    note: str = ""


def _finish(value, lower, upper, converged, iterations, method, note, single) -> ConvNormResult:
    value = np.minimum(np.maximum(value, lower), upper)
    with np.errstate(divide="ignore", invalid="ignore"):
        width = np.where(lower > 0, (upper - lower) / np.where(lower > 0, lower, 1.0),
                         np.where(upper > 0, np.inf, 0.0))
    exact = width <= _EXACT_WIDTH
    if single:
        return ConvNormResult(float(value[0]), float(lower[0]), float(upper[0]), bool(exact[0]),
                              float(width[0]), bool(converged[0]), int(iterations[0]), method,
                              note)
    return ConvNormResult(value, lower, upper, exact, width, np.asarray(converged, bool),
                          np.asarray(iterations, np.int64), method, note)


# ------------------------------------------------------------------------------------------
# the real operator, batched over M independent (kernel, group) operators
# ------------------------------------------------------------------------------------------
class _Ops:
    """``M`` conv operators (groups = 1 each) of one geometry, applied together as one grouped
    conv. Vectors are ``(M, b, n)`` float64 tensors, ``n = c_in * H * W``; the convolutions run
    in ``dtype`` (float64, or float32 for the fast path: inputs rounded to float32, results
    returned as float64)."""

    def __init__(self, kernels: np.ndarray, geometry: ConvGeometry, dtype=None):
        _load_torch()
        self.dtype = torch.float64 if dtype is None else dtype
        self.g = geometry
        self.M, self.co, self.ci, self.kh, self.kw = kernels.shape
        self.H, self.W = geometry.input_size
        self.n = self.ci * self.H * self.W
        self.out = geometry.output_size((self.kh, self.kw))
        self.m = self.co * self.out[0] * self.out[1]
        self.circular = geometry.padding_mode == "circular"
        self.set_weights(torch.from_numpy(np.ascontiguousarray(kernels, dtype=np.float64)))
        # output_padding: rows/columns at the end that the strided forward pass never reads
        ops = []
        for n, p, d, k, s, no in zip(geometry.input_size, geometry.padding, geometry.dilation,
                                     (self.kh, self.kw), geometry.stride, self.out):
            ops.append(n + 2 * p - ((no - 1) * s + d * (k - 1) + 1))
        self.output_padding = tuple(ops)

    def set_weights(self, kernels: torch.Tensor) -> None:
        self.kernels = kernels                                    # (M, co, ci, kh, kw)
        self.M = kernels.shape[0]
        kernels = kernels.to(self.dtype)
        self.weight = kernels.reshape(self.M * self.co, self.ci, self.kh, self.kw)
        self.polyphase = max(self.g.stride) > 1
        if self.polyphase:
            self.weight_adj = self._polyphase_adjoint_weight(kernels)

    def _polyphase_adjoint_weight(self, kernels: torch.Tensor) -> torch.Tensor:
        """Weight of the strided adjoint as a stride-1 ``conv2d`` (faster than torch's strided
        ``conv_transpose2d``, measured 1.3-1.5x on 4x4/s2 layers).

        With the dilated kernel ``wd`` (taps at ``u`` in ``[0, D)``) and the padded input
        ``xp``, the forward pass is ``y_i = sum_u wd_u xp_{i s + u}``; its adjoint
        ``g_t = sum_{i s + u = t} wd_u y_i`` splits by the phase ``b`` of ``t = a s + b``
        (``u = q s + b``): ``g_{a s + b} = sum_q wd_{q s + b} y_{a - q}``, a full convolution
        of ``y`` with each phase of the kernel, i.e. a correlation of ``y`` zero padded by
        ``kk - 1`` with the flipped phase kernels (``kk = ceil(D / s)``)."""
        M, co, ci = kernels.shape[:3]
        (sh, sw), (dh, dw) = self.g.stride, self.g.dilation
        big_h, big_w = dh * (self.kh - 1) + 1, dw * (self.kw - 1) + 1
        self.kk = (-(-big_h // sh), -(-big_w // sw))
        wd = kernels.new_zeros(M, co, ci, self.kk[0] * sh, self.kk[1] * sw)
        wd[:, :, :, :big_h:dh, :big_w:dw] = kernels
        w2 = wd.reshape(M, co, ci, self.kk[0], sh, self.kk[1], sw)
        w2 = w2.permute(0, 2, 4, 6, 1, 3, 5).flip(5, 6)          # (M, ci, sh, sw, co, kk, kk)
        return w2.reshape(M * ci * sh * sw, co, *self.kk).contiguous()

    def select(self, keep: np.ndarray) -> None:
        self.set_weights(self.kernels[torch.from_numpy(keep)])

    def _forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        g = self.g
        if self.circular:
            ph, pw = g.padding
            if ph or pw:
                x = F.pad(x, (pw, pw, ph, ph), mode="circular")
            return F.conv2d(x, weight, stride=g.stride, dilation=g.dilation, groups=self.M)
        return F.conv2d(x, weight, stride=g.stride, padding=g.padding, dilation=g.dilation,
                        groups=self.M)

    def forward(self, v: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(M, b, n) -> (M, b, m)``."""
        b = v.shape[1]
        x = v.to(self.dtype).reshape(self.M, b, self.ci, self.H, self.W).transpose(0, 1)
        x = x.reshape(b, self.M * self.ci, self.H, self.W)
        y = self._forward(x, self.weight if weight is None else weight)
        return y.reshape(b, self.M, self.m).transpose(0, 1).to(torch.float64)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``(M, b, m) -> (M, b, n)``."""
        g = self.g
        b = y.shape[1]
        y = y.to(self.dtype).transpose(0, 1).reshape(b, self.M * self.co, *self.out)
        if self.polyphase:
            (sh, sw), (kh, kw) = g.stride, self.kk
            z = F.conv2d(F.pad(y, (kw - 1, kw - 1, kh - 1, kh - 1)), self.weight_adj,
                         groups=self.M)                             # (b, M ci sh sw, A, B)
            a, bb = z.shape[-2:]
            z = z.reshape(b, self.M * self.ci, sh, sw, a, bb).permute(0, 1, 4, 2, 5, 3)
            z = z.reshape(b, self.M * self.ci, a * sh, bb * sw)
            ph, pw = g.padding
            full = (self.H + 2 * ph, self.W + 2 * pw)               # the padded input
            z = z[:, :, :full[0], :full[1]]
            if z.shape[-2] < full[0] or z.shape[-1] < full[1]:      # never-read last rows
                z = F.pad(z, (0, full[1] - z.shape[-1], 0, full[0] - z.shape[-2]))
            if self.circular:
                x = _unpad_circular(z, g.padding, (self.H, self.W))
            else:
                x = z[:, :, ph:ph + self.H, pw:pw + self.W]
            return x.reshape(b, self.M, self.n).transpose(0, 1).to(torch.float64)
        if self.circular:
            x = F.conv_transpose2d(y, self.weight, stride=g.stride, dilation=g.dilation,
                                   output_padding=self.output_padding, groups=self.M)
            x = _unpad_circular(x, g.padding, (self.H, self.W))
        else:
            x = F.conv_transpose2d(y, self.weight, stride=g.stride, padding=g.padding,
                                   dilation=g.dilation, output_padding=self.output_padding,
                                   groups=self.M)
        return x.reshape(b, self.M, self.n).transpose(0, 1).to(torch.float64)

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        return self.adjoint(self.forward(v))


def _unpad_circular(x: torch.Tensor, padding, size) -> torch.Tensor:
    """Adjoint of ``F.pad(mode='circular')``: add each wrapped border back onto its pixels."""
    for dim, p, n in ((-2, padding[0], size[0]), (-1, padding[1], size[1])):
        if p == 0:
            continue
        core = x.narrow(dim, p, n).clone()
        left = x.narrow(dim, 0, p)              # copies of pixels n - p .. n - 1
        right = x.narrow(dim, p + n, p)         # copies of pixels 0 .. p - 1
        core.narrow(dim, n - p, p).add_(left)
        core.narrow(dim, 0, p).add_(right)
        x = core
    return x


# ------------------------------------------------------------------------------------------
# start block from the torus
# ------------------------------------------------------------------------------------------
def _transfer(kernels: np.ndarray, torus, stride, dilation) -> np.ndarray:
    """``K(f)`` of each kernel, ``(M, F, c_out, c_in s_h s_w)`` complex, over the half spectrum
    ``f_w <= M_w / 2`` (``K(-f) = conj K(f)``): ``K_b(f) = sum_{taps in phase b} w_tap
    exp(+2 pi i f q_tap / M)`` with ``(q, b) = divmod(tap * d, s)`` per axis (a sum over the
    ``kh kw`` taps, one matrix product per phase)."""
    M, co, ci, kh, kw = kernels.shape
    (sh, sw), (dh, dw) = stride, dilation
    mh, mw = torus[0] // sh, torus[1] // sw
    fh = np.arange(mh)[:, None]
    fw = np.arange(mw // 2 + 1)[None, :]
    nf = mh * (mw // 2 + 1)
    k = np.zeros((M, nf, co, ci, sh, sw), dtype=np.complex128)
    for bu in range(sh):
        for bv in range(sw):
            taps = [(u, v) for u in range(kh) for v in range(kw)
                    if (u * dh) % sh == bu and (v * dw) % sw == bv]
            if not taps:
                continue
            e = np.stack([np.exp(2j * np.pi * (fh * ((u * dh) // sh) / mh
                                                + fw * ((v * dw) // sw) / mw)).ravel()
                          for u, v in taps], axis=1)                  # (F, taps)
            wt = np.stack([kernels[:, :, :, u, v].reshape(M, -1) for u, v in taps], axis=1)
            k[:, :, :, :, bu, bv] = (e @ wt).reshape(M, nf, co, ci)  # (M, F, co, ci)
    return k.reshape(M, nf, co, ci * sh * sw)


def _mv(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.matmul(a, x[..., None])[..., 0]


def _power_right(k: np.ndarray, iters: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top singular value and right singular vector of each ``(..., a, c)`` matrix."""
    a, c = k.shape[-2:]
    kh = np.conj(np.swapaxes(k, -1, -2))
    if a <= c:
        z = rng.standard_normal(k.shape[:-1]) + 1j * rng.standard_normal(k.shape[:-1])
        for _ in range(iters):
            z = _mv(k, _mv(kh, z))
            z /= np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-300)
        x = _mv(kh, z)
    else:
        x = rng.standard_normal(k.shape[:-2] + (c,)) + 1j * rng.standard_normal(k.shape[:-2] + (c,))
        for _ in range(iters):
            x = _mv(kh, _mv(k, x))
            x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)
    sigma = np.linalg.norm(_mv(k, x), axis=-1)
    return sigma, x


def _plane_wave(x: np.ndarray, f, torus, stride, offset, size, ci) -> np.ndarray:
    """The complex input ``X[a s + b] = x_b exp(2 pi i f a / M)`` on the torus, restricted to the
    window ``offset + [0, size)`` (mod the torus). ``x``: (ci * sh * sw,)."""
    (sh, sw), (lh, lw) = stride, torus
    mh, mw = lh // sh, lw // sw
    xb = x.reshape(ci, sh, sw)
    ah, aw = np.arange(mh), np.arange(mw)
    wave = np.exp(2j * np.pi * (f[0] * ah[:, None] / mh + f[1] * aw[None, :] / mw))
    full = (xb[:, :, :, None, None] * wave[None, None, None]).transpose(0, 3, 1, 4, 2)
    full = full.reshape(ci, lh, lw)                          # index (c, a_h s_h + b_h, ...)
    rows = (offset[0] + np.arange(size[0])) % lh
    cols = (offset[1] + np.arange(size[1])) % lw
    return full[:, rows][:, :, cols]


def _start_block(kernels: np.ndarray, torus, stride, dilation, offset, size, full: bool,
                 rng) -> np.ndarray:
    """``(M, b, n)`` start vectors built from the torus's top modes, restricted to the input.

    Candidates: the torus frequencies within 2% of the top (ranked by a short power iteration
    on every ``K(f)`` of the half spectrum, then refined; at most 8). Every start vector is a
    random combination of the real and imaginary parts of the candidates' plane waves plus 25%
    random noise, so each candidate -- any of which may hold the layer's maximum once the
    boundary perturbs the torus spectrum -- has weight O(1) in the start block.

    Block size ``b``: the layer's top singular values come in near-degenerate clusters that a
    block Lanczos resolves only if ``b`` is at least the cluster size (a smaller block can settle
    on a lower member, measured): 2 for the ``+-f`` pair of a peak (real and imaginary part), 2
    per exactly tied frequency (kernel symmetries: unitarily equivalent ``K(f)``, detected as
    equal ``||K(f)||_F`` to 1e-9 with top singular values within 1%), and ``2 d_h d_w`` for
    dilated kernels (their symbol has period ``1/d`` per axis: ``d_h d_w`` exact copies of each
    peak, on or off the torus grid); plus one spare direction (the stopping test uses only
    clusters smaller than the block). ``3 <= b <= 9``, the same for the whole batch; ``full``
    (tiny inputs, run to the whole space): ``b = 1``.
    """
    M, co, ci = kernels.shape[:3]
    n = ci * size[0] * size[1]
    per = max(1, (co * ci * stride[0] * stride[1] * (torus[0] // stride[0])
                  * (torus[1] // stride[1] // 2 + 1) * 16))
    chunk = max(1, _MODE_BYTES // per)
    mh, mw = torus[0] // stride[0], torus[1] // stride[1]
    modes, ties = [], []
    for lo in range(0, M, chunk):
        ks = kernels[lo:lo + chunk]
        k = _transfer(ks, torus, stride, dilation)           # (m, F, co, cis)
        sig, _ = _power_right(k, 6, rng)                      # rank frequencies
        for j in range(ks.shape[0]):
            order = np.argsort(-sig[j])
            cand, seen = [], set()
            for f_idx in order:
                if len(cand) == 8 or sig[j, f_idx] < 0.98 * sig[j, order[0]]:
                    break
                fh, fw = divmod(int(f_idx), mw // 2 + 1)
                # in the columns f_w = 0 (and M_w / 2) the half spectrum still holds both
                # members of a conjugate pair: keep one
                conj = ((-fh) % mh, (-fw) % mw)
                if conj in seen:
                    continue
                seen.add((fh, fw))
                cand.append(int(f_idx))
            cand = np.array(cand)
            s_c, xs = _power_right(k[j, cand], 20, rng)
            keep = s_c >= 0.98 * s_c.max()
            # exact ties (kernel symmetries) have unitarily equivalent K(f): equal Frobenius
            # norms to round-off, unlike near ties of random kernels
            fro = np.linalg.norm(k[j, cand], axis=(1, 2))
            top = int(np.argmax(s_c))
            ties.append(int(np.sum((np.abs(fro - fro[top]) <= 1e-9 * fro[top])
                                   & (s_c >= 0.99 * s_c[top]))))
            vecs = []
            for f_idx, x in zip(cand[keep], xs[keep]):
                fh, fw = divmod(int(f_idx), mw // 2 + 1)
                wave = _plane_wave(x, (fh, fw), torus, stride, offset, size, ci).ravel()
                for part in (wave.real, wave.imag):
                    norm = np.linalg.norm(part)
                    if norm > 1e-3 * np.linalg.norm(wave):
                        vecs.append(part / norm)
            modes.append(np.array(vecs).reshape(-1, n))
    if full:
        b = 1
    else:
        b = max(2 * max(ties), 2 * dilation[0] * dilation[1]) + 1
        b = int(min(max(b, 3), 9, n // 2))
    out = np.empty((M, b, n))
    for j, vecs in enumerate(modes):
        coef = rng.standard_normal((b, vecs.shape[0]))
        for i in range(b):
            v = coef[i] @ vecs
            v /= max(np.linalg.norm(v), 1e-300)
            noise = rng.standard_normal(n)
            out[j, i] = v + 0.25 * noise / np.linalg.norm(noise)
    return out


# ------------------------------------------------------------------------------------------
# block Lanczos with thick restart
# ------------------------------------------------------------------------------------------
def _orth_against(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Two classical Gram-Schmidt passes of ``w`` (M, b, n) against ``basis`` (M, m, n)."""
    for _ in range(2):
        w = w - torch.bmm(torch.bmm(w, basis.transpose(1, 2)), basis)
    return w


def _reorthogonalise(w: torch.Tensor, basis: torch.Tensor, window: int) -> torch.Tensor:
    """``w`` orthogonalised against all of ``basis``: first against its last ``window`` vectors
    (where the three-term recurrence puts the large components), then one full classical
    Gram-Schmidt pass, repeated (DGKS) only if it shrank some row below 0.7 of its norm."""
    local = basis[:, max(0, basis.shape[1] - window):]
    w = w - torch.bmm(torch.bmm(w, local.transpose(1, 2)), local)
    before = torch.linalg.vector_norm(w, dim=2)
    w = w - torch.bmm(torch.bmm(w, basis.transpose(1, 2)), basis)
    if bool((torch.linalg.vector_norm(w, dim=2) < 0.7 * before).any()):
        w = w - torch.bmm(torch.bmm(w, basis.transpose(1, 2)), basis)
    return w


def _qr_rows(w: torch.Tensor, basis: torch.Tensor,
             scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``w = R^T Q``: orthonormal rows ``Q`` (M, b, n), kept orthogonal to ``basis``, and the
    upper triangular ``R`` (M, b, b) of the column convention ``w^T = Q^T R``.

    ``scale`` (M,): the size of ``w`` before it was orthogonalised; a diagonal of ``R`` below
    1e-10 of it means (near) breakdown: the new directions come from rounding noise and are
    re-orthogonalised against the basis."""
    q, r = torch.linalg.qr(w.transpose(1, 2))                 # (M, n, b), (M, b, b)
    q = q.transpose(1, 2)
    diag = torch.diagonal(r, dim1=1, dim2=2).abs()
    if scale is None:
        scale = diag.max(dim=1).values
    if bool((diag.min(dim=1).values <= 1e-10 * scale).any()):
        q = _orth_against(q, basis)
        q, _ = torch.linalg.qr(q.transpose(1, 2))
        q = _orth_against(q.transpose(1, 2), basis)
        q, _ = torch.linalg.qr(q.transpose(1, 2))
        q = q.transpose(1, 2)
    return q, r


def _cluster_error(theta, s_last, r_next, kmax, min_gap) -> np.ndarray:
    """Estimate of ``lambda_1 - theta_1`` per operator (see the module docstring).

    theta: (M, m) descending; s_last: (M, b, m) last block rows of the Ritz vectors (descending
    order); r_next: (M, b, b) the coupling to the next block; min_gap: (M,) the smallest gap
    below a Ritz cluster that the quadratic bound may use."""
    res = np.einsum("mij,mjk->mik", r_next, s_last)             # (M, b, m) block residuals
    single = np.linalg.norm(res, axis=1)                        # (M, m)
    err = single[:, 0].copy()
    mm = theta.shape[1]
    for k in range(1, min(kmax, mm - 1) + 1):
        rk = np.linalg.norm(res[:, :, :k], ord=2, axis=(1, 2)) if k > 1 else single[:, 0]
        gap = theta[:, k - 1] - theta[:, k] - single[:, k]
        ok = gap >= min_gap
        with np.errstate(divide="ignore", invalid="ignore"):
            est = np.where(ok, rk * rk / np.where(ok, gap, 1.0), np.inf)
        err = np.minimum(err, est)
    return err


def _lanczos(ops: _Ops, start: np.ndarray, *, rtol: float, max_steps: int, basis_size: int,
             upper: np.ndarray, full: bool):
    """Block Lanczos on ``A^T A`` for every operator of ``ops``.

    Returns theta (M,), Ritz vectors (M, n) float64 tensor, block steps (M,), converged (M,)."""
    M, b, n = start.shape
    cap = max(min(basis_size, n), 8 * b)
    # full: b = 1 up to the whole space (exact); otherwise the basis never fills the space, so
    # that the block recurrence never runs out of directions (a thick restart comes first)
    cap = n if full else min(cap, n - b)
    keep_n = max(2 * b, (cap // 3) // b * b)
    theta_out = np.zeros(M)
    vec_out = torch.zeros(M, n, dtype=torch.float64)
    steps_out = np.zeros(M, np.int64)
    conv_out = np.zeros(M, bool)
    active = np.arange(M)
    up2 = upper ** 2

    basis = torch.zeros(M, cap, n, dtype=torch.float64)
    x0, _ = _qr_rows(torch.from_numpy(start), basis[:, :0])
    basis[:, :b] = x0
    t = np.zeros((M, cap, cap))
    m = b                       # vectors in the basis; the last block is basis[:, m - b:m]
    steps = 0
    while active.size:
        steps += 1
        blk = basis[:, m - b:m]
        w = ops.gram(blk)
        a = torch.bmm(w, blk.transpose(1, 2)).numpy()
        t[:, m - b:m, m - b:m] = 0.5 * (a + a.transpose(0, 2, 1))
        scale = torch.linalg.matrix_norm(w)
        w = _reorthogonalise(w, basis[:, :m], 2 * b)
        q, r = _qr_rows(w, basis[:, :m], scale)              # w^T = q^T r
        rn = r.numpy()
        theta, s = np.linalg.eigh(t[:, :m, :m])
        theta, s = theta[:, ::-1], s[:, :, ::-1]
        th1 = np.maximum(theta[:, 0], 0.0)
        exhausted = m + b > n
        err = _cluster_error(theta, s[:, m - b:m, :], rn, b - 1, math.sqrt(rtol) * th1)
        done = err <= rtol * np.maximum(th1, 1e-300)
        done |= th1 == 0.0
        done |= (upper > 0) & (up2 - th1 <= 0.5 * rtol * up2)  # certified width already < rtol
        if full:
            done = np.zeros_like(done)
        done |= exhausted
        if steps >= 2 or exhausted or full:
            finished = done | (steps >= max_steps)
        else:
            finished = np.zeros(active.size, bool)
        if finished.any():
            idx = np.flatnonzero(finished)
            ritz = torch.einsum("mk,mkn->mn", torch.from_numpy(np.ascontiguousarray(
                s[idx, :, 0])), basis[idx, :m])
            theta_out[active[idx]] = th1[idx]
            vec_out[torch.from_numpy(active[idx])] = ritz
            steps_out[active[idx]] = steps
            conv_out[active[idx]] = done[idx]
            keep = np.flatnonzero(~finished)
            if keep.size == 0:
                break
            active = active[keep]
            ops.select(keep)
            basis, q, t, rn, s, theta = (basis[keep], q[keep], t[keep], rn[keep], s[keep],
                                         theta[keep])
            up2 = up2[keep]
            upper = upper[keep]
        if m + b <= cap:
            basis[:, m:m + b] = q
            t[:, m:m + b, m - b:m] = rn
            t[:, m - b:m, m:m + b] = rn.transpose(0, 2, 1)
            m += b
        else:
            # thick restart: keep the top keep_n Ritz vectors, then the new block
            sk = torch.from_numpy(np.ascontiguousarray(s[:, :, :keep_n].transpose(0, 2, 1)))
            kept = torch.bmm(sk, basis[:, :m])
            coupling = np.einsum("mij,mjk->mik", rn, s[:, m - b:m, :keep_n])   # (M, b, keep)
            basis = torch.zeros_like(basis)
            basis[:, :keep_n] = kept
            # the new block, orthogonalised again against the kept vectors: q^T = qq rr, so the
            # residual q^T coupling becomes qq (rr coupling)
            q = _orth_against(q, basis[:, :keep_n])
            qq, rr = torch.linalg.qr(q.transpose(1, 2))
            coupling = np.einsum("mij,mjk->mik", rr.numpy(), coupling)
            basis[:, keep_n:keep_n + b] = qq.transpose(1, 2)
            t = np.zeros_like(t)
            idx = np.arange(keep_n)
            t[:, idx, idx] = theta[:, :keep_n]
            t[:, keep_n:keep_n + b, :keep_n] = coupling
            t[:, :keep_n, keep_n:keep_n + b] = coupling.transpose(0, 2, 1)
            m = keep_n + b
    return theta_out, vec_out, steps_out, conv_out


def _certified_lower(ops: _Ops, kernels: np.ndarray, vecs: torch.Tensor) -> np.ndarray:
    """``||A y|| / ||y||`` minus a rigorous rounding allowance, per operator (always in float64,
    also after a float32 iteration)."""
    ops.dtype = torch.float64
    ops.set_weights(torch.from_numpy(np.ascontiguousarray(kernels, dtype=np.float64)))
    y = vecs[:, None, :]
    z = ops.forward(y)[:, 0]
    za = ops.forward(y.abs(), ops.weight.abs())[:, 0]
    k = ops.ci * ops.kh * ops.kw

    def gamma(j):
        return j * _U / (1 - j * _U)

    nz = torch.linalg.vector_norm(z, dim=1).numpy()
    nza = torch.linalg.vector_norm(za, dim=1).numpy() * (1 + gamma(ops.m + k + 2))
    ny = torch.linalg.vector_norm(vecs, dim=1).numpy()
    lower = (nz * (1 - gamma(ops.m + 2)) - gamma(2 * k) * nza) / (ny * (1 + gamma(ops.n + 2)))
    with np.errstate(invalid="ignore"):
        return np.where(ny > 0, np.maximum(lower, 0.0), 0.0)


# ------------------------------------------------------------------------------------------
# certified upper bounds
# ------------------------------------------------------------------------------------------
def zero_padding_tori(geometry: ConvGeometry, kernel_size, n_tori: int = 3) -> list:
    """Torus sizes ``(L_h, L_w)`` into which the zero-padded layer embeds as a compression.

    Per axis ``L_min`` = the smallest multiple of the stride with ``L >= max(n + p, s n_out)``
    (module docstring, bound 1), then ``L_min + j s`` for ``j < n_tori``.
    """
    kh, kw = _pair("kernel_size", kernel_size, 1)
    out = geometry.output_size((kh, kw))
    mins = []
    for n, p, s, no in zip(geometry.input_size, geometry.padding, geometry.stride, out):
        need = max(n + p, s * no)
        mins.append(-(-need // s) * s)
    return [(mins[0] + j * geometry.stride[0], mins[1] + j * geometry.stride[1])
            for j in range(n_tori)]


def _torus_norm(kernels, torus, stride, dilation):
    from .fft import circular_operator_norm
    res = circular_operator_norm(kernels, torus, stride=tuple(stride), dilation=tuple(dilation),
                                 groups=1, rtol=1e-10)
    val = np.atleast_1d(np.asarray(res.value, dtype=np.float64))
    eb = np.atleast_1d(np.asarray(res.error_bound, dtype=np.float64))
    return val, eb


def _upper_bounds(kernels: np.ndarray, geometry: ConvGeometry, kernel_size, n_tori: int):
    """(upper (M,), description of the winning bound, torus for the start block,
    start-block stride, offset)."""
    kh, kw = kernel_size
    cands, names = [], []
    alpha = coverage_alpha(geometry, kernel_size).alpha
    shape = (kernels.shape[1], kernels[0].size // kernels.shape[1])     # w^ of one group
    hat, hat_eb = reshaped_norms_with_bounds(kernels, rtol=1e-12, method=_certified_method(shape))
    cands.append(alpha * (hat + hat_eb) * (1 + 4 * _U))
    names.append(f"alpha ||w^|| (alpha = {alpha:.6g})")
    if geometry.padding_mode == "zeros":
        tori = zero_padding_tori(geometry, kernel_size, n_tori)
        for torus in tori:
            val, eb = _torus_norm(kernels, torus, geometry.stride, geometry.dilation)
            cands.append(val + eb)
            names.append(f"torus {torus[0]}x{torus[1]}")
        start = (tori[0], geometry.stride, geometry.padding)
    else:
        from .fft import circular_bound_setup
        strides, factor = circular_bound_setup(geometry, kernel_size)
        val, eb = _torus_norm(kernels, geometry.input_size, strides, geometry.dilation)
        cands.append(factor * (val + eb) * (1 + 4 * _U))
        names.append(f"input torus {geometry.input_size[0]}x{geometry.input_size[1]} with "
                     f"stride {strides}, row-repeat factor {factor:.6g}")
        start = (geometry.input_size, strides, geometry.padding)
        copies = []
        for n, p in zip(geometry.input_size, geometry.padding):
            t = np.arange(n)
            copies.append(int((1 + (t >= n - p) + (t < p)).max()))
        unrolled = ConvGeometry(tuple(n + 2 * p for n, p in zip(geometry.input_size,
                                                                 geometry.padding)),
                                geometry.stride, (0, 0), "zeros", geometry.dilation)
        for torus in zero_padding_tori(unrolled, kernel_size, 1):
            val, eb = _torus_norm(kernels, torus, geometry.stride, geometry.dilation)
            cands.append(math.sqrt(copies[0] * copies[1]) * (val + eb) * (1 + 4 * _U))
            names.append(f"unrolled padding ({copies[0]}x{copies[1]} copies) on torus "
                         f"{torus[0]}x{torus[1]}")
    cands = np.array(cands)                                  # (n_bounds, M)
    best = np.argmin(cands, axis=0)
    upper = cands[best, np.arange(cands.shape[1])]
    winners = sorted(set(int(i) for i in best))
    return upper, "; ".join(names[i] for i in winners), start


# ------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------
def _certified_method(shape) -> str:
    """A path of :func:`largest_singular_value` whose bound brackets sigma_1 itself: "tiny"
    (rigorous) for a small side <= 48, else "gram" (LAPACK eigensolver on the Gram matrix).
    The Lanczos paths certify only *some* singular value near the estimate: on a matrix with a
    top pair 2e-7 apart they were seen to return sigma_2."""
    return "tiny" if min(shape) <= 48 else "gram"


def _is_module(obj) -> bool:
    t = sys.modules.get("torch")
    return t is not None and isinstance(obj, t.nn.Conv2d)


def _resolve(w, geometry):
    """(kernel batch, single, geometry) from a kernel + ConvGeometry or a Conv2d + input size."""
    if _is_module(w):
        module = w
        if isinstance(geometry, ConvGeometry):
            expected = ConvGeometry.from_module(module, geometry.input_size)
            if expected != geometry:
                raise ValueError(f"`geometry` {geometry} does not match the module {module} "
                                 f"(expected {expected}); pass the input size instead")
        else:
            geometry = ConvGeometry.from_module(module, _input_size(geometry))
        w = module.weight
    elif not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a ConvGeometry (or an input size when `w` is a "
                        f"torch.nn.Conv2d), got {type(geometry).__name__}")
    batch, single = as_kernel_batch(w)
    geometry.check_kernel(batch.shape[1:])
    return batch.astype(np.float64, copy=False), single, geometry


def _input_size(size):
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        return (int(size), int(size))
    try:
        size = tuple(size)
    except TypeError:
        raise TypeError(f"`input_size` must be an int, (H, W), (C, H, W) or (N, C, H, W), "
                        f"got {size!r}") from None
    if len(size) not in (2, 3, 4):
        raise ValueError(f"`input_size` must be an int, (H, W), (C, H, W) or (N, C, H, W), "
                         f"got {size!r}")
    return size[-2:]


def conv_operator_norm(w, geometry, *, rtol: float = 1e-6, max_iter: int = 300,
                       method: str = "auto", basis_size: int = 96, n_tori: int = 3,
                       threads: int | None = 1, dtype: str = "float64") -> ConvNormResult:
    """Operator norm ``||w~||_sp`` of a conv layer, batched over kernels, with certified bounds.

    Parameters
    ----------
    w : array_like, torch.Tensor or torch.nn.Conv2d
        Kernel ``(c_out, c_in/groups, kh, kw)`` or batch ``(N, c_out, c_in/groups, kh, kw)``;
        or a ``Conv2d`` module (its effective ``weight``, parametrizations applied).
    geometry : ConvGeometry, or the input size ``(H, W)`` when ``w`` is a ``Conv2d``
    rtol : float in (0, 1)
        Lanczos stopping tolerance (relative error of ``value`` about ``rtol / 2``); the
        iteration also stops when the certified interval is narrower than ``rtol``.
    max_iter : int >= 1
        Maximum number of block Lanczos steps per kernel.
    method : {"auto", "fft", "dense", "lanczos"}
        See the module docstring. ``"fft"`` requires an exact circular geometry.
    basis_size : int >= 32
        Lanczos basis vectors per kernel before a thick restart (at least 8 blocks). Smaller
        bases restart more often and converge more slowly (with 16, a long 1-D signal was
        seen to pass the stopping test 1e-5 off); 96 measured well.
    n_tori : int >= 1
        Number of torus sizes tried for the zero-padding upper bound.
    threads : int >= 1 or None
        Threads for torch and BLAS during the call (restored afterwards); None leaves them as
        they are. One thread is the default because the work is many small steps: on a busy
        2-core machine, two threads made the conv and the small eigenproblems 10-20x slower
        (measured), and idle, the gain of two is small.
    dtype : {"float64", "float32"}
        Precision of the operator applications on the Lanczos path. ``"float64"`` (default):
        as described in the module docstring. ``"float32"`` (fast path): the forward and
        adjoint convolutions of the iteration run in torch float32 (inputs rounded to
        float32, results returned as float64); the Lanczos recurrences, the
        reorthogonalisation and the Ritz problems stay in float64. The certificates are not
        affected: ``lower`` = ``||A y|| / ||y||`` for the final Ritz vector is recomputed in
        float64 with the rounding allowance of the module docstring, and ``upper`` (torus /
        alpha bounds) is the float64 computation. Tolerance (converged runs, ``rtol <= 1e-6``):
        ``value`` is within ``1e-5`` relative of the norm (tested against the dense SVD in
        ``tests/test_conv_float32.py``; measured: <= 2e-7 on small random layers, <= 1e-8 vs
        float64 on the paper's CIFAR layers, 1.1-2x faster there on one thread), and is
        clipped into ``[lower, upper]`` as always. The ``"fft"`` and ``"dense"`` paths are
        exact and ignore ``dtype`` (they run in float64; ``note`` says so).

    Returns
    -------
    ConvNormResult
        Scalars for a single 4-D kernel (or a module), ``(N,)`` arrays for a batch.

    Raises
    ------
    TypeError, ValueError
        Kernel not 4-D/5-D or not real, NaN/inf weights, geometry of the wrong type, empty
        output, ``groups`` not dividing ``c_out``, ``rtol`` outside (0, 1), bad ``max_iter``,
        unknown ``method``, ``"fft"`` on a geometry where it is not exact, unknown ``dtype``.
    """
    batch, single, geometry = _resolve(w, geometry)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    max_iter = require_positive_int("max_iter", max_iter)
    basis_size = require_positive_int("basis_size", basis_size, minimum=32)
    n_tori = require_positive_int("n_tori", n_tori)
    require_choice("method", method, METHODS)
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"`dtype` must be one of {DTYPES}, got {dtype!r}")
    if threads is not None:
        threads = require_positive_int("threads", threads)
    with _blas_threads(threads):
        return _operator_norm(batch, single, geometry, rtol, max_iter, method, basis_size,
                              n_tori, threads, dtype)


def _operator_norm(batch, single, geometry, rtol, max_iter, method, basis_size, n_tori,
                   threads, dtype="float64"):

    N, c_out, ci, kh, kw = batch.shape
    groups = geometry.groups
    co = c_out // groups
    kernels = batch.reshape(N, groups, co, ci, kh, kw).reshape(N * groups, co, ci, kh, kw)
    g1 = ConvGeometry(geometry.input_size, geometry.stride, geometry.padding,
                      geometry.padding_mode, geometry.dilation, 1)
    exact_circ, why = (False, "zero padding")
    if geometry.padding_mode == "circular":
        from .fft import circular_is_exact
        exact_circ, why = circular_is_exact(g1, (kh, kw))
    out = g1.output_size((kh, kw))
    entries = co * out[0] * out[1] * ci * geometry.input_size[0] * geometry.input_size[1]
    if method == "auto":
        method = ("fft" if exact_circ else
                  "dense" if entries <= DENSE_AUTO_MAX_ENTRIES else "lanczos")
    if method == "fft" and not exact_circ:
        raise ValueError(f"`method`='fft' needs a circular geometry that is a torus "
                         f"convolution, but {geometry} is not: {why}")
    group_note = f" (max over {groups} groups)" if groups > 1 else ""
    if dtype != "float64" and method != "lanczos":
        group_note += f"; dtype={dtype!r} ignored: the exact {method} path runs in float64"

    M = kernels.shape[0]
    zero = ~np.any(kernels.reshape(M, -1) != 0, axis=1)
    value, lower, upper = np.zeros(M), np.zeros(M), np.zeros(M)
    conv = np.ones(M, bool)
    iters = np.zeros(M, np.int64)
    live = np.flatnonzero(~zero)
    ks = kernels[live]
    if method == "fft":
        note = f"exact: circular padding on a torus ({why}), block-circulant FFT" + group_note
        if live.size:
            val, eb = _torus_norm(ks, geometry.input_size, geometry.stride, geometry.dilation)
            value[live], lower[live], upper[live] = val, np.maximum(val - eb, 0), val + eb
    elif method == "dense":
        from .dense import expanded_matrix
        note = "exact: dense expanded matrix" + group_note
        if live.size:
            if live.size * entries > _DENSE_MAX_ENTRIES:
                raise ValueError(f"`method`='dense' would build {live.size} x {entries:,} "
                                 f"matrix entries (> {_DENSE_MAX_ENTRIES:,}); use 'auto'")
            mats = expanded_matrix(ks, g1, max_entries=_DENSE_MAX_ENTRIES)
            nonzero = np.any(mats != 0, axis=(1, 2))
            idx = live[nonzero]
            if idx.size:
                res = largest_singular_value(mats[nonzero], rtol=1e-12,
                                             method=_certified_method(mats.shape[1:]))
                value[idx] = res.sigma
                lower[idx] = np.maximum(res.sigma - res.error_bound, 0)
                upper[idx] = res.sigma + res.error_bound
    else:
        if geometry.padding_mode == "zeros":
            note = "zero padding"
        else:
            note = f"circular padding that is not a torus convolution ({why})"
        note += ": value from block Lanczos on conv2d/conv_transpose2d"
        if dtype == "float32":
            note += " in float32 (recurrences in float64; value within 1e-5 relative)"
        if live.size:
            up, up_note, (torus, t_stride, offset) = _upper_bounds(ks, g1, (kh, kw), n_tori)
            _load_torch()
            with _torch_threads(threads):
                val, lo, cv, it = _run_lanczos(ks, g1, torus, t_stride, offset, rtol, max_iter,
                                               basis_size, up, dtype)
            value[live], lower[live], upper[live] = val, lo, up
            conv[live], iters[live] = cv, it
            note += (f"; lower = ||A y||/||y|| for the Ritz vector y; upper = {up_note}")
            if not cv.all():
                note += (f"; NOT converged for {int((~cv).sum())} of {cv.size} operators "
                         f"within max_iter = {max_iter} block steps")
        note += group_note
    if zero.any():
        note += f"; {int(zero.sum())} all-zero kernel(s) or group(s): norm 0"
    shape = (N, groups)
    value, lower, upper = (a.reshape(shape).max(axis=1) for a in (value, lower, upper))
    conv = conv.reshape(shape).all(axis=1)
    iters = iters.reshape(shape).sum(axis=1)
    return _finish(value, lower, upper, conv, iters, method, note, single)


def _run_lanczos(kernels, geometry, torus, t_stride, offset, rtol, max_iter, basis_size, upper,
                 dtype="float64"):
    M, co, ci, kh, kw = kernels.shape
    H, W = geometry.input_size
    n = ci * H * W
    full = n <= 64
    steps_cap = max(max_iter, n + 1) if full else max_iter
    rng = np.random.default_rng(_SEED)
    cap = min(basis_size, n)
    chunk = max(1, int(_BASIS_BYTES // (8 * n * max(cap, 16))))
    value, lower = np.zeros(M), np.zeros(M)
    conv, its = np.zeros(M, bool), np.zeros(M, np.int64)
    for lo in range(0, M, chunk):
        sl = slice(lo, lo + chunk)
        ks = kernels[sl]
        start = _start_block(ks, torus, t_stride, geometry.dilation, offset, (H, W), full, rng)
        b = start.shape[1]
        ops = _Ops(ks, geometry, getattr(torch, dtype))
        theta, vecs, steps, cv = _lanczos(ops, start, rtol=rtol, max_steps=steps_cap,
                                          basis_size=cap, upper=upper[sl], full=full)
        lower[sl] = _certified_lower(ops, ks, vecs)
        value[sl] = np.sqrt(theta)
        conv[sl], its[sl] = cv, steps * b
    return value, lower, conv, its


def layer_norms(module, input_size, *, rtol: float = 1e-6, method: str = "auto") -> dict:
    """Both reshaped norms, the operator-norm interval, their ratio and alpha of a ``Conv2d``.

    Parameters
    ----------
    module : torch.nn.Conv2d
        Its effective ``weight`` is used (parametrizations such as spectral_norm applied).
    input_size : int, (H, W), (C, H, W) or (N, C, H, W)

    Returns
    -------
    dict with keys ``geometry``, ``kernel_size``, ``reshaped_norm`` (``||w^||``, torch's
    convention), ``reshaped_norm_transposed`` (``||w^'||``), ``reshaped_norm_per_group``
    (``max_k ||w^_k||``, equal to ``reshaped_norm`` for groups = 1), ``operator_norm``,
    ``operator_lower``, ``operator_upper``, ``operator_exact``, ``operator_method``,
    ``operator_note``, ``rel_width``, ``ratio`` (operator / reshaped norm), ``ratio_lower``,
    ``ratio_upper``, ``alpha``, ``alpha_bound``, ``lower_bound_applies``, ``alpha_reason``,
    ``result`` (the :class:`ConvNormResult`), ``alpha_result``.
    """
    if not _is_module(module):
        raise TypeError(f"`module` must be a torch.nn.Conv2d, got {type(module).__name__}")
    geometry = ConvGeometry.from_module(module, _input_size(input_size))
    res = conv_operator_norm(module, geometry, rtol=rtol, method=method)
    w = module.weight.detach()
    hat = float(reshaped_norms_with_bounds(w)[0][0])
    hat_t = float(reshaped_norms_with_bounds(w, transposed=True)[0][0])
    hat_g = float(reshaped_norms_with_bounds(w, groups=geometry.groups)[0][0])
    alpha = coverage_alpha(geometry, module.kernel_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (res.value / hat, res.lower / hat, res.upper / hat) if hat > 0 else \
            (math.nan, math.nan, math.nan)
    return {
        "geometry": geometry, "kernel_size": tuple(module.kernel_size),
        "reshaped_norm": hat, "reshaped_norm_transposed": hat_t,
        "reshaped_norm_per_group": hat_g,
        "operator_norm": res.value, "operator_lower": res.lower, "operator_upper": res.upper,
        "operator_exact": res.exact, "operator_method": res.method,
        "operator_note": res.note, "rel_width": res.rel_width,
        "ratio": ratio[0], "ratio_lower": ratio[1], "ratio_upper": ratio[2],
        "alpha": alpha.alpha, "alpha_bound": alpha.alpha_bound,
        "lower_bound_applies": alpha.lower_bound_applies, "alpha_reason": alpha.reason,
        "result": res, "alpha_result": alpha,
    }
