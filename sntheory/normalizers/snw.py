"""SNw: Miyato's spectral normalization, ``W / ||w^||_sp`` (THEORY.md, "Normalizers").

``w^`` is the weight reshaped to ``(c_out, -1)`` (dense layers: the matrix itself). The norm is
estimated by persistent power iteration, one step per training-mode forward, exactly as
``torch.nn.utils.parametrizations.spectral_norm`` does: same initialisation (same random draws,
15 warm-up steps), same update order, same ``sigma = <u, w^ v>``. On a module with the same
``_u``, ``_v`` the two give the same effective weight, bit for bit. For a conv layer this is
*not* the operator norm: ``||w^||_sp <= ||w~||_sp <= alpha ||w^||_sp`` (THEORY.md, R).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import (Normalizer, attach, check_power_args, check_pure_args, check_weight,
                   default_dim, exact_matrix_norm, expand_norm, matrix_power_method_,
                   matrix_sigma, module_weight, normalize_dim, register_vectors,
                   reshape_to_matrix)

__all__ = ["SpectralNormW", "snw", "snw_normalize"]


def init_reshaped_state(p: nn.Module, weight: torch.Tensor, n_power_iterations: int, dim: int,
                        eps: float) -> None:
    """Validate the arguments and give ``p`` what :func:`reshaped_sigma` needs: ``dim``, ``eps``,
    ``n_power_iterations`` and (for weights with >= 2 dimensions) the buffers ``_u``, ``_v``."""
    check_weight(weight)
    p.n_power_iterations, p.eps = check_power_args(n_power_iterations, eps)
    p.dim = normalize_dim(dim, weight.ndim)
    if weight.ndim > 1:
        register_vectors(p, reshape_to_matrix(weight.detach(), p.dim), p.eps)


def reshaped_sigma(p: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``sigma ~ ||w^||_sp`` from ``p``'s buffers ``_u``, ``_v``, after ``p.n_power_iterations``
    power steps in training mode (the state is frozen in eval mode). Shared by SNw, SSN and the
    gamma variants; ``p`` carries ``dim``, ``eps``, ``n_power_iterations`` and ``training``;
    ``weight`` has at least 2 dimensions."""
    weight_mat = reshape_to_matrix(weight, p.dim)
    if p.training:
        matrix_power_method_(weight_mat.detach(), p._u, p._v, p.n_power_iterations, p.eps)
    return matrix_sigma(weight_mat, p._u, p._v)


class SpectralNormW(Normalizer):
    """Parametrization ``W -> W / sigma``, ``sigma ~ ||w^||_sp`` by persistent power iteration.

    Buffers ``_u`` (``shape[dim]``) and ``_v`` (the flattened rest). A 1-D weight is divided by
    its Euclidean norm (exact, no state), as in torch.
    """

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0,
                 eps: float = 1e-12) -> None:
        super().__init__()
        init_reshaped_state(self, weight, n_power_iterations, dim, eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        return weight / reshaped_sigma(self, weight)

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, dim={self.dim}, eps={self.eps}"


def snw(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
        eps: float = 1e-12, dim: int | None = None) -> nn.Module:
    """Attach :class:`SpectralNormW` to ``module.<name>`` and return ``module``.

    Same arguments and defaults as ``torch.nn.utils.parametrizations.spectral_norm``
    (``dim=None``: 1 for transposed convolutions, else 0).
    """
    weight = module_weight(module, name)
    p = SpectralNormW(weight, n_power_iterations, default_dim(module, dim), eps)
    return attach(module, name, p)


def snw_normalize(weight: torch.Tensor, dim: int = 0, *, batch_dims: int = 0) -> torch.Tensor:
    """``weight / ||w^||_sp`` with the exact norm (SVD): no state, differentiable.

    ``batch_dims`` leading dimensions index independent weights, each normalized by its own norm.
    """
    weight, batch_dims = check_pure_args(weight, batch_dims)
    dim = normalize_dim(dim, weight.ndim - batch_dims)
    return weight / expand_norm(exact_matrix_norm(weight, dim, batch_dims), weight)
