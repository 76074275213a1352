"""Tests of sntheory.conv.operator, .alpha and .reshaped against the dense expanded matrix.

Ground truth: :func:`sntheory.conv.dense.expanded_matrix` and a full float64 SVD (the matrix is
itself checked against torch's Conv2d here, column by column). Hypothesis draws ~400 random
geometries (zeros / circular, exact and non-exact, strides, dilation, groups) and kernels.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from sntheory.conv.alpha import AlphaResult, coverage_alpha
from sntheory.conv.dense import expanded_matrix
from sntheory.conv.fft import circular_is_exact
from sntheory.conv.geometry import ConvGeometry
from sntheory.conv.operator import (ConvNormResult, _Ops, conv_operator_norm, layer_norms,
                                    zero_padding_tori)
from sntheory.conv.reshaped import (reshaped_kernel_norm, reshaped_kernel_norm_transposed,
                                    reshaped_norms_with_bounds)

SLACK = 1e-11          # relative round-off allowance when comparing with the dense SVD
HYP = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much])


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """One BLAS/torch thread: the dense SVDs of many small matrices, on a shared machine."""
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1):
        yield


def dense_norms(w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """||w~|| of each kernel of the batch by a full SVD of the expanded matrix."""
    a = expanded_matrix(w, g)
    return np.linalg.svd(a, compute_uv=False)[:, 0]


def torch_matrix(w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Private reference: the expanded matrix of one kernel from torch's Conv2d on the
    identity basis."""
    c_out, c_in_g, kh, kw = w.shape
    conv = torch.nn.Conv2d(c_in_g * g.groups, c_out, (kh, kw), g.stride, g.padding,
                           g.dilation, g.groups, bias=False, padding_mode=g.padding_mode)
    conv = conv.double()
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w))
        n = c_in_g * g.groups * g.input_size[0] * g.input_size[1]
        eye = torch.eye(n, dtype=torch.float64).reshape(n, c_in_g * g.groups, *g.input_size)
        return conv(eye).reshape(n, -1).T.numpy()


