"""Tests of sntheory.normalizers: one contract for every normalizer, then each one's math.

The contract (STYLE.md, "The PyTorch contract for normalizers"): a parametrization attached with
``register_parametrization``; power-iteration state in buffers, updated only in training mode;
state dicts, functional calls, float32/float64 and gradients work. The math (THEORY.md,
"Normalizers"): after many power steps each effective weight has the norm its definition says,
checked against exact SVDs (for SNConv: of the dense expanded matrix, built here from the module's
own forward on the identity basis).
"""
from __future__ import annotations

import copy
import importlib

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sntheory.conv import ConvGeometry
from sntheory.normalizers import (NORMALIZERS, GammaSpectralNorm, SpectralNormConv,
                                  SpectralNormW, apply_normalizer, bsn, bsn_normalize, bssn,
                                  bssn_normalize, diff_gamma, frobenius, frobenius_normalize,
                                  gamma_normalize, gamma_parameters, identity_normalize,
                                  record_input_sizes, same_gamma, snconv, snconv_normalize, snw,
                                  snw_normalize, ssn, ssn_normalize)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- building blocks ---------------------------------------------------------------------------

LAYERS = {
    # name: (constructor, input shape, SNConv input size)
    # (sizes where, with seed 0, sigma_2 / sigma_1 of w~ is < 0.996, so that power iteration
    # converges in a few thousand steps: conv operators often have near-double top values)
    "conv": (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 4, 5), (4, 5)),
    "conv-circular-s2": (lambda: nn.Conv2d(2, 4, 4, stride=2, padding=1,
                                           padding_mode="circular"), (2, 2, 8, 8), (8, 8)),
    "linear": (lambda: nn.Linear(5, 4), (2, 5), None),
}
KWARGS = {"none": {}, "snw": {}, "snconv": {}, "ssn": {"scale": 1.7}, "bsn": {},
          "bssn": {"scale": 0.8}, "same-gamma": {}, "diff-gamma": {"gamma": 1.3},
          "frobenius": {}}
STATEFUL = {"snw", "snconv", "ssn", "bsn", "bssn", "same-gamma", "diff-gamma"}
CASES = [(n, k) for n in NORMALIZERS for k in LAYERS]


def build(name: str, kind: str, dtype=torch.float64, seed: int = 0, **extra) -> nn.Module:
    """A fresh layer of ``kind`` in ``dtype`` with normalizer ``name`` attached."""
    torch.manual_seed(seed)
    ctor, _, size = LAYERS[kind]
    module = ctor().to(dtype)
    kwargs = {**KWARGS[name], **extra}
    if name == "snconv" and size is not None:
        kwargs["input_size"] = size
    if name == "same-gamma":  # one layer standing for a model: a shared Parameter passed in
        kwargs["gamma"] = nn.Parameter(torch.tensor(0.9, dtype=dtype))
    return NORMALIZERS[name].attach(module, "weight", **kwargs)


def sample(kind: str, dtype=torch.float64, seed: int = 100) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(LAYERS[kind][1], generator=g, dtype=dtype)


def buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.named_buffers()}


def raw(m: nn.Module) -> torch.Tensor:
    return m.parametrizations.weight.original


def converge(m: nn.Module, steps: int = 3000) -> nn.Module:
    """Run ``steps`` power iterations (one training-mode weight access), then freeze (eval)."""
    p = m.parametrizations.weight[0]
    if hasattr(p, "n_power_iterations"):
        n = p.n_power_iterations
        p.n_power_iterations = steps
        m.train()
        with torch.no_grad():
            m.weight
        p.n_power_iterations = n
    return m.eval()


def sn(mat: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(mat.detach(), ord=2))


def expanded_matrix(conv: nn.Conv2d, size) -> torch.Tensor:
    """``w~`` from the module's own forward on the identity basis (bias removed)."""
    n = conv.in_channels * size[0] * size[1]
    basis = torch.eye(n, dtype=conv.weight.dtype).reshape(n, conv.in_channels, *size)
    out = conv._conv_forward(basis, conv.weight, None)  # (n, c_out, H_out, W_out)
    return out.reshape(n, -1).T


