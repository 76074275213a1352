"""SSN: scaled spectral normalization, ``s * W / ||w^||_sp`` (THEORY.md, "Normalizers").

The paper sweeps the fixed scale ``s`` from 0.7 to 10; ``s = 1`` is SNw. The norm ``||w^||_sp``
is estimated exactly as in :mod:`.snw` (persistent power iteration, torch's numerics).
"""
from __future__ import annotations

import torch
from torch import nn

from .._validation import require_positive_float
from .base import Normalizer, attach, default_dim, module_weight
from .snw import init_reshaped_state, reshaped_sigma, snw_normalize

__all__ = ["ScaledSpectralNorm", "ssn", "ssn_normalize"]


class ScaledSpectralNorm(Normalizer):
    """Parametrization ``W -> scale * W / sigma``, ``sigma ~ ||w^||_sp`` (buffers ``_u``, ``_v``).

    A 1-D weight is scaled to Euclidean norm ``scale`` (exact, no state).
    """

    def __init__(self, weight: torch.Tensor, scale: float, n_power_iterations: int = 1,
                 dim: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        self.scale = require_positive_float("scale", scale)
        init_reshaped_state(self, weight, n_power_iterations, dim, eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return self.scale * weight / torch.linalg.vector_norm(weight).clamp_min(self.eps)
        return self.scale * weight / reshaped_sigma(self, weight)

    def extra_repr(self) -> str:
        return (f"scale={self.scale}, n_power_iterations={self.n_power_iterations}, "
                f"dim={self.dim}, eps={self.eps}")


def ssn(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
        eps: float = 1e-12, dim: int | None = None, *, scale: float) -> nn.Module:
    """Attach :class:`ScaledSpectralNorm` with fixed ``scale`` (> 0) and return ``module``."""
    weight = module_weight(module, name)
    p = ScaledSpectralNorm(weight, scale, n_power_iterations, default_dim(module, dim), eps)
    return attach(module, name, p)


def ssn_normalize(weight: torch.Tensor, scale: float, dim: int = 0, *,
                  batch_dims: int = 0) -> torch.Tensor:
    """``scale * weight / ||w^||_sp`` with the exact norm (SVD); see :func:`.snw_normalize`."""
    scale = require_positive_float("scale", scale)
    return scale * snw_normalize(weight, dim, batch_dims=batch_dims)
