"""BSN: bidirectional spectral normalization (THEORY.md, "Normalizers"; Thm. 3).

Conv kernel ``w`` ``(c_out, c_in, kh, kw)``: ``W / sigma_w`` with
``sigma_w = (||w^||_sp + ||w^'||_sp) / 2``, ``w^`` the ``(c_out, c_in*kh*kw)`` reshape and ``w^'``
the kernel with ``c_in`` and ``c_out`` swapped, ``(c_in, c_out*kh*kw)``. Dense layers: as SNw
(for a matrix both reshapes have the same norm). Each norm has its own persistent power iteration:
buffers ``_u``, ``_v`` for ``w^`` and ``_u_t``, ``_v_t`` for ``w^'``. ``sigma_w`` is symmetric in
the two reshapes, so the definition needs no ``dim`` (a transposed conv gives the same value).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Normalizer, attach, check_power_args, check_pure_args, check_weight,
                   exact_matrix_norm, expand_norm, matrix_power_method_, matrix_sigma,
                   module_weight, register_vectors, reshape_to_matrix, reshape_transposed)

__all__ = ["BidirectionalSpectralNorm", "bsn", "bsn_normalize", "bidirectional_sigma"]


def init_bidirectional(p: nn.Module, weight: torch.Tensor, eps: float) -> None:
    """Register the power-iteration buffers of a bidirectional normalizer on ``p``."""
    weight = weight.detach()
    if weight.ndim > 1:
        register_vectors(p, reshape_to_matrix(weight), eps)
    if weight.ndim > 2:
        register_vectors(p, reshape_transposed(weight), eps, suffix="_t")


def bidirectional_sigma(p: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``sigma_w`` from ``p``'s buffers, after one round of power steps in training mode.

    ``p`` carries ``n_power_iterations``, ``eps``, ``training`` and the buffers of
    :func:`init_bidirectional`. ``weight`` has at least 2 dimensions.
    """
    mats = [(reshape_to_matrix(weight), p._u, p._v)]
    if weight.ndim > 2:
        mats.append((reshape_transposed(weight), p._u_t, p._v_t))
    sigmas = []
    for mat, u, v in mats:
        if p.training:
            matrix_power_method_(mat.detach(), u, v, p.n_power_iterations, p.eps)
        sigmas.append(matrix_sigma(mat, u, v))
    return sigmas[0] if len(sigmas) == 1 else (sigmas[0] + sigmas[1]) / 2


class BidirectionalSpectralNorm(Normalizer):
    """Parametrization ``W -> W / ((||w^||_sp + ||w^'||_sp) / 2)`` (dense: ``W / ||W||_sp``)."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1,
                 eps: float = 1e-12) -> None:
        super().__init__()
        check_weight(weight)
        self.n_power_iterations, self.eps = check_power_args(n_power_iterations, eps)
        init_bidirectional(self, weight, self.eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        return weight / bidirectional_sigma(self, weight)

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, eps={self.eps}"


def bsn(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
        eps: float = 1e-12) -> nn.Module:
    """Attach :class:`BidirectionalSpectralNorm` to ``module.<name>`` and return ``module``."""
    p = BidirectionalSpectralNorm(module_weight(module, name), n_power_iterations, eps)
    return attach(module, name, p)


def bidirectional_norm(weight: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """Exact ``(||w^||_sp + ||w^'||_sp) / 2`` (SVD), shape ``weight.shape[:batch_dims]``."""
    if weight.ndim - batch_dims <= 2:
        return exact_matrix_norm(weight, 0, batch_dims)
    swapped = weight.transpose(batch_dims, batch_dims + 1)
    return (exact_matrix_norm(weight, 0, batch_dims)
            + exact_matrix_norm(swapped, 0, batch_dims)) / 2


def bsn_normalize(weight: torch.Tensor, *, batch_dims: int = 0) -> torch.Tensor:
    """``weight / ((||w^||_sp + ||w^'||_sp) / 2)`` with exact norms (SVD), differentiable."""
    weight, batch_dims = check_pure_args(weight, batch_dims)
    return weight / expand_norm(bidirectional_norm(weight, batch_dims), weight)
