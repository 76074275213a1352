"""Convolution layers as linear operators: geometry, expanded matrices, exact operator norms.

Public names are re-exported here; implementation lives in the submodules.
"""
from .geometry import ConvGeometry, as_kernel_batch, reshape_kernel, reshape_kernel_transposed

__all__ = ["ConvGeometry", "as_kernel_batch", "reshape_kernel", "reshape_kernel_transposed"]
