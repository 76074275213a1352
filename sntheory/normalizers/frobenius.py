"""Frobenius / weight norm: ``W / ||W||_F`` (THEORY.md, "Normalizers": a comparison baseline).

The norm is over the whole tensor (all entries), exact, with no state. Since
``||W||_F >= ||w^||_sp``, the effective weight has ``||w^||_sp <= 1``, with equality only for
rank one. ``eps`` guards a zero weight as in ``F.normalize``: ``W / max(||W||_F, eps)``.
"""
from __future__ import annotations

import torch
from torch import nn

from .._validation import require_positive_float
from .base import (Normalizer, attach, check_pure_args, check_weight, expand_norm,
                   module_weight)

__all__ = ["FrobeniusNorm", "frobenius", "frobenius_normalize"]


class FrobeniusNorm(Normalizer):
    """Parametrization ``W -> W / max(||W||_F, eps)``."""

    def __init__(self, weight: torch.Tensor, eps: float = 1e-12) -> None:
        super().__init__()
        check_weight(weight)
        self.eps = require_positive_float("eps", eps)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / torch.linalg.vector_norm(weight).clamp_min(self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def frobenius(module: nn.Module, name: str = "weight", eps: float = 1e-12) -> nn.Module:
    """Attach :class:`FrobeniusNorm` to ``module.<name>`` and return ``module``."""
    return attach(module, name, FrobeniusNorm(module_weight(module, name), eps))


def frobenius_normalize(weight: torch.Tensor, *, batch_dims: int = 0) -> torch.Tensor:
    """``weight / ||weight||_F`` (per batch entry for ``batch_dims`` leading dimensions)."""
    weight, batch_dims = check_pure_args(weight, batch_dims)
    norm = torch.linalg.vector_norm(weight.reshape(*weight.shape[:batch_dims], -1), dim=-1)
    return weight / expand_norm(norm, weight)
