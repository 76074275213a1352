"""Probes of a discriminator at a training step: gradients against P1, norms, variances, Hessians.

:func:`probe_discriminator` takes a :class:`~sntheory.lab.nets.Discriminator`, a real and a fake
batch and returns flat, JSON-serialisable records (floats / ints / strs / bools), one per
``(step, layer, batch)`` (``scope="layer"``), one per ``(step, batch)`` for the whole network
(``scope="network"``) and, with ``ProbeOptions(hessian_cross_layer=True)``, one per cross-layer
Hessian block (``scope="hessian-cross"``). Everything is computed in float64 on a deep copy in eval
mode, so the normalizers' power-iteration state is frozen and the effective weights are exact
functions of the raw ones: the probe never changes the discriminator it is given.

Notation (THEORY.md P1): ``z = w_L a(... a(w_1 x))`` with biases ``b_i``; ``o_{t-1}`` is the input
of layer ``t``, ``delta_t = dz / d(pre-activation output of layer t)``, ``U_i`` the certified upper
bound on ``||w~_i||_sp`` (the operator norm; for a dense layer the matrix norm) and ``alpha_t`` the
coverage constant of layer ``t`` (1 for dense layers; :func:`sntheory.conv.coverage_alpha`).

The bounds (derivations)
------------------------
*Per sample, expanded matrix* (the paper's form). ``z`` depends on ``w~_t`` through
``h_t = w~_t o_{t-1} + b_t``, so ``grad_{w~_t} z = delta_t o_{t-1}^T`` and
``||grad_{w~_t} z||_F = ||delta_t|| ||o_{t-1}||`` exactly (measured that way). Since the activations
are 1-Lipschitz with ``a(0) = 0``, ``||a(h)|| <= ||h||``, so ``||o_i|| <= U_i ||o_{i-1}|| + ||b_i||``:
``||o_{t-1}|| <= B_{t-1}`` with ``B_0 = ||x||``, ``B_i = U_i B_{i-1} + ||b_i||`` (for a conv the bias
broadcast over the ``P_i = H_out W_out`` output positions: ``||b_i|| sqrt(P_i)``). Backwards,
``delta_t = w~_{t+1}^T D_{t+1} delta_{t+1}`` with ``D`` the diagonal of activation slopes, all in
``[-1, 1]`` a.e., so ``||delta_t|| <= prod_{i>t} U_i``. Hence
``bound_t(x) = B_{t-1} prod_{i>t} U_i``; without biases this is the paper's
``prod_{i!=t} ||w~_i|| ||x||``.

*Per sample, kernel tensor* (what autograd returns for a conv). The kernel gradient is
``Delta_t Patches_t^T`` (``Delta_t``: ``c_out x P_t``, ``Patches_t``: ``c_in kh kw x P_t``), so
``||grad_kernel z||_F <= ||Delta_t||_F ||Patches_t||_sp <= ||delta_t|| ||Patches_t||_F`` and
``||Patches_t||_F^2 = sum_pixels coverage * o^2 <= alpha_t^2 ||o_{t-1}||^2``:
``||grad_kernel z|| <= alpha_t bound_t(x)``. Measured per sample with ``torch.func.vmap(grad)``.

*Biases.* ``grad_{b~_t} z = delta_t`` for the expanded (per-position) bias, bounded by
``prod_{i>t} U_i`` (THEORY.md); the conv *parameter* ``b_t`` is broadcast, ``b~ = E b`` with
``||E||_sp = sqrt(P_t)``, so ``||grad_{b_t} z|| = ||E^T delta_t|| <= sqrt(P_t) prod_{i>t} U_i``
(tight when ``delta_t`` is constant over positions); dense layers have ``P_t = 1``.

*Batch loss.* For ``L = mean_j loss(z_j)``: ``grad L = mean_j loss'(z_j) grad z_j``, so
``||grad L|| <= mean_j |loss'(z_j)| bound(x_j)`` (kernel form with ``alpha_t``, expanded form
without; the expanded gradient ``sum_j (loss'_j / B) delta_j o_j^T`` has Frobenius norm
``sqrt(c^T (K_delta o K_o) c)`` from the ``B x B`` Gram matrices). ``loss'`` is taken by autograd,
so it follows autograd's convention at kinks (hinge).

*Whole network.* ``||grad_theta z||^2 = sum_t ||grad_{w_t} z||^2 <= sum_t bound_t^2``.

*SN corollary.* If every layer has ``||w~_i|| <= k_i`` -- SNConv: ``k_i = 1``; SNw on a conv layer:
``||w^_i|| <= 1`` gives ``||w~_i|| <= alpha_i`` (THEORY.md R), ``k_i = alpha_i``; SNw on a dense layer:
``k_i = 1`` -- then ``bound_t <= prod_{i!=t} k_i ||x||`` (with biases: the recursion with ``k_i``).
Its hypothesis is ``||w^_i|| <= 1`` (SNw) / ``||w~_i|| <= 1`` (SNConv) *as measured*: torch's power
iteration estimates ``sigma`` from below, so the normalized norm can sit slightly above 1
(recorded as ``sn_normalized_norm``).

*Raw parameters* (corrected App. C). With ``W_eff = c(W) W``, ``c = s / sigma(W)`` and ``sigma``
positively homogeneous of degree 1 (every normalizer of the family in eval mode: ``u^T w^ v`` with
``u, v`` frozen, ``<u, A v>`` for SNConv, the mean of two such for BSN, ``||W||_F``), the chain rule
gives ``grad_W = c (G + <G, W> grad log|c|)``, ``G = grad_{W_eff}``, and Euler's identity
``<grad log|c|, W> = -1`` makes ``I + W (grad log|c|)^T`` an oblique projection's complement of norm
``||W||_F ||grad log|c|||_F = ||W||_F ||grad sigma||_F / sigma`` (``>= 1``; ``sqrt(stable rank)`` for the
exact spectral norm, where ``grad sigma = u v^T``). So
``||grad_W||_F <= |c| max(1, ||W||_F ||grad log|c|||_F) ||G||_F``, tight (``G`` along ``grad log|c|``).
``c`` is read off the parametrization (``<W_eff, W> / ||W||^2``, proportionality checked) and
``grad log|c|`` is computed by autograd through it, so the same code serves every normalizer
(``none``: ``c = 1``, projection norm 1). The sheet's ``|c| ||G||_F`` is recorded beside it
(``raw_grad_sheet_bound``): it holds only for orthogonal projections (Frobenius).

*Variances* (paper Figs. 7, 16, 17, 22): entry variance of the effective and raw weights and
T2's ``1 / max(m, n)`` for the reshaped ``m x n`` matrix, plus ``||w^||^2 / max(m, n)``, a
deterministic upper bound on the mean square of the entries of any matrix (``||A||_F^2 <=
rank ||A||_sp^2``).

*Hessian (P3, optional)*: see :func:`_hessian_records`.

Record fields
-------------
Every record: ``probe_version``, ``scope``, ``step``, ``batch`` ("real"/"fake"), ``batch_size``,
``loss``, ``layer`` (-1 for the network), ``layer_label``, ``n_layers``, ``has_bias``, the
activation facts (``activation``, ``activation_lipschitz``, ``activation_zero_at_zero``,
``activation_piecewise_linear``, ``activation_homogeneous``, ``meets_p1_hypotheses``).

``scope="layer"`` adds ``layer_name``, ``kind``, ``normalizer``, ``n_params``, ``positions``;
norms ``op_norm_exact`` (absent with ``operator_values=False``), ``op_norm_lower``,
``op_norm_upper``, ``op_norm_converged``, ``op_norm_method``, ``reshaped_norm`` (``||w^||``),
``reshaped_norm_transposed`` (``||w^'||``), ``alpha``, ``ratio_op_to_reshaped``,
``ratio_op_upper_to_reshaped``, ``bias_norm`` (broadcast); variances ``eff_weight_var``,
``eff_weight_mean_sq``, ``raw_weight_var``, ``t2_var_bound``, ``mean_sq_bound_reshaped``; the batch
``input_norm_max``/``_mean``, ``z_mean``/``_min``/``_max``; per-sample z-gradients
``grad_eff_fro_max``, ``grad_eff_fro_mean``, ``grad_eff_bound_max``; for every per-sample
statement ``S`` in ``grad_z_expanded``, ``grad_z_kernel``, ``forward_factor`` (``||o_{t-1}|| <=
B_{t-1}``), ``backward_factor`` (``||delta_t|| <= prod_{i>t} U_i``), ``grad_bias_expanded``,
``grad_bias_param``, ``sn_corollary``, ``raw_grad_z``, ``raw_grad_z_sheet``: ``S_ratio_max``
(max over the batch of measured / bound), ``S_at_worst``, ``S_bound_at_worst``,
``S_worst_sample``; ``bound_form``; the batch loss ``loss_grad_eff_fro`` / ``_bound``,
``loss_grad_expanded_fro`` / ``_bound``, ``loss_grad_bias_fro`` / ``_bound``,
``loss_abs_derivative_mean``; raw parameters ``raw_scale`` (``|c|``), ``raw_proportional``,
``raw_projection_norm``, ``raw_grad_fro``, ``raw_grad_bound``, ``raw_grad_sheet_bound``,
``raw_grad_bound_p1``; SN ``sn_constant``, ``sn_normalized_norm``; with ``hessian``:
``hessian_norm``, ``hessian_eig_max``/``_min``, ``hessian_residual``, ``hessian_converged``,
``hessian_iterations``, ``hessian_bound``, ``hessian_bound_curvature``,
``hessian_gauss_newton_norm``, ``sigmoid_second_derivative_sup``. Keys that do not apply (no
bias, not SN, no Hessian) are absent, never NaN.

``scope="network"``: ``total_grad_expanded``, ``total_grad_kernel``, ``total_grad_with_biases``,
``total_sn_corollary`` (each with the four ``_ratio_max`` ... fields), ``input_norm_max``.
``scope="hessian-cross"``: ``layer``, ``layer_other``, ``hessian_cross_norm``,
``hessian_cross_residual``, ``hessian_cross_converged``, ``hessian_cross_iterations``.

Operator norms and the warm-start cache
---------------------------------------
``ProbeOptions(operator_norms="warm")`` (default): the value of ``||w~_t||`` comes from block
Lanczos on ``A^T A`` (:func:`sntheory.lab.hessian.block_lanczos`, ``A`` = the layer's conv2d /
conv_transpose2d) started from the previous probe's top Ritz vectors (an
:class:`OperatorNormCache`) mixed with 10% seeded noise; its certified lower bound is
``||A y|| / ||y||`` for the Ritz vector less a rounding allowance; its certified upper bound (the one
the P1 bound uses) is the minimum of the zero-padding torus embeddings
(:func:`sntheory.conv.operator.zero_padding_tori` + :func:`sntheory.conv.fft.circular_operator_norm`)
and ``alpha max_k ||w^_k||`` -- the same certificates as :func:`sntheory.conv.conv_operator_norm`,
which does not accept start vectors. ``"reference"`` calls ``conv_operator_norm`` itself (and is what
circular-padding layers always use). Layers whose expanded matrix has at most ``2^16`` entries use
its dense certified path instead (exact to ~1e-12; the torus bounds of tiny inputs are loose). Only ``op_norm_exact`` / ``op_norm_lower`` depend on the start
vectors (in their last digits); every bound uses ``op_norm_upper``, which does not. For a resumed run
to reproduce the uninterrupted run's records bit for bit, checkpoint the cache
(:meth:`OperatorNormCache.state_dict`).
"""
from __future__ import annotations

