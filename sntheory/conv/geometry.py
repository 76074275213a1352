"""The geometry of a 2-D convolution layer and the kernel reshapes of the paper.

A conv layer with kernel ``w`` of shape ``(c_out, c_in / groups, kh, kw)`` acts on inputs of shape
``(c_in, H, W)`` as a linear map, the *expanded matrix* ``w~`` of shape
``(c_out * H_out * W_out, c_in * H * W)``. Its geometry — input size, stride, padding amount and
mode, dilation, groups — follows ``torch.nn.Conv2d`` exactly:

* ``padding_mode='zeros'``: the input is padded with ``padding`` zeros on each side;
* ``padding_mode='circular'``: it is padded by wrapping around (torch's ``F.pad(mode='circular')``);
* then a "valid" correlation with the dilated kernel and the stride:
  ``H_out = floor((H + 2 p_h - d_h (kh - 1) - 1) / s_h) + 1`` (likewise for W).

Kernels are accepted as ``(c_out, c_in_per_group, kh, kw)`` or batched
``(N, c_out, c_in_per_group, kh, kw)``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .._validation import require_finite_array

__all__ = ["ConvGeometry", "as_kernel_batch", "reshape_kernel", "reshape_kernel_transposed"]

PADDING_MODES = ("zeros", "circular")


def _pair(name: str, value, minimum: int) -> tuple[int, int]:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be an int or a pair of ints, got {value!r}") from None
    for v in (a, b):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"`{name}` must be an int or a pair of ints, got {value!r}")
        if v < minimum:
            raise ValueError(f"`{name}` must be >= {minimum} in each direction, got {value!r}")
    return int(a), int(b)


@dataclass(frozen=True)
class ConvGeometry:
    """Input size, stride, padding (amount and mode), dilation and groups of a conv layer.

    ``padding`` is the number of pixels added on each side (torch's ``padding=(p_h, p_w)``);
    use :meth:`same` for 'same' padding of odd kernels.
    """

    input_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    padding_mode: str = "zeros"
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", _pair("input_size", self.input_size, 1))
        object.__setattr__(self, "stride", _pair("stride", self.stride, 1))
        object.__setattr__(self, "padding", _pair("padding", self.padding, 0))
        object.__setattr__(self, "dilation", _pair("dilation", self.dilation, 1))
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"`padding_mode` must be one of {PADDING_MODES}, "
                             f"got {self.padding_mode!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, numbers.Integral) \
                or self.groups < 1:
            raise ValueError(f"`groups` must be an integer >= 1, got {self.groups!r}")
        if self.padding_mode == "circular":
            for p, n, axis in zip(self.padding, self.input_size, "HW"):
                if p > n:
                    raise ValueError(f"circular `padding` {self.padding} wraps more than the "
                                     f"input ({axis} = {n}): torch requires padding <= input size")

    @classmethod
    def same(cls, input_size, kernel_size, *, stride=1, padding_mode: str = "zeros",
             dilation=1, groups: int = 1) -> "ConvGeometry":
        """'same' padding ``d (k - 1) / 2`` per side (odd effective kernel sizes only)."""
        kh, kw = _pair("kernel_size", kernel_size, 1)
        dh, dw = _pair("dilation", dilation, 1)
        pads = []
        for k, d, axis in ((kh, dh, "height"), (kw, dw, "width")):
            if (d * (k - 1)) % 2:
                raise ValueError(f"'same' padding needs an odd effective kernel {axis}, got "
                                 f"kernel {k} with dilation {d}")
            pads.append(d * (k - 1) // 2)
        return cls(input_size, stride, tuple(pads), padding_mode, dilation, groups)

    @classmethod
    def from_module(cls, module, input_size) -> "ConvGeometry":
        """The geometry of a ``torch.nn.Conv2d`` applied to inputs of ``input_size`` (H, W)."""
        padding = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            else:  # 'same' with stride 1 (torch forbids 'same' with stride > 1)
                padding = tuple(d * (k - 1) // 2 for k, d in zip(module.kernel_size,
                                                                 module.dilation))
                if any((d * (k - 1)) % 2 for k, d in zip(module.kernel_size, module.dilation)):
                    raise ValueError("padding='same' with an even effective kernel pads "
                                     "asymmetrically; sntheory supports symmetric padding only")
        mode = module.padding_mode
        if mode not in PADDING_MODES:
            raise ValueError(f"padding_mode {mode!r} of {module} is not supported "
                             f"(supported: {PADDING_MODES})")
        return cls(input_size, module.stride, padding, mode, module.dilation, module.groups)

    def output_size(self, kernel_size) -> tuple[int, int]:
        """``(H_out, W_out)``; raises if the output would be empty."""
        kh, kw = _pair("kernel_size", kernel_size, 1)
        out = []
        for n, p, d, k, s, axis in zip(self.input_size, self.padding, self.dilation, (kh, kw),
                                       self.stride, ("height", "width")):
            span = d * (k - 1) + 1
            size = (n + 2 * p - span) // s + 1
            if n + 2 * p < span or size < 1:
                raise ValueError(f"the geometry yields an empty output: input {axis} {n} with "
                                 f"padding {p} is smaller than the effective kernel {axis} {span} "
                                 f"(kernel {k}, dilation {d})")
            out.append(size)
        return out[0], out[1]

    def check_kernel(self, kernel_shape: Sequence[int]) -> None:
        """Raise if a ``(c_out, c_in_per_group, kh, kw)`` kernel does not fit this geometry."""
        c_out, _, kh, kw = kernel_shape
        if c_out % self.groups:
            raise ValueError(f"`groups` = {self.groups} must divide c_out = {c_out}")
        self.output_size((kh, kw))


def as_kernel_batch(w, name: str = "w") -> tuple[np.ndarray, bool]:
    """``(N, c_out, c_in, kh, kw)`` float array and whether the input was a single kernel.

    Accepts numpy arrays, torch tensors (detached, moved to CPU) and nested lists.
    """
    if hasattr(w, "detach"):  # torch tensor without importing torch
        w = w.detach().cpu().numpy()
    arr = np.asarray(w)
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"`{name}` must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in (4, 5):
        raise ValueError(f"`{name}` must be a conv kernel of shape (c_out, c_in, kh, kw) or a "
                         f"batch (N, c_out, c_in, kh, kw), got shape {arr.shape}")
    if 0 in arr.shape:
        raise ValueError(f"`{name}` has an empty dimension: shape {arr.shape}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    require_finite_array(name, arr)
    single = arr.ndim == 4
    return (arr[None] if single else arr), single


def reshape_kernel(w: np.ndarray) -> np.ndarray:
    """``w^``: ``(..., c_out, c_in, kh, kw) -> (..., c_out, c_in * kh * kw)`` (torch's SN reshape)."""
    return w.reshape(*w.shape[:-4], w.shape[-4], -1)


def reshape_kernel_transposed(w: np.ndarray) -> np.ndarray:
    """``w^'``: c_in and c_out swapped, then reshaped: ``(..., c_in, c_out * kh * kw)``."""
    return reshape_kernel(np.swapaxes(w, -4, -3))
