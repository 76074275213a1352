"""BSSN: scaled bidirectional spectral normalization, ``s * BSN`` — the paper's final proposal.

Effective weight ``s * W / ((||w^||_sp + ||w^'||_sp) / 2)`` for conv kernels, ``s * W / ||W||_sp``
for dense layers (THEORY.md, "Normalizers"); state and estimation as in :mod:`.bsn`.
"""
from __future__ import annotations

import torch
from torch import nn

from .._validation import require_positive_float
from .base import Normalizer, attach, check_power_args, check_weight, module_weight
from .bsn import bidirectional_sigma, bsn_normalize, init_bidirectional

__all__ = ["ScaledBidirectionalSpectralNorm", "bssn", "bssn_normalize"]


class ScaledBidirectionalSpectralNorm(Normalizer):
    """Parametrization ``W -> scale * W / sigma_w`` (buffers ``_u, _v, _u_t, _v_t``)."""

    def __init__(self, weight: torch.Tensor, scale: float, n_power_iterations: int = 1,
                 eps: float = 1e-12) -> None:
        super().__init__()
        check_weight(weight)
        self.scale = require_positive_float("scale", scale)
        self.n_power_iterations, self.eps = check_power_args(n_power_iterations, eps)
        init_bidirectional(self, weight, self.eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return self.scale * weight / torch.linalg.vector_norm(weight).clamp_min(self.eps)
        return self.scale * weight / bidirectional_sigma(self, weight)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, n_power_iterations={self.n_power_iterations}, eps={self.eps}"


def bssn(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
         eps: float = 1e-12, *, scale: float) -> nn.Module:
    """Attach :class:`ScaledBidirectionalSpectralNorm` with fixed ``scale`` (> 0); returns
    ``module``."""
    p = ScaledBidirectionalSpectralNorm(module_weight(module, name), scale, n_power_iterations,
                                        eps)
    return attach(module, name, p)


def bssn_normalize(weight: torch.Tensor, scale: float, *, batch_dims: int = 0) -> torch.Tensor:
    """``scale * bsn_normalize(weight)`` with exact norms (SVD)."""
    scale = require_positive_float("scale", scale)
    return scale * bsn_normalize(weight, batch_dims=batch_dims)
