"""none: the identity normalizer (the baseline of THEORY.md's table), ``W -> W``.

Attaching it registers a stateless identity parametrization, so that every normalizer,
including this one, stores the raw weight at ``parametrizations.<name>.original``: state dicts
and functional calls look the same whatever the normalizer.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Normalizer, attach, check_pure_args, check_weight, module_weight

__all__ = ["Identity", "identity", "identity_normalize"]


class Identity(Normalizer):
    """Parametrization ``W -> W``."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        check_weight(weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


def identity(module: nn.Module, name: str = "weight") -> nn.Module:
    """Attach :class:`Identity` to ``module.<name>`` and return ``module``."""
    return attach(module, name, Identity(module_weight(module, name)))


def identity_normalize(weight: torch.Tensor, *, batch_dims: int = 0) -> torch.Tensor:
    """``weight`` itself (validated: a floating-point tensor)."""
    weight, _ = check_pure_args(weight, batch_dims)
    return weight