def make_kernel(rng, kind: str, shape) -> np.ndarray:
    if kind == "gauss":
        return rng.standard_normal(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "sym":                       # flip- and transpose-symmetric: exact symbol ties
        w = rng.standard_normal(shape)
        w = w + w[..., ::-1, :] + w[..., :, ::-1] + w[..., ::-1, ::-1]
        return w + np.swapaxes(w, -1, -2) if shape[-1] == shape[-2] else w
    if kind == "sparse":
        return rng.standard_normal(shape) * (rng.random(shape) < 0.3)
    if kind == "positive":
        return np.abs(rng.standard_normal(shape))
    raise AssertionError(kind)


KINDS = ("gauss", "gauss", "ones", "sym", "sparse", "positive")


@st.composite
def layers(draw, modes=("zeros", "circular"), max_size=9, max_channels=3, exact=None):
    """(kernel batch, geometry) with a non-empty output; ``exact``: force exact circular."""
    mode = draw(st.sampled_from(modes))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.sampled_from([1, 1, 1, 2])), draw(st.sampled_from([1, 1, 2])))
    if exact:
        size, pad = [], []
        for ki, si, di in zip(k, s, d):
            m = draw(st.integers(1, max(1, max_size // si)))
            n = m * si
            full = di * (ki - 1)                      # 2p in [full - s + 1, full]
            choices = [p for p in range(0, n + 1) if full - si + 1 <= 2 * p <= full]
            assume(choices)
            size.append(n)
            pad.append(draw(st.sampled_from(choices)))
    else:
        size = [draw(st.integers(1, max_size)), draw(st.integers(1, max_size))]
        pad = [draw(st.integers(0, 3)), draw(st.integers(0, 3))]
        if mode == "circular":
            pad = [min(p, n) for p, n in zip(pad, size)]
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    c_out = groups * draw(st.integers(1, max_channels))
    c_in_g = draw(st.integers(1, max_channels))
    g = ConvGeometry(tuple(size), s, tuple(pad), mode, d, groups)
    try:
        g.output_size(k)
    except ValueError:
        assume(False)
    n_kernels = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(KINDS))
    w = make_kernel(rng, kind, (n_kernels, c_out, c_in_g) + k)
    return w, g


def check_interval(res, ref):
    lower, upper = np.atleast_1d(res.lower), np.atleast_1d(res.upper)
    assert np.all(lower <= ref * (1 + SLACK) + 1e-300), (lower, ref)
    assert np.all(ref <= upper * (1 + SLACK) + 1e-300), (ref, upper)


def rel_err(value, ref):
    value = np.atleast_1d(value)
    return np.abs(value - ref) / np.maximum(ref, 1e-300) * (ref > 0) + np.abs(value) * (ref == 0)


# ------------------------------------------------------------------------------------------
# the ground truth itself and the real operator
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("stride,padding,dilation,groups,size", [
    (1, 1, 1, 1, (5, 6)), (2, 1, 1, 1, (7, 6)), (2, 2, 2, 2, (6, 7)), (3, 0, 1, 1, (8, 5)),
    (1, 3, 2, 1, (3, 4)), ((1, 2), (2, 1), (2, 1), 3, (5, 5))])
def test_dense_matches_torch_and_ops_adjoint(mode, stride, padding, dilation, groups, size):
    rng = np.random.default_rng(7)
    g = ConvGeometry(size, stride, padding, mode, dilation, groups)
    w = rng.standard_normal((2 * groups, 2, 3, 2))
    try:
        g.output_size((3, 2))
    except ValueError:
        pytest.skip("empty output")
    a = expanded_matrix(w, g)
    np.testing.assert_allclose(a, torch_matrix(w, g), atol=1e-13)
    # the operator of the Lanczos path (groups split into a batch of operators)
    co = 2
    ks = w.reshape(groups, co, 2, 3, 2)
    g1 = ConvGeometry(size, stride, padding, mode, dilation, 1)
    ops = _Ops(ks, g1)
    x = torch.from_numpy(rng.standard_normal((groups, 3, ops.n)))
    y = ops.forward(x)
    for j in range(groups):
        aj = a[j * co * ops.out[0] * ops.out[1]:(j + 1) * co * ops.out[0] * ops.out[1],
               j * ops.n:(j + 1) * ops.n]
        np.testing.assert_allclose(y[j].numpy(), x[j].numpy() @ aj.T, atol=1e-12)
    z = torch.from_numpy(rng.standard_normal((groups, 3, ops.m)))
    lhs = torch.einsum("gbm,gbm->gb", y, z)
    rhs = torch.einsum("gbn,gbn->gb", x, ops.adjoint(z))
    np.testing.assert_allclose(lhs.numpy(), rhs.numpy(), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# conv_operator_norm against the dense SVD (property based)
# ------------------------------------------------------------------------------------------
@settings(max_examples=110, **HYP)
@given(layers())
def test_auto_interval_contains_dense(case):
    w, g = case
    ref = dense_norms(w, g)
    res = conv_operator_norm(w, g)
    check_interval(res, ref)
    err = rel_err(res.value, ref)
    if res.method in ("fft", "dense"):
        assert np.all(res.exact) and np.all(err <= 1e-9), (res.method, err)
    else:
        assert np.all(err <= 1e-6), err


@settings(max_examples=150, **HYP)
@given(layers(max_size=10))
def test_lanczos_interval_and_value(case):
    w, g = case
    ref = dense_norms(w, g)
    res = conv_operator_norm(w, g, method="lanczos")
    assert res.method == "lanczos"
    check_interval(res, ref)
    assert np.all(res.converged)
    assert np.all(rel_err(res.value, ref) <= 1e-6), (rel_err(res.value, ref), res.iterations)
    assert np.all(np.atleast_1d(res.lower) <= np.atleast_1d(res.value))
    assert np.all(np.atleast_1d(res.value) <= np.atleast_1d(res.upper))


@settings(max_examples=80, **HYP)
@given(layers(modes=("circular",), max_size=12, exact=True))
def test_exact_circular_fft(case):
    w, g = case
    kh, kw = w.shape[-2:]
    assert circular_is_exact(g, (kh, kw))[0]
    ref = dense_norms(w, g)
    res = conv_operator_norm(w, g, method="fft")
    assert res.method == "fft" and np.all(res.exact)
    check_interval(res, ref)
    assert np.all(rel_err(res.value, ref) <= 1e-9)
    assert conv_operator_norm(w, g).method == "fft"


# larger layers, where the Lanczos path is what "auto" takes (dense SVD still affordable)
MEDIUM = [
    ("3x3 same", (6, 4, 3, 3), ConvGeometry((14, 14), 1, 1)),
    ("4x4/s2 p1", (8, 6, 4, 4), ConvGeometry((14, 14), 2, 1)),
    ("5x5 same dil2", (4, 3, 5, 5), ConvGeometry((13, 12), 1, 4, dilation=2)),
    ("3x3 valid", (6, 3, 3, 3), ConvGeometry((16, 15), 1, 0)),
    ("3x3/s2 p2", (6, 4, 3, 3), ConvGeometry((15, 14), 2, 2)),
    ("1x1", (12, 8, 1, 1), ConvGeometry((9, 11), 1, 0)),
    ("grouped 3x3", (8, 3, 3, 3), ConvGeometry((14, 14), 1, 1, groups=2)),
    ("circular s2 odd", (6, 4, 4, 4), ConvGeometry((15, 15), 2, 1, "circular")),
    ("circular more than full", (4, 4, 3, 3), ConvGeometry((10, 10), 1, 3, "circular")),
    ("2x6 rectangular", (5, 3, 2, 6), ConvGeometry((20, 12), (1, 2), (1, 2))),
]


@pytest.mark.parametrize("name,shape,g", MEDIUM, ids=[m[0] for m in MEDIUM])
@pytest.mark.parametrize("kind", ["gauss", "sym", "ones"])
def test_medium_layers(name, shape, g, kind):
    rng = np.random.default_rng(abs(hash((name, kind))) % 2 ** 32)
    w = make_kernel(rng, kind, (2,) + shape)
    ref = dense_norms(w, g)
    res = conv_operator_norm(w, g)
    assert res.method == "lanczos"
    check_interval(res, ref)
    assert np.all(res.converged)
    assert np.all(rel_err(res.value, ref) <= 1e-6)
    tight = conv_operator_norm(w, g, rtol=1e-10)
    assert np.all(rel_err(tight.value, ref) <= 1e-9)


@pytest.mark.parametrize("name,shape,g", [MEDIUM[0], MEDIUM[1], MEDIUM[7]],
                         ids=[MEDIUM[i][0] for i in (0, 1, 7)])
def test_thick_restart(name, shape, g):
    """A small basis forces thick restarts; the value and interval must not suffer."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((2,) + shape)
    ref = dense_norms(w, g)
    res = conv_operator_norm(w, g, method="lanczos", basis_size=32)
    check_interval(res, ref)
    assert np.all(res.converged) and np.any(res.iterations > 32)
    assert np.all(rel_err(res.value, ref) <= 1e-6)


def test_torch_default_init_layers_value_to_1e6():
    """Scaled-down paper layers (PyTorch default init): 'same' 3x3 and 4x4/s2 pad 1."""
    torch.manual_seed(0)
    for c_in, c_out, k, s, size in [(3, 16, 3, 1, 16), (16, 16, 4, 2, 16), (16, 32, 3, 1, 8),
                                    (32, 32, 4, 2, 8), (32, 64, 3, 1, 4)]:
        conv = torch.nn.Conv2d(c_in, c_out, k, s, 1, bias=False)
        g = ConvGeometry((size, size), s, 1)
        w = conv.weight.detach().double().numpy()
        ref = float(dense_norms(w[None], g)[0])
        res = conv_operator_norm(conv, (size, size))
        assert isinstance(res.value, float)
        assert abs(res.value - ref) <= 1e-6 * ref
        assert res.lower <= ref * (1 + SLACK) and ref <= res.upper * (1 + SLACK)
        assert res.rel_width < 0.2


def test_zero_padding_tori_embed():
    """Every torus of zero_padding_tori gives an upper bound, and it is tight for 1x1 kernels."""
    from sntheory.conv.fft import circular_operator_norm
    rng = np.random.default_rng(3)
    for g, k in [(ConvGeometry((7, 9), 2, 3), (3, 4)), (ConvGeometry((5, 5), 1, 1), (3, 3)),
                 (ConvGeometry((6, 4), (3, 1), (2, 0), dilation=(2, 1)), (3, 2)),
                 (ConvGeometry((1, 1), 1, 1), (3, 3))]:
        w = rng.standard_normal((3, 2, 2) + k)
        ref = dense_norms(w, g)
        for torus in zero_padding_tori(g, k, 4):
            assert all(t % s == 0 for t, s in zip(torus, g.stride))
            up = circular_operator_norm(w, torus, g.stride, g.dilation).value
            assert np.all(ref <= up * (1 + SLACK))
    w = rng.standard_normal((2, 5, 4, 1, 1))
    res = conv_operator_norm(w, ConvGeometry((30, 30), 1, 0), rtol=1e-10)
    assert res.method == "lanczos" and np.all(res.exact) and np.all(res.iterations <= 40)
    np.testing.assert_allclose(res.value, [np.linalg.norm(x[:, :, 0, 0], 2) for x in w],
                               rtol=1e-10)


def test_single_batch_zero_and_max_iter():
    rng = np.random.default_rng(4)
    g = ConvGeometry((16, 16), 1, 1)
    w = rng.standard_normal((3, 4, 2, 3, 3))
    w[1] = 0.0
    res = conv_operator_norm(w, g)
    assert isinstance(res, ConvNormResult) and res.value.shape == (3,)
    assert res.value[1] == res.lower[1] == res.upper[1] == 0.0 and res.exact[1]
    assert "all-zero" in res.note
    single = conv_operator_norm(w[0], g)
    assert isinstance(single.value, float) and isinstance(single.exact, bool)
    assert single.value == pytest.approx(res.value[0], rel=1e-6)
    ref = dense_norms(w[:1], g)[0]
    capped = conv_operator_norm(w[0], g, max_iter=1)
    assert not capped.converged and "NOT converged" in capped.note
    assert capped.lower <= ref * (1 + SLACK) <= capped.upper * (1 + 2 * SLACK)
    assert capped.value <= ref * (1 + SLACK)


def test_grouped_is_max_over_groups():
    rng = np.random.default_rng(5)
    g2 = ConvGeometry((10, 10), 1, 1, groups=2)
    g1 = ConvGeometry((10, 10), 1, 1)
    w = rng.standard_normal((1, 6, 3, 3, 3))
    w[0, 3:] *= 3.0
    whole = conv_operator_norm(w, g2, rtol=1e-10).value
    parts = [conv_operator_norm(w[:, 3 * j:3 * (j + 1)], g1, rtol=1e-10).value
             for j in range(2)]
    np.testing.assert_allclose(whole, np.maximum(*parts), rtol=1e-9)


# ------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,size", [
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1), (12, 12)),
    (dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=1), (12, 10)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, padding=1, groups=2,
          padding_mode="circular"), (8, 8)),
    (dict(in_channels=3, out_channels=4, kernel_size=3, padding="same", dilation=2), (9, 9)),
])
def test_layer_norms(kwargs, size):
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(bias=False, **kwargs)
    out = layer_norms(conv, (1, kwargs["in_channels"]) + size)
    g = ConvGeometry.from_module(conv, size)
    w = conv.weight.detach().double().numpy()
    ref = float(dense_norms(w[None], g)[0])
    assert out["geometry"] == g
    assert out["operator_lower"] <= ref * (1 + SLACK) <= out["operator_upper"] * (1 + 2 * SLACK)
    assert out["operator_norm"] == pytest.approx(ref, rel=1e-6)
    assert out["reshaped_norm"] == pytest.approx(np.linalg.norm(w.reshape(w.shape[0], -1), 2),
                                                 rel=1e-10)
    wt = np.swapaxes(w, 0, 1)
    assert out["reshaped_norm_transposed"] == pytest.approx(
        np.linalg.norm(wt.reshape(wt.shape[0], -1), 2), rel=1e-10)
    assert out["ratio"] == pytest.approx(out["operator_norm"] / out["reshaped_norm"])
    assert out["ratio_lower"] <= out["ratio"] <= out["ratio_upper"]
    assert out["ratio"] <= out["alpha"] * (1 + 1e-9)
    a = coverage_alpha(g, conv.kernel_size)
    assert out["alpha"] == a.alpha and out["lower_bound_applies"] == a.lower_bound_applies
    if conv.groups == 1:
        assert out["reshaped_norm_per_group"] == pytest.approx(out["reshaped_norm"], rel=1e-12)
    direct = conv_operator_norm(conv, size)
    assert direct.value == pytest.approx(out["operator_norm"], rel=1e-12)


def test_module_with_spectral_norm_parametrization():
    torch.manual_seed(2)
    conv = torch.nn.utils.parametrizations.spectral_norm(
        torch.nn.Conv2d(3, 5, 3, padding=1, bias=False))
    conv.eval()
    out = layer_norms(conv, 8)
    assert out["reshaped_norm"] == pytest.approx(1.0, rel=1e-4)     # SN's own estimate
    assert 1.0 - 1e-4 <= out["ratio"] <= out["alpha"]


# ------------------------------------------------------------------------------------------
# alpha
# ------------------------------------------------------------------------------------------
@settings(max_examples=80, **HYP)
@given(layers(max_size=10))
def test_alpha_brute_force_against_dense_structure(case):
    w, g = case
    kh, kw = w.shape[-2:]
    ones = np.ones((1, 1, 1, kh, kw))
    g1 = ConvGeometry(g.input_size, g.stride, g.padding, g.padding_mode, g.dilation, 1)
    a = expanded_matrix(ones, g1)[0]              # entry = taps of output q reading pixel t
    res = coverage_alpha(g, (kh, kw))
    assert isinstance(res, AlphaResult)
    reads = a.sum(axis=0).reshape(g.input_size)
    np.testing.assert_array_equal(res.coverage(), reads)
    assert res.alpha == pytest.approx(math.sqrt(reads.max()), rel=1e-15)
    assert res.max_positions == (a != 0).sum(axis=0).max()
    assert res.uniform == (reads.min() == reads.max())
    assert res.output_size == g.output_size((kh, kw))
    exact = g.padding_mode == "circular" and circular_is_exact(g1, (kh, kw))[0]
    if g.padding_mode == "zeros" or exact:
        assert res.alpha <= res.alpha_bound + 1e-12
    # the upper bound of R, with torch's reshape and with the per-group one
    ref = dense_norms(w, g)
    hat = reshaped_kernel_norm(w)
    hat_g = reshaped_kernel_norm(w, groups=g.groups)
    assert np.all(hat_g <= hat * (1 + 1e-12))
    assert np.all(ref <= res.alpha * hat_g * (1 + SLACK) + 1e-300)
    if res.lower_bound_applies:
        assert np.all(hat_g <= ref * (1 + SLACK) + 1e-300)


@pytest.mark.parametrize("size", [3, 4, 5, 8, 16, 32, 33])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_alpha_paper_layers(size, mode):
    same = coverage_alpha(ConvGeometry.same((size, size), 3, padding_mode=mode), 3)
    assert same.alpha == 3.0 and same.alpha_bound == 3.0 and same.lower_bound_applies
    down = coverage_alpha(ConvGeometry((size, size), 2, 1, mode), 4)
    assert down.alpha_bound == 2.0
    if size >= 5:
        assert down.alpha == 2.0 and down.lower_bound_applies
    elif mode == "zeros":
        # 4x4/s2 pad 1 on a 4x4 input: both outputs read padding; on 3x3 a single output
        assert not down.lower_bound_applies and down.alpha == (2.0 if size == 4 else 1.0)
    else:
        # circular on 3x3 / 4x4: 4 taps distinct mod 4 but not mod 3
        assert down.lower_bound_applies == (size == 4)


def test_alpha_multiplicity_and_generic_bound_examples():
    # circular, kernel wider than the input: output 0 reads pixel 1 through taps 0 and 2
    r = coverage_alpha(ConvGeometry((2, 5), 1, 1, "circular"), 3)
    assert list(r.coverage_h) == [3, 3] and r.alpha == 3.0 and r.max_positions == 2 * 3
    assert not r.lower_bound_applies and "overlap" in r.reason
    # dilation-aware bound: 3 taps, dilation 2, stride 2 -> ceil(3 * 2 / 2) = 3 per axis
    r = coverage_alpha(ConvGeometry((12, 12), 2, 2, dilation=2), 3)
    assert r.alpha == 3.0 and r.alpha_bound == 3.0
    # circular padding reads pixels again: alpha exceeds the generic bound
    r = coverage_alpha(ConvGeometry((4, 4), 1, 4, "circular"), 1)
    assert r.alpha == 3.0 and r.alpha_bound == 1.0
    # 3x3 stride 2 on a torus: coverage 4, 2, 1 -> not uniform
    r = coverage_alpha(ConvGeometry((8, 8), 2, 1, "circular"), 3)
    assert not r.uniform and r.alpha == 2.0


@pytest.mark.parametrize("g,k", [
    (ConvGeometry((8, 8), 1, 1, "circular"), (3, 3)),
    (ConvGeometry((8, 6), 2, 1, "circular"), (4, 4)),
    (ConvGeometry((9, 9), 3, 1, "circular"), (3, 3)),
    (ConvGeometry((6, 8), (2, 1), (0, 2), "circular", dilation=(1, 2)), (2, 3)),
    (ConvGeometry((12, 12), 1, 2, "circular", dilation=2), (3, 3)),
])
def test_all_ones_constant_image_attains_alpha(g, k):
    a = coverage_alpha(g, k)
    assert a.uniform and circular_is_exact(g, k)[0]
    c_out, c_in = 3, 2
    ones = np.ones((c_out, c_in) + k)
    hat = reshaped_kernel_norm(ones)
    assert hat == pytest.approx(math.sqrt(c_out * c_in * k[0] * k[1]))
    x = torch.ones(1, c_in, *g.input_size, dtype=torch.float64)
    y = F.conv2d(F.pad(x, (g.padding[1],) * 2 + (g.padding[0],) * 2, mode="circular"),
                 torch.from_numpy(ones), stride=g.stride, dilation=g.dilation)
    gain = float(y.norm() / x.norm())
    assert gain == pytest.approx(a.alpha * hat, rel=1e-12)
    res = conv_operator_norm(ones, g)
    assert res.value == pytest.approx(a.alpha * hat, rel=1e-9)


def test_lower_bound_fails_where_it_does_not_apply():
    rng = np.random.default_rng(11)
    # zero padding: a 1x1 input and a 3x3 kernel with padding 1 -- only the centre tap acts
    g = ConvGeometry((1, 1), 1, 1)
    a = coverage_alpha(g, 3)
    assert not a.lower_bound_applies and "padding" in a.reason
    w = rng.standard_normal((1, 4, 3, 3, 3))
    op = conv_operator_norm(w, g)
    assert op.value == pytest.approx(np.linalg.norm(w[0, :, :, 1, 1], 2), rel=1e-12)
    assert op.upper < reshaped_kernel_norm(w)[0]
    # circular, exact torus convolution, kernel wider than the torus: [1, 0, -1] cancels
    g = ConvGeometry((2, 2), 1, 1, "circular")
    assert circular_is_exact(g, 3)[0] and not coverage_alpha(g, 3).lower_bound_applies
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, :, 1] = [1.0, 0.0, -1.0]
    assert conv_operator_norm(w, g).value == pytest.approx(0.0, abs=1e-15)
    assert reshaped_kernel_norm(w) == pytest.approx(math.sqrt(2))
    # ... and huge zero padding of a small input with a large kernel
    g = ConvGeometry((2, 2), 1, 3)
    assert not coverage_alpha(g, 5).lower_bound_applies
    w = rng.standard_normal((1, 3, 3, 5, 5))
    w[..., 1:4, 1:4] *= 0.01                       # weight where no output reads two pixels
    assert dense_norms(w, g)[0] < reshaped_kernel_norm(w)[0]


def test_grouped_lower_bound_needs_the_per_group_norm():
    g = ConvGeometry((6, 6), 1, 1, groups=2)
    w = np.zeros((1, 2, 1, 3, 3))
    w[0, :, 0, 1, 1] = 1.0                         # identity in both groups
    assert coverage_alpha(g, 3).lower_bound_applies
    assert "per-group" in coverage_alpha(g, 3).reason
    assert conv_operator_norm(w, g).value == pytest.approx(1.0)
    assert reshaped_kernel_norm(w, groups=2)[0] == pytest.approx(1.0)
    assert reshaped_kernel_norm(w)[0] == pytest.approx(math.sqrt(2))   # torch's: above ||w~||


# ------------------------------------------------------------------------------------------
# reshaped norms
# ------------------------------------------------------------------------------------------
@settings(max_examples=40, **HYP)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4),
       st.integers(1, 4), st.integers(0, 2 ** 32 - 1))
def test_reshaped_norms_against_numpy(n, c_out, c_in, kh, kw, seed):
    w = np.random.default_rng(seed).standard_normal((n, c_out, c_in, kh, kw))
    want = [np.linalg.norm(x.reshape(c_out, -1), 2) for x in w]
    want_t = [np.linalg.norm(np.swapaxes(x, 0, 1).reshape(c_in, -1), 2) for x in w]
    np.testing.assert_allclose(reshaped_kernel_norm(w), want, rtol=1e-10)
    np.testing.assert_allclose(reshaped_kernel_norm_transposed(w), want_t, rtol=1e-10)
    assert reshaped_kernel_norm(w[0]) == pytest.approx(want[0], rel=1e-10)
    assert isinstance(reshaped_kernel_norm(w[0]), float)
    sigma, err = reshaped_norms_with_bounds(w)
    assert np.all(np.abs(sigma - want) <= err + 1e-13 * sigma)


def test_reshaped_groups_torch_and_zero():
    rng = np.random.default_rng(9)
    w = rng.standard_normal((6, 2, 3, 3))
    per = max(np.linalg.norm(w[3 * j:3 * j + 3].reshape(3, -1), 2) for j in range(2))
    assert reshaped_kernel_norm(w, groups=2) == pytest.approx(per, rel=1e-10)
    per_t = max(np.linalg.norm(np.swapaxes(w[3 * j:3 * j + 3], 0, 1).reshape(2, -1), 2)
                for j in range(2))
    assert reshaped_kernel_norm_transposed(w, groups=2) == pytest.approx(per_t, rel=1e-10)
    assert reshaped_kernel_norm(torch.from_numpy(w).float()) == pytest.approx(
        np.linalg.norm(w.astype(np.float32).astype(float).reshape(6, -1), 2), rel=1e-6)
    assert reshaped_kernel_norm(np.zeros((2, 2, 1, 1))) == 0.0
    with pytest.raises(ValueError, match="`groups` = 4 must divide c_out = 6"):
        reshaped_kernel_norm(w, groups=4)


# ------------------------------------------------------------------------------------------
# bad input: clear errors naming the argument, its value and the rule
# ------------------------------------------------------------------------------------------
G = ConvGeometry((8, 8), 1, 1)
W = np.ones((2, 2, 3, 3))


def test_error_kernel_ndim():
    with pytest.raises(ValueError, match=r"`w` must be a conv kernel .* got shape \(2, 3, 3\)"):
        conv_operator_norm(np.ones((2, 3, 3)), G)


def test_error_nan_weight():
    w = W.copy()
    w[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match=r"`w` must be finite, but w\[1, 0, 2, 2\] = .*nan"):
        conv_operator_norm(w, G)


def test_error_empty_output():
    with pytest.raises(ValueError, match="empty output"):
        conv_operator_norm(W, ConvGeometry((2, 2), 1, 0))


def test_error_groups_not_dividing_channels():
    with pytest.raises(ValueError, match="`groups` = 3 must divide c_out = 2"):
        conv_operator_norm(W, ConvGeometry((8, 8), 1, 1, groups=3))


@pytest.mark.parametrize("rtol", [0.0, 1.0, -1e-3, float("nan"), 2.0])
def test_error_rtol_outside_unit_interval(rtol):
    with pytest.raises(ValueError, match="`rtol` must be"):
        conv_operator_norm(W, G, rtol=rtol)


def test_error_rtol_type_and_max_iter_and_method():
    with pytest.raises(TypeError, match="`rtol` must be a real number"):
        conv_operator_norm(W, G, rtol="small")
    with pytest.raises(ValueError, match="`max_iter` must be an integer >= 1, got 0"):
        conv_operator_norm(W, G, max_iter=0)
    with pytest.raises(ValueError, match="`method` must be one of"):
        conv_operator_norm(W, G, method="power")


def test_error_fft_on_non_exact_geometry():
    with pytest.raises(ValueError, match="`method`='fft' needs a circular geometry"):
        conv_operator_norm(W, G, method="fft")
    with pytest.raises(ValueError, match="stride 2 does not divide"):
        conv_operator_norm(W, ConvGeometry((7, 8), 2, 1, "circular"), method="fft")


def test_error_geometry_type_and_module_mismatch():
    with pytest.raises(TypeError, match="`geometry` must be a ConvGeometry"):
        conv_operator_norm(W, (8, 8))
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, bias=False)
    with pytest.raises(ValueError, match="does not match the module"):
        conv_operator_norm(conv, ConvGeometry((8, 8), 2, 1))
    with pytest.raises(TypeError, match="`module` must be a torch.nn.Conv2d"):
        layer_norms(W, (8, 8))
    with pytest.raises(TypeError, match="`geometry` must be a ConvGeometry"):
        coverage_alpha((8, 8), 3)
    with pytest.raises(ValueError, match="`kernel_size` must be >= 1"):
        coverage_alpha(G, 0)
