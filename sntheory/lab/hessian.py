"""Spectral norms of Hessian blocks by Hessian-vector products and block Lanczos (THEORY.md P3).

The solver
----------
:func:`block_lanczos` finds the extreme eigenvalues of a symmetric operator given only its action
on a block of vectors. It is block Lanczos with *full* reorthogonalisation, written in its
Rayleigh-Ritz form: the basis ``Q`` (``k x n``, orthonormal rows) and the products ``A Q`` are kept;
every step appends the new directions ``A Q_new`` orthogonalised twice (classical Gram-Schmidt,
"twice is enough") against the whole basis; the Ritz pairs are those of ``Q A Q^T`` (a ``k x k``
symmetric eigenproblem, symmetrised), and the residual of a Ritz pair ``(theta, y = s^T Q)`` is
computed directly as ``||s^T (A Q) - theta s^T Q||`` from the stored products -- not from the
three-term recurrence, so it stays honest after any loss of orthogonality.

Stopping rule: the target Ritz value (largest |theta|, or largest theta) is accepted when its
residual ``r`` satisfies ``r <= rtol |theta|``. For a symmetric ``A`` some eigenvalue lies in
``[theta - r, theta + r]`` (Bauer-Fike for normal matrices), and by Cauchy interlacing
``lambda_min <= theta_min <= theta_max <= lambda_max``, so ``max |theta|`` never exceeds ``||A||``:
the estimate approaches the norm from below. What no residual test can certify is that the Krylov
space has seen the top of the spectrum (a start block with no component along the top
eigenvector); a block of ``b`` random vectors makes this vanishingly unlikely for clusters of up to
``b`` eigenvalues. The iteration also stops, exactly, when the basis fills the space or the new
directions vanish (an invariant subspace: the Ritz values are then eigenvalues).

Hessians
--------
``loss_fn(params) -> scalar`` is a function of a list of tensors. :func:`hessian_spectral_norm`
applies the Hessian by double backward (the gradient graph is built once with
``create_graph=True`` and each product is one more backward pass through it). A *block* selects
rows ``R`` and columns ``C`` (lists of parameter indices):

* ``R == C`` (a diagonal block, e.g. one layer's weights): ``H_RR`` is symmetric; its spectral
  norm is ``max |lambda|`` over both ends of the spectrum.
* ``R`` and ``C`` disjoint (a cross-layer block ``H_RC``): not symmetric, so Lanczos runs on the
  symmetric embedding ``S = [[0, H_RC], [H_CR, 0]]``, whose eigenvalues are ``+-`` the singular
  values of ``H_RC``: ``||H_RC||_sp = max |lambda(S)|``. ``S (x_R, x_C) = (H_RC x_C, H_CR x_R)``
  costs two Hessian-vector products of the joint Hessian.

:func:`dense_hessian` is the reference: ``torch.autograd.functional.hessian`` of the flattened
loss (small networks only), sliced to the block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.linalg
import torch

from .._validation import require_positive_float, require_positive_int

__all__ = ["LanczosResult", "block_lanczos", "HessianNormResult", "hessian_spectral_norm",
           "dense_hessian", "hessian_vector_product"]

_TARGETS = ("magnitude", "largest")


@dataclass(frozen=True)
class LanczosResult:
    """Result of :func:`block_lanczos`.

    value: the target Ritz value (largest ``|theta|`` for ``target="magnitude"``, largest
    ``theta`` for ``"largest"``); theta_max, theta_min: the extreme Ritz values; residual: the
    residual norm of the target Ritz pair (an eigenvalue lies within it); vector: the target Ritz
    vector ``(n,)`` float64; top_vectors: the ``b`` Ritz vectors of the largest Ritz values,
    ``(b, n)`` (warm starts); converged: the stopping rule was met (or the space exhausted);
    exhausted: the Krylov space became invariant (Ritz values are eigenvalues up to rounding);
    iterations: operator applications (vectors); steps: block steps.
    """

    value: float
    theta_max: float
    theta_min: float
    residual: float
    vector: torch.Tensor
    top_vectors: torch.Tensor
    converged: bool
    exhausted: bool
    iterations: int
    steps: int


def _orthonormalise(w: torch.Tensor, basis: torch.Tensor | None, scale: float
                    ) -> torch.Tensor:
    """Rows of ``w`` (b, n) made orthonormal and orthogonal to ``basis`` (k, n); rows that are
    (numerically) in the span are dropped. ``scale``: the size of ``w`` before projection."""
    for _ in range(2):                                    # twice is enough (Kahan / Parlett)
        if basis is not None and basis.shape[0]:
            w = w - (w @ basis.T) @ basis
    q, r = torch.linalg.qr(w.T)                           # (n, b), (b, b)
    keep = torch.diagonal(r).abs() > 1e-10 * max(scale, 1e-300)
    q = q.T[keep]
    if basis is not None and basis.shape[0] and q.shape[0]:
        q = q - (q @ basis.T) @ basis                     # one more pass after the QR
        q, _ = torch.linalg.qr(q.T)
        q = q.T
    return q


def _target_ritz(h: np.ndarray, target: str) -> tuple[float, np.ndarray]:
    """The target Ritz pair of the small symmetric ``h``: only the one or two extreme pairs are
    computed (LAPACK ``syevr`` with an index range: 3x faster than a full ``eigh`` at k = 100)."""
    k = h.shape[0]
    hi_val, hi_vec = scipy.linalg.eigh(h, subset_by_index=[k - 1, k - 1])
    if target == "largest" or k == 1:
        return float(hi_val[0]), hi_vec[:, 0]
    lo_val, lo_vec = scipy.linalg.eigh(h, subset_by_index=[0, 0])
    if abs(lo_val[0]) > abs(hi_val[0]):
        return float(lo_val[0]), lo_vec[:, 0]
    return float(hi_val[0]), hi_vec[:, 0]


def block_lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *,
                  start: torch.Tensor | None = None, block_size: int = 2,
                  target: str = "magnitude", rtol: float = 1e-10, max_iter: int | None = None,
                  min_steps: int = 2, seed: int = 0) -> LanczosResult:
    """Extreme eigenvalues of the symmetric operator ``matvec`` on ``R^n`` (module docstring).

    Parameters
    ----------
    matvec : callable
        ``(b, n) float64 tensor -> (b, n)``: the operator applied to each row.
    n : int
        Dimension.
    start : (b, n) or (n,) tensor, optional
        Start block (e.g. the ``top_vectors`` of a previous run: a warm start). Random
        (``seed``) when omitted; a given block is used as is (add noise yourself).
    block_size : int
        Size of the random start block (ignored when ``start`` is given).
    target : {"magnitude", "largest"}
        Stop on the Ritz value of largest magnitude (spectral norm of a symmetric matrix) or the
        largest Ritz value (``A^T A``: the squared operator norm).
    rtol : float in (0, 1)
        Stop when the target residual ``r <= rtol |theta|``.
    max_iter : int, optional
        Maximum number of operator applications (vectors); default ``max(200, ...)`` capped at
        ``n`` plus one block.
    min_steps : int
        Block steps before the stopping rule is consulted.
    seed : int
        Seed of the random start block.
    """
    n = require_positive_int("n", n)
    rtol = require_positive_float("rtol", rtol, maximum=1.0)
    if target not in _TARGETS:
        raise ValueError(f"`target` must be one of {list(_TARGETS)}, got {target!r}")
    if start is None:
        b = min(require_positive_int("block_size", block_size), n)
        gen = torch.Generator().manual_seed(int(seed))
        start = torch.randn(b, n, generator=gen, dtype=torch.float64)
    else:
        if not isinstance(start, torch.Tensor):
            raise TypeError(f"`start` must be a torch.Tensor, got {type(start).__name__}")
        start = start.detach().to(torch.float64).reshape(-1, n)
        if not bool(torch.isfinite(start).all()):
            raise ValueError("`start` must be finite")
    if max_iter is None:
        max_iter = max(200, 4 * start.shape[0] * 30)
    max_iter = require_positive_int("max_iter", max_iter)
    min_steps = require_positive_int("min_steps", min_steps)

    q = _orthonormalise(start, None, float(torch.linalg.matrix_norm(start)))
    if q.shape[0] == 0:
        raise ValueError("`start` block has rank 0 (all-zero vectors)")
    basis = q.new_zeros(0, n)
    products = q.new_zeros(0, n)
    h = np.zeros((0, 0))
    steps = iterations = 0
    exhausted = converged = False
    while True:
        aq = matvec(q)
        if aq.shape != q.shape:
            raise ValueError(f"`matvec` returned shape {tuple(aq.shape)} for an input of shape "
                             f"{tuple(q.shape)}")
        iterations += q.shape[0]
        steps += 1
        # Rayleigh quotient Q A Q^T, extended by the new block (symmetrised)
        cross = (0.5 * (basis @ aq.T + products @ q.T)).numpy()    # (k_old, b)
        corner = (q @ aq.T).numpy()
        corner = 0.5 * (corner + corner.T)
        h = np.block([[h, cross], [cross.T, corner]])
        basis = torch.cat([basis, q])
        products = torch.cat([products, aq])
        value, vec = _target_ritz(h, target)
        sv = torch.from_numpy(vec)
        ritz = sv @ basis
        resid = float(torch.linalg.vector_norm(sv @ products - value * ritz))
        if steps >= min_steps and resid <= rtol * abs(value):
            converged = True
        if not converged:
            if basis.shape[0] >= n or iterations >= max_iter:
                exhausted = basis.shape[0] >= n
                converged = exhausted
            else:
                scale = float(torch.linalg.matrix_norm(aq))
                q = _orthonormalise(aq, basis, scale)
                if q.shape[0] == 0:                        # invariant subspace: exact
                    exhausted = converged = True
        if converged or exhausted or iterations >= max_iter:
            break
    theta, s = np.linalg.eigh(h)                           # ascending, once at the end
    s = torch.from_numpy(np.ascontiguousarray(s))
    b = min(start.shape[0], theta.shape[0])
    top = s[:, -b:].flip(1).T @ basis
    return LanczosResult(value=float(value), theta_max=float(theta[-1]),
                         theta_min=float(theta[0]),
                         residual=resid, vector=ritz, top_vectors=top, converged=converged,
                         exhausted=exhausted, iterations=iterations, steps=steps)


# --------------------------------------------------------------------------------------------------
# Hessians


@dataclass(frozen=True)
class HessianNormResult:
    """``value = ||H_block||_sp`` estimate (from below, see the module docstring) with the
    extreme Ritz values, the residual of the target pair, convergence, iterations, block
    ``rows``/``cols`` and its shape ``(n_rows, n_cols)``."""

    value: float
    eig_max: float
    eig_min: float
    residual: float
    converged: bool
    iterations: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    shape: tuple[int, int]


def _check_params(params) -> list[torch.Tensor]:
    if isinstance(params, torch.Tensor) or not isinstance(params, Sequence) or not params:
        raise TypeError("`params` must be a non-empty list of tensors")
    out = []
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor) or not p.is_floating_point():
            raise TypeError(f"`params[{i}]` must be a floating-point tensor, got "
                            f"{type(p).__name__}")
        out.append(p.detach().to(torch.float64))
    return out


def _check_block(name: str, value, count: int) -> tuple[int, ...]:
    if value is None:
        return tuple(range(count))
    try:
        idx = tuple(int(i) for i in value)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a list of parameter indices, got {value!r}") from None
    if not idx or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= count:
        raise ValueError(f"`{name}` must list distinct parameter indices in [0, {count}), got "
                         f"{value!r}")
    return idx


def _blocks(params, rows, cols):
    rows = _check_block("rows", rows, len(params))
    cols = _check_block("cols", cols if cols is not None else rows, len(params))
    if set(rows) != set(cols) and set(rows) & set(cols):
        raise ValueError(f"`rows` {rows} and `cols` {cols} must be equal (a diagonal block) "
                         f"or disjoint (an off-diagonal block)")
    return rows, cols


class _HVP:
    """Hessian-vector products of ``loss_fn`` at ``params`` restricted to ``used`` indices."""

    def __init__(self, loss_fn, params, used):
        self.used = list(used)
        self.sizes = [params[i].numel() for i in self.used]
        self.shapes = [params[i].shape for i in self.used]
        self.leaves = [p.clone().requires_grad_(i in self.used) for i, p in enumerate(params)]
        loss = loss_fn(self.leaves)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("`loss_fn` must return a scalar tensor")
        if not bool(torch.isfinite(loss)):
            raise ValueError(f"`loss_fn` returned a non-finite value {float(loss)!r}")
        grads = torch.autograd.grad(loss, [self.leaves[i] for i in self.used],
                                    create_graph=True, allow_unused=True)
        self.grads = [g if g is not None else torch.zeros_like(self.leaves[i])
                      for g, i in zip(grads, self.used)]

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """``(n_used,) -> (n_used,)`` or ``(b, n_used) -> (b, n_used)``: ``H v`` over the used
        parameters (flattened, in order). A block of vectors is one batched vector-Jacobian
        product of the gradient (``is_grads_batched``: vmap over the double backward)."""
        single = v.dim() == 1
        vb = v.reshape(1, -1) if single else v
        if not any(g.requires_grad for g in self.grads):      # the loss is linear in them
            return torch.zeros_like(v)
        parts = torch.split(vb, self.sizes, dim=1)
        cot = [p.reshape(vb.shape[0], *s) for p, s in zip(parts, self.shapes)]
        live = [i for i, g in enumerate(self.grads) if g.requires_grad]
        hv = torch.autograd.grad([self.grads[i] for i in live],
                                 [self.leaves[self.used[i]] for i in range(len(self.used))],
                                 grad_outputs=[cot[i] for i in live], retain_graph=True,
                                 allow_unused=True, is_grads_batched=True)
        out = torch.cat([(h if h is not None else
                          torch.zeros(vb.shape[0], *s, dtype=torch.float64)).reshape(vb.shape[0], -1)
                         for h, s in zip(hv, self.shapes)], dim=1)
        return out[0] if single else out


def hessian_vector_product(loss_fn, params, vector: torch.Tensor) -> torch.Tensor:
    """``H v`` of ``loss_fn`` at ``params`` for one flattened vector over all parameters."""
    params = _check_params(params)
    hvp = _HVP(loss_fn, params, range(len(params)))
    return hvp(vector.detach().to(torch.float64).reshape(-1))


def hessian_spectral_norm(loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                          params: Sequence[torch.Tensor], *, rows=None, cols=None,
                          rtol: float = 1e-10, max_iter: int | None = None,
                          block_size: int = 2, seed: int = 0) -> HessianNormResult:
    """Spectral norm of a block of the Hessian of ``loss_fn`` at ``params`` (module docstring).

    Parameters
    ----------
    loss_fn : callable
        ``list of tensors -> scalar tensor`` (differentiable twice).
    params : list of tensors
        The point; converted to float64.
    rows, cols : lists of parameter indices, optional
        The block: ``rows == cols`` (default: all parameters) or disjoint (cross block).
    rtol, max_iter, block_size, seed
        Passed to :func:`block_lanczos`.
    """
    params = _check_params(params)
    rows, cols = _blocks(params, rows, cols)
    diagonal = set(rows) == set(cols)
    used = rows if diagonal else rows + cols
    hvp = _HVP(loss_fn, params, used)
    n_rows = sum(params[i].numel() for i in rows)
    n_cols = sum(params[i].numel() for i in cols)
    if diagonal:
        matvec = hvp
        n = n_rows
    else:
        def matvec(v):
            b = v.shape[0]
            xr, xc = v[:, :n_rows], v[:, n_rows:]
            both = torch.cat([torch.cat([torch.zeros_like(xr), xc], 1),      # -> H_RC x_C
                              torch.cat([xr, torch.zeros_like(xc)], 1)], 0)  # -> H_CR x_R
            hv = hvp(both)
            return torch.cat([hv[:b, :n_rows], hv[b:, n_rows:]], 1)
        n = n_rows + n_cols
    res = block_lanczos(matvec, n, block_size=block_size, target="magnitude", rtol=rtol,
                        max_iter=max_iter, seed=seed)
    return HessianNormResult(value=abs(res.value), eig_max=res.theta_max, eig_min=res.theta_min,
                             residual=res.residual, converged=res.converged,
                             iterations=res.iterations, rows=rows, cols=cols,
                             shape=(n_rows, n_cols))


def dense_hessian(loss_fn: Callable[[list[torch.Tensor]], torch.Tensor],
                  params: Sequence[torch.Tensor], *, rows=None, cols=None,
                  max_size: int = 4096) -> np.ndarray:
    """The Hessian block ``H[rows, cols]`` as a dense float64 array (reference; small nets).

    Computed by ``torch.autograd.functional.hessian`` of the loss as a function of the
    concatenated flattened parameters (independent of the HVP path used by Lanczos).
    """
    params = _check_params(params)
    rows, cols = _blocks(params, rows, cols)
    max_size = require_positive_int("max_size", max_size)
    sizes = [p.numel() for p in params]
    total = sum(sizes)
    if total > max_size:
        raise ValueError(f"dense_hessian builds a {total} x {total} matrix (> `max_size` = "
                         f"{max_size}); use hessian_spectral_norm for larger networks")
    flat = torch.cat([p.reshape(-1) for p in params])

    def f(v):
        parts = [t.reshape(p.shape) for t, p in zip(torch.split(v, sizes), params)]
        return loss_fn(parts)

    h = torch.autograd.functional.hessian(f, flat, vectorize=True).detach().numpy()
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    def index(block):
        return np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in block])

    return h[np.ix_(index(rows), index(cols))]


def dense_block_norm(h: np.ndarray) -> float:
    """Spectral norm of a dense block by SVD (largest singular value)."""
    return float(np.linalg.norm(h, 2)) if h.size else 0.0


def sigmoid_second_derivative_sup() -> float:
    """``||sigma''||_inf = 1 / (6 sqrt 3)`` for the logistic sigmoid.

    ``sigma' = s (1 - s)``, ``sigma'' = s (1 - s)(1 - 2 s)``; with ``s = (1 + t) / 2``,
    ``|sigma''| = |t| (1 - t^2) / 4`` on ``t in [-1, 1]``, maximal at ``t = 1/sqrt 3``:
    ``(1/sqrt 3)(2/3)/4 = 1/(6 sqrt 3) ~ 0.0962``.
    """
    return 1.0 / (6.0 * math.sqrt(3.0))
