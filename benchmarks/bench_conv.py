"""Benchmark of the exact operator norm of circular conv layers (sntheory.conv.fft).

    python benchmarks/bench_conv.py            # c in {16, 64, 256}, n in {16, 32}: ~40 s
    python benchmarks/bench_conv.py --quick    # n = 16 only: ~10 s

For ``(c, c, 3, 3)`` Gaussian kernels on an ``n x n`` circular torus (stride 1, padding 1),
side by side:

* ``fast``: ``circular_operator_norm(method="auto")`` (compiled per-frequency Lanczos,
  residual bound, half of the frequencies, pruning), and ``method="fast"`` (gap-refined stop);
* ``recipe``: the published recipe (Sedghi, Gupta, Long 2019), literally:
  ``np.fft.fft2(kernel_hwio, (n, n), axes=[0, 1])`` then ``np.linalg.svd(compute_uv=False)``
  of all ``n^2`` per-frequency matrices, float64.  It is the reference value;
* ``power``: 100 power iterations on the layer itself with torch (float64): ``conv2d`` on the
  circularly padded input and its adjoint, ``conv2d`` with the flipped, transposed kernel.

Columns: times in seconds, relative errors against the recipe, speedup = recipe / fast.
Everything runs on one thread (numba, BLAS, torch; ``--threads`` for numba), and times are
the CPU time of this process (``time.process_time``, ``--wall`` for wall-clock): on a shared
machine this is far less disturbed by other jobs.  Best of ``--repeats`` runs (1 for the
recipe at c = 256).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

import numba  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from sntheory.conv.fft import circular_operator_norm  # noqa: E402

CLOCK = time.process_time


def timed(fn, repeats: int):
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = CLOCK()
        out = fn()
        best = min(best, CLOCK() - t0)
    return best, out


def recipe(w: np.ndarray, n: int) -> float:
    """Sedghi et al.'s code: FFT of the kernel (kh, kw, c_in, c_out) padded to n x n along the
    spatial axes, full SVD of every per-frequency c_in x c_out matrix."""
    kernel = np.transpose(w, (2, 3, 1, 0))
    transforms = np.fft.fft2(kernel, (n, n), axes=[0, 1])
    return float(np.linalg.svd(transforms, compute_uv=False).max())


def power(w: np.ndarray, n: int, iters: int = 100) -> float:
    import torch
    import torch.nn.functional as F
    wt = torch.from_numpy(w)
    flip = wt.flip(2, 3).transpose(0, 1).contiguous()       # adjoint kernel (stride 1, p = 1)
    x = torch.randn(1, w.shape[1], n, n, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    x = x / x.norm()
    with torch.no_grad():
        for _ in range(iters):
            y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), wt)
            x = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="circular"), flip)
            x = x / x.norm()
        y = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), wt)
    return float(y.norm())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n = 16 only, one repeat")
    ap.add_argument("--threads", type=int, default=1, help="numba threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    ap.add_argument("--rtol", type=float, default=1e-10)
    ap.add_argument("--skip-recipe-above", type=int, default=10 ** 9,
                    help="skip the recipe for c above this (it needs ~2 GB at c = 256, n = 32)")
    args = ap.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    import torch
    torch.set_num_threads(1)
    numba.set_num_threads(args.threads)
    sizes = (16,) if args.quick else (16, 32)
    repeats = 1 if args.quick else args.repeats
    rng = np.random.default_rng(2024)
    circular_operator_norm(rng.standard_normal((4, 4, 3, 3)), 8)        # compile / load cache
    print(f"# {platform.processor() or platform.machine()}, numba threads {args.threads}, "
          f"BLAS/torch 1 thread, {'wall' if args.wall else 'CPU'} time in s, rtol {args.rtol}")
    head = (f"{'c':>4} {'n':>3} | {'fast':>7} {'err':>8} | {'fast-gap':>8} {'err':>8} | "
            f"{'recipe':>7} | {'power100':>8} {'err':>8} | {'speedup':>7} {'(gap)':>6} | "
            f"{'norm':>10} {'bound':>8} {'pruned':>9}")
    print(head)
    print("-" * len(head))
    with threadpool_limits(1):
        for c in (16, 64, 256):
            w = rng.standard_normal((c, c, 3, 3))
            for n in sizes:
                rep = repeats if c < 256 else max(1, min(repeats, 2))
                t_fast, r_fast = timed(lambda: circular_operator_norm(w, n, rtol=args.rtol), rep)
                t_gap, r_gap = timed(lambda: circular_operator_norm(w, n, rtol=args.rtol,
                                                                    method="fast"), rep)
                if c <= args.skip_recipe_above:
                    t_rec, ref = timed(lambda: recipe(w, n), 1 if c >= 256 else rep)
                else:
                    t_rec, ref = np.nan, circular_operator_norm(w, n, method="svd").value
                t_pow, v_pow = timed(lambda: power(w, n), 1 if c >= 256 else rep)

                def rel(v):
                    return abs(v - ref) / ref
                nh = r_fast.n_frequencies
                print(f"{c:>4} {n:>3} | {t_fast:7.3f} {rel(r_fast.value):8.1e} | "
                      f"{t_gap:8.3f} {rel(r_gap.value):8.1e} | {t_rec:7.2f} | "
                      f"{t_pow:8.3f} {rel(v_pow):8.1e} | {t_rec / t_fast:7.1f} "
                      f"{t_rec / t_gap:6.1f} | {r_fast.value:10.4f} "
                      f"{r_fast.error_bound / r_fast.value:8.1e} {r_fast.pruned:>4}/{nh:<4}",
                      flush=True)
    print("err: |estimate - recipe| / recipe;  bound: error_bound / norm of 'fast';  "
          "pruned: frequencies (of the half set) dropped before convergence")


if __name__ == "__main__":
    main()
