"""Tests of sntheory.conv.dense and sntheory.conv.fft.

Ground truth everywhere: the dense expanded matrix (checked against torch.nn.functional.conv2d)
and its full float64 SVD.  Every fast path of circular_operator_norm and the full spectrum are
compared with it on random geometries (hypothesis: shapes, strides, paddings, dilations,
groups), on structured kernels (all-ones, low rank, smooth) and on non-exact geometries.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sntheory.conv.dense import dense_operator_norm, dense_singular_values, expanded_matrix
from sntheory.conv.fft import (CircularNorm, circular_bound_setup, circular_is_exact,
                               circular_layer_norm, circular_operator_norm,
                               circular_singular_values, circular_symbol, half_frequencies)
from sntheory.conv.geometry import ConvGeometry, reshape_kernel

torch = pytest.importorskip("torch")
F = torch.nn.functional

ACC = 1e-9                         # required relative accuracy against the dense SVD
METHODS = ("auto", "fast", "svd")
HYP = dict(deadline=None, derandomize=True,
           suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def torch_conv(x: np.ndarray, w: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """The layer as torch computes it, in float64: x (B, c_in, H, W) -> (B, c_out, Ho, Wo)."""
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    if g.padding_mode == "circular":
        ph, pw = g.padding
        xt = F.pad(xt, (pw, pw, ph, ph), mode="circular")
        return F.conv2d(xt, wt, stride=g.stride, dilation=g.dilation, groups=g.groups).numpy()
    return F.conv2d(xt, wt, stride=g.stride, padding=g.padding, dilation=g.dilation,
                    groups=g.groups).numpy()


# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------
@st.composite
def exact_circular_cases(draw, max_c=4, max_m=4, max_groups=3):
    """(kernel batch, geometry) with an exact circular geometry: s | n and H_out s = n."""
    groups = draw(st.integers(1, max_groups))
    cog, cig = draw(st.integers(1, max_c)), draw(st.integers(1, max_c))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    m = (draw(st.integers(1, max_m)), draw(st.integers(1, max_m)))
    n = (m[0] * s[0], m[1] * s[1])
    pads = []
    for k, dd, ss, nn in zip((kh, kw), d, s, n):
        # H_out = n / s  <=>  2p - d(k-1) in [1 - s, 0];  torch needs p <= n
        ok = [p for p in range(nn + 1) if 1 - ss <= 2 * p - dd * (k - 1) <= 0]
        if not ok:      # d(k-1) odd with stride 1 has no full padding: make the kernel odd
            return draw(exact_circular_cases(max_c, max_m, max_groups))
        pads.append(draw(st.sampled_from(ok)))
    N = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    kind = draw(st.sampled_from(["gauss", "gauss", "gauss", "lowrank", "ones", "int"]))
    rng = np.random.default_rng(seed)
    shape = (N, cog * groups, cig, kh, kw)
    if kind == "gauss":
        w = rng.standard_normal(shape)
    elif kind == "lowrank":   # rank-one taps: many equal singular values, large gaps
        w = np.einsum("no,nc,nuv->nocuv", rng.standard_normal(shape[:2]),
                      rng.standard_normal((N, cig)), rng.standard_normal((N, kh, kw)))
    elif kind == "ones":
        w = np.ones(shape)
    else:                      # small integers: exact ties between frequencies and groups
        w = rng.integers(-2, 3, shape).astype(float)
        w[:, 0, 0, 0, 0] = 1.0  # never all zero
    g = ConvGeometry(n, s, tuple(pads), "circular", d, groups)
    return w, g


@st.composite
def any_geometry_cases(draw, modes=("zeros", "circular")):
    groups = draw(st.integers(1, 3))
    cog, cig = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    d = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    mode = draw(st.sampled_from(modes))
    hi = (H, W) if mode == "circular" else (3, 3)
    p = (draw(st.integers(0, hi[0])), draw(st.integers(0, hi[1])))
    g = ConvGeometry((H, W), s, p, mode, d, groups)
    try:
        g.output_size((kh, kw))
    except ValueError:
        return draw(any_geometry_cases(modes))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    w = np.random.default_rng(seed).standard_normal((cog * groups, cig, kh, kw))
    return w, g


# ------------------------------------------------------------------------------------------
# the dense matrix
# ------------------------------------------------------------------------------------------
@settings(max_examples=100, **HYP)
@given(any_geometry_cases())
def test_expanded_matrix_equals_torch_conv2d(case):
    w, g = case
    a = expanded_matrix(w, g)
    c_in = w.shape[1] * g.groups
    x = np.random.default_rng(0).standard_normal((3, c_in, *g.input_size))
    y = torch_conv(x, w, g)
    assert a.shape == (y[0].size, x[0].size)
    np.testing.assert_allclose(x.reshape(3, -1) @ a.T, y.reshape(3, -1), rtol=0, atol=1e-12)


def test_expanded_matrix_batch_and_asymmetric():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 4, 2, 3, 2))                # batch of 3, groups 2
    g = ConvGeometry((7, 5), (2, 1), (1, 2), "zeros", (1, 2), groups=2)
    a = expanded_matrix(w, g)
    assert a.shape[0] == 3
    for b in range(3):
        np.testing.assert_array_equal(a[b], expanded_matrix(w[b], g))
    x = rng.standard_normal((1, 4, 7, 5))
    np.testing.assert_allclose(a[1] @ x.reshape(-1), torch_conv(x, w[1], g).reshape(-1),
                               atol=1e-12)
    assert dense_operator_norm(w, g).shape == (3,)
    assert isinstance(dense_operator_norm(w[0], g), float)


def test_expanded_matrix_circular_wraps_add_up():
    # kernel wider than the input: taps wrap onto the same pixel and add
    w = np.arange(1.0, 6.0).reshape(1, 1, 1, 5)
    g = ConvGeometry((1, 2), padding=(0, 2), padding_mode="circular")
    a = expanded_matrix(w, g)
    x = np.array([[[[1.0, 10.0]]]])
    np.testing.assert_allclose(a @ x.reshape(-1), torch_conv(x, w, g).reshape(-1))


def test_expanded_matrix_size_limit():
    g = ConvGeometry((32, 32), padding=1)
    with pytest.raises(ValueError, match="max_entries"):
        expanded_matrix(np.ones((64, 64, 3, 3)), g)
    with pytest.raises(ValueError, match="max_entries"):
        expanded_matrix(np.ones((2, 2, 3, 3)), g, max_entries=100)
    with pytest.raises(ValueError, match="`max_entries` must be"):
        expanded_matrix(np.ones((2, 2, 3, 3)), g, max_entries=0)


# ------------------------------------------------------------------------------------------
# exact circular geometries: every path against the dense SVD
# ------------------------------------------------------------------------------------------
def _check_against_dense(w, g, methods=METHODS, **kw):
    sv = dense_singular_values(w, g)                         # (N, k)
    exact, why = circular_is_exact(g, w.shape[-2:])
    assert exact, why
    for method in methods:
        res = circular_operator_norm(w, g.input_size, g.stride, g.dilation, g.groups,
                                     method=method, **kw)
        ref = sv[:, 0]
        err = np.abs(res.value - ref)
        assert np.all(err <= ACC * ref + 1e-300), (method, res.value, ref)
        # the a-posteriori bound covers the error (up to the reference SVD's own round-off)
        assert np.all(err <= res.error_bound + 64 * 2.0 ** -53 * sv.shape[1] * ref), \
            (method, err, res.error_bound)
    spec = circular_singular_values(w, g.input_size, g.stride, g.dilation, g.groups)
    assert spec.shape == sv.shape
    np.testing.assert_allclose(spec, sv, rtol=0, atol=ACC * sv[:, :1].max())


@settings(max_examples=450, **HYP)
@given(exact_circular_cases())
def test_fast_paths_match_dense_svd(case):
    _check_against_dense(*case)


@settings(max_examples=100, **HYP)
@given(exact_circular_cases(max_c=12, max_m=3, max_groups=1))
def test_fast_paths_match_dense_svd_more_channels(case):
    _check_against_dense(*case, methods=("auto", "fast"))


@pytest.mark.parametrize("kind", ["gauss", "smooth", "lowrank", "ties"])
@pytest.mark.parametrize("stride,k", [(1, 3), (2, 4)])
def test_pruning_on_medium_kernels(kind, stride, k):
    """Sizes where the Lanczos runs stop well before the Krylov space is exhausted, so that
    the pruning and stopping rules are exercised (d = 24 or 32; 36 or 9 frequencies)."""
    rng = np.random.default_rng(7)
    c = 24 if stride == 1 else 32
    w = rng.standard_normal((2, c, c, k, k))
    if kind == "smooth":          # energy at low frequencies: most frequencies pruned early
        w = 0.2 * w + rng.standard_normal((2, c, c, 1, 1))
    elif kind == "lowrank":
        w = np.einsum("no,nc,nuv->nocuv", rng.standard_normal((2, c)),
                      rng.standard_normal((2, c)), rng.standard_normal((2, k, k)))
        w += 1e-3 * rng.standard_normal(w.shape)
    elif kind == "ties":          # symmetric taps: K(g) and K(g') share their spectra
        w = w + w[..., ::-1, :] + w[..., :, ::-1] + w[..., ::-1, ::-1]
    n = 6
    g = ConvGeometry((n, n), stride, (k - 1) // 2 if stride == 1 else 1, "circular")
    _check_against_dense(w, g)
    full = circular_operator_norm(w, (n, n), stride, prune=False)
    pr = circular_operator_norm(w, (n, n), stride)
    np.testing.assert_allclose(pr.value, full.value, rtol=1e-10)
    if kind == "smooth":
        assert np.all(pr.pruned > 0) and np.all(pr.iterations < full.iterations)


def test_result_shapes_and_determinism():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 16, 8, 3, 3))
    res = circular_operator_norm(w, (8, 8), groups=2)
    assert isinstance(res, CircularNorm)
    assert res.value.shape == (3,) and res.frequency.shape == (3, 2)
    assert res.n_frequencies == 2 * half_frequencies((8, 8))[0].shape[0]
    one = circular_operator_norm(w[1], (8, 8), groups=2)
    assert isinstance(one.value, float) and one.frequency.shape == (2,)
    assert one.value == res.value[1]                  # batch independent, bitwise
    big = rng.standard_normal((64, 64, 3, 3))        # large enough for the threaded path
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = circular_operator_norm(w, (8, 8), groups=2)
        big1 = circular_operator_norm(big, 24)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        big2 = circular_operator_norm(big, 24)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(serial.value, res.value)
    np.testing.assert_array_equal(serial.iterations, res.iterations)
    assert (big1.value, big1.iterations, big1.pruned) == (big2.value, big2.iterations,
                                                          big2.pruned)
    # the argmax frequency and group hold the maximum
    K = circular_symbol(w[1], (8, 8), groups=2)       # (groups, F, co, ci)
    for method in METHODS:
        r = circular_operator_norm(w[1], (8, 8), groups=2, method=method)
        f = r.frequency[0] * 8 + r.frequency[1]
        np.testing.assert_allclose(np.linalg.norm(K[r.group, f], 2), r.value, rtol=1e-12)


def test_half_frequencies_cover_the_grid():
    for grid in [(1, 1), (1, 4), (5, 1), (4, 6), (5, 7), (6, 5)]:
        f, mult = half_frequencies(grid)
        assert mult.sum() == grid[0] * grid[1]
        seen = set()
        for (a, b), m in zip(f, mult):
            seen.add((a, b))
            seen.add(((-a) % grid[0], (-b) % grid[1]))
            assert m == (1 if (a, b) == ((-a) % grid[0], (-b) % grid[1]) else 2)
        assert len(seen) == grid[0] * grid[1]


# ------------------------------------------------------------------------------------------
# the symbol is the layer in the Fourier domain
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,s,d,p,groups", [(3, 1, 1, 1, 1), (5, 1, 2, 4, 1), (4, 2, 1, 1, 2),
                                            (3, 2, 2, 2, 1), (3, 3, 1, 1, 1), (2, 2, 3, 1, 1)])
def test_symbol_diagonalises_the_layer(k, s, d, p, groups):
    rng = np.random.default_rng(k + s + d)
    c_in, c_out = 2 * groups, 3 * groups
    n = (4 * s, 5 * s)
    g = ConvGeometry(n, s, p, "circular", d, groups)
    assert circular_is_exact(g, k)[0]
    w = rng.standard_normal((c_out, c_in // groups, k, k))
    x = rng.standard_normal((1, c_in, *n))
    Y = np.fft.fft2(torch_conv(x, w, g)[0])                              # (c_out, m1, m2)
    K = circular_symbol(w, n, s, d, offset=(p, p), groups=groups)
    m1, m2 = n[0] // s, n[1] // s
    if groups == 1:
        K = K[None]
    for gr in range(groups):
        xs = x[0, gr * 2:(gr + 1) * 2].reshape(2, m1, s, m2, s).transpose(0, 2, 4, 1, 3)
        X = np.fft.fft2(xs).reshape(-1, m1 * m2)                         # (ci s^2, F)
        pred = np.einsum("foc,cf->of", K[gr], X).reshape(-1, m1, m2)
        np.testing.assert_allclose(pred, Y[gr * 3:(gr + 1) * 3], atol=1e-10)


# ------------------------------------------------------------------------------------------
# non-exact circular geometries: certified upper bounds
# ------------------------------------------------------------------------------------------
@settings(max_examples=150, **HYP)
@given(any_geometry_cases(modes=("circular",)))
def test_non_exact_circular_geometries_are_bounded(case):
    w, g = case
    exact, why = circular_is_exact(g, w.shape[-2:])
    dense = dense_operator_norm(w, g)
    res = circular_layer_norm(w, g, exact_only=False)
    assert res.exact == exact and res.reason == why and why
    if exact:
        np.testing.assert_allclose(res.value, dense, rtol=ACC)
        assert res.bound_factor == 1.0
        return
    assert res.value >= dense * (1 - 1e-12)
    with pytest.raises(ValueError, match="not exact"):
        circular_layer_norm(w, g)
    strides, factor = circular_bound_setup(g, w.shape[-2:])
    assert factor == res.bound_factor
    if factor == 1.0:      # no output row repeats: the torus norm itself is the bound
        torus = circular_operator_norm(w, g.input_size, strides, g.dilation, g.groups)
        assert torus.value >= dense * (1 - 1e-12)


def test_non_exact_reasons():
    ok, why = circular_is_exact(ConvGeometry((7, 8), 2, 1, "circular"), (3, 3))
    assert not ok and "stride 2 does not divide input height 7" in why
    ok, why = circular_is_exact(ConvGeometry((8, 8), 1, 0, "circular"), (3, 3))
    assert not ok and "less than full" in why
    ok, why = circular_is_exact(ConvGeometry((4, 4), 1, 1, "circular"), (1, 1))
    assert not ok and "repeat" in why
    ok, why = circular_is_exact(ConvGeometry((8, 8), 1, 1, "zeros"), (3, 3))
    assert not ok and "zeros" in why
    ok, why = circular_is_exact(ConvGeometry((8, 8), 2, 1, "circular"), (4, 4))
    assert ok and "exact" in why
    # repeated rows: k = 1, p = 1 reads x3 x0 x1 x2 x3 x0: norm sqrt(2) * sqrt(2) in 2-D
    g = ConvGeometry((4, 4), 1, 1, "circular")
    w = np.ones((1, 1, 1, 1))
    res = circular_layer_norm(w, g, exact_only=False)
    assert res.bound_factor == 2.0
    np.testing.assert_allclose(res.value, dense_operator_norm(w, g), rtol=1e-12)


# ------------------------------------------------------------------------------------------
# the ratio bound is attained (THEORY.md, R)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3, 8])
def test_all_ones_kernels_reach_alpha(c):
    w3 = np.ones((c, c, 3, 3))
    hat3 = np.linalg.norm(reshape_kernel(w3), 2)
    assert hat3 == pytest.approx(3 * c)
    g3 = ConvGeometry((8, 8), 1, 1, "circular")
    for method in METHODS:
        res = circular_layer_norm(w3, g3, method=method)
        assert res.value == pytest.approx(3 * hat3, rel=1e-12)          # alpha = 3
    w4 = np.ones((c, c, 4, 4))
    hat4 = np.linalg.norm(reshape_kernel(w4), 2)
    g4 = ConvGeometry((8, 8), 2, 1, "circular")
    for method in METHODS:
        res = circular_layer_norm(w4, g4, method=method)
        assert res.value == pytest.approx(2 * hat4, rel=1e-12)          # alpha = 2
    assert dense_operator_norm(w4, g4) == pytest.approx(2 * hat4, rel=1e-12)


def test_torch_spectral_norm_layer_has_circular_norm_about_alpha_half():
    """A 64->128 3x3 conv normalised by torch's SN (w^ has norm 1) has an operator norm on a
    32x32 circular input around 1.65 (the issue's figure), between 1 and alpha = 3."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 128, 3, padding=1, padding_mode="circular", bias=False)
    sn = torch.nn.utils.parametrizations.spectral_norm(conv, n_power_iterations=50)
    sn.train()
    with torch.no_grad():
        for _ in range(4):
            sn(torch.zeros(1, 64, 8, 8))
    sn.eval()
    w = sn.weight.detach().double().numpy()
    hat = np.linalg.norm(reshape_kernel(w), 2)
    assert hat == pytest.approx(1.0, rel=1e-5)
    g = ConvGeometry.from_module(conv, (32, 32))
    res = circular_layer_norm(w, g)
    print(f"\ncircular operator norm of the SN'd 64->128 3x3 conv on 32x32: {res.value:.4f} "
          f"(||w^|| = {hat:.6f}, error bound {res.error_bound:.1e})")
    assert 1.0 < res.value < 3.0
    # cross-check with power iteration on the layer itself (torch, float64)
    wt = torch.from_numpy(w)
    x = torch.randn(1, 64, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    flip = wt.flip(2, 3).transpose(0, 1)
    for _ in range(40):
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), wt)
        x = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="circular"), flip)
        x = x / x.norm()
    y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), wt)
    assert float(y.norm()) <= res.value + res.error_bound
    assert float(y.norm()) >= 0.9 * res.value