# ---- the shared contract -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name,kind", CASES)
class TestContract:
    def test_state_dict_round_trip(self, name, kind, dtype):
        x = sample(kind, dtype)
        a = build(name, kind, dtype, seed=0)
        for _ in range(3):
            a(x)
        b = build(name, kind, dtype, seed=1)
        b.load_state_dict(a.state_dict())
        a.eval(), b.eval()
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)
        a.train(), b.train()  # same state, so the same next update
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)

    def test_eval_freezes_state(self, name, kind, dtype):
        x = sample(kind, dtype)
        m = build(name, kind, dtype).eval()
        with torch.no_grad():
            raw(m).add_(0.1 * torch.randn_like(raw(m)))  # a step the state has not seen
        before = buffers(m)
        y1, y2 = m(x), m(x)
        assert torch.equal(y1, y2)
        after = buffers(m)
        assert before.keys() == after.keys()
        for k in before:
            assert torch.equal(before[k], after[k]), k

    def test_train_double_forward_updates_state(self, name, kind, dtype):
        x, x2 = sample(kind, dtype, 1), sample(kind, dtype, 2)
        m = build(name, kind, dtype).train()
        with torch.no_grad():
            raw(m).add_(0.1 * torch.randn_like(raw(m)))
        before = buffers(m)
        loss = m(x).square().mean() - m(x2).square().mean()  # GAN pattern: two forwards
        loss.backward()
        after = buffers(m)
        if name in STATEFUL:
            assert any(k.endswith("_u") for k in before)
            assert all(not torch.equal(before[k], after[k]) for k in before)
        else:
            assert not before
        assert raw(m).grad is not None and torch.isfinite(raw(m).grad).all()

    def test_functional_call(self, name, kind, dtype):
        x = sample(kind, dtype)
        m = build(name, kind, dtype).eval()
        params = {k: v.detach().clone() for k, v in m.named_parameters()}
        key = "parametrizations.weight.original"
        params[key] = (1.5 * params[key] + 0.05).requires_grad_(True)
        y = functional_call(m, params, (x,))
        ref = copy.deepcopy(m)
        with torch.no_grad():
            raw(ref).copy_(params[key])
        torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
        y.sum().backward()
        assert params[key].grad is not None and params[key].grad.abs().sum() > 0

    def test_torch_func_grad(self, name, kind, dtype):
        # torch.func.grad over functional_call, in training mode (the state update runs inside
        # the transform) and in eval mode, equals the ordinary backward of a twin module.
        x = sample(kind, dtype)
        for mode in ("train", "eval"):
            m, twin = build(name, kind, dtype), build(name, kind, dtype)
            getattr(m, mode)(), getattr(twin, mode)()
            params = {k: v.detach() for k, v in m.named_parameters()}
            grads = torch.func.grad(lambda p: functional_call(m, p, (x,)).square().sum())(params)
            twin(x).square().sum().backward()
            for k, p in twin.named_parameters():
                torch.testing.assert_close(grads[k], p.grad, rtol=0, atol=0)
            for (k, b), (_, c) in zip(m.named_buffers(), twin.named_buffers()):
                assert torch.equal(b, c), k

    def test_dtype_and_gradients(self, name, kind, dtype):
        x = sample(kind, dtype)
        m = build(name, kind, dtype).train()
        assert m.weight.dtype == dtype
        assert all(b.dtype == dtype for b in m.buffers())
        y = m(x)
        assert y.dtype == dtype
        y.square().sum().backward()
        g = raw(m).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
        for p in gamma_parameters(m):
            assert p.grad is not None and p.grad.abs() > 0


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_module_dtype_conversion_after_attaching(name):
    m = build(name, "conv", torch.float32)
    m.double()
    assert all(t.dtype == torch.float64 for t in [*m.buffers(), *m.parameters()])
    assert m(sample("conv")).dtype == torch.float64


# ---- SNw against torch's spectral_norm ---------------------------------------------------------

TORCH_LAYERS = {
    "conv": lambda: nn.Conv2d(3, 5, 3, padding=1),
    "linear": lambda: nn.Linear(6, 4),
    "conv-transpose": lambda: nn.ConvTranspose2d(3, 5, 4, stride=2),  # dim defaults to 1
}