import contextlib
import copy
import math
import numbers
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import require_choice, require_positive_float, require_positive_int
from ..conv.alpha import coverage_alpha
from ..conv.fft import circular_operator_norm
from ..conv.geometry import ConvGeometry
from ..conv.operator import conv_operator_norm, zero_padding_tori
from ..conv.reshaped import reshaped_norms_with_bounds
from ..normalizers.snconv import conv_adjoint, conv_apply
from ..spectral import largest_singular_value
from .config import LOSSES
from .hessian import block_lanczos, hessian_spectral_norm, sigmoid_second_derivative_sup
from .nets import Discriminator
from .train import per_sample_loss

__all__ = ["LOSSES", "ProbeOptions", "OperatorNormCache", "probe_discriminator",
           "per_sample_loss", "layer_operator_norms", "PROBE_VERSION"]

PROBE_VERSION = 1
OPERATOR_NORM_MODES = ("warm", "reference")
_U = 2.0 ** -53
_PER_SAMPLE_BYTES = 128 << 20       # memory for one chunk of per-sample kernel gradients
_WARM_NOISE = 1e-3
_DENSE_ENTRIES = 1 << 16            # conv layers whose expanded matrix is this small: dense, exact
_WARM_BLOCK = 2
_SEED = 0x9E0BE5

# normalizer parametrization classes -> THEORY.md names (for the records)
_NORMALIZER_NAMES = {"Identity": "none", "SpectralNormW": "snw", "SpectralNormConv": "snconv",
                     "ScaledSpectralNorm": "ssn", "BidirectionalSpectralNorm": "bsn",
                     "ScaledBidirectionalSpectralNorm": "bssn", "GammaSpectralNorm": "gamma",
                     "FrobeniusNorm": "frobenius"}


# --------------------------------------------------------------------------------------------------
# options and cache


