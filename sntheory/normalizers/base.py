"""The contract every normalizer follows, and the pieces they share.

A normalizer is a ``torch.nn.Module`` parametrization: ``forward(W)`` returns the *effective
weight* (THEORY.md, "Normalizers"), and it is attached with
``torch.nn.utils.parametrize.register_parametrization(module, "weight", p)``, so the raw
parameter lives at ``module.parametrizations.weight.original`` and ``module.weight`` is
recomputed on every access. The public entry of each normalizer is a function
``f(module, name="weight", ...) -> module`` with the argument names of
``torch.nn.utils.parametrizations.spectral_norm`` (``n_power_iterations``, ``eps``, ``dim``).

State: power-iteration vectors live in buffers (``_u`` on the output side, ``_v`` on the input
side, so that ``sigma = <u, A v>``). They are updated in place, under ``torch.no_grad()``, only
in training mode; in eval mode they are frozen and the output is a pure function of the weight
and the buffers. As in torch, the vectors are cloned before use so that two forwards can share
one backward (``loss = D(real) - D(fake)``), and the gradient flows through ``sigma`` with
``u, v`` held constant (the gradient of the true spectral norm at a simple top singular value).

Each normalizer also has a *pure function* ``<name>_normalize(weight, ...)`` for Monte Carlo
use: no state, exact norms.
"""
from __future__ import annotations

import abc
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .._validation import require_positive_float, require_positive_int

__all__ = ["Normalizer", "INIT_POWER_ITERATIONS", "attach", "module_weight", "check_weight",
           "check_power_args", "check_pure_args", "default_dim", "normalize_dim",
           "reshape_to_matrix", "reshape_transposed", "register_vectors", "matrix_power_method_",
           "matrix_sigma", "exact_matrix_norm", "expand_norm"]

# Power-iteration steps run once when a normalizer is built (torch's spectral_norm runs 15).
INIT_POWER_ITERATIONS = 15

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class Normalizer(nn.Module, metaclass=abc.ABCMeta):
    """Abstract parametrization: ``forward(weight) -> effective weight``.

    ``right_inverse`` is the identity, as for torch's spectral norm: assigning
    ``module.weight = value`` stores ``value`` as the raw parameter.
    """

    @abc.abstractmethod
    def forward(self, weight: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value


def check_weight(weight: object, *, min_ndim: int = 1, what: str = "weight") -> torch.Tensor:
    """Raise unless ``weight`` is a floating-point tensor with at least ``min_ndim`` dimensions."""
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"`{what}` must be a torch.Tensor, got {type(weight).__name__}")
    if not weight.is_floating_point():
        raise TypeError(f"`{what}` must be a floating-point tensor (spectral norms of integer "
                        f"weights are not trainable), got dtype {weight.dtype}")
    if weight.ndim < min_ndim:
        raise ValueError(f"`{what}` must have at least {min_ndim} dimension(s), got shape "
                         f"{tuple(weight.shape)}")
    if weight.numel() == 0:
        raise ValueError(f"`{what}` is empty: shape {tuple(weight.shape)}")
    return weight


def module_weight(module: nn.Module, name: str) -> torch.Tensor:
    """The tensor ``module.<name>``, or a ValueError worded as torch words it."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"`module` must be a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a str, got {type(name).__name__}")
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    return weight


def attach(module: nn.Module, name: str, parametrization: Normalizer) -> nn.Module:
    """``register_parametrization(module, name, parametrization)``; returns ``module``."""
    parametrize.register_parametrization(module, name, parametrization)
    return module


def default_dim(module: nn.Module, dim: int | None) -> int:
    """torch's rule: the output-channel dimension, 1 for transposed convolutions, else 0."""
    if dim is None:
        return 1 if isinstance(module, _TRANSPOSED) else 0
    return dim


def normalize_dim(dim: object, ndim: int) -> int:
    """``dim`` as a non-negative index into a tensor with ``ndim`` dimensions, or raise."""
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"`dim` must be an int, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise IndexError(f"Dimension out of range (expected to be in range of "
                         f"[-{ndim}, {ndim - 1}] but got {dim})")
    return int(dim) % ndim


def check_power_args(n_power_iterations: object, eps: object) -> tuple[int, float]:
    """Validated ``(n_power_iterations, eps)``: an integer >= 1 and a finite float > 0."""
    return (require_positive_int("n_power_iterations", n_power_iterations),
            require_positive_float("eps", eps))