@pytest.mark.parametrize("n_power_iterations", [1, 3])
@pytest.mark.parametrize("kind", sorted(TORCH_LAYERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_snw_matches_torch_spectral_norm(kind, n_power_iterations, dtype):
    torch.manual_seed(0)
    ours = TORCH_LAYERS[kind]().to(dtype)
    theirs = copy.deepcopy(ours)
    torch.manual_seed(7)  # same seed: the same initial draws
    torch.nn.utils.parametrizations.spectral_norm(theirs, n_power_iterations=n_power_iterations)
    torch.manual_seed(7)
    snw(ours, n_power_iterations=n_power_iterations)
    p_ours, p_theirs = ours.parametrizations.weight[0], theirs.parametrizations.weight[0]
    assert p_ours.dim == p_theirs.dim
    assert torch.equal(p_ours._u, p_theirs._u) and torch.equal(p_ours._v, p_theirs._v)
    opt_o = torch.optim.SGD(ours.parameters(), lr=0.05)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.05)
    x = torch.randn(2, 3, 5, 5, dtype=dtype) if kind != "linear" else torch.randn(2, 6, dtype=dtype)
    for _ in range(4):  # training steps: the state follows a moving weight
        for m, opt in ((ours, opt_o), (theirs, opt_t)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    ours.eval(), theirs.eval()
    for _ in range(2):
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_snw_matches_torch_with_copied_state():
    torch.manual_seed(0)
    ours = nn.Conv2d(4, 6, 3)
    theirs = copy.deepcopy(ours)
    torch.nn.utils.parametrizations.spectral_norm(theirs)
    snw(ours)  # different draws ...
    p = ours.parametrizations.weight[0]
    q = theirs.parametrizations.weight[0]
    p._u.copy_(q._u), p._v.copy_(q._v)  # ... then the same state
    for _ in range(3):
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=0, atol=0)


def test_snw_one_dimensional_weight_is_normalized_like_torch():
    v = nn.Module()
    v.weight = nn.Parameter(torch.randn(7, dtype=torch.float64))
    snw(v)
    torch.testing.assert_close(torch.linalg.vector_norm(v.weight),
                               torch.tensor(1.0, dtype=torch.float64))


# ---- converged norms ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_snw_converged_norm_is_one(kind):
    m = converge(build("snw", kind))
    assert sn(m.weight.reshape(m.weight.shape[0], -1)) == pytest.approx(1, abs=1e-10)


@pytest.mark.parametrize("scale", [0.7, 2.5])
def test_ssn_converged_norm_is_scale(scale):
    m = converge(build("ssn", "conv", scale=scale))
    assert sn(m.weight.reshape(4, -1)) == pytest.approx(scale, rel=1e-10)


@pytest.mark.parametrize("name,factor", [("bsn", 1.0), ("bssn", 0.8)])
@pytest.mark.parametrize("kind", ["conv", "conv-circular-s2", "linear"])
def test_bidirectional_converged_norm(name, factor, kind):
    m = converge(build(name, kind))
    w = m.weight.detach()
    if w.ndim == 4:
        value = (sn(w.reshape(w.shape[0], -1)) + sn(w.transpose(0, 1).reshape(w.shape[1], -1))) / 2
    else:
        value = sn(w)
    assert value == pytest.approx(factor, rel=1e-10)


@pytest.mark.parametrize("name", ["same-gamma", "diff-gamma"])
def test_gamma_converged_norm_is_gamma(name):
    m = converge(build(name, "conv"))
    (gamma,) = gamma_parameters(m)
    assert sn(m.weight.reshape(4, -1)) == pytest.approx(gamma.item(), rel=1e-10)


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_frobenius_norm_is_one(kind):
    m = build("frobenius", kind)
    assert torch.linalg.vector_norm(m.weight).item() == pytest.approx(1, abs=1e-14)


SNCONV_GEOMETRIES = {
    "zeros-s1": dict(kernel_size=3, padding=1),
    "circular-s1": dict(kernel_size=3, padding=1, padding_mode="circular"),
    "zeros-s2-k4": dict(kernel_size=4, stride=2, padding=1),
    "zeros-s2-odd-input": dict(kernel_size=3, stride=2, padding=0),
    "circular-s2": dict(kernel_size=3, stride=2, padding=1, padding_mode="circular"),
    "dilated-grouped": dict(kernel_size=3, padding=2, dilation=2, groups=2),
}


@pytest.mark.parametrize("geom", sorted(SNCONV_GEOMETRIES))
def test_snconv_converged_operator_norm_is_one(geom):
    size = (5, 6)
    torch.manual_seed(3)
    conv = nn.Conv2d(2, 4, bias=False, **SNCONV_GEOMETRIES[geom]).double()
    exact = sn(expanded_matrix(conv, size))
    snconv(conv, input_size=size)
    # the running estimate approaches ||w~|| from below
    estimate = float(raw(conv).detach().norm() / conv.weight.detach().norm())
    assert estimate <= exact * (1 + 1e-12)
    converge(conv, steps=4000)
    assert sn(expanded_matrix(conv, size)) == pytest.approx(1, abs=1e-8)
    # the pure function: the exact norm, directly
    torch.testing.assert_close(
        snconv_normalize(raw(conv).detach(), ConvGeometry.from_module(conv, size)),
        conv.weight.detach(), rtol=1e-7, atol=1e-12)


def test_snconv_exceeds_snw_by_at_most_alpha():
    # THEORY.md, R: ||w^|| <= ||w~|| <= alpha ||w^||, alpha = 3 for 3x3 stride 1.
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False).double()
    w_hat, w_tilde = sn(conv.weight.detach().reshape(4, -1)), sn(expanded_matrix(conv, (6, 6)))
    assert w_hat <= w_tilde * (1 + 1e-12) and w_tilde <= 3 * w_hat


