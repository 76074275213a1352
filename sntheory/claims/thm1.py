"""Claim T1 (Thm. 1): equal spectral norms minimize the gradient (within the class ``𝒟``).

Setting (THEORY.md T1). ``D`` has positively homogeneous internal activations and no biases (or
biases scaled as in P2, :mod:`sntheory.claims.prop2`). For ``c_t > 0`` with ``prod c_t = 1`` the
rescaled discriminator ``theta_c`` (weights ``c_t w_t``) computes the same function (P2), and

1. **The identity.** ``grad_{c_t w_t} D_{theta_c} = grad_{w_t} D_theta / c_t``. Proof: perturbing
   ``c_t w_t`` by ``E`` is perturbing ``w_t`` by ``E / c_t`` in ``theta_c``, and
   ``D_{theta_c} = D_theta`` as functions of the weights so perturbed. More generally, for any
   positive ``d`` (no product constraint), ``D_{theta_d} = (prod d) D_theta`` and
   ``grad_{d_t w_t} D_{theta_d} = (prod d / d_t) grad_{w_t} D_theta``.
2. **The minimum (AM-GM).** With ``g_t = ||grad_{w_t} D_theta||_F``,
   ``||grad D_{theta_c}||^2 = sum_t g_t^2 / c_t^2``. By AM-GM,
   ``(1/L) sum_t g_t^2 / c_t^2 >= (prod_t g_t^2 / c_t^2)^{1/L} = (prod_t g_t)^{2/L}`` since
   ``prod c_t = 1``, with equality iff all ``g_t / c_t`` are equal: the minimum over ``c`` is
   ``L (prod_t g_t)^{2/L}`` (of the squared norm), attained at ``c_t = g_t / (prod_s g_s)^{1/L}``,
   i.e. ``c ∝ g``.
3. **The class 𝒟 and equal spectral norms.** Write ``sigma_t = ||w_t||_sp`` (the exact operator
   norm: conv layers through :func:`sntheory.conv.conv_operator_norm` on their true geometry,
   dense layers the top singular value) and ``l_t = log(g_t sigma_t)``. ``𝒟`` is where
   ``g_t sigma_t`` is the same for all ``t``. The equalising factors
   ``c*_t = sigma_bar / sigma_t`` (``sigma_bar = (prod sigma)^{1/L}``; every rescaled layer then
   has spectral norm ``sigma_bar``) give ``||grad D_{theta_{c*}}||^2 = sum_t g_t^2 sigma_t^2 /
   sigma_bar^2``, so the **excess**

       R = ||grad D_{theta_{c*}}|| / min_c ||grad D_{theta_c}||
         = sqrt( mean_t exp(2 l_t) / exp(2 mean_t l_t) )      (AM over GM of (g_t sigma_t)^2)

   is 1 exactly in ``𝒟`` (c* ∝ g there) and > 1 otherwise; for a small spread of ``l``,
   ``R ≈ exp(var_t l_t)``.
4. **The hypothesis scatter** (paper Figs. 3, 14, 15). Rescale with random ``c`` at a fixed
   geometric mean ``G`` of spectral norms (``d_t = kappa c_t``, ``kappa = G / sigma_bar``) and plot,
   for every pair ``i < j``, ``g'_i / g'_j`` against ``sigma'_j / sigma'_i``; in ``𝒟`` every point
   lies on the diagonal. By 1., the log-residual from the diagonal,
   ``log(g'_i/g'_j) - log(sigma'_j/sigma'_i) = l_i - l_j``, does not depend on the rescaling:
   the points of one pair slide along a line parallel to the diagonal, at the pair's offset. So
   the scatter measures a property of ``theta`` itself; the rescalings show its invariance.

Verdicts. The identity is a deterministic statement checked to round-off. The tolerance is a
first-order bound on the rounding error of each float64 autograd gradient
``G_t = (1/B) sum_j sum_p delta_{t,j,p} patch_p(o_{t-1,j})^T`` (:func:`gradient_roundoff_bound`;
``K_l``, ``gamma_n`` and the local scales as in :mod:`.prop2`; ``s_q`` certified upper bounds of
the spectral norms, ``lip`` the activation's Lipschitz constant, ``alpha_t`` the coverage constant
of THEORY.md R, 1 for dense layers, so ``||sum_p d_p patch_p^T||_F <= ||d|| alpha_t ||o||``):

* forward errors of ``o_{t-1}`` (norm-wise, per sample):
  ``F_t = sum_{l<t} gamma_{K_l+L+3} ||(|w_l||h_{l-1}| + |b_l|)|| lip^{t-l} prod_{l<q<t} s_q``;
* backward errors of ``delta_t``: each ``W_l^T delta_l`` (``N_l`` = fan-out terms:
  ``c_out kh kw`` or ``out_features``) errs by at most ``gamma_{N_l+2} |w_l|^T |delta_l|``, so
  ``Bk_t = sum_{l>t} gamma_{N_l+2} || |w_l|^T |delta_l| || lip^{l-t} prod_{t<q<l} s_q``
  (activation patterns do not change under rounding away from exact kinks);
* the reduction over the batch and the ``P_t`` output positions:
  ``gamma_{B P_t + 2} || (1/B) sum |delta| x |patches| ||_F``, and ``2 u ||G_t||`` for ``1/B``;

``b_t = (1/B) sum_j alpha_t (Bk_t ||o_{t-1}|| + ||delta_t|| F_t) + reduction + 2u ||G_t||``. The
check is ``||G_c,t - G_t/c_t|| <= b_t / c_t + b^c_t + (2 gamma_{L+1} + u) ||G_t|| / c_t`` (``b^c``
the same bound on the rescaled network), reported as a ratio (<= 1 passes). Measured against a
long-double reference (a 96-wide MLP): the true float64 gradient errors use 3e-4 .. 7e-4 of
``b_t``; on the test networks the identity's error uses <= 1e-2 of the tolerance, the negative
controls (unscaled biases, tanh) exceed it by > 1e6.

The numerical minimizer (scipy ``trust-exact``, then ``root`` on its stationarity equations, over
``y``, ``log c = H y`` with ``H`` an orthonormal (Helmert) basis of ``{sum log c = 0}``: the
constraint eliminated by parametrisation; the objective is convex in ``y``) must agree with
``c ∝ g`` to ``minimizer_rtol`` (1e-6), and the gradient norm actually reached there (autograd on
the rescaled network) must equal the AM-GM minimum to the same tolerance. The hypothesis and the excess are
*measurements*, not bounds: HOLDS when within a documented tolerance, INCONCLUSIVE otherwise.
The residuals' sd is taken *about the diagonal* (their root mean square, not the sd about their
mean: the hypothesis says the points lie on the diagonal, and a common offset of all pairs, e.g.
``l_t`` decreasing with depth, is a departure from it; the mean is reported too).
Tolerances: sd ``<= 0.35`` (a factor ~1.4 between ``g_i sigma_i`` and ``g_j sigma_j``); since the
mean square of the pairwise residuals is ``2L/(L-1) var_t l_t``, this keeps
``var_t l_t <= 0.35^2 / 2`` and the excess ``R ≈ exp(var_t l_t) <~ exp(0.35^2 / 2) = 1.063``,
which is the default excess tolerance: "equalising the spectral norms is within ~6% of the best
rescaling".
Networks whose activation is not homogeneous are OUTSIDE-HYPOTHESES (their rescaled gradients are
then computed directly by autograd, not through the identity).
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import torch
from scipy import optimize

from .._validation import require_choice, require_positive_float, require_positive_int
from ..conv.alpha import coverage_alpha
from ..conv.operator import conv_operator_norm
from ..lab.nets import Discriminator, parse_activation
from ..monte_carlo.verdicts import Verdict
from ..provenance import provenance
from ..report.rows import ClaimRow, relative_slack
from .prop2 import (UNIT_ROUNDOFF, Float64Snapshot, ForwardTrace, LabCheckResult, _gamma,
                    apply_layer, as_input_batch, float64_snapshot, forward_trace, layer_gammas,
                    load_run_batch, product_allowance, rescaled_parameters, rescaling_draws,
                    require_seed)

__all__ = ["layer_gradients", "layer_operator_norms", "patch_alphas",
           "gradient_roundoff_bound", "gradient_identity_errors", "minimize_gradient_norm",
           "excess_ratio", "helmert_basis", "check_thm1", "check_thm1_run", "CLAIM"]

CLAIM = "T1"
BIAS_CHOICES = ("scaled", "free")
DEFAULT_RESIDUAL_SD_TOL = 0.35


# --------------------------------------------------------------------------------------------------
# gradients, norms


def layer_gradients(snap: Float64Snapshot, x: torch.Tensor, weights: Sequence[torch.Tensor],
                    biases: Sequence[torch.Tensor | None], activation=None) -> list[torch.Tensor]:
    """``grad_{w_t} mean_j z(x_j)`` for every layer (float64 autograd, biases held fixed)."""
    ws = [w.detach().clone().requires_grad_(True) for w in weights]
    z = snap.disc.functional_forward(x, ws, list(biases), activation=activation).mean()
    return [g.detach() for g in torch.autograd.grad(z, ws)]


def layer_operator_norms(snap: Float64Snapshot, *, rtol: float = 1e-8) -> list[dict]:
    """Exact ``||w_t||_sp`` per layer: conv layers as operators on their real geometry
    (:func:`sntheory.conv.conv_operator_norm`, certified ``lower <= value <= upper``), dense layers
    the top singular value from a full SVD."""
    rtol = require_positive_float("norm_rtol", rtol, maximum=1.0)
    out = []
    for info, w in zip(snap.disc.layer_info, snap.weights):
        kernel = w.detach().cpu().numpy()
        if info.kind == "conv":
            res = conv_operator_norm(kernel, info.geometry, rtol=rtol)
            out.append({"value": float(res.value), "lower": float(res.lower),
                        "upper": float(res.upper), "method": res.method,
                        "converged": bool(res.converged)})
        else:
            s = float(np.linalg.svd(kernel, compute_uv=False)[0])
            out.append({"value": s, "lower": s, "upper": s, "method": "svd", "converged": True})
    return out


def _grad_norms(grads: Sequence[torch.Tensor]) -> np.ndarray:
    return np.array([float(torch.linalg.vector_norm(g)) for g in grads])


# --------------------------------------------------------------------------------------------------
# the minimum over rescalings


def helmert_basis(n: int) -> np.ndarray:
    """``(n, n-1)`` orthonormal basis of ``{v in R^n : sum v = 0}`` (Helmert's contrasts)."""
    n = require_positive_int("n", n)
    basis = np.zeros((n, n - 1))
    for k in range(1, n):
        basis[:k, k - 1] = 1.0
        basis[k, k - 1] = -float(k)
        basis[:, k - 1] /= math.sqrt(k * (k + 1))
    return basis


def minimize_gradient_norm(g: Sequence[float]) -> dict:
    """Minimise ``sum_t g_t^2 / c_t^2`` over ``c > 0``, ``prod c = 1``, numerically.

    ``log c = H y`` (:func:`helmert_basis`), so the constraint is built in and ``y`` is free; the
    objective ``f(y) = sum_t a_t exp(-2 (H y)_t)`` (``a_t = (g_t / GM(g))^2``, scaled so the minimum
    is ``L``) is a sum of exponentials of linear forms, hence convex; ``trust-exact`` with the exact
    gradient and Hessian converges quadratically from ``c = 1``, then ``scipy.optimize.root``
    polishes the stationarity equations (function values cannot resolve ``c`` beyond
    ``sqrt(eps)``). ``success``: the gradient of ``f`` at the result is below ``1e-10 f``.
    Returns the numerical ``c``, the
    closed form ``c ∝ g`` (AM-GM), their largest relative difference and both minima
    (of the norm, not its square).
    """
    g = np.asarray(g, dtype=np.float64)
    if g.ndim != 1 or g.size < 1:
        raise ValueError(f"`g` must be a non-empty 1-D sequence of layer gradient norms, got shape "
                         f"{g.shape}")
    if not np.all(np.isfinite(g)) or np.any(g <= 0):
        raise ValueError(f"`g` must be finite and > 0 (a zero layer gradient has no minimizing "
                         f"rescaling: the infimum 0 is not attained), got {g.tolist()}")
    L = g.size
    log_gm = float(np.mean(np.log(g)))
    closed = np.exp(np.log(g) - log_gm)
    amgm_min = math.sqrt(L) * math.exp(log_gm)
    if L == 1:
        return {"c_numeric": np.ones(1), "c_closed_form": closed, "max_rel_diff": 0.0,
                "min_numeric": float(g[0]), "min_closed_form": amgm_min, "success": True,
                "stationarity_residual": 0.0, "iterations": 0, "message": "one layer: c = 1"}
    a = closed ** 2
    H = helmert_basis(L)

    def terms(y):
        return a * np.exp(-2.0 * (H @ y))

    def fun(y):
        return float(terms(y).sum())

    def jac(y):
        return -2.0 * (H.T @ terms(y))

    def hess(y):
        return 4.0 * (H.T * terms(y)) @ H

    res = optimize.minimize(fun, np.zeros(L - 1), jac=jac, hess=hess, method="trust-exact",
                            options={"gtol": 1e-14, "maxiter": 500})
    # f is flat to second order at its minimum, so steps judged by f values stall at a relative
    # error ~sqrt(eps) in c (measured: 1e-9); polishing the stationarity equations grad f = 0
    # (a convex f: the stationary point is the minimum) resolves c to round-off.
    polish = optimize.root(jac, res.x, jac=hess, method="hybr", options={"xtol": 1e-15})
    y = min((res.x, polish.x), key=lambda v: float(np.linalg.norm(jac(v))))
    c_num = np.exp(H @ y)
    grad_norm = float(np.linalg.norm(jac(y)))
    return {"c_numeric": c_num, "c_closed_form": closed,
            "max_rel_diff": float(np.max(np.abs(c_num / closed - 1.0))),
            "min_numeric": math.sqrt(fun(y)) * math.exp(log_gm), "min_closed_form": amgm_min,
            "success": grad_norm <= 1e-10 * fun(y), "stationarity_residual": grad_norm,
            "iterations": int(res.nit) + int(polish.nfev), "message": str(res.message)}


def excess_ratio(g: Sequence[float], sigma: Sequence[float]) -> float:
    """``R = sqrt(mean exp(2 l) / exp(2 mean l))``, ``l_t = log(g_t sigma_t)``: the gradient norm at
    the equal-spectral-norm rescaling over the minimum over rescalings (module docstring, 3.)."""
    ell = np.log(np.asarray(g, dtype=np.float64)) + np.log(np.asarray(sigma, dtype=np.float64))
    centred = ell - ell.mean()
    return float(math.sqrt(np.mean(np.exp(2.0 * centred))))


def _fan_outs(disc: Discriminator) -> list[int]:
    out = []
    for layer in disc.layers:
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            out.append(layer.out_channels * kh * kw)
        else:
            out.append(layer.out_features)
    return out


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def patch_alphas(disc: Discriminator) -> list[float]:
    """``alpha_t`` per layer (conv: :func:`sntheory.conv.coverage_alpha` of its geometry, so
    ``||sum_p delta_p patch_p^T||_F <= ||delta|| alpha ||o||``; dense: 1)."""
    out = []
    for layer, info in zip(disc.layers, disc.layer_info):
        out.append(float(coverage_alpha(info.geometry, layer.kernel_size).alpha)
                   if info.kind == "conv" else 1.0)
    return out


def gradient_roundoff_bound(disc: Discriminator, trace: ForwardTrace,
                            weights: Sequence[torch.Tensor], sigma_upper: Sequence[float],
                            grads: Sequence[torch.Tensor], lipschitz: float) -> list[float]:
    """Per layer ``t``: first-order bound on ``||fl(G_t) - G_t||_F`` for the float64 autograd
    gradient ``G_t = grad_{w_t} mean_j z(x_j)`` (module docstring: forward errors of ``o_{t-1}``,
    backward errors of ``delta_t``, the batch/position reduction, the ``1/B``)."""
    L, B = len(weights), int(trace.z.shape[0])
    lip = float(lipschitz)
    gam_f = layer_gammas(disc)
    fan_out = _fan_outs(disc)
    alphas = patch_alphas(disc)
    s = [float(v) for v in sigma_upper]
    loc_n = [_per_sample_norm(loc) for loc in trace.local]
    # ||(|w_l|^T |delta_l|)(x_j)||: the local scale of the backward dot products into h_{l-1}
    bloc_n = [None] * L
    for l in range(1, L):
        h = torch.zeros_like(trace.inputs[l], requires_grad=True)
        out = apply_layer(disc.layers[l], h, weights[l].detach().abs(), None)
        (vjp,) = torch.autograd.grad(out, h, grad_outputs=trace.sens[l].abs())
        bloc_n[l] = _per_sample_norm(vjp)
    bounds = []
    for t in range(L):
        o_n = _per_sample_norm(trace.inputs[t])
        d_n = _per_sample_norm(trace.sens[t])
        err_o = torch.zeros(B, dtype=torch.float64)
        for l in range(t):
            err_o = err_o + gam_f[l] * loc_n[l] * lip ** (t - l) * math.prod(s[l + 1:t])
        err_d = torch.zeros(B, dtype=torch.float64)
        for l in range(t + 1, L):
            err_d = err_d + (_gamma(fan_out[l] + 2) * bloc_n[l] * lip ** (l - t)
                             * math.prod(s[t + 1:l]))
        propagated = float((alphas[t] * (err_d * o_n + d_n * err_o)).sum()) / B
        # the reduction over the batch and the output positions, against |delta| x |patches|
        w_abs = weights[t].detach().abs().clone().requires_grad_(True)
        out = apply_layer(disc.layers[t], trace.inputs[t].abs(), w_abs, None)
        (e_loc,) = torch.autograd.grad(out, w_abs, grad_outputs=trace.sens[t].abs())
        info = disc.layer_info[t]
        positions = math.prod(info.output_shape[1:]) if info.kind == "conv" else 1
        reduction = _gamma(B * positions + 2) * float(torch.linalg.vector_norm(e_loc)) / B
        bounds.append(propagated + reduction
                      + 2 * UNIT_ROUNDOFF * float(torch.linalg.vector_norm(grads[t])))
    return bounds


def gradient_identity_errors(snap: Float64Snapshot, x: torch.Tensor, c, *, bias_mode: str,
                             sigma_upper: Sequence[float],
                             grads: Sequence[torch.Tensor] | None = None,
                             activation=None) -> dict:
    """For one draw ``c``, per layer: ``rel_err = ||G_c,t - G_t / c_t||_F / ||G_t / c_t||_F``
    (``G_c`` by autograd on the rescaled network, ``G`` at ``theta``), ``rel_bound`` = the
    round-off bound of that difference, ``(b_t + c_t b_t^c) / ||G_t|| + 2 gamma_{L+1} + u``
    (:func:`gradient_roundoff_bound` of both networks; ``sigma_upper`` are certified upper bounds
    of the spectral norms at ``theta``, scaled by ``c`` for ``theta_c``) and their ratio.

    ``bias_mode``: ``"free"``, ``"scaled"`` (invariant) or ``"unscaled"`` (a negative control).
    """
    act = snap.activation if activation is None else parse_activation(activation)
    c = np.asarray(c, dtype=np.float64)
    base_b = [None] * snap.depth if bias_mode == "free" else list(snap.biases)
    if grads is None:
        grads = layer_gradients(snap, x, snap.weights, base_b, act)
    new_w, new_b = rescaled_parameters(snap.weights, snap.biases, c, bias_mode)
    grads_c = layer_gradients(snap, x, new_w, new_b, act)
    trace = forward_trace(snap.disc, x, snap.weights, base_b, act)
    trace_c = forward_trace(snap.disc, x, new_w, new_b, act)
    bound = gradient_roundoff_bound(snap.disc, trace, snap.weights, sigma_upper, grads,
                                    act.lipschitz)
    bound_c = gradient_roundoff_bound(snap.disc, trace_c, new_w,
                                      [float(s) * float(ci) for s, ci in zip(sigma_upper, c)],
                                      grads_c, act.lipschitz)
    extra = product_allowance(snap.depth) + UNIT_ROUNDOFF
    rel_err, rel_bound, ratio = [], [], []
    for t in range(snap.depth):
        expected = grads[t] / float(c[t])
        gap = float(torch.linalg.vector_norm(grads_c[t] - expected))
        ref = float(torch.linalg.vector_norm(expected))
        tol = (bound[t] / float(c[t]) + bound_c[t]) / ref + extra if ref > 0 else math.inf
        rel_err.append(gap / ref if ref > 0 else (0.0 if gap == 0 else math.inf))
        rel_bound.append(tol)
        ratio.append(rel_err[-1] / tol if tol > 0 else math.inf)
    return {"rel_err": rel_err, "rel_bound": rel_bound, "err_over_bound": ratio,
            "grad_norms_rescaled": _grad_norms(grads_c).tolist()}


# --------------------------------------------------------------------------------------------------
# the check


def _row(setting: str, experiment: str, **kw) -> ClaimRow:
    return ClaimRow(claim=CLAIM, experiment=experiment, setting=setting, **kw)


def _stats(values: np.ndarray) -> dict:
    """Log-residuals from the diagonal: ``mean``, ``sd_about_mean``, ``sd_about_diagonal`` (the
    root mean square: the spread around the diagonal, what the hypothesis is about; an offset
    common to all pairs counts, and the orientation i < j of the pairs does not matter) and
    ``max_abs``."""
    return {"mean": float(values.mean()),
            "sd_about_mean": float(values.std(ddof=1)) if values.size > 1 else 0.0,
            "sd_about_diagonal": float(math.sqrt(np.mean(values ** 2))),
            "max_abs": float(np.abs(values).max())}


def check_thm1(disc: Discriminator, x, *, seed: int, target_geomean: float = 1.0,
               n_rescalings: int = 20, rescale_log_sd: float = 1.0, n_identity_draws: int = 3,
               biases: str = "scaled", norm_rtol: float = 1e-8,
               residual_sd_tol: float = DEFAULT_RESIDUAL_SD_TOL, excess_tol: float | None = None,
               minimizer_rtol: float = 1e-6, experiment: str = "", setting: str = "",
               step: int | None = None) -> LabCheckResult:
    """Check T1 on ``disc`` and the batch ``x`` (gradients of the batch mean of ``z``).

    ``target_geomean``: the geometric mean of spectral norms the scatter's rescalings keep (1 for
    MNIST-like runs, 1.75 for CIFAR-like ones in the paper). ``n_rescalings`` log-normal
    rescalings (log-sd ``rescale_log_sd``) for the scatter; ``n_identity_draws`` draws (the last
    one extreme, ``1e-3 .. 1e3``) for the gradient identity. ``biases``: ``"scaled"`` keeps the
    discriminator's biases and scales them by ``prod_{j<=i} c_j`` (P2's invariant form; the
    function is unchanged), ``"free"`` drops them. ``excess_tol`` defaults to
    ``exp(residual_sd_tol^2 / 2) - 1`` (module docstring).

    Records (``kind``): ``"layer"`` (g_t, exact spectral norm with its certified interval, the
    factors c*, c ∝ g and the numerical minimizer), ``"identity"`` (per draw and layer),
    ``"scatter"`` (per rescaling and pair i < j), ``"excess"`` (one). Rows: the identity per
    layer, the hypothesis (log-residual sd), the minimizer, the excess.
    """
    seed = require_seed(seed)
    target = require_positive_float("target_geomean", target_geomean)
    n_rescalings = require_positive_int("n_rescalings", n_rescalings)
    rescale_log_sd = require_positive_float("rescale_log_sd", rescale_log_sd)
    n_identity_draws = require_positive_int("n_identity_draws", n_identity_draws)
    require_choice("biases", biases, BIAS_CHOICES)
    residual_sd_tol = require_positive_float("residual_sd_tol", residual_sd_tol)
    if excess_tol is None:
        excess_tol = math.exp(residual_sd_tol ** 2 / 2) - 1
    excess_tol = require_positive_float("excess_tol", excess_tol)
    minimizer_rtol = require_positive_float("minimizer_rtol", minimizer_rtol, maximum=1.0)
    if step is not None:
        require_positive_int("step", step, minimum=0)

    snap = float64_snapshot(disc)
    xb = as_input_batch(disc, x)
    L, act = snap.depth, snap.activation
    config = {"claim": CLAIM, "target_geomean": target, "n_rescalings": n_rescalings,
              "rescale_log_sd": rescale_log_sd, "n_identity_draws": n_identity_draws,
              "biases": biases, "norm_rtol": norm_rtol, "residual_sd_tol": residual_sd_tol,
              "excess_tol": excess_tol, "minimizer_rtol": minimizer_rtol,
              "experiment": experiment, "setting": setting, "step": step,
              "layers": [i.label for i in disc.layer_info], "activation": act.name,
              "batch_size": int(xb.shape[0])}
    homogeneous = act.homogeneous
    mode = "scaled" if biases == "scaled" and disc.has_bias else "free"
    base_b = list(snap.biases) if mode == "scaled" else [None] * L
    infos = disc.layer_info
    labels = [f"layer {i.index} ({i.label})" for i in infos]
    common = {"claim": CLAIM, "bias_mode": mode, "activation": act.name,
              "batch_size": int(xb.shape[0])}
    if step is not None:
        common["step"] = int(step)
    where = f"{setting}{', ' if setting else ''}"
    hyp_text = (f"{act.name} ({'homogeneous' if homogeneous else 'NOT homogeneous'}); "
                f"{'biases scaled by prod_{j<=i} c_j' if mode == 'scaled' else 'no biases'}")
    records: list[dict] = []
    rows: list[ClaimRow] = []

    grads = layer_gradients(snap, xb, snap.weights, base_b)
    g = _grad_norms(grads)
    norms = layer_operator_norms(snap, rtol=norm_rtol)
    sigma = np.array([n["value"] for n in norms])
    sigma_upper = [n["upper"] for n in norms]
    if np.any(sigma <= 0):
        bad = int(np.argmin(sigma))
        raise ValueError(f"`disc` layer {bad} ({infos[bad].label}) has spectral norm 0: the "
                         f"discriminator is constant and T1 has nothing to compare")

    # 1. the identity ---------------------------------------------------------------------------
    # n - 1 log-normal draws, then the extreme one with log10 c spread over [-3, 3]
    pool = rescaling_draws(L, seed=seed, n_draws=max(n_identity_draws - 1, 1),
                           log_sds=(1.0, 2.0), extreme=True, stream=1)
    draws = pool[:n_identity_draws - 1] + [pool[-2]]
    worst = np.zeros(L)
    worst_rel = np.zeros(L)
    loosest = np.zeros(L)
    for k, (kind, c) in enumerate(draws):
        res = gradient_identity_errors(snap, xb, c, bias_mode=mode, sigma_upper=sigma_upper,
                                       grads=grads)
        for t in range(L):
            worst[t] = max(worst[t], res["err_over_bound"][t])
            worst_rel[t] = max(worst_rel[t], res["rel_err"][t])
            loosest[t] = max(loosest[t], res["rel_bound"][t])
            records.append({**common, "kind": "identity", "draw": k, "draw_kind": kind,
                            "layer": t, "label": infos[t].label, "c": float(c[t]),
                            "rel_err": res["rel_err"][t], "rel_bound": res["rel_bound"][t],
                            "err_over_bound": res["err_over_bound"][t],
                            "grad_eff_fro": float(g[t]),
                            "grad_eff_fro_rescaled": res["grad_norms_rescaled"][t]})
    for t in range(L):
        within = worst[t] <= 1.0
        statement = ("grad_{c_t w_t} D_{theta_c} = grad_{w_t} D_theta / c_t, to float64 "
                     "round-off: ||diff||_F / (first-order rounding bound) <= 1")
        if homogeneous:
            verdict, note = (Verdict.HOLDS if within else Verdict.VIOLATED), ""
        else:
            verdict = Verdict.OUTSIDE_HYPOTHESES
            note = ("observed: deviates" if not within else "observed: identity holds to "
                    "round-off") + f" ({worst[t]:.3g} x the round-off bound); "
        note += (f"max relative error {worst_rel[t]:.3g} ({worst_rel[t] / UNIT_ROUNDOFF:.3g} u) "
                 f"over {len(draws)} draws (incl. 1e-3..1e3); relative bound <= "
                 f"{loosest[t]:.3g}")
        rows.append(_row(f"{where}{labels[t]}", experiment, statement=statement,
                         hypotheses=hyp_text, bound=1.0, measured=float(worst[t]),
                         slack=relative_slack(float(worst[t]), 1.0, "upper"),
                         verdict=verdict, hypotheses_hold=homogeneous, note=note,
                         extra={"check": "identity", "layer": t,
                                "max_rel_err": float(worst_rel[t]),
                                "max_rel_bound": float(loosest[t])}))

    # 2. the hypothesis scatter -------------------------------------------------------------------
    scatter_draws = rescaling_draws(L, seed=seed, n_draws=n_rescalings,
                                    log_sds=(rescale_log_sd,), extreme=False, stream=2)
    log_sigma_bar = float(np.mean(np.log(sigma)))
    kappa = target / math.exp(log_sigma_bar)
    residuals = []
    zero = bool(np.any(g <= 0))
    for r, (_, c) in enumerate(scatter_draws):
        d = kappa * c
        sig_r = d * sigma
        if homogeneous:      # by the identity: g'_t = (prod d / d_t) g_t
            g_r = math.exp(float(np.sum(np.log(d)))) * g / d
        else:                # computed directly (the identity does not hold)
            new_w = [w * float(dt) for w, dt in zip(snap.weights, d)]
            cum = np.cumprod(d)
            new_b = [None if b is None else b * float(cum[i]) for i, b in enumerate(base_b)]
            g_r = _grad_norms(layer_gradients(snap, xb, new_w, new_b))
        if zero or np.any(g_r <= 0):
            continue
        for i, j in itertools.combinations(range(L), 2):
            grad_ratio = float(g_r[i] / g_r[j])
            norm_ratio = float(sig_r[j] / sig_r[i])
            resid = math.log(grad_ratio) - math.log(norm_ratio)
            if r == 0 or not homogeneous:
                residuals.append(resid)
            records.append({**common, "kind": "scatter", "rescaling": r, "layer_i": i,
                            "layer_j": j, "grad_ratio": grad_ratio, "norm_ratio": norm_ratio,
                            "log_residual": resid, "target_geomean": target,
                            "geomean_op_norm": float(math.exp(np.mean(np.log(sig_r))))})

    # 3. the minimum over rescalings and the excess -------------------------------------------
    ell = np.log(np.where(g > 0, g, np.nan)) + np.log(sigma)
    c_star = np.exp(log_sigma_bar - np.log(sigma))
    min_res = None if zero else minimize_gradient_norm(g)
    for t in range(L):
        records.append({**common, "kind": "layer", "layer": t, "label": infos[t].label,
                        "grad_eff_fro": float(g[t]),
                        "op_norm_exact": norms[t]["value"], "op_norm_lower": norms[t]["lower"],
                        "op_norm_upper": norms[t]["upper"], "op_norm_method": norms[t]["method"],
                        "op_norm_converged": norms[t]["converged"],
                        "grad_is_zero": bool(g[t] <= 0),
                        **({"log_g_sigma": float(ell[t])} if g[t] > 0 else {}),
                        "c_star": float(c_star[t]),
                        "c_closed_form": float(min_res["c_closed_form"][t]) if min_res else 0.0,
                        "c_numeric": float(min_res["c_numeric"][t]) if min_res else 0.0})

    if zero:
        dead = [labels[t] for t in range(L) if g[t] <= 0]
        note = (f"zero gradient in {', '.join(dead)} on this batch: the infimum over rescalings "
                f"is 0 (not attained) and log(g sigma) is undefined")
        for name in ("hypothesis", "minimizer", "excess"):
            rows.append(_row(f"{where}network", experiment, statement=f"T1 {name}",
                             hypotheses=hyp_text, bound=None, measured=math.nan,
                             verdict=(Verdict.INCONCLUSIVE if homogeneous
                                      else Verdict.OUTSIDE_HYPOTHESES),
                             hypotheses_hold=homogeneous, note=note, extra={"check": name}))
        summary = {"zero_gradient_layers": dead}
        return _finish(records, rows, summary, seed, config)

    res_arr = np.array(residuals)
    st = _stats(res_arr)
    excess_formula = excess_ratio(g, sigma)

    def direct_norm(c):
        new_w, new_b = rescaled_parameters(snap.weights, snap.biases, c, mode)
        return float(np.linalg.norm(_grad_norms(layer_gradients(snap, xb, new_w, new_b))))

    at_c_star = direct_norm(c_star)
    at_numeric = direct_norm(min_res["c_numeric"])
    excess_direct = at_c_star / at_numeric
    achieved_gap = abs(at_numeric / min_res["min_closed_form"] - 1)
    records.append({**common, "kind": "excess", "excess_ratio": excess_direct,
                    "excess_ratio_formula": excess_formula,
                    "grad_norm_at_c_star": at_c_star, "grad_norm_at_numeric_min": at_numeric,
                    "min_grad_norm_closed_form": min_res["min_closed_form"],
                    "min_grad_norm_numeric": min_res["min_numeric"],
                    "minimizer_max_rel_diff": min_res["max_rel_diff"],
                    "minimizer_iterations": min_res["iterations"],
                    "achieved_min_rel_gap": achieved_gap,
                    "log_residual_mean": st["mean"],
                    "log_residual_sd_about_mean": st["sd_about_mean"],
                    "log_residual_sd": st["sd_about_diagonal"],
                    "log_residual_max_abs": st["max_abs"],
                    "var_log_g_sigma": float(np.var(ell)), "sigma_bar": math.exp(log_sigma_bar),
                    "target_geomean": target, "n_layers": L})

    # hypothesis row
    sd = st["sd_about_diagonal"]
    in_tol = sd <= residual_sd_tol
    verdict = ((Verdict.HOLDS if in_tol else Verdict.INCONCLUSIVE) if homogeneous
               else Verdict.OUTSIDE_HYPOTHESES)
    note = (f"log-residuals of g_i/g_j vs ||w_j||/||w_i|| over {L * (L - 1) // 2} pairs: sd about "
            f"the diagonal {sd:.3g} (tolerance {residual_sd_tol:g}), mean {st['mean']:.3g}, sd "
            f"about the mean {st['sd_about_mean']:.3g}, max |.| {st['max_abs']:.3g}; a pair's "
            f"residual log(g_i sigma_i) - log(g_j sigma_j) does not depend on the rescaling")
    if homogeneous and not in_tol:
        note = ("outside the tolerance: this network is not in the class D to within a factor "
                f"exp({residual_sd_tol:g}); a measurement, not a violation of the theorem. "
                + note)
    if not homogeneous:
        note = "observed: residuals computed directly per rescaling. " + note
    rows.append(_row(f"{where}network", experiment,
                     statement=f"T1 hypothesis: log-residual sd = {sd:.3g} (about the diagonal; "
                               f"g_t ||w_t||_sp equal across layers)",
                     hypotheses=hyp_text, bound=residual_sd_tol, measured=sd,
                     slack=relative_slack(sd, residual_sd_tol, "upper"), verdict=verdict,
                     hypotheses_hold=homogeneous, note=note,
                     extra={"check": "hypothesis", "mean": st["mean"], "max_abs": st["max_abs"],
                            "sd_about_mean": st["sd_about_mean"], "target_geomean": target}))

    # minimizer row
    ok = (min_res["max_rel_diff"] <= minimizer_rtol and achieved_gap <= minimizer_rtol
          and min_res["success"])
    note = (f"numerical argmin over log c (trust-exact, {min_res['iterations']} iterations) vs "
            f"c ∝ g: max relative difference {min_res['max_rel_diff']:.3g}; gradient norm reached "
            f"there (autograd) / AM-GM minimum L^(1/2) (prod g)^(1/L) - 1 = {achieved_gap:.3g}")
    if homogeneous:
        verdict = Verdict.HOLDS if ok else Verdict.VIOLATED
    else:
        verdict = Verdict.OUTSIDE_HYPOTHESES
        note = ("observed: " + ("the AM-GM minimum is reached" if ok else "deviates: the "
                                "rescaled gradient norm is not sum g_t^2/c_t^2") + "; " + note)
    measured = max(min_res["max_rel_diff"], achieved_gap)
    rows.append(_row(f"{where}network", experiment,
                     statement="min_c ||grad D_{theta_c}|| = sqrt(L) (prod g_t)^{1/L} at c ∝ g "
                               "(AM-GM; numerical minimizer agrees)",
                     hypotheses=hyp_text, bound=minimizer_rtol, measured=measured,
                     slack=relative_slack(measured, minimizer_rtol, "upper"), verdict=verdict,
                     hypotheses_hold=homogeneous, note=note, extra={"check": "minimizer"}))

    # excess row
    in_tol = excess_direct - 1 <= excess_tol
    note = (f"||grad D_(theta_c*)|| / min_c ||grad D_(theta_c)|| = {excess_direct:.6g} (autograd "
            f"at c* and at the minimizer; closed form sqrt(AM/GM of (g sigma)^2) = "
            f"{excess_formula:.6g}); tolerance 1 + {excess_tol:.3g}")
    if homogeneous:
        verdict = Verdict.HOLDS if in_tol else Verdict.INCONCLUSIVE
        if not in_tol:
            note = ("equalising the spectral norms is not within the tolerance of the best "
                    "rescaling (the network is not in D); a measurement. " + note)
    else:
        verdict = Verdict.OUTSIDE_HYPOTHESES
        note = "observed: " + note
    rows.append(_row(f"{where}network", experiment,
                     statement="equal spectral norms minimize the gradient: excess R = 1 in D",
                     hypotheses=hyp_text, bound=1 + excess_tol, measured=excess_direct,
                     slack=relative_slack(excess_direct, 1 + excess_tol, "upper"),
                     verdict=verdict, hypotheses_hold=homogeneous, note=note,
                     extra={"check": "excess", "excess_formula": excess_formula}))
    summary = {"excess_ratio": excess_direct, "excess_ratio_formula": excess_formula,
               "log_residual": st, "minimizer_max_rel_diff": min_res["max_rel_diff"],
               "identity_max_err_over_bound": float(np.max(worst)),
               "identity_max_rel_err": float(np.max(worst_rel)),
               "sigma": sigma.tolist(), "grad_eff_fro": g.tolist()}
    return _finish(records, rows, summary, seed, config)


def _finish(records, rows, summary, seed, config) -> LabCheckResult:
    summary = {"verdicts": {v.value: sum(r.verdict == v.value for r in rows) for v in Verdict},
               **summary}
    return LabCheckResult(CLAIM, records, rows, summary, provenance(seed=seed, config=config))


def check_thm1_run(run_dir, *, step: int | None = None, n_samples: int = 64, seed: int = 0,
                   **kwargs) -> LabCheckResult:
    """:func:`check_thm1` on the discriminator of a training run (``load_run(run_dir, step)``)
    and ``n_samples`` of its real images; ``kwargs`` go to :func:`check_thm1`."""
    run, x = load_run_batch(run_dir, step=step, n_samples=n_samples, seed=seed)
    kwargs.setdefault("experiment", str(run_dir))
    kwargs.setdefault("setting", f"step {run.step}")
    return check_thm1(run.disc, x, seed=seed, step=int(run.step), **kwargs)