def reshape_to_matrix(weight: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``w^``: ``dim`` moved to the front, the rest flattened: ``(shape[dim], -1)``.

    For a conv kernel ``(c_out, c_in, kh, kw)`` and ``dim=0`` this is ``(c_out, c_in*kh*kw)``,
    torch's spectral-norm reshape (dense layers: the matrix itself).
    """
    if dim != 0:
        weight = weight.permute(dim, *(d for d in range(weight.ndim) if d != dim))
    return weight.flatten(1)


def reshape_transposed(weight: torch.Tensor) -> torch.Tensor:
    """``w^'``: dimensions 0 and 1 swapped, then ``(shape[1], -1)``: ``(c_in, c_out*kh*kw)``."""
    return weight.transpose(0, 1).flatten(1)


def register_vectors(module: nn.Module, weight_mat: torch.Tensor, eps: float,
                     suffix: str = "") -> None:
    """Register ``_u{suffix}``, ``_v{suffix}`` for ``weight_mat`` (h, w) exactly as torch does.

    Draws ``u ~ N(0, I_h)`` then ``v ~ N(0, I_w)`` from the global generator, normalizes, and
    runs :data:`INIT_POWER_ITERATIONS` steps: with the same seed, the state equals that of
    ``torch.nn.utils.parametrizations.spectral_norm``.
    """
    h, w = weight_mat.size()
    u = weight_mat.new_empty(h).normal_(0, 1)
    v = weight_mat.new_empty(w).normal_(0, 1)
    module.register_buffer("_u" + suffix, F.normalize(u, dim=0, eps=eps))
    module.register_buffer("_v" + suffix, F.normalize(v, dim=0, eps=eps))
    matrix_power_method_(weight_mat, getattr(module, "_u" + suffix),
                         getattr(module, "_v" + suffix), INIT_POWER_ITERATIONS, eps)


@torch.no_grad()
def matrix_power_method_(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                         n_power_iterations: int, eps: float) -> None:
    """``n`` steps ``u <- normalize(W v)``, ``v <- normalize(W^T u)``, in place (torch's order)."""
    for _ in range(n_power_iterations):
        F.normalize(torch.mv(weight_mat, v), dim=0, eps=eps, out=u)
        F.normalize(torch.mv(weight_mat.H, u), dim=0, eps=eps, out=v)


def matrix_sigma(weight_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sigma = <u, W v>`` with ``u, v`` cloned (constants for autograd), as torch computes it."""
    u = u.clone(memory_format=torch.contiguous_format)
    v = v.clone(memory_format=torch.contiguous_format)
    return torch.vdot(u, torch.mv(weight_mat, v))


def exact_matrix_norm(weight: torch.Tensor, dim: int = 0, batch_dims: int = 0) -> torch.Tensor:
    """Exact ``||w^||_sp`` by SVD, of shape ``weight.shape[:batch_dims]``.

    The ``batch_dims`` leading dimensions index independent weights; ``dim`` counts within one
    weight. A 1-D weight (per batch entry) has the Euclidean norm as its spectral norm.
    """
    batch = weight.shape[:batch_dims]
    single_ndim = weight.ndim - batch_dims
    if single_ndim == 1:
        return torch.linalg.vector_norm(weight, dim=-1)
    if dim != 0:
        d = batch_dims + dim
        order = (*range(batch_dims), d, *(i for i in range(batch_dims, weight.ndim) if i != d))
        weight = weight.permute(order)
    mat = weight.reshape(*batch, weight.shape[batch_dims], -1)
    return torch.linalg.matrix_norm(mat, ord=2)


def check_pure_args(weight: object, batch_dims: object, *, min_ndim: int = 1) -> tuple[
        torch.Tensor, int]:
    """Validate the arguments shared by the pure functions."""
    if isinstance(batch_dims, bool) or not isinstance(batch_dims, numbers.Integral) \
            or batch_dims < 0:
        raise ValueError(f"`batch_dims` must be an integer >= 0, got {batch_dims!r}")
    weight = check_weight(weight, min_ndim=min_ndim + int(batch_dims))
    return weight, int(batch_dims)


def expand_norm(norm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Reshape per-batch norms ``(B...)`` to broadcast against ``weight`` ``(B..., *shape)``."""
    return norm.reshape(*norm.shape, *([1] * (weight.ndim - norm.ndim)))