def test_snconv_on_dense_layer_is_snw():
    a, b = build("snconv", "linear"), build("snw", "linear")
    assert isinstance(a.parametrizations.weight[0], SpectralNormW)
    x = sample("linear")
    for _ in range(3):
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_snconv_gradient_is_that_of_the_exact_operator_norm():
    # With converged u, v: d/dW (W / sigma(W)), sigma = <u, A(W) v>, equals the gradient of
    # W / ||w~(W)||_sp (differentiable SVD of the expanded matrix) at a simple top singular value.
    torch.manual_seed(5)
    size = (4, 5)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    snconv(conv, input_size=size)
    converge(conv, steps=4000)
    g = torch.randn_like(conv.weight)
    (grad,) = torch.autograd.grad((conv.weight * g).sum(), raw(conv))

    w = raw(conv).detach().clone().requires_grad_(True)
    ref_conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).double()
    n = 2 * size[0] * size[1]
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 2, *size)
    dense = ref_conv._conv_forward(basis, w, None).reshape(n, -1)
    (ref,) = torch.autograd.grad((w / torch.linalg.matrix_norm(dense, ord=2) * g).sum(), w)
    torch.testing.assert_close(grad, ref, rtol=1e-7, atol=1e-10)


def test_ssn_gradient_of_the_raw_weight():
    # W_eff = s W / sigma(W), d sigma / dW = u v^T (u, v top singular vectors), so
    # grad_W = (s / sigma) (G - <G, W / sigma> u v^T). (Not <G, u v^T>: W / sigma has more than
    # its top rank-one part, so the map G -> grad_W is an oblique projection with norm
    # ||W||_F / ||W||_sp, and ||grad_W||_F <= (s / sigma) ||G||_F can fail by that factor.)
    m = converge(build("ssn", "linear", scale=1.7))
    g = torch.randn_like(m.weight)
    (grad,) = torch.autograd.grad((m.weight * g).sum(), raw(m))
    w = raw(m).detach()
    u, s, vh = torch.linalg.svd(w)
    uv = torch.outer(u[:, 0], vh[0])
    expected = 1.7 / s[0] * (g - (g * w / s[0]).sum() * uv)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-12)


# ---- pure functions ----------------------------------------------------------------------------

def _pure(name: str, kind: str, m: nn.Module) -> torch.Tensor:
    w = raw(m).detach()
    p = m.parametrizations.weight[0]
    if name == "snconv" and kind != "linear":
        return snconv_normalize(w, ConvGeometry.from_module(m, LAYERS[kind][2]))
    kwargs = {k: v for k, v in KWARGS[name].items()}
    if name in ("same-gamma", "diff-gamma"):
        return gamma_normalize(w, p.gamma.detach())
    if name in ("ssn", "bssn"):
        return NORMALIZERS[name].normalize(w, kwargs.pop("scale"))
    return NORMALIZERS[name].normalize(w)