@dataclass(frozen=True)
class ProbeOptions:
    """What :func:`probe_discriminator` measures, and how precisely.

    operator_norms : "warm" (default) or "reference" (module docstring).
    operator_rtol : relative accuracy of ``op_norm_exact`` (Lanczos residual test; the bound side
        uses the certified upper bound whatever this is).
    operator_values : compute the converged value (and certified lower bound) of every conv
        layer's operator norm; False skips the Lanczos runs and records only the certified upper
        bound (all the P1 bounds need) with the lower bound ``||w^||`` where R's lower bound
        applies (``op_norm_exact`` then absent): about half the default probe's cost.
    n_tori : torus sizes tried for the certified upper bound of zero-padded layers (more: tighter
        on small inputs, slower).
    raw_gradients : measure raw-parameter gradients through the normalizer (autograd).
    per_sample : "gram" (default: per-sample kernel-gradient norms from the layer inputs and
        output gradients, never materialising the gradients) or "vmap" (``torch.func.vmap(grad)``
        over ``Discriminator.functional_forward``; also used whenever ``hessian`` is on).
    hessian : per-layer Hessian spectral norms of ``mean_j sigmoid(z(x_j))`` (Lanczos on HVPs);
        seconds, not milliseconds: run it on a sparser schedule.
    hessian_cross_layer : also the cross-layer blocks (t != s), outside P3's claim.
    hessian_rtol, hessian_max_iter : Lanczos residual tolerance and operator applications.
    hessian_cross_rtol : the residual tolerance of the cross-layer blocks (looser by default: they
        are reported, not checked, and cost two Hessian-vector products per Lanczos vector).
    """

    operator_norms: str = "warm"
    operator_rtol: float = 1e-5
    operator_values: bool = True
    n_tori: int = 2
    raw_gradients: bool = True
    per_sample: str = "gram"
    hessian: bool = False
    hessian_cross_layer: bool = False
    hessian_rtol: float = 1e-8
    hessian_cross_rtol: float = 1e-4
    hessian_max_iter: int = 400

    def __post_init__(self) -> None:
        require_choice("operator_norms", self.operator_norms, OPERATOR_NORM_MODES)
        require_choice("per_sample", self.per_sample, ("gram", "vmap"))
        require_positive_float("operator_rtol", self.operator_rtol, maximum=1e-3,
                               inclusive_max=True)
        require_positive_int("n_tori", self.n_tori)
        require_positive_float("hessian_rtol", self.hessian_rtol, maximum=1e-2,
                               inclusive_max=True)
        require_positive_float("hessian_cross_rtol", self.hessian_cross_rtol, maximum=1e-1,
                               inclusive_max=True)
        require_positive_int("hessian_max_iter", self.hessian_max_iter)
        for name in ("raw_gradients", "hessian", "hessian_cross_layer", "operator_values"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be true or false, got {getattr(self, name)!r}")
        if self.hessian_cross_layer and not self.hessian:
            raise ValueError("`hessian_cross_layer`=True needs `hessian`=True")

    def to_dict(self) -> dict:
        return asdict(self)


class OperatorNormCache:
    """Start vectors of the conv operator-norm Lanczos runs, per layer (warm starts).

    Keys name the layer, its kernel shape and geometry, so a cache is never applied to another
    layer. Checkpoint it with :meth:`state_dict` / :meth:`load_state_dict` (plain tensors, for
    ``torch.save``) so that a resumed run reproduces the records of an uninterrupted one.
    """

    def __init__(self) -> None:
        self._vectors: dict[str, torch.Tensor] = {}

    @staticmethod
    def key(info, kernel_shape) -> str:
        g = info.geometry
        return (f"{info.index}|{tuple(kernel_shape)}|{g.input_size}|{g.stride}|{g.padding}|"
                f"{g.padding_mode}|{g.dilation}|{g.groups}")

    def get(self, key: str) -> torch.Tensor | None:
        return self._vectors.get(key)

    def put(self, key: str, vectors: torch.Tensor) -> None:
        self._vectors[key] = vectors.detach().to(torch.float64).clone()

    def __len__(self) -> int:
        return len(self._vectors)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self._vectors.items()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"`state` must be a dict from OperatorNormCache.state_dict(), got "
                            f"{type(state).__name__}")
        vectors = {}
        for k, v in state.items():
            if not isinstance(k, str) or not isinstance(v, torch.Tensor) or v.ndim != 2:
                raise ValueError(f"`state` entry {k!r} is not a (b, n) tensor keyed by a string")
            vectors[k] = v.detach().to(torch.float64).clone()
        self._vectors = vectors


# --------------------------------------------------------------------------------------------------
# losses (per_sample_loss lives in .train, next to the training loss it defines)


def _loss_derivative(z: torch.Tensor, batch: str, loss: str) -> torch.Tensor:
    """``loss'(z_j)`` per sample by autograd (autograd's convention at kinks)."""
    zz = z.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(per_sample_loss(zz, batch, loss).sum(), zz)
    return d.detach()


# --------------------------------------------------------------------------------------------------
# operator norms


def _gamma(k: int) -> float:
    return k * _U / (1 - k * _U)


def _dense_norm(w: torch.Tensor) -> dict:
    mat = w.detach().reshape(w.shape[0], -1).numpy()
    if not np.any(mat):
        return {"value": 0.0, "lower": 0.0, "upper": 0.0, "converged": True, "method": "zero"}
    method = "tiny" if min(mat.shape) <= 48 else "gram"
    res = largest_singular_value(mat[None], method=method, rtol=1e-12)
    sigma, err = float(res.sigma[0]), float(res.error_bound[0])
    return {"value": sigma, "lower": max(sigma - err, 0.0), "upper": sigma + err,
            "converged": True, "method": f"dense-{method}"}


def _certified_lower(w: torch.Tensor, geometry: ConvGeometry, y: torch.Tensor) -> float:
    """``||A y|| / ||y||`` less a rigorous rounding allowance: ``|fl(A y) - A y| <= gamma_K |A| |y|``
    elementwise for dot products of length ``K = c_in_g kh kw`` (any summation order), ``|A||y|``
    computed as the convolution of ``|w|`` with ``|y|``; then the rounding of the norms."""
    shape = (w.shape[1] * geometry.groups, *geometry.input_size)
    yy = y.reshape(shape)
    z = conv_apply(yy, w, geometry)
    za = conv_apply(yy.abs(), w.abs(), geometry)
    k = w.shape[1] * w.shape[2] * w.shape[3]
    m, n = z.numel(), yy.numel()
    nz = float(torch.linalg.vector_norm(z))
    nza = float(torch.linalg.vector_norm(za)) * (1 + _gamma(m + k + 2))
    ny = float(torch.linalg.vector_norm(yy))
    if ny == 0:
        return 0.0
    lower = (nz * (1 - _gamma(m + 2)) - _gamma(2 * k) * nza) / (ny * (1 + _gamma(n + 2)))
    return max(lower, 0.0)


