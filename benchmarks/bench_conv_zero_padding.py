"""Operator norms of the paper's CIFAR10 discriminator layers ('same'-style zero padding).

For each conv layer of Miyato's CNN (THEORY.md, "What the paper measured") with PyTorch's
default init, times :func:`sntheory.conv.operator.conv_operator_norm` (Lanczos value, certified
lower bound, certified torus upper bound) and, where the layer is small enough, checks the value
against the largest eigenvalue of the dense Gram matrix ``A^T A`` (built column by column with
``conv2d``/``conv_transpose2d``, then ``scipy.linalg.eigh``).

    python benchmarks/bench_conv_zero_padding.py [--rtol 1e-6] [--repeat 3] [--dense-max 4096]
        [--threads 1] [--seed 0]

Times are wall-clock medians over ``--repeat`` runs of one call per layer (single kernel);
``dense`` is the relative deviation ``|value - dense| / dense`` (blank where the Gram matrix
would be larger than ``--dense-max``); ``tight`` the deviation from a run with ``rtol = 1e-10``
(not a certificate: a cross-check of convergence where the dense matrix is out of reach).

Measured (2-core shared VM, load ~2-4 from other jobs, one thread, ``--dense-max 8192``)::

    layer                       time s matvec          value  rel.width     dense     tight
    conv3x3/s1 3->64 @32         0.063     87    3.281042105   1.22e-03   1.9e-08   1.9e-08
    conv4x4/s2 64->64 @32        0.783     99    0.883510343   2.06e-03             1.0e-08
    conv3x3/s1 64->128 @16       0.376     93    1.420501121   5.46e-03             5.0e-09
    conv4x4/s2 128->128 @16      0.742     90    0.862265774   5.61e-03             1.8e-08
    conv3x3/s1 128->256 @8       0.547    123    1.374995365   1.47e-02   1.1e-08   1.1e-08
    conv4x4/s2 256->256 @8       1.583    141    0.833288432   3.64e-02             5.4e-09
    conv3x3/s1 256->512 @4       1.038     93    1.264303150   1.02e-01   1.9e-08   1.9e-08

(``lower`` equals ``value`` to the digits shown; ``upper`` is the best of three tori.)
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sntheory.conv.geometry import ConvGeometry
from sntheory.conv.operator import conv_operator_norm

# (c_in, c_out, kernel, stride, input size), padding 1 throughout
LAYERS = [
    (3, 64, 3, 1, 32),
    (64, 64, 4, 2, 32),
    (64, 128, 3, 1, 16),
    (128, 128, 4, 2, 16),
    (128, 256, 3, 1, 8),
    (256, 256, 4, 2, 8),
    (256, 512, 3, 1, 4),
]


def dense_reference(weight: torch.Tensor, g: ConvGeometry) -> float:
    """sqrt(lambda_max(A^T A)) with A^T A built from the identity basis (float64)."""
    import scipy.linalg

    c_out, c_in, kh, kw = weight.shape
    h, w = g.input_size
    n = c_in * h * w
    y = F.conv2d(torch.zeros(1, c_in, h, w, dtype=torch.float64), weight, stride=g.stride,
                 padding=g.padding)
    out = y.shape[-2:]
    op = tuple(nn + 2 * p - ((no - 1) * s + k) for nn, p, no, s, k in
               zip(g.input_size, g.padding, out, g.stride, (kh, kw)))
    gram = np.empty((n, n))
    for lo in range(0, n, 512):
        hi = min(n, lo + 512)
        e = torch.zeros(hi - lo, n, dtype=torch.float64)
        e[torch.arange(hi - lo), torch.arange(lo, hi)] = 1.0
        z = F.conv2d(e.view(-1, c_in, h, w), weight, stride=g.stride, padding=g.padding)
        x = F.conv_transpose2d(z, weight, stride=g.stride, padding=g.padding, output_padding=op)
        gram[lo:hi] = x.reshape(hi - lo, n).numpy()
    gram = 0.5 * (gram + gram.T)
    lam = scipy.linalg.eigh(gram, eigvals_only=True, subset_by_index=[n - 1, n - 1])[0]
    return float(np.sqrt(lam))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dense-max", type=int, default=4096,
                    help="largest input dimension c_in*H*W for the dense check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    print(f"rtol = {args.rtol}, threads = {args.threads}, median of {args.repeat} runs")
    head = (f"{'layer':<26} {'time s':>7} {'matvec':>6} {'value':>14} {'lower':>14} "
            f"{'upper':>14} {'rel.width':>9} {'dense':>9} {'tight':>9}")
    print(head)
    print("-" * len(head))
    for c_in, c_out, k, s, size in LAYERS:
        conv = torch.nn.Conv2d(c_in, c_out, k, s, 1, bias=False)
        weight = conv.weight.detach().double()
        g = ConvGeometry((size, size), s, 1)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = conv_operator_norm(weight, g, rtol=args.rtol, threads=args.threads)
            times.append(time.perf_counter() - t0)
        n = c_in * size * size
        dense = ""
        if n <= args.dense_max:
            ref = dense_reference(weight, g)
            dense = f"{abs(res.value - ref) / ref:9.1e}"
        tight = conv_operator_norm(weight, g, rtol=1e-10, threads=args.threads).value
        name = f"conv{k}x{k}/s{s} {c_in}->{c_out} @{size}"
        print(f"{name:<26} {statistics.median(times):7.3f} {res.iterations:6d} {res.value:14.9f} "
              f"{res.lower:14.9f} {res.upper:14.9f} {res.rel_width:9.2e} {dense:>9} "
              f"{abs(res.value - tight) / tight:9.1e}"
              + ("" if res.converged else "  NOT CONVERGED"))
    print(f"\nmethod: {res.method}; note (last layer): {res.note}")


if __name__ == "__main__":
    main()
