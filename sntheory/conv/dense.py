"""The dense expanded matrix ``w~`` of a conv layer, and its exact singular values.

This is the ground truth for every fast operator-norm path (see THEORY.md, "Exact operator
norms of conv layers"): the matrix is built entry by entry from the kernel and the geometry,
then a full float64 SVD gives the spectrum.  Only for small layers: the matrix has
``c_out * H_out * W_out`` rows and ``c_in * H * W`` columns.

Ordering (torch's flattening of ``(C, H, W)``): row ``(o * H_out + i) * W_out + j`` is output
channel ``o`` at position ``(i, j)``; column ``(c * H + r) * W + q`` is input channel ``c`` at
``(r, q)``.  So ``w~ @ x.reshape(-1) == conv(x).reshape(-1)`` for one input ``x`` of shape
``(c_in, H, W)``.

Entries (torch ``Conv2d`` semantics): output ``(o, i, j)`` reads input row
``r = i s_h - p_h + u d_h`` and column ``q = j s_w - p_w + v d_w`` for kernel tap ``(u, v)``;
with ``padding_mode='zeros'`` taps outside ``[0, H) x [0, W)`` read zeros, with
``'circular'`` the indices are taken mod ``H`` and ``W`` (torch pads by wrapping, then runs a
valid convolution; padding ``<= H`` is required, and then wrapping once equals taking mod).
Taps that wrap onto the same input pixel add up.  Groups: output channel ``o`` of group
``g = o // (c_out / groups)`` sees input channels ``g * c_in_g ... (g + 1) * c_in_g - 1``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .geometry import ConvGeometry, as_kernel_batch

__all__ = ["expanded_matrix", "dense_operator_norm", "dense_singular_values",
           "DEFAULT_MAX_ENTRIES"]

DEFAULT_MAX_ENTRIES = 50_000_000     # 400 MB of float64 per call


def _check_geometry(geometry) -> ConvGeometry:
    if not isinstance(geometry, ConvGeometry):
        raise TypeError(f"`geometry` must be a ConvGeometry, got {type(geometry).__name__}")
    return geometry


def _check_max_entries(max_entries) -> int:
    if isinstance(max_entries, bool) or not isinstance(max_entries, numbers.Real) \
            or not max_entries >= 1:
        raise ValueError(f"`max_entries` must be a number >= 1, got {max_entries!r}")
    return int(max_entries)


def _shapes(w: np.ndarray, geometry: ConvGeometry):
    """(c_out, c_in, c_out_g, c_in_g, kh, kw, Ho, Wo) of a (N, c_out, c_in_g, kh, kw) batch."""
    c_out, c_in_g, kh, kw = w.shape[1:]
    geometry.check_kernel((c_out, c_in_g, kh, kw))
    ho, wo = geometry.output_size((kh, kw))
    g = geometry.groups
    return c_out, c_in_g * g, c_out // g, c_in_g, kh, kw, ho, wo


def _tap_indices(n_out: int, n_in: int, s: int, p: int, d: int, u: int, circular: bool):
    """Output positions that tap ``u`` reaches inside the input, and the input index each reads."""
    i = np.arange(n_out)
    r = i * s - p + u * d
    if circular:
        return i, r % n_in
    ok = (r >= 0) & (r < n_in)
    return i[ok], r[ok]


def expanded_matrix(w, geometry: ConvGeometry, *, max_entries: int = DEFAULT_MAX_ENTRIES
                    ) -> np.ndarray:
    """The dense float64 matrix ``w~`` of the layer, shape ``(c_out*H_out*W_out, c_in*H*W)``.

    Parameters
    ----------
    w : array_like or torch.Tensor
        Kernel ``(c_out, c_in / groups, kh, kw)`` or a batch ``(N, c_out, c_in / groups, kh, kw)``.
    geometry : ConvGeometry
        Input size, stride, padding (amount and mode), dilation, groups.
    max_entries : int
        Refuse to build more than this many entries in total (all kernels of a batch):
        a ValueError says how large the matrix would be.

    Returns
    -------
    ndarray, float64
        ``(rows, cols)`` for one kernel, ``(N, rows, cols)`` for a batch.  Exact: every entry
        is a kernel weight or a sum of the weights that wrap onto the same pixel.
    """
    geometry = _check_geometry(geometry)
    max_entries = _check_max_entries(max_entries)
    wb, single = as_kernel_batch(w)
    wb = wb.astype(np.float64, copy=False)
    N = wb.shape[0]
    c_out, c_in, cog, cig, kh, kw, ho, wo = _shapes(wb, geometry)
    H, W = geometry.input_size
    rows, cols = c_out * ho * wo, c_in * H * W
    total = N * rows * cols
    if total > max_entries:
        raise ValueError(f"the expanded matrix would have {N} x {rows} x {cols} = {total:,} "
                         f"entries, more than `max_entries` = {max_entries:,}; pass a larger "
                         f"`max_entries` or use sntheory.conv.fft.circular_operator_norm")
    (sh, sw), (ph, pw), (dh, dw) = geometry.stride, geometry.padding, geometry.dilation
    circular = geometry.padding_mode == "circular"
    # built as (Ho, Wo, H, W, N, c_out, c_in) so that one tap is one fancy-indexed block
    a = np.zeros((ho, wo, H, W, N, c_out, c_in))
    for u in range(kh):
        iu, ru = _tap_indices(ho, H, sh, ph, dh, u, circular)
        if iu.size == 0:
            continue
        for v in range(kw):
            jv, cv = _tap_indices(wo, W, sw, pw, dw, v, circular)
            if jv.size == 0:
                continue
            ii, jj = iu[:, None], jv[None, :]
            rr, cc = ru[:, None], cv[None, :]
            for g in range(geometry.groups):
                # within one tap the output positions are distinct, so += has no collisions
                a[ii, jj, rr, cc, :, g * cog:(g + 1) * cog, g * cig:(g + 1) * cig] += \
                    wb[:, g * cog:(g + 1) * cog, :, u, v]
    a = a.transpose(4, 5, 0, 1, 6, 2, 3).reshape(N, rows, cols)
    return a[0] if single else a


def dense_singular_values(w, geometry: ConvGeometry, *,
                          max_entries: int = DEFAULT_MAX_ENTRIES) -> np.ndarray:
    """All singular values of ``w~`` (full float64 SVD), sorted descending.

    ``(min(rows, cols),)`` for one kernel, ``(N, min(rows, cols))`` for a batch.
    """
    a = expanded_matrix(w, geometry, max_entries=max_entries)
    return np.linalg.svd(a, compute_uv=False)


def dense_operator_norm(w, geometry: ConvGeometry, *,
                        max_entries: int = DEFAULT_MAX_ENTRIES):
    """``||w~||_2`` by a full float64 SVD: a float for one kernel, an ``(N,)`` array for a batch."""
    s = dense_singular_values(w, geometry, max_entries=max_entries)
    return float(s[0]) if s.ndim == 1 else s[:, 0].copy()
