"""The float32 fast path of :func:`sntheory.conv.operator.conv_operator_norm` (``dtype=``).

Ground truth: :func:`sntheory.conv.dense.dense_operator_norm` (full float64 SVD) on random
zero-padding geometries small enough for it, the Lanczos path forced; the float64 path on a
CIFAR-like layer. The documented tolerance of ``value`` with ``dtype="float32"`` is 1e-5
relative; ``[lower, upper]`` stays a certified interval.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sntheory.conv.dense import dense_operator_norm
from sntheory.conv.geometry import ConvGeometry
from sntheory.conv.operator import conv_operator_norm

TOL = 1e-5             # documented relative tolerance of `value` for dtype="float32"
SLACK = 1e-11          # round-off allowance of the dense SVD when checking the interval


def _random_geometries(n, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(1, 5))
        s = int(rng.integers(1, 3))
        d = int(rng.integers(1, 3))
        lo = max(k * d, 4)
        hw = (int(rng.integers(lo, 11)), int(rng.integers(lo, 11)))
        p = int(rng.integers(0, k))
        ci, co = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        g = ConvGeometry(hw, s, p, "zeros", d)
        out.append((g, rng.standard_normal((co, ci, k, k))))
    return out


def test_float32_matches_dense_on_random_zero_padding_geometries():
    cases = _random_geometries(44)
    for g, w in cases:
        ref = dense_operator_norm(w, g)
        res = conv_operator_norm(w, g, method="lanczos", dtype="float32")
        assert res.method == "lanczos" and "float32" in res.note
        assert abs(res.value - ref) <= TOL * ref, (g, w.shape, res.value, ref)
        assert res.lower <= ref * (1 + SLACK), (g, res.lower, ref)
        assert ref <= res.upper * (1 + SLACK), (g, res.upper, ref)
        assert res.lower <= res.value <= res.upper


def test_float32_batch_matches_float64():
    rng = np.random.default_rng(5)
    g = ConvGeometry((9, 7), 2, 1)
    w = rng.standard_normal((3, 4, 3, 3, 3))
    r32 = conv_operator_norm(w, g, method="lanczos", dtype="float32")
    r64 = conv_operator_norm(w, g, method="lanczos")
    ref = dense_operator_norm(w, g)
    np.testing.assert_allclose(r32.value, ref, rtol=TOL)
    np.testing.assert_allclose(r32.value, r64.value, rtol=TOL)
    assert np.all(r32.lower <= ref * (1 + SLACK)) and np.all(ref <= r32.upper * (1 + SLACK))
    np.testing.assert_array_equal(r32.upper, r64.upper)      # the float64 torus bound


def test_float32_cifar_layer_matches_float64():
    torch.manual_seed(0)
    w = torch.nn.Conv2d(128, 256, 3, 1, 1, bias=False).weight.detach().double()
    g = ConvGeometry((8, 8), 1, 1)
    r64 = conv_operator_norm(w, g)
    r32 = conv_operator_norm(w, g, dtype="float32")
    assert r32.method == r64.method == "lanczos"
    assert r32.converged
    assert abs(r32.value - r64.value) <= TOL * r64.value
    assert r32.upper == r64.upper
    # both lower bounds are certified: each lies below the other run's upper bound
    assert r32.lower <= r64.upper and r64.lower <= r32.upper
    assert r32.lower <= r32.value <= r32.upper


def test_float32_exact_paths_fall_back_to_float64():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3))
    g = ConvGeometry((8, 8), 1, 1, "circular")
    r64 = conv_operator_norm(w, g)
    r32 = conv_operator_norm(w, g, dtype="float32")
    assert r32.method == "fft"
    assert (r32.value, r32.lower, r32.upper) == (r64.value, r64.lower, r64.upper)
    assert "ignored" in r32.note and "float64" in r32.note
    gz = ConvGeometry((6, 6), 1, 1)
    r32 = conv_operator_norm(w, gz, dtype="float32")
    assert r32.method == "dense" and "ignored" in r32.note
    assert r32.value == conv_operator_norm(w, gz).value


@pytest.mark.parametrize("bad", ["float16", "double", "FLOAT32", np.float32, torch.float32,
                                 None, 32])
def test_bad_dtype_raises(bad):
    w = np.ones((2, 2, 3, 3))
    with pytest.raises(ValueError, match="dtype"):
        conv_operator_norm(w, ConvGeometry((8, 8), 1, 1), dtype=bad)