@pytest.mark.parametrize("name,kind", CASES)
def test_pure_function_agrees_with_converged_parametrization(name, kind):
    m = converge(build(name, kind), steps=4000)
    torch.testing.assert_close(_pure(name, kind, m), m.weight.detach(), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("fn,args", [
    (identity_normalize, ()), (snw_normalize, ()), (ssn_normalize, (2.0,)),
    (bsn_normalize, ()), (bssn_normalize, (2.0,)), (gamma_normalize, (0.5,)),
    (frobenius_normalize, ()),
])
def test_pure_functions_batched_and_dtypes(fn, args):
    torch.manual_seed(6)
    batch = torch.randn(3, 2, 4, 3, 2, 2, dtype=torch.float64)  # (3, 2) batch of kernels
    out = fn(batch, *args, batch_dims=2)
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(out[i, j], fn(batch[i, j], *args), rtol=1e-12, atol=0)
    out32 = fn(batch.float(), *args, batch_dims=2)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=1e-6)


def test_snconv_normalize_batched_and_dense():
    torch.manual_seed(8)
    geometry = ConvGeometry((5, 5), padding=(1, 1))
    batch = torch.randn(3, 4, 2, 3, 3)
    out = snconv_normalize(batch, geometry, batch_dims=1)
    assert out.dtype == torch.float32
    for i in range(3):
        torch.testing.assert_close(out[i], snconv_normalize(batch[i], geometry))
    dense = torch.randn(4, 6, dtype=torch.float64)
    torch.testing.assert_close(snconv_normalize(dense), snw_normalize(dense))


def test_snconv_normalize_lanczos_path_matches_dense():
    # the package re-exports the function snconv, which shadows the submodule's attribute
    mod = importlib.import_module("sntheory.normalizers.snconv")
    torch.manual_seed(9)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    geometry = ConvGeometry((9, 9), padding=(1, 1), padding_mode="circular")
    dense = mod.exact_operator_norm(w, geometry)
    old = mod._DENSE_MAX_ENTRIES
    try:
        mod._DENSE_MAX_ENTRIES = 0
        lanczos = mod.exact_operator_norm(w, geometry)
    finally:
        mod._DENSE_MAX_ENTRIES = old
    assert float(lanczos) == pytest.approx(float(dense), rel=1e-11)


def test_snw_normalize_dim_matches_transposed_reshape():
    torch.manual_seed(10)
    w = torch.randn(3, 5, 4, 4, dtype=torch.float64)  # ConvTranspose2d kernel (c_in, c_out, ...)
    expected = w / sn(w.transpose(0, 1).reshape(5, -1))
    torch.testing.assert_close(snw_normalize(w, dim=1), expected)


# ---- whole models ------------------------------------------------------------------------------

def small_model() -> nn.Module:
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(4, 4, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 1)).double()


