"""Spectral norms of the reshaped kernels ``w^`` and ``w^'`` (what SNw and BSN divide by).

``w^`` is the kernel ``(c_out, c_in_g, kh, kw)`` reshaped to ``c_out x (c_in_g kh kw)`` (torch's
``spectral_norm`` on a ``Conv2d`` weight); ``w^'`` swaps ``c_in`` and ``c_out`` first, giving
``c_in_g x (c_out kh kw)`` (THEORY.md, notation). Both are computed in float64 with
:func:`sntheory.spectral.largest_singular_value` (``method="auto"``: the rigorous ``"tiny"`` path or
residual-stopped Lanczos, relative accuracy ``rtol``).

Grouped convolutions (``groups = g > 1``, weight ``(c_out, c_in / g, kh, kw)``)
------------------------------------------------------------------------------
Two conventions exist and both are available:

* ``groups=1`` (the default, whatever the layer's groups): **torch's convention** -- the full weight
  is reshaped to ``c_out x (c_in/g kh kw)``, stacking the rows of all groups. This is what
  ``torch.nn.utils.spectral_norm`` (and SNw) divides by.
* ``groups=g``: the **per-group convention** -- ``max_k ||w^_k||`` over the groups ``k``, with
  ``w^_k`` the ``c_out/g`` rows of group ``k`` (for ``w^'``: ``c_in/g x (c_out/g kh kw)`` per group).
  The conv operator is block diagonal over groups, so the ratio bound of THEORY.md R holds in this
  form: ``max_k ||w^_k|| <= ||w~|| <= alpha max_k ||w^_k||``. Since ``w^_k`` is a row block of the
  full ``w^``, ``max_k ||w^_k|| <= ||w^||`` (torch's value), so the upper bound also holds with
  torch's norm; the lower bound in general does not (``g`` equal groups: torch's norm is
  ``sqrt(g)`` times the per-group one).

Shapes: a single kernel ``(c_out, c_in_g, kh, kw)`` gives a Python float; a batch
``(N, c_out, c_in_g, kh, kw)`` gives an ``(N,)`` float64 array. An all-zero kernel has norm 0.
"""
from __future__ import annotations

import numpy as np

from .._validation import require_positive_float, require_positive_int
from ..spectral import largest_singular_value
from .geometry import as_kernel_batch, reshape_kernel, reshape_kernel_transposed

__all__ = ["reshaped_kernel_norm", "reshaped_kernel_norm_transposed", "reshaped_norms_with_bounds"]


def _grouped(w: np.ndarray, groups: int, name: str) -> np.ndarray:
    """(N, c_out, c_in_g, kh, kw) -> (N, g, c_out/g, c_in_g, kh, kw)."""
    n, c_out = w.shape[:2]
    if c_out % groups:
        raise ValueError(f"`groups` = {groups} must divide c_out = {c_out} of `{name}` "
                         f"(shape {w.shape[1:]})")
    return w.reshape(n, groups, c_out // groups, *w.shape[2:])


def _sigma(mats: np.ndarray, rtol: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """sigma_1 and its error bound of each (m, n) matrix of ``mats`` (..., m, n); 0 for zeros."""
    lead = mats.shape[:-2]
    flat = np.ascontiguousarray(mats.reshape(-1, *mats.shape[-2:]), dtype=np.float64)
    sigma = np.zeros(flat.shape[0])
    err = np.zeros(flat.shape[0])
    nonzero = np.flatnonzero(np.any(flat != 0, axis=(1, 2)))
    if nonzero.size:
        res = largest_singular_value(flat[nonzero], method=method, rtol=rtol)
        sigma[nonzero] = res.sigma
        err[nonzero] = res.error_bound
    return sigma.reshape(lead), err.reshape(lead)


def reshaped_norms_with_bounds(w, *, groups: int = 1, transposed: bool = False,
                               rtol: float = 1e-12, method: str = "auto"
                               ) -> tuple[np.ndarray, np.ndarray]:
    """``(sigma, error_bound)``, both ``(N,)``: ``||w^||`` (or ``||w^'||``) of each kernel.

    ``error_bound`` is the a-posteriori bound of :func:`largest_singular_value` (rigorous on the
    ``"tiny"`` path, standard rounding model on the Lanczos path). With ``groups > 1``: the max
    over groups of the per-group norms, with the error bound of the maximizing group.
    """
    groups = require_positive_int("groups", groups)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    batch, _ = as_kernel_batch(w)
    batch = batch.astype(np.float64, copy=False)
    g = _grouped(batch, groups, "w")                     # (N, g, c_out_g, c_in_g, kh, kw)
    mats = reshape_kernel_transposed(g) if transposed else reshape_kernel(g)
    sigma, err = _sigma(mats, rtol, method)               # (N, g)
    best = np.argmax(sigma, axis=1)
    rows = np.arange(sigma.shape[0])
    return sigma[rows, best], err[rows, best]


def reshaped_kernel_norm(w, *, groups: int = 1, rtol: float = 1e-12, method: str = "auto"):
    """``||w^||_sp``: largest singular value of the kernel reshaped to ``c_out x (c_in kh kw)``.

    Parameters
    ----------
    w : array_like or torch.Tensor, shape (c_out, c_in_g, kh, kw) or (N, c_out, c_in_g, kh, kw)
        Kernel(s); converted to float64.
    groups : int
        1 (default): torch's convention, the full weight; ``g > 1``: the max over the ``g``
        groups of the per-group norms (see the module docstring).
    rtol, method
        Passed to :func:`sntheory.spectral.largest_singular_value`.

    Returns
    -------
    float for a single 4-D kernel, else an ``(N,)`` float64 array.

    >>> import numpy as np
    >>> w = np.zeros((2, 1, 3, 3)); w[0, 0, 1, 1] = 3.0
    >>> round(reshaped_kernel_norm(w), 12)
    3.0
    """
    _, single = as_kernel_batch(w)
    sigma, _ = reshaped_norms_with_bounds(w, groups=groups, rtol=rtol, method=method)
    return float(sigma[0]) if single else sigma


def reshaped_kernel_norm_transposed(w, *, groups: int = 1, rtol: float = 1e-12,
                                    method: str = "auto"):
    """``||w^'||_sp``: c_in and c_out swapped, reshaped to ``c_in x (c_out kh kw)``.

    Same arguments and return convention as :func:`reshaped_kernel_norm`; with ``groups=g > 1``
    each group's ``c_in/g x (c_out/g kh kw)`` matrix, max over groups.
    """
    _, single = as_kernel_batch(w)
    sigma, _ = reshaped_norms_with_bounds(w, groups=groups, transposed=True, rtol=rtol,
                                          method=method)
    return float(sigma[0]) if single else sigma