# ------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------
def test_bad_kernel_ndim():
    with pytest.raises(ValueError, match="`w` must be a conv kernel"):
        circular_operator_norm(np.ones((3, 3, 3)), 8)
    with pytest.raises(ValueError, match="`w` must be a conv kernel"):
        expanded_matrix(np.ones((3, 3)), ConvGeometry((4, 4)))


def test_nan_weights():
    w = np.ones((2, 2, 3, 3))
    w[1, 0, 2, 1] = np.nan
    with pytest.raises(ValueError, match=r"`w` must be finite, but w\[1, 0, 2, 1\]"):
        circular_operator_norm(w, 8)
    with pytest.raises(ValueError, match="must be finite"):
        dense_operator_norm(w, ConvGeometry((4, 4)))


def test_empty_output_geometry():
    g = ConvGeometry((2, 2), 1, 0, "circular")
    with pytest.raises(ValueError, match="empty output"):
        circular_is_exact(g, (3, 3))
    with pytest.raises(ValueError, match="empty output"):
        circular_layer_norm(np.ones((1, 1, 3, 3)), g)
    with pytest.raises(ValueError, match="empty output"):
        expanded_matrix(np.ones((1, 1, 3, 3)), g)


def test_stride_must_divide_torus():
    with pytest.raises(ValueError, match=r"`stride` \(2, 2\) must divide `torus_size` \(7, 8\)"):
        circular_operator_norm(np.ones((1, 1, 3, 3)), (7, 8), 2)
    with pytest.raises(ValueError, match="does not divide the height 7"):
        circular_symbol(np.ones((1, 1, 3, 3)), (7, 8), 2)
    with pytest.raises(ValueError, match="must divide `torus_size`"):
        circular_singular_values(np.ones((1, 1, 3, 3)), (8, 10), (1, 3))


