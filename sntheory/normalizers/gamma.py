"""same-gamma and diff-gamma: ``gamma * W / ||w^||_sp`` with a trainable ``gamma``.

THEORY.md, "Normalizers": the paper's learnable-scale variants of SNw, reported as worse than a
fixed scale (SSN). *diff-gamma*: one ``gamma`` per layer, a ``Parameter`` inside each
parametrization. *same-gamma*: one ``Parameter`` shared by every layer of a model
(:func:`same_gamma`). ``gamma`` is a 0-dim tensor in the weight's dtype, initialised to the given
value (default 1); it is not constrained to stay positive, as in the paper's code.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from .base import Normalizer, attach, default_dim, module_weight
from .snw import init_reshaped_state, reshaped_sigma, snw_normalize

__all__ = ["GammaSpectralNorm", "diff_gamma", "gamma_sn", "same_gamma", "gamma_parameters",
           "gamma_normalize", "make_gamma"]


def make_gamma(gamma: float | nn.Parameter, like: torch.Tensor) -> nn.Parameter:
    """``gamma`` as a 0-dim ``Parameter`` in ``like``'s dtype and device (a Parameter: itself)."""
    if isinstance(gamma, nn.Parameter):
        if gamma.ndim != 0 or not gamma.is_floating_point():
            raise ValueError(f"a shared `gamma` must be a 0-dim floating-point Parameter, got "
                             f"shape {tuple(gamma.shape)} and dtype {gamma.dtype}")
        return gamma
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) \
            or not torch.isfinite(torch.tensor(float(gamma))):
        raise ValueError(f"`gamma` must be a finite real number or a 0-dim nn.Parameter, "
                         f"got {gamma!r}")
    return nn.Parameter(torch.tensor(float(gamma), dtype=like.dtype, device=like.device))


class GammaSpectralNorm(Normalizer):
    """Parametrization ``W -> gamma * W / sigma``, ``sigma ~ ||w^||_sp`` (buffers ``_u``, ``_v``).

    ``gamma``: a number (a new per-layer Parameter: diff-gamma) or an existing 0-dim
    ``nn.Parameter`` (shared across layers: same-gamma).
    """

    def __init__(self, weight: torch.Tensor, gamma: float | nn.Parameter = 1.0,
                 n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12) -> None:
        super().__init__()
        init_reshaped_state(self, weight, n_power_iterations, dim, eps)
        self.gamma = make_gamma(gamma, weight)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return self.gamma * weight / torch.linalg.vector_norm(weight).clamp_min(self.eps)
        return self.gamma * weight / reshaped_sigma(self, weight)

    def extra_repr(self) -> str:
        return f"n_power_iterations={self.n_power_iterations}, dim={self.dim}, eps={self.eps}"


def gamma_sn(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
             eps: float = 1e-12, dim: int | None = None, *,
             gamma: float | nn.Parameter = 1.0) -> nn.Module:
    """Attach :class:`GammaSpectralNorm` and return ``module``.

    Pass a number for a new per-layer ``gamma``, or an ``nn.Parameter`` to share one.
    """
    weight = module_weight(module, name)
    p = GammaSpectralNorm(weight, gamma, n_power_iterations, default_dim(module, dim), eps)
    return attach(module, name, p)


def diff_gamma(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
               eps: float = 1e-12, dim: int | None = None, *, gamma: float = 1.0) -> nn.Module:
    """diff-gamma: attach ``gamma * W / ||w^||_sp`` with this layer's own ``gamma``."""
    if isinstance(gamma, nn.Parameter):
        raise TypeError("diff-gamma creates its own `gamma`: pass its initial value as a number "
                        "(to share a Parameter across layers, use same-gamma / gamma_sn)")
    return gamma_sn(module, name, n_power_iterations, eps, dim, gamma=gamma)


def same_gamma(model: nn.Module, n_power_iterations: int = 1, eps: float = 1e-12, *,
               gamma: float | nn.Parameter = 1.0) -> nn.Module:
    """same-gamma: ``gamma * W / ||w^||_sp`` on every Conv2d and Linear layer of ``model``, all
    sharing one ``gamma`` Parameter (created in the first layer's dtype unless given).

    Returns ``model``; the shared Parameter is ``gamma_parameters(model)[0]``.
    """
    from .registry import apply_normalizer  # the registry imports this module
    return apply_normalizer(model, "same-gamma", n_power_iterations=n_power_iterations,
                            eps=eps, gamma=gamma)


def gamma_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The distinct ``gamma`` Parameters of the gamma normalizers in ``model``, in module order."""
    seen: dict[int, nn.Parameter] = {}
    for m in model.modules():
        if isinstance(m, GammaSpectralNorm):
            seen.setdefault(id(m.gamma), m.gamma)
    return list(seen.values())


def gamma_normalize(weight: torch.Tensor, gamma: float | torch.Tensor = 1.0, dim: int = 0, *,
                    batch_dims: int = 0) -> torch.Tensor:
    """``gamma * weight / ||w^||_sp`` with the exact norm (SVD); see :func:`.snw_normalize`."""
    return gamma * snw_normalize(weight, dim, batch_dims=batch_dims)