@pytest.mark.parametrize("name", sorted(NORMALIZERS))
def test_apply_normalizer_attaches_to_every_layer(name):
    kwargs = {k: v for k, v in KWARGS[name].items()}
    if name == "snconv":
        kwargs["sample_input"] = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model = apply_normalizer(small_model(), name, **kwargs)
    for i in (0, 2, 5):
        assert torch.nn.utils.parametrize.is_parametrized(model[i], "weight")
    out = model(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    out.sum().backward()
    assert out.shape == (2, 1)


def test_apply_snconv_records_input_sizes():
    model = small_model()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    model.train()
    assert record_input_sizes(model, x) == {"0": (8, 8), "2": (8, 8)}
    assert model.training and all(m.training for m in model.modules())
    apply_normalizer(model, "snconv", sample_input=x)
    assert model[0].parametrizations.weight[0].geometry.input_size == (8, 8)
    assert isinstance(model[2].parametrizations.weight[0], SpectralNormConv)
    assert model[2].parametrizations.weight[0]._u.shape == (4, 4, 4)
    assert model[2].parametrizations.weight[0]._v.shape == (4, 8, 8)
    # the same through a dict, by name and by module
    other = small_model()
    apply_normalizer(other, "snconv", input_sizes={"0": (8, 8), other[2]: (8, 8)})
    assert other[2].parametrizations.weight[0].geometry == \
        model[2].parametrizations.weight[0].geometry


def test_same_gamma_shares_one_parameter_and_diff_gamma_does_not():
    model = same_gamma(small_model(), gamma=1.5)
    (gamma,) = gamma_parameters(model)
    assert gamma.item() == 1.5 and gamma.dtype == torch.float64
    assert sum(p is gamma for p in model.parameters()) == 1
    model(torch.randn(2, 3, 8, 8, dtype=torch.float64)).sum().backward()
    assert gamma.grad is not None
    fresh = same_gamma(small_model(), gamma=1.0)
    fresh.load_state_dict(model.state_dict())
    assert gamma_parameters(fresh)[0].item() == 1.5
    model = apply_normalizer(small_model(), "diff-gamma", gamma=0.5)
    gammas = gamma_parameters(model)
    assert len(gammas) == 3 and all(g.item() == 0.5 for g in gammas)


def test_registry_names():
    assert set(NORMALIZERS) == {"none", "snw", "snconv", "ssn", "bsn", "bssn", "same-gamma",
                                "diff-gamma", "frobenius"}
    for spec in NORMALIZERS.values():
        attach, normalize = spec
        assert callable(attach) and callable(normalize)


# ---- errors ------------------------------------------------------------------------------------

def test_error_unknown_name():
    with pytest.raises(ValueError, match="`name` must be one of"):
        apply_normalizer(small_model(), "spectral")


@pytest.mark.parametrize("n,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError)])
def test_error_bad_n_power_iterations(n, exc):
    with pytest.raises(exc, match="n_power_iterations"):
        snw(nn.Linear(3, 2), n_power_iterations=n)


@pytest.mark.parametrize("fn", [ssn, bssn])
@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan")])
def test_error_bad_scale(fn, scale):
    with pytest.raises(ValueError, match="scale"):
        fn(nn.Conv2d(2, 2, 3), scale=scale)


def test_error_bad_eps():
    with pytest.raises(ValueError, match="eps"):
        bsn(nn.Linear(3, 2), eps=0.0)


def test_error_missing_input_size_for_snconv():
    with pytest.raises(ValueError, match="input_size"):
        snconv(nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="missing for"):
        apply_normalizer(small_model(), "snconv")
    with pytest.raises(ValueError, match="geometry"):
        snconv_normalize(torch.randn(2, 2, 3, 3))


def test_error_input_size_on_a_dense_layer():
    with pytest.raises(ValueError, match="Conv2d layers only"):
        snconv(nn.Linear(3, 2), input_size=(4, 4))


def test_error_input_sizes_for_another_normalizer():
    with pytest.raises(ValueError, match="'snconv' only"):
        apply_normalizer(small_model(), "snw", input_sizes={"0": (8, 8)})


def test_error_non_floating_weight():
    m = nn.Module()
    m.register_buffer("weight", torch.ones(3, 3, dtype=torch.int64))
    for attach in (snw, bsn, frobenius):
        with pytest.raises(TypeError, match="floating-point"):
            attach(m)
    with pytest.raises(TypeError, match="floating-point"):
        snw_normalize(torch.ones(3, 3, dtype=torch.int64))


def test_error_missing_parameter():
    with pytest.raises(ValueError, match="no parameter or buffer with name 'kernel'"):
        snw(nn.Linear(3, 2), name="kernel")


def test_error_already_parametrized():
    model = apply_normalizer(small_model(), "snw")
    with pytest.raises(ValueError, match="already have a parametrized weight"):
        apply_normalizer(model, "bsn")


def test_error_missing_scale():
    with pytest.raises(TypeError, match="scale"):
        apply_normalizer(small_model(), "ssn")


def test_error_diff_gamma_with_shared_parameter():
    with pytest.raises(TypeError, match="same-gamma"):
        diff_gamma(nn.Linear(3, 2), gamma=nn.Parameter(torch.tensor(1.0)))


def test_error_snconv_unsupported_module():
    with pytest.raises(TypeError, match="Conv2d"):
        snconv(nn.ConvTranspose2d(2, 2, 3), input_size=(4, 4))


def test_error_snconv_geometry_does_not_fit():
    with pytest.raises(ValueError, match="empty output"):
        snconv(nn.Conv2d(2, 2, 5), input_size=(3, 3))
    with pytest.raises(TypeError, match="ConvGeometry"):
        SpectralNormConv(torch.randn(2, 2, 3, 3), (4, 4))


def test_error_bad_batch_dims():
    with pytest.raises(ValueError, match="batch_dims"):
        snw_normalize(torch.randn(3, 3), batch_dims=-1)
    with pytest.raises(ValueError, match="at least"):
        frobenius_normalize(torch.randn(3), batch_dims=1)


def test_error_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        GammaSpectralNorm(torch.randn(3, 3), gamma=float("inf"))
    with pytest.raises(ValueError, match="0-dim"):
        GammaSpectralNorm(torch.randn(3, 3), gamma=nn.Parameter(torch.ones(2)))
