"""Example plug-in for ``sntheory try``: divide a conv kernel by the geometric mean of its
two reshaped spectral norms.

The idea. SNw divides a kernel ``w`` (``c_out x c_in x kh x kw``) by ``||w^||``, the spectral
norm of the ``c_out x (c_in kh kw)`` reshape; BSN divides by the *arithmetic* mean
``(||w^|| + ||w^'||) / 2`` of that norm and the norm of the transposed reshape ``w^'``
(``c_in x (c_out kh kw)``), which makes the variance of the normalized entries
~ 1/(fan_in + fan_out), Xavier's law (Theorem 3). What does the *geometric* mean
``sqrt(||w^|| ||w^'||)`` do?

Expectation, from Theorem 2's asymptotics ``||A||_sp ~ sqrt m + sqrt n`` for ``m x n`` Gaussian
matrices: ``||w^|| ~ sqrt(c_out) + sqrt(c_in k)`` and ``||w^'|| ~ sqrt(c_in) + sqrt(c_out k)``
(``k = kh kw``). The geometric mean never exceeds the arithmetic one (AM-GM), so the weights come
out slightly *larger* than BSN's, by the factor ``(x + y) / (2 sqrt(x y))`` with ``x = ||w^||``,
``y = ||w^'||``: 1 for square kernels, about 1.06 for the 3 -> 64 3x3 first layer of a CIFAR
discriminator (x ~ 13.2, y ~ 25.7). A dense weight has ``||W^T|| = ||W||``, so on dense layers the
idea is exactly SNw.

The function below is a *plain function* plug-in: ``weight -> normalized weight``, with the layer
kind as an optional keyword (the battery passes ``kind="conv"`` or ``kind="linear"``). Try it::

    sntheory try experiments/try_example/geomean_norm.py:geomean_normalize --out try-geomean

or from Python::

    from sntheory.plugin import try_normalizer, format_summary
    result = try_normalizer("experiments/try_example/geomean_norm.py:geomean_normalize",
                            out="try-geomean")
    print(format_summary(result))
"""
from __future__ import annotations

import torch


def geomean_normalize(weight: torch.Tensor, *, kind: str = "conv",
                      eps: float = 1e-12) -> torch.Tensor:
    """``W / sqrt(||w^||_sp ||w^'||_sp)`` for conv kernels, ``W / ||W||_sp`` for dense weights.

    Exact spectral norms (``torch.linalg.matrix_norm(ord=2)``, an SVD), differentiable: the
    gradient flows through both norms. ``eps`` keeps an all-zero kernel finite.
    """
    if kind == "linear" or weight.ndim == 2:
        return weight / torch.linalg.matrix_norm(weight, ord=2).clamp_min(eps)
    w_hat = weight.flatten(1)                      # (c_out, c_in kh kw)
    w_hat_t = weight.transpose(0, 1).flatten(1)    # (c_in, c_out kh kw)
    sigma = torch.sqrt(torch.linalg.matrix_norm(w_hat, ord=2)
                       * torch.linalg.matrix_norm(w_hat_t, ord=2))
    return weight / sigma.clamp_min(eps)
