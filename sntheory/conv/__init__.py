"""Convolution layers as linear operators: geometry, expanded matrices, exact operator norms.

* :class:`ConvGeometry` — input size, stride, padding amount and mode, dilation, groups
  (``torch.nn.Conv2d`` semantics).
* :func:`reshaped_kernel_norm` (``||w^||``, what SNw divides by) and its transposed twin.
* :func:`expanded_matrix` — the dense ``w~`` for small sizes (the ground truth of every test).
* :func:`conv_operator_norm` — ``||w~||``: exact via FFT for circular geometries that cover the
  torus (any stride dividing the input, polyphase), else a certified interval (torus-embedding upper
  bound, Lanczos lower bound) around a converged value. :func:`circular_singular_values` gives the
  full spectrum of circular layers.
* :func:`coverage_alpha` — the exact ``alpha`` of ``||w^|| <= ||w~|| <= alpha ||w^||`` and the
  condition under which the lower bound applies.

Public names are re-exported here; implementation lives in the submodules.
"""
from .alpha import AlphaResult, coverage_alpha
from .dense import dense_operator_norm, dense_singular_values, expanded_matrix
from .fft import (CircularNorm, circular_is_exact, circular_layer_norm, circular_operator_norm,
                  circular_singular_values, circular_symbol)
from .geometry import ConvGeometry, as_kernel_batch, reshape_kernel, reshape_kernel_transposed
from .operator import ConvNormResult, conv_operator_norm, layer_norms
from .reshaped import reshaped_kernel_norm, reshaped_kernel_norm_transposed

__all__ = ["ConvGeometry", "as_kernel_batch", "reshape_kernel", "reshape_kernel_transposed",
           "reshaped_kernel_norm", "reshaped_kernel_norm_transposed", "expanded_matrix",
           "dense_operator_norm", "dense_singular_values", "conv_operator_norm", "ConvNormResult",
           "layer_norms", "circular_operator_norm", "circular_singular_values", "circular_symbol",
           "circular_is_exact", "circular_layer_norm", "CircularNorm", "coverage_alpha",
           "AlphaResult"]
