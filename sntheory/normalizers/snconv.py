"""SNConv: "canonical" spectral normalization, ``W / ||w~||_sp`` (THEORY.md, "Normalizers", R).

``w~`` is the conv layer as a linear map on its real input: ``A v = conv2d(pad(v), W)`` from
``(c_in, H, W)`` to ``(c_out, H_out, W_out)``, with the layer's stride, padding amount and mode
(zeros, or circular through ``F.pad``), dilation and groups (:class:`ConvGeometry`, torch Conv2d
semantics). Its norm depends on the input size, which the module does not know: pass it.

Persistent power iteration on the operator itself: ``u <- normalize(A v)``,
``v <- normalize(A^T u)``, where ``A^T`` is ``conv_transpose2d`` (with the ``output_padding``
that restores the exact input size when the stride does not divide it) followed, for circular
padding, by the adjoint of the wrap-around pad (the border is folded back onto the opposite
side). Buffers: ``_u`` ``(c_out, H_out, W_out)`` (output side), ``_v`` ``(c_in, H, W)`` (input
side). As for torch's SN, ``sigma = <u, A v>`` is differentiable in ``W`` with ``u, v`` held
constant. The estimate approaches ``||w~||_sp`` from below. For dense layers ``w~ = w^``, and
:func:`snconv` attaches SNw.

The pure function uses the exact norm: a full SVD of the expanded matrix for small operators,
ARPACK Lanczos (``scipy.sparse.linalg.eigsh`` on ``A^T A``, relative accuracy ~1e-13) otherwise.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..conv.geometry import ConvGeometry
from .base import (INIT_POWER_ITERATIONS, Normalizer, attach, check_power_args,
                   check_pure_args, check_weight, module_weight)
from .snw import SpectralNormW, snw_normalize

__all__ = ["SpectralNormConv", "snconv", "snconv_normalize", "exact_operator_norm",
           "conv_apply", "conv_adjoint"]

# Operators with at most this many matrix entries get a dense SVD in the pure function
# (a 512 x 512 SVD: ~0.1 s); larger ones go to ARPACK.
_DENSE_MAX_ENTRIES = 1 << 18
# ARPACK's relative tolerance on the top eigenvalue of A^T A (so ~5e-14 on sigma). tol=0
# (machine precision) costs 10-50x more time on conv operators, whose top singular values
# cluster (a continuum of nearby frequencies), for no visible gain.
_ARPACK_TOL = 1e-13


def _in_shape(weight: torch.Tensor, geometry: ConvGeometry) -> tuple[int, int, int]:
    return (weight.shape[1] * geometry.groups, *geometry.input_size)


def _out_shape(weight: torch.Tensor, geometry: ConvGeometry) -> tuple[int, int, int]:
    return (weight.shape[0], *geometry.output_size(weight.shape[-2:]))


def _conv_padding(geometry: ConvGeometry) -> tuple[int, int]:
    """The padding conv2d itself applies (circular padding is applied beforehand by F.pad)."""
    return geometry.padding if geometry.padding_mode == "zeros" else (0, 0)


def _output_padding(weight: torch.Tensor, geometry: ConvGeometry) -> tuple[int, int]:
    """Extra rows/columns conv_transpose2d needs to give back the (padded) input size.

    The input pixels beyond the last stride step that the kernel never reaches; always < stride.
    """
    ops = []
    out = geometry.output_size(weight.shape[-2:])
    for n, p, d, k, s, n_out in zip(geometry.input_size, geometry.padding, geometry.dilation,
                                    weight.shape[-2:], geometry.stride, out):
        n_padded = n + 2 * p  # the size conv2d sees (zero or circular padding)
        ops.append(n_padded - ((n_out - 1) * s + d * (k - 1) + 1))
    return ops[0], ops[1]


def conv_apply(v: torch.Tensor, weight: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """``A v``: ``(..., c_in, H, W) -> (..., c_out, H_out, W_out)`` (batch: 0 or 1 leading dim)."""
    x = v if v.ndim == 4 else v.unsqueeze(0)
    if geometry.padding_mode == "circular":
        ph, pw = geometry.padding
        x = F.pad(x, (pw, pw, ph, ph), mode="circular")
    y = F.conv2d(x, weight, None, geometry.stride, _conv_padding(geometry), geometry.dilation,
                 geometry.groups)
    return y if v.ndim == 4 else y.squeeze(0)


def _circular_pad_adjoint(y: torch.Tensor, padding: tuple[int, int],
                          size: tuple[int, int]) -> torch.Tensor:
    """Adjoint of ``F.pad(mode='circular')``: fold ``(..., H+2p_h, W+2p_w)`` onto ``(..., H, W)``.

    torch's circular pad puts ``x[H-p:H]`` before and ``x[0:p]`` after the image (p <= H).
    """
    (ph, pw), (h, w) = padding, size
    x = y[..., ph:ph + h, :].clone()
    if ph:
        x[..., h - ph:, :] += y[..., :ph, :]
        x[..., :ph, :] += y[..., ph + h:, :]
    z = x[..., pw:pw + w].clone()
    if pw:
        z[..., w - pw:] += x[..., :pw]
        z[..., :pw] += x[..., pw + w:]
    return z


def conv_adjoint(u: torch.Tensor, weight: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """``A^T u``: ``(..., c_out, H_out, W_out) -> (..., c_in, H, W)`` (0 or 1 batch dim)."""
    y = u if u.ndim == 4 else u.unsqueeze(0)
    x = F.conv_transpose2d(y, weight, None, geometry.stride, _conv_padding(geometry),
                           _output_padding(weight, geometry), geometry.groups,
                           geometry.dilation)
    if geometry.padding_mode == "circular":
        x = _circular_pad_adjoint(x, geometry.padding, geometry.input_size)
    return x if u.ndim == 4 else x.squeeze(0)


def _check_conv(weight: torch.Tensor, geometry: object) -> ConvGeometry:
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a sntheory.conv.ConvGeometry, got "
                        f"{type(geometry).__name__}")
    if weight.ndim != 4:
        raise ValueError(f"SNConv needs a Conv2d kernel (c_out, c_in/groups, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    geometry.check_kernel(weight.shape)
    return geometry


class SpectralNormConv(Normalizer):
    """Parametrization ``W -> W / sigma``, ``sigma ~ ||w~||_sp`` for ``geometry``.

    Buffers ``_u`` ``(c_out, H_out, W_out)`` and ``_v`` ``(c_in, H, W)``, initialised like torch's
    SN (Gaussian draws, 15 warm-up power steps).
    """

    def __init__(self, weight: torch.Tensor, geometry: ConvGeometry, n_power_iterations: int = 1,
                 eps: float = 1e-12) -> None:
        super().__init__()
        check_weight(weight)
        self.geometry = _check_conv(weight, geometry)
        self.n_power_iterations, self.eps = check_power_args(n_power_iterations, eps)
        weight = weight.detach()
        u = weight.new_empty(_out_shape(weight, geometry)).normal_(0, 1)
        v = weight.new_empty(_in_shape(weight, geometry)).normal_(0, 1)
        self.register_buffer("_u", u / u.norm().clamp_min(self.eps))
        self.register_buffer("_v", v / v.norm().clamp_min(self.eps))
        self._power_method(weight, INIT_POWER_ITERATIONS)

    @torch.no_grad()
    def _power_method(self, weight: torch.Tensor, n_power_iterations: int) -> None:
        # In place, as torch's SN (see the note in torch.nn.utils.parametrizations); through
        # `out=` like torch, which torch.func transforms accept (copy_ into a buffer they reject).
        for _ in range(n_power_iterations):
            u = conv_apply(self._v, weight, self.geometry)          # (c_out, H_out, W_out)
            torch.div(u, u.norm().clamp_min(self.eps), out=self._u)
            v = conv_adjoint(self._u, weight, self.geometry)        # (c_in, H, W)
            torch.div(v, v.norm().clamp_min(self.eps), out=self._v)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._power_method(weight.detach(), self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.sum(u * conv_apply(v, weight, self.geometry))  # <u, A v>
        return weight / sigma

    def extra_repr(self) -> str:
        return (f"geometry={self.geometry}, n_power_iterations={self.n_power_iterations}, "
                f"eps={self.eps}")


def snconv(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
           eps: float = 1e-12, *, input_size=None) -> nn.Module:
    """Attach SNConv to ``module.<name>`` and return ``module``.

    ``torch.nn.Conv2d``: :class:`SpectralNormConv` for inputs of ``input_size`` ``(H, W)``
    (required), geometry from ``ConvGeometry.from_module``. Dense layers (2-D weight, e.g.
    ``nn.Linear``): ``w~ = w^``, so :class:`.SpectralNormW` is attached and ``input_size`` must be
    left out.
    """
    weight = module_weight(module, name)
    check_weight(weight)
    if weight.ndim <= 2:
        if input_size is not None:
            raise ValueError(f"`input_size` applies to Conv2d layers only; {module} has a "
                             f"{weight.ndim}-D weight, for which SNConv is SNw (leave it out)")
        return attach(module, name, SpectralNormW(weight, n_power_iterations, 0, eps))
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"SNConv supports torch.nn.Conv2d and dense layers, got "
                        f"{type(module).__name__}")
    if input_size is None:
        raise ValueError(f"SNConv needs the input size (H, W) of conv layer {module}: its "
                         f"operator norm depends on it. Pass `input_size=(H, W)` (or, with "
                         f"apply_normalizer, `input_sizes=` or `sample_input=`)")
    geometry = ConvGeometry.from_module(module, input_size)
    return attach(module, name, SpectralNormConv(weight, geometry, n_power_iterations, eps))


def _dense_matrix(weight: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """The expanded matrix ``w~`` ``(c_out H_out W_out, c_in H W)``, built on the smaller side."""
    n_in, n_out = np.prod(_in_shape(weight, geometry)), np.prod(_out_shape(weight, geometry))
    if n_in <= n_out:
        eye = torch.eye(n_in, dtype=weight.dtype).reshape(n_in, *_in_shape(weight, geometry))
        return conv_apply(eye, weight, geometry).reshape(n_in, n_out).T
    eye = torch.eye(n_out, dtype=weight.dtype).reshape(n_out, *_out_shape(weight, geometry))
    return conv_adjoint(eye, weight, geometry).reshape(n_out, n_in)


def exact_operator_norm(weight: torch.Tensor, geometry: ConvGeometry) -> torch.Tensor:
    """Exact ``||w~||_sp`` (float64, 0-dim tensor) of one kernel ``(c_out, c_in/groups, kh, kw)``.

    Dense SVD up to 2^18 matrix entries; beyond, ARPACK Lanczos on ``A^T A`` with a fixed start
    vector (deterministic), relative accuracy ~1e-13. Large layers are slow this way (a
    64-channel 3x3 conv on 32x32 inputs: ~400 operator applications, about a minute on one
    core); FFT-based exact norms belong to :mod:`sntheory.conv`.
    """
    w = check_weight(weight).detach().to(device="cpu", dtype=torch.float64)
    geometry = _check_conv(w, geometry)
    n_in = int(np.prod(_in_shape(w, geometry)))
    n_out = int(np.prod(_out_shape(w, geometry)))
    if n_in * n_out <= _DENSE_MAX_ENTRIES or min(n_in, n_out) < 3:
        return torch.linalg.matrix_norm(_dense_matrix(w, geometry), ord=2)
    from scipy.sparse.linalg import LinearOperator, eigsh

    in_shape = _in_shape(w, geometry)

    def gram(x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(in_shape)
        return conv_adjoint(conv_apply(v, w, geometry), w, geometry).reshape(-1).numpy()

    op = LinearOperator((n_in, n_in), matvec=gram, dtype=np.float64)
    v0 = np.random.default_rng(0x5EED).standard_normal(n_in)
    lam = eigsh(op, k=1, which="LA", v0=v0, tol=_ARPACK_TOL, return_eigenvectors=False)[0]
    return torch.tensor(float(np.sqrt(max(lam, 0.0))), dtype=torch.float64)


def snconv_normalize(weight: torch.Tensor, geometry: ConvGeometry | None = None, *,
                     batch_dims: int = 0) -> torch.Tensor:
    """``weight / ||w~||_sp`` with the exact operator norm (:func:`exact_operator_norm`).

    Conv kernels need ``geometry``; a dense weight (2-D per batch entry) with ``geometry=None``
    is normalized as SNw. The norm is a constant for autograd (no gradient through it).
    """
    weight, batch_dims = check_pure_args(weight, batch_dims)
    if geometry is None:
        if weight.ndim - batch_dims > 2:
            raise ValueError("SNConv on a conv kernel needs its `geometry` "
                             "(sntheory.conv.ConvGeometry with the layer's input size)")
        return snw_normalize(weight, batch_dims=batch_dims)
    batch = weight.shape[:batch_dims]
    flat = weight.reshape(-1, *weight.shape[batch_dims:])
    norms = torch.stack([exact_operator_norm(w, geometry) for w in flat])
    norms = norms.to(dtype=weight.dtype, device=weight.device).reshape(batch)
    return weight / norms.reshape(*batch, *([1] * (weight.ndim - batch_dims)))