def _reshaped_norm(kernel: np.ndarray, *, groups: int = 1, transposed: bool = False
                   ) -> tuple[float, float]:
    """``(||w^||, error bound)`` (or ``w^'``; per group for ``groups > 1``) on a path of
    :func:`sntheory.spectral.largest_singular_value` that brackets sigma_1 itself: the rigorous
    "tiny" path when the small side is <= 48, else "gram" (as sntheory.conv.operator does)."""
    c_out, c_in_g = kernel.shape[:2]
    k = kernel.shape[2] * kernel.shape[3]
    shape = ((c_in_g, c_out // groups * k) if transposed else (c_out // groups, c_in_g * k))
    sigma, err = reshaped_norms_with_bounds(kernel, groups=groups, transposed=transposed,
                                            rtol=1e-12,
                                            method="tiny" if min(shape) <= 48 else "gram")
    return float(sigma[0]), float(err[0])


def _certified_upper(kernel: np.ndarray, geometry: ConvGeometry, n_tori: int) -> tuple[float,
                                                                                       str]:
    """Zero padding: min over torus embeddings and ``alpha max_k ||w^_k||`` (sntheory.conv)."""
    kh, kw = kernel.shape[-2:]
    alpha = coverage_alpha(geometry, (kh, kw)).alpha
    hat, hat_eb = _reshaped_norm(kernel, groups=geometry.groups)
    best = alpha * (hat + hat_eb) * (1 + 4 * _U)
    how = f"alpha ||w^|| (alpha = {alpha:g})"
    for torus in zero_padding_tori(geometry, (kh, kw), n_tori):
        res = circular_operator_norm(kernel, torus, stride=geometry.stride,
                                     dilation=geometry.dilation, groups=geometry.groups,
                                     rtol=1e-10)
        up = float(np.asarray(res.value).reshape(-1)[0] + np.asarray(res.error_bound)
                   .reshape(-1)[0])
        if up < best:
            best, how = up, f"torus {torus[0]}x{torus[1]}"
    return best, how


def _conv_norm_warm(w: torch.Tensor, geometry: ConvGeometry, start: torch.Tensor | None,
                    rtol: float, n_tori: int) -> tuple[dict, torch.Tensor]:
    """Warm-started Lanczos value + certified interval of one conv layer's operator norm."""
    c_in = w.shape[1] * geometry.groups
    shape = (c_in, *geometry.input_size)
    n = math.prod(shape)
    if not bool(torch.any(w != 0)):
        return ({"value": 0.0, "lower": 0.0, "upper": 0.0, "converged": True,
                 "method": "zero"}, torch.zeros(1, n, dtype=torch.float64))

    def matvec(v):
        x = v.reshape(v.shape[0], *shape)
        return conv_adjoint(conv_apply(x, w, geometry), w, geometry).reshape(v.shape[0], n)

    gen = torch.Generator().manual_seed(_SEED)
    noise = torch.randn(_WARM_BLOCK, n, generator=gen, dtype=torch.float64)
    noise /= torch.linalg.vector_norm(noise, dim=1, keepdim=True)
    if start is not None and start.shape[1] == n:
        block = start[:_WARM_BLOCK] / torch.linalg.vector_norm(
            start[:_WARM_BLOCK], dim=1, keepdim=True).clamp_min(1e-300)
        # every start vector gets O(1) weight on every previous top vector (a swapped pair is
        # still resolved), plus noise
        mix = torch.ones(block.shape[0], block.shape[0], dtype=torch.float64) / block.shape[0]
        mix += torch.eye(block.shape[0], dtype=torch.float64)
        block = mix @ block
        block = block / torch.linalg.vector_norm(block, dim=1, keepdim=True)
        block = block + _WARM_NOISE * noise[:block.shape[0]]
        how = "warm"
    else:
        block, how = noise, "cold"
    block_n = min(block.shape[0], n)
    res = block_lanczos(matvec, n, start=block[:block_n], target="largest", rtol=2 * rtol,
                        max_iter=max(600, 4 * block_n), min_steps=2)
    kernel_np = w.numpy()
    upper, up_how = _certified_upper(kernel_np, geometry, n_tori)
    lower = _certified_lower(w, geometry, res.vector)
    value = min(max(math.sqrt(max(res.value, 0.0)), lower), upper)
    return ({"value": value, "lower": lower, "upper": upper, "converged": bool(res.converged),
             "method": f"lanczos-{how} ({res.iterations} products); upper: {up_how}"},
            res.top_vectors)


@contextlib.contextmanager
def _single_threaded_numba():
    """numba (and BLAS) on one thread for the small compiled problems of sntheory.conv, and torch's
    thread count restored afterwards: numba's OpenMP layer shares libgomp with torch, so
    ``numba.set_num_threads`` also resets torch's intra-op threads (measured: torch 1 -> 2 threads
    after one ``circular_operator_norm`` call, and small torch ops 10-100x slower on a busy 2-core
    machine)."""
    import numba
    from threadpoolctl import threadpool_limits
    torch_threads = torch.get_num_threads()
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        with threadpool_limits(limits=1):
            yield
    finally:
        numba.set_num_threads(old)
        torch.set_num_threads(torch_threads)


def _conv_norm_upper_only(w: torch.Tensor, geometry: ConvGeometry, n_tori: int) -> dict:
    """Certified upper bound only; lower bound ``max_k ||w^_k||`` when THEORY.md R's lower bound
    applies to the geometry (else 0)."""
    kernel = w.numpy()
    upper, how = _certified_upper(kernel, geometry, n_tori)
    lower = 0.0
    if coverage_alpha(geometry, kernel.shape[-2:]).lower_bound_applies:
        hat, err = _reshaped_norm(kernel, groups=geometry.groups)
        lower = max(hat - err, 0.0)
    return {"value": None, "lower": lower, "upper": upper, "converged": False,
            "method": f"upper only: {how}; lower: reshaped norm (R)"}


def layer_operator_norms(disc: Discriminator, weights: Sequence[torch.Tensor], *,
                         options: ProbeOptions = ProbeOptions(),
                         cache: OperatorNormCache | None = None) -> list[dict]:
    """``||w~_t||_sp`` (value, certified lower / upper, converged, method) for every layer."""
    with _single_threaded_numba():
        return _layer_operator_norms(disc, weights, options, cache)


def _layer_operator_norms(disc, weights, options, cache) -> list[dict]:
    out = []
    for info, w in zip(disc.layer_info, weights):
        w = w.detach().to(torch.float64)
        if info.kind == "linear":
            out.append(_dense_norm(w))
            continue
        g = info.geometry
        out_hw = g.output_size(w.shape[-2:])
        entries = (w.shape[0] * out_hw[0] * out_hw[1] * w.shape[1] * g.input_size[0]
                   * g.input_size[1])
        if entries <= _DENSE_ENTRIES:
            # small layers: the expanded matrix's certified sigma_1 (a width of ~1e-12, where
            # the torus bounds of tiny inputs are loose)
            r = conv_operator_norm(w.numpy(), g, method="dense", threads=None)
            out.append({"value": float(r.value), "lower": float(r.lower),
                        "upper": float(r.upper), "converged": True,
                        "method": "conv_operator_norm-dense"})
            continue
        if options.operator_norms == "reference" or g.padding_mode != "zeros":
            r = conv_operator_norm(w.numpy(), g, rtol=max(options.operator_rtol, 1e-12),
                                   n_tori=options.n_tori, threads=None)
            out.append({"value": float(r.value), "lower": float(r.lower),
                        "upper": float(r.upper), "converged": bool(r.converged),
                        "method": f"conv_operator_norm-{r.method}"})
            continue
        if not options.operator_values:
            out.append(_conv_norm_upper_only(w, g, options.n_tori))
            continue
        key = OperatorNormCache.key(info, w.shape)
        start = cache.get(key) if cache is not None else None
        res, top = _conv_norm_warm(w, g, start, options.operator_rtol, options.n_tori)
        if cache is not None:
            cache.put(key, top)
        out.append(res)
    return out


# --------------------------------------------------------------------------------------------------
# the probe


def _check_batch(name: str, x, disc: Discriminator) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor batch of shape (B, "
                        f"{', '.join(map(str, disc.input_shape))}), got {type(x).__name__}")
    if x.dim() != 1 + len(disc.input_shape) or tuple(x.shape[1:]) != disc.input_shape \
            or x.shape[0] < 1:
        raise ValueError(f"`{name}` must have shape (B >= 1, "
                         f"{', '.join(map(str, disc.input_shape))}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"`{name}` must be floating point, got dtype {x.dtype}")
    x = x.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(x).all()):
        bad = tuple(int(i) for i in torch.nonzero(~torch.isfinite(x))[0])
        raise ValueError(f"`{name}` must be finite, but {name}{list(bad)} = {float(x[bad])!r}")
    return x


def _float64_copy(disc: Discriminator) -> Discriminator:
    work = copy.deepcopy(disc)
    work.to(device="cpu", dtype=torch.float64)
    work.eval()
    for p in work.parameters():
        p.requires_grad_(False)
    return work


def _forward_taps(disc: Discriminator, x: torch.Tensor, weights, biases):
    """``z`` with every layer's input ``o_{t-1}`` and pre-activation output ``h_t`` (same ops as
    :meth:`Discriminator.functional_forward`)."""
    inputs, pre = [], []
    h = x
    last = len(disc.layers) - 1
    for i, (layer, w, b) in enumerate(zip(disc.layers, weights, biases)):
        if isinstance(layer, nn.Conv2d):
            inputs.append(h)
            h = F.conv2d(h, w, b, stride=layer.stride, padding=layer.padding,
                         dilation=layer.dilation, groups=layer.groups)
        else:
            h = h.flatten(1)
            inputs.append(h)
            h = F.linear(h, w, b)
        pre.append(h)
        if i < last:
            h = disc.activation(h)
    return h.reshape(h.shape[0]), inputs, pre


def _per_sample_kernel_grads(disc: Discriminator, x: torch.Tensor, weights, biases):
    """``[(B, *w_t.shape)]``: ``grad_{w_t} z(x_j)`` by ``vmap(grad(...))``, chunked over the batch."""
    from torch.func import grad, vmap

    def z_one(ws, xj):
        return disc.functional_forward(xj, ws, biases)

    n_params = sum(w.numel() for w in weights)
    chunk = max(1, min(x.shape[0], _PER_SAMPLE_BYTES // (8 * n_params)))
    fn = vmap(grad(z_one), in_dims=(None, 0))
    parts = [fn(list(weights), x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
    return [torch.cat([p[t] for p in parts]) for t in range(len(weights))]


def _per_sample_stats(work, inputs, deltas, pre, weights, biases, dlogcs, coef, want_gram):
    """Per layer, from the layer inputs ``o_j`` and output gradients ``delta_j`` of every sample:

    ``norm`` (B,): ``||g_j||_F`` with ``g_j = grad_{w_t} z(x_j)`` (the kernel-tensor gradient);
    ``g_w`` (B,): ``<g_j, w_t>``; ``g_d`` (B,): ``<g_j, d_t>`` (``d_t = grad log|c|``, raw bound);
    ``loss_grad``: ``sum_j coef_j g_j`` (the batch-loss gradient); ``gram`` (B, B):
    ``<g_j, g_k>`` when ``want_gram``.

    Dense: ``g_j = delta_j o_j^T`` (rank one: ``||g_j|| = ||delta_j|| ||o_j||``,
    ``<g_j, w> = <delta_j, h_j - b>``). Conv (per group): ``g_j = Delta_j Patches_j^T`` with
    ``Patches_j = unfold(o_j)`` (``c_in kh kw x P``, the kernel's flattening order) and ``Delta_j``
    (``c_out x P``), formed by one batched matmul in chunks of the batch (memory
    ``<= _PER_SAMPLE_BYTES``) -- the per-sample weight gradient autograd would compute, without
    re-running the network per sample.
    """
    B = inputs[0].shape[0]
    out = []
    for info, layer, o, d, h, w, b, dl in zip(work.layer_info, work.layers, inputs, deltas, pre,
                                              weights, biases, dlogcs):
        if info.kind == "linear":
            od, dd = o.reshape(B, -1), d.reshape(B, -1)
            stats = {"norm": torch.linalg.vector_norm(dd, dim=1) * torch.linalg.vector_norm(od,
                                                                                         dim=1),
                     "g_w": ((h - (0 if b is None else b)) * dd).sum(dim=1),
                     "g_d": ((od @ dl.T) * dd).sum(dim=1),
                     "loss_grad": (coef[:, None] * dd).T @ od}
            if want_gram:
                stats["gram"] = (dd @ dd.T) * (od @ od.T)
            out.append(stats)
            continue
        geo = info.geometry
        groups = geo.groups
        c_out = w.shape[0]
        wf, df = w.reshape(-1), dl.reshape(-1)
        chunk = max(1, min(B, _PER_SAMPLE_BYTES // (8 * w.numel())))
        norm, g_w, g_d, flats = [], [], [], []
        loss_grad = torch.zeros(w.numel(), dtype=torch.float64)
        for lo in range(0, B, chunk):
            oc, dc = o[lo:lo + chunk], d[lo:lo + chunk]
            n = oc.shape[0]
            cols = F.unfold(oc, w.shape[-2:], dilation=geo.dilation, padding=geo.padding,
                            stride=geo.stride)                          # (n, c_in kh kw, P)
            P = cols.shape[-1]
            per = torch.matmul(dc.reshape(n, groups, c_out // groups, P),
                               cols.reshape(n, groups, -1, P).transpose(-1, -2))
            per = per.reshape(n, -1)                                    # (n, numel(w))
            norm.append(torch.linalg.vector_norm(per, dim=1))
            g_w.append(per @ wf)
            g_d.append(per @ df)
            loss_grad += coef[lo:lo + chunk] @ per
            if want_gram:
                flats.append(per)
        stats = {"norm": torch.cat(norm), "g_w": torch.cat(g_w), "g_d": torch.cat(g_d),
                 "loss_grad": loss_grad.reshape(w.shape)}
        if want_gram:
            flat = torch.cat(flats)
            stats["gram"] = flat @ flat.T
        out.append(stats)
    return out


def _stats_from_flat(per_flat, weights, dlogcs, coef):
    """The same statistics as :func:`_per_sample_stats` from materialised per-sample gradients."""
    out = []
    for g, w, dl in zip(per_flat, weights, dlogcs):
        out.append({"norm": torch.linalg.vector_norm(g, dim=1), "g_w": g @ w.reshape(-1),
                    "g_d": g @ dl.reshape(-1), "loss_grad": (coef @ g).reshape(w.shape),
                    "gram": g @ g.T})
    return out


def _raw_factors(layer: nn.Module) -> dict:
    """``c`` (``W_eff = c W``), ``grad log|c|`` and the raw weight of one layer (module docstring)."""
    plist = getattr(getattr(layer, "parametrizations", None), "weight", None)
    if plist is None:
        w = layer.weight.detach()
        return {"c": 1.0, "dlogc": torch.zeros_like(w), "raw": w, "chain": None,
                "proportional": True, "normalizer": "none"}
    raw = plist.original.detach().clone().requires_grad_(True)
    eff = raw
    for p in plist:
        eff = p(eff)
    c = (eff * raw).sum() / (raw * raw).sum()
    (dlogc,) = torch.autograd.grad(torch.log(c.abs()), raw)
    resid = float(torch.linalg.vector_norm(eff.detach() - c.detach() * raw.detach()))
    scale = float(torch.linalg.vector_norm(eff.detach()))
    names = [_NORMALIZER_NAMES.get(type(p).__name__, type(p).__name__) for p in plist]
    return {"c": float(c.detach()), "dlogc": dlogc.detach(), "raw": raw.detach(), "chain": list(plist),
            "proportional": resid <= 1e-10 * max(scale, 1e-300), "normalizer": "+".join(names)}


def _effective_from_raw(layer_factors, raws):
    effs = []
    for f, r in zip(layer_factors, raws):
        e = r.clone()            # a distinct tensor even without a normalizer (own gradient)
        if f["chain"] is not None:
            e = r
            for p in f["chain"]:
                e = p(e)
        effs.append(e)
    return effs


def _positions(info) -> int:
    return math.prod(info.output_shape[1:]) if info.kind == "conv" else 1


def _gram_fro(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """``||sum_j c_j a_j b_j^T||_F`` from the Gram matrices of the rows of a (B, m), b (B, n)."""
    k = (a @ a.T) * (b @ b.T)
    return math.sqrt(max(float(c @ k @ c), 0.0))


def probe_discriminator(disc: Discriminator, real: torch.Tensor, fake: torch.Tensor, *,
                        step: int, loss: str = "wgan", options: ProbeOptions = ProbeOptions(),
                        cache: OperatorNormCache | None = None,
                        timings: dict | None = None) -> list[dict]:
    """Probe ``disc`` on a real and a fake batch at training step ``step`` (module docstring).

    Parameters
    ----------
    disc : Discriminator
        Left untouched (probed on a float64 deep copy in eval mode).
    real, fake : (B, *disc.input_shape) tensors
        Probed separately (records carry ``batch="real"`` / ``"fake"``).
    step : int >= 0
    loss : {"wgan", "hinge", "ns"}
        The discriminator loss of the batch-loss gradient bound.
    options : ProbeOptions
    cache : OperatorNormCache, optional
        Warm starts for the conv operator norms (keep one per training run).
    timings : dict, optional
        Filled with wall-clock seconds per part (never written into the records).

    Returns
    -------
    list of dict: ``scope="layer"`` records (per batch, per layer), ``scope="network"`` records
    (per batch) and, with ``hessian_cross_layer``, ``scope="hessian-cross"`` records.
    """
    if not isinstance(disc, Discriminator):
        raise TypeError(f"`disc` must be a sntheory.lab.nets.Discriminator, got "
                        f"{type(disc).__name__}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"`step` must be an integer >= 0, got {step!r}")
    require_choice("loss", loss, LOSSES)
    if not isinstance(options, ProbeOptions):
        raise TypeError(f"`options` must be a ProbeOptions, got {type(options).__name__}")
    if cache is not None and not isinstance(cache, OperatorNormCache):
        raise TypeError(f"`cache` must be an OperatorNormCache, got {type(cache).__name__}")
    batches = {"real": _check_batch("real", real, disc), "fake": _check_batch("fake", fake, disc)}
    clock = _Clock(timings)

    work = _float64_copy(disc)
    infos = work.layer_info
    n_layers = len(infos)
    factors = [_raw_factors(layer) for layer in work.layers]
    with torch.no_grad():
        weights = [w.detach().clone() for w in work.effective_weights()]
    biases = [None if b is None else b.detach().clone() for b in work.biases()]
    for i, w in enumerate(weights):
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"the effective weight of layer {i} ({infos[i].label}) is not "
                             f"finite: the discriminator has diverged")
    clock("copy")

    norms = layer_operator_norms(work, weights, options=options, cache=cache)
    clock("operator_norms")
    with _single_threaded_numba():
        static = [_layer_static(info, w, b, f, nrm) for info, w, b, f, nrm
                  in zip(infos, weights, biases, factors, norms)]
    _sn_corollary(static)
    clock("reshaped_norms")

    act = work.activation
    common = {"probe_version": PROBE_VERSION, "step": int(step), "loss": loss,
              "activation": act.name, "activation_lipschitz": float(act.lipschitz),
              "activation_zero_at_zero": bool(act.zero_at_zero),
              "activation_piecewise_linear": bool(act.piecewise_linear),
              "activation_homogeneous": bool(act.homogeneous),
              "meets_p1_hypotheses": bool(act.meets_p1_hypotheses),
              "has_bias": bool(work.has_bias), "n_layers": n_layers}
    records = []
    for batch, x in batches.items():
        recs = _probe_batch(work, x, batch, loss, weights, biases, factors, static, common,
                            options, clock)
        records.extend(recs)
    return records


class _Clock:
    def __init__(self, timings):
        self.timings = timings
        self.t = time.perf_counter()

    def __call__(self, name):
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def _layer_static(info, w, b, factors, norm) -> dict:
    """Per-layer quantities that do not depend on the batch."""
    if info.kind == "conv":
        geometry = info.geometry
        kernel = w.numpy()
        alpha = coverage_alpha(geometry, kernel.shape[-2:]).alpha
        hat = _reshaped_norm(kernel)[0]
        hat_t = _reshaped_norm(kernel, transposed=True)[0]
        m, n = kernel.shape[0], kernel[0].size
    else:
        alpha = 1.0
        hat = hat_t = norm["value"]
        m, n = w.shape
    positions = _positions(info)
    bias_norm = 0.0 if b is None else float(torch.linalg.vector_norm(b)) * math.sqrt(positions)
    raw = factors["raw"]
    eff_np = w.numpy().ravel()
    raw_np = raw.numpy().ravel()
    st = {
        "layer": info.index, "layer_name": info.name, "layer_label": info.label,
        "kind": info.kind, "normalizer": factors["normalizer"],
        "n_params": int(w.numel()), "positions": int(positions),
        "op_norm_lower": float(norm["lower"]),
        "op_norm_upper": float(norm["upper"]), "op_norm_converged": bool(norm["converged"]),
        "op_norm_method": norm["method"],
        "reshaped_norm": hat, "reshaped_norm_transposed": hat_t, "alpha": float(alpha),
        "ratio_op_upper_to_reshaped": float(norm["upper"] / hat) if hat > 0 else 0.0,
        "bias_norm": bias_norm,
        "eff_weight_var": float(np.var(eff_np)), "eff_weight_mean_sq": float(np.mean(eff_np ** 2)),
        "raw_weight_var": float(np.var(raw_np)),
        "t2_var_bound": 1.0 / max(m, n),
        "mean_sq_bound_reshaped": hat ** 2 / max(m, n),
        "raw_scale": float(abs(factors["c"])),
        "raw_proportional": bool(factors["proportional"]),
    }
    if norm["value"] is not None:
        st["op_norm_exact"] = float(norm["value"])
        st["ratio_op_to_reshaped"] = float(norm["value"] / hat) if hat > 0 else 0.0
    if factors["proportional"]:
        dn = float(torch.linalg.vector_norm(factors["dlogc"]))
        wn = float(torch.linalg.vector_norm(raw))
        st["raw_projection_norm"] = max(1.0, wn * dn)
    return st


def _sn_corollary(static: list[dict]) -> None:
    """Constants ``k_i`` of the SN corollary when every layer is SNw or SNConv (module docs)."""
    consts, norms = [], []
    for st in static:
        name = st["normalizer"]
        if name == "snconv" and st["kind"] == "conv":
            consts.append(1.0)
            norms.append(st["op_norm_upper"])
        elif name in ("snw", "snconv"):            # SNw, or SNConv on a dense layer (= SNw)
            consts.append(st["alpha"])
            norms.append(st["reshaped_norm"])
        else:
            return
    for st, k, nrm in zip(static, consts, norms):
        st["sn_constant"] = float(k)
        st["sn_normalized_norm"] = float(nrm)


def _probe_batch(work, x, batch, loss, weights, biases, factors, static, common, options,
                 clock) -> list[dict]:
    infos = work.layer_info
    L = len(infos)
    B = x.shape[0]
    upper = [st["op_norm_upper"] for st in static]
    alpha = [st["alpha"] for st in static]

    # ---- one forward with taps, one backward to the layer outputs: o_{t-1}, delta_t ---------
    xg = x.clone().requires_grad_(True)          # puts the layer outputs on the autograd graph
    z, inputs, pre = _forward_taps(work, xg, weights, biases)
    deltas = [d.detach() for d in torch.autograd.grad(z.sum(), pre)]
    z = z.detach()
    inputs = [o.detach() for o in inputs]
    pre = [h.detach() for h in pre]
    lp = _loss_derivative(z, batch, loss)                          # (B,)
    coef = lp / B
    o_norm = [torch.linalg.vector_norm(o.reshape(B, -1), dim=1) for o in inputs]
    d_flat = [d.reshape(B, -1) for d in deltas]
    d_norm = [torch.linalg.vector_norm(d, dim=1) for d in d_flat]
    bias_grad, loss_bias_g = [], []
    for info, d, b in zip(infos, deltas, biases):
        g = d.sum(dim=(2, 3)) if info.kind == "conv" else d           # E^T delta_j (B, c_out)
        bias_grad.append(torch.linalg.vector_norm(g, dim=1))
        loss_bias_g.append(None if b is None else coef @ g)
    clock("forward_backward")

    # ---- per-sample kernel gradients, their inner products and the batch-loss gradient ------
    dlogcs = [f["dlogc"] for f in factors]
    if options.per_sample == "vmap":
        per_flat = [g.reshape(B, -1) for g in _per_sample_kernel_grads(work, x, weights, biases)]
        stats = _stats_from_flat(per_flat, weights, dlogcs, coef)
    else:
        stats = _per_sample_stats(work, inputs, deltas, pre, weights, biases, dlogcs, coef,
                                  want_gram=options.hessian)
    k_norm = [st["norm"] for st in stats]
    g_weff = [st["g_w"] for st in stats]
    g_dlogc = [st["g_d"] for st in stats]
    eff_g = [st["loss_grad"] for st in stats]
    # raw-parameter gradients of the batch loss: G pulled back through the normalizer (autograd)
    raw_g = [None] * L
    if options.raw_gradients:
        raws = [f["raw"].clone().requires_grad_(True) for f in factors]
        effs = _effective_from_raw(factors, raws)
        raw_g = list(torch.autograd.grad(effs, raws, grad_outputs=eff_g))
    clock("per_sample_grads")

    # ---- bounds per sample ------------------------------------------------------------------
    x_norm = o_norm[0]
    b_prev = []
    cur = x_norm.clone()
    for t in range(L):
        b_prev.append(cur)
        cur = upper[t] * cur + static[t]["bias_norm"]
    back = [math.prod(upper[t + 1:]) for t in range(L)]
    bound = [b_prev[t] * back[t] for t in range(L)]

    sn = "sn_constant" in static[0]
    if sn:
        kc = [st["sn_constant"] for st in static]
        cur = x_norm.clone()
        sn_bound = []
        for t in range(L):
            sn_bound.append(cur * math.prod(kc[t + 1:]))
            cur = kc[t] * cur + static[t]["bias_norm"]

    abs_lp = lp.abs()
    records = []
    tot_meas_exp = torch.zeros(B, dtype=torch.float64)
    tot_meas_ker = torch.zeros(B, dtype=torch.float64)
    tot_meas_bias = torch.zeros(B, dtype=torch.float64)
    tot_bound_exp = torch.zeros(B, dtype=torch.float64)
    tot_bound_ker = torch.zeros(B, dtype=torch.float64)
    tot_bound_bias = torch.zeros(B, dtype=torch.float64)
    tot_sn = torch.zeros(B, dtype=torch.float64)
    for t in range(L):
        info, st = infos[t], static[t]
        rec = dict(common)
        rec.update(st)
        rec.update({"scope": "layer", "batch": batch, "batch_size": int(B),
                    "input_norm_max": float(x_norm.max()),
                    "input_norm_mean": float(x_norm.mean()),
                    "z_mean": float(z.mean()), "z_min": float(z.min()), "z_max": float(z.max())})
        meas_exp = d_norm[t] * o_norm[t]
        _worst(rec, "grad_z_expanded", meas_exp, bound[t])
        _worst(rec, "grad_z_kernel", k_norm[t], alpha[t] * bound[t])
        rec["grad_eff_fro_max"] = float(k_norm[t].max())
        rec["grad_eff_fro_mean"] = float(k_norm[t].mean())
        rec["grad_eff_bound_max"] = float((alpha[t] * bound[t]).max())
        _worst(rec, "forward_factor", o_norm[t], b_prev[t])
        _worst(rec, "backward_factor", d_norm[t], torch.full_like(d_norm[t], back[t]))
        rec["bound_form"] = "bias recursion" if work.has_bias else "paper (bias-free)"
        if sn:
            _worst(rec, "sn_corollary", meas_exp, sn_bound[t])
            tot_sn += sn_bound[t] ** 2
        if biases[t] is not None:
            _worst(rec, "grad_bias_expanded", d_norm[t], torch.full_like(d_norm[t], back[t]))
            _worst(rec, "grad_bias_param", bias_grad[t],
                   torch.full_like(d_norm[t], math.sqrt(st["positions"]) * back[t]))
            tot_meas_bias += bias_grad[t] ** 2
            tot_bound_bias += st["positions"] * back[t] ** 2

        # batch loss, kernel and expanded forms
        g_eff = eff_g[t]
        rec["loss_grad_eff_fro"] = float(torch.linalg.vector_norm(g_eff))
        rec["loss_grad_eff_bound"] = float((abs_lp * alpha[t] * bound[t]).mean())
        rec["loss_grad_expanded_fro"] = _gram_fro(coef, d_flat[t], inputs[t].reshape(B, -1))
        rec["loss_grad_expanded_bound"] = float((abs_lp * bound[t]).mean())
        rec["loss_abs_derivative_mean"] = float(abs_lp.mean())
        if loss_bias_g[t] is not None:
            rec["loss_grad_bias_fro"] = float(torch.linalg.vector_norm(loss_bias_g[t]))
            rec["loss_grad_bias_bound"] = float(abs_lp.mean()) * math.sqrt(st["positions"]) \
                * back[t]

        # raw parameters
        if options.raw_gradients and st["raw_proportional"]:
            c = abs(factors[t]["c"])
            proj = st["raw_projection_norm"]
            g_fro = rec["loss_grad_eff_fro"]
            rec["raw_grad_fro"] = float(torch.linalg.vector_norm(raw_g[t]))
            rec["raw_grad_bound"] = c * proj * g_fro
            rec["raw_grad_sheet_bound"] = c * g_fro
            rec["raw_grad_bound_p1"] = c * proj * rec["loss_grad_eff_bound"]
            # per sample, through the identity grad_W = c (G + <G, W> grad log|c|); a
            # normalizer that maps this weight to zero (c = 0) has no per-sample form: the
            # batch rows above still stand, the per-sample raw statistics are left out
            if c > 0:
                dl = factors[t]["dlogc"].reshape(-1)
                gw = g_weff[t] / factors[t]["c"]                  # <G_j, W_raw>
                gd = g_dlogc[t]
                sq = k_norm[t] ** 2 + 2 * gw * gd + gw ** 2 * float(dl @ dl)
                raw_j = c * torch.sqrt(sq.clamp_min(0.0))
                _worst(rec, "raw_grad_z", raw_j, c * proj * k_norm[t])
                _worst(rec, "raw_grad_z_sheet", raw_j, c * k_norm[t])

        tot_meas_exp += meas_exp ** 2
        tot_meas_ker += k_norm[t] ** 2
        tot_bound_exp += bound[t] ** 2
        tot_bound_ker += (alpha[t] * bound[t]) ** 2
        records.append(rec)

    net = dict(common)
    net.update({"scope": "network", "batch": batch, "batch_size": int(B), "layer": -1,
                "layer_label": "total", "input_norm_max": float(x_norm.max())})
    _worst(net, "total_grad_expanded", tot_meas_exp.sqrt(), tot_bound_exp.sqrt())
    _worst(net, "total_grad_kernel", tot_meas_ker.sqrt(), tot_bound_ker.sqrt())
    if work.has_bias:
        _worst(net, "total_grad_with_biases", (tot_meas_ker + tot_meas_bias).sqrt(),
               (tot_bound_ker + tot_bound_bias).sqrt())
    if sn:
        _worst(net, "total_sn_corollary", tot_meas_exp.sqrt(), tot_sn.sqrt())
    records.append(net)
    clock("records")

    if options.hessian:
        cross = _hessian_records(work, x, batch, weights, biases, stats, z, alpha, bound,
                                 records[:L], common, options)
        records.extend(cross)
        clock("hessian")
    return records


def _worst(rec: dict, name: str, measured: torch.Tensor, bound: torch.Tensor) -> None:
    """``name_ratio_max`` = max_j measured_j / bound_j and the pair at that sample."""
    with torch.no_grad():
        bound = torch.as_tensor(bound, dtype=torch.float64)
        ratio = torch.where(bound > 0, measured / bound.clamp_min(1e-300),
                            torch.where(measured > 0, torch.full_like(measured, math.inf),
                                        torch.zeros_like(measured)))
        j = int(torch.argmax(ratio))
    r = float(ratio[j])
    rec[f"{name}_ratio_max"] = r if math.isfinite(r) else 1e308
    rec[f"{name}_at_worst"] = float(measured[j])
    rec[f"{name}_bound_at_worst"] = float(bound[j])
    rec[f"{name}_worst_sample"] = j


def _hessian_records(work, x, batch, weights, biases, stats, z, alpha, bound, layer_recs,
                     common, options) -> list[dict]:
    """P3: ``||H_t||_sp`` of ``f = mean_j sigmoid(z(x_j))`` w.r.t. each layer's kernel tensor.

    Derivation (batch mean). ``grad_{w_t} f = mean_j s'(z_j) g_j`` with ``g_j = grad_{w_t} z(x_j)``,
    so ``H_t = mean_j [s''(z_j) g_j g_j^T + s'(z_j) grad^2_{w_t} z(x_j)]``. With piecewise-linear
    internal activations, ``z(x_j)`` is piecewise linear in ``w_t`` alone (the other layers fixed:
    ``w_t`` enters linearly through ``w_t o_{t-1}``, then passes piecewise-linear maps), so
    ``grad^2_{w_t} z = 0`` almost everywhere and ``H_t = mean_j s''(z_j) g_j g_j^T``. Hence
    ``||H_t|| <= mean_j |s''(z_j)| ||g_j||^2`` (recorded as ``hessian_bound_curvature``, with the
    measured ``g_j``) ``<= ||s''||_inf alpha_t^2 mean_j bound_t(x_j)^2`` (``hessian_bound``; for a
    bias-free net with SN, ``||s''||_inf alpha_t^2 (prod_{i!=t} ||w~_i||)^2 mean_j ||x_j||^2``; the
    ``alpha_t^2`` because the kernel gradient carries ``alpha_t``, 1 for dense layers).
    ``hessian_gauss_newton_norm`` is ``||mean_j s''(z_j) g_j g_j^T||`` from the ``B x B`` matrix
    ``D K`` (``K = G G^T``: same nonzero eigenvalues): equal to ``hessian_norm`` exactly when the
    second term vanishes. Cross-layer blocks ``H_ts`` carry ``s'(z_j) d^2 z / dw_t dw_s != 0`` and
    are outside the claim: reported, never bounded.
    """
    L = len(weights)
    sup2 = sigmoid_second_derivative_sup()
    s = torch.sigmoid(z)
    s2 = s * (1 - s) * (1 - 2 * s)
    B = x.shape[0]

    def f(ws):
        return torch.sigmoid(work.functional_forward(x, ws, biases)).mean()

    for t in range(L):
        res = hessian_spectral_norm(f, weights, rows=[t], rtol=options.hessian_rtol,
                                    max_iter=options.hessian_max_iter, seed=_SEED + t)
        k = stats[t]["gram"].numpy()
        norm2 = stats[t]["norm"] ** 2
        eig = np.linalg.eigvals(s2.numpy()[:, None] * k) / B
        rec = layer_recs[t]
        rec.update({
            "hessian_norm": res.value, "hessian_eig_max": res.eig_max,
            "hessian_eig_min": res.eig_min, "hessian_residual": res.residual,
            "hessian_converged": bool(res.converged), "hessian_iterations": int(res.iterations),
            "hessian_bound": sup2 * alpha[t] ** 2 * float((bound[t] ** 2).mean()),
            "hessian_bound_curvature": float((s2.abs() * norm2).mean()),
            "hessian_gauss_newton_norm": float(np.max(np.abs(eig))) if eig.size else 0.0,
            "sigmoid_second_derivative_sup": sup2,
        })
    out = []
    if options.hessian_cross_layer:
        for t in range(L):
            for u in range(t + 1, L):
                res = hessian_spectral_norm(f, weights, rows=[t], cols=[u],
                                            rtol=options.hessian_cross_rtol,
                                            max_iter=options.hessian_max_iter,
                                            seed=_SEED + 97 * t + u)
                rec = dict(common)
                rec.update({"scope": "hessian-cross", "batch": batch, "batch_size": int(B),
                            "layer": t, "layer_other": u,
                            "layer_label": f"{layer_recs[t]['layer_label']} x "
                                           f"{layer_recs[u]['layer_label']}",
                            "hessian_cross_norm": res.value,
                            "hessian_cross_residual": res.residual,
                            "hessian_cross_converged": bool(res.converged),
                            "hessian_cross_iterations": int(res.iterations)})
                out.append(rec)
    return out