def test_bad_groups_method_rtol_mode():
    with pytest.raises(ValueError, match="`groups` = 2 must divide c_out = 3"):
        circular_operator_norm(np.ones((3, 1, 3, 3)), 8, groups=2)
    with pytest.raises(ValueError, match="`method` must be one of"):
        circular_operator_norm(np.ones((1, 1, 3, 3)), 8, method="lanczos")
    with pytest.raises(ValueError, match="`rtol` must be in"):
        circular_operator_norm(np.ones((1, 1, 3, 3)), 8, rtol=2.0)
    with pytest.raises(ValueError, match="padding_mode"):
        circular_layer_norm(np.ones((1, 1, 3, 3)), ConvGeometry((8, 8), padding=1))
    with pytest.raises(TypeError, match="`geometry` must be a ConvGeometry"):
        expanded_matrix(np.ones((1, 1, 3, 3)), (8, 8))


def test_zero_kernel_has_norm_zero():
    res = circular_operator_norm(np.zeros((2, 2, 3, 3)), 4)
    assert res.value == 0.0 and res.error_bound == 0.0


@pytest.mark.parametrize("scale", [1e-300, 1e307])
def test_extreme_scales_are_exact(scale):
    """Exact power-of-two scaling inside: no overflow or underflow for any finite kernel."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((2, 6, 5, 3, 3))
    ref = circular_singular_values(w, 6)
    for method in METHODS:
        res = circular_operator_norm(w * scale, 6, method=method)
        np.testing.assert_allclose(res.value / scale, ref[:, 0], rtol=1e-13)
    np.testing.assert_allclose(circular_singular_values(w * scale, 6) / scale, ref, rtol=1e-12,
                               atol=1e-13 * ref.max())
