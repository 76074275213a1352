"""Benchmark of sntheory.spectral: time per matrix of every path against the cost of drawing
the matrix's random numbers.

    python benchmarks/bench_spectral.py            # a few minutes
    python benchmarks/bench_spectral.py --quick    # under a minute

BLAS is limited to one thread (``--threads``), as in the Monte Carlo engine's work units;
the compiled paths are single-threaded anyway.  Every time is the best of a few repeats, per
matrix, in microseconds; ``xgen`` is the ratio to ``rng.standard_normal`` for the same
numbers.  ``norm2`` is a Python loop of ``np.linalg.norm(A, 2)`` (an SVD per matrix).

Times are the CPU time of this process (``time.process_time``) unless ``--wall``: with one
thread everywhere this equals the wall time on an idle machine, and it is far less disturbed
by other jobs on a shared one.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from sntheory.spectral import largest_singular_value  # noqa: E402

SHAPES = [((8, 8), 4096, 1024), ((32, 32), 512, 128), ((128, 128), 64, 32),
          ((1024, 1024), 4, 2), ((2048, 2048), 2, 1), ((4096, 1024), 2, 1),
          ((4096, 4096), 1, 1)]
PATHS = ["auto", "fast", "tiny", "gram", "lanczos", "lanczos-gap", "mixed", "svd", "norm2"]


def applicable(path: str, m: int, n: int, quick: bool) -> bool:
    k = min(m, n)
    if path == "tiny":
        return k <= 48
    if path == "gram":
        return k <= 256
    if path in ("svd", "norm2"):
        return k <= (128 if quick else 2048) and max(m, n) <= (128 if quick else 2048)
    return True


CLOCK = time.process_time


def best_time(fn, repeats: int) -> float:
    best = np.inf
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def run(args) -> None:
    rng = np.random.default_rng(12345)
    shapes = SHAPES
    if args.shapes:
        wanted = {tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")}
        shapes = [s for s in SHAPES if s[0] in wanted] or [(w, 4, 2) for w in wanted]
    # compile every kernel once (numba caches them on disk afterwards)
    warm = rng.standard_normal((2, 40, 40))
    for p in ("tiny", "lanczos", "lanczos-gap", "mixed"):
        largest_singular_value(warm, method=p, rtol=args.rtol)
        largest_singular_value(warm.astype(np.float32), method=p, rtol=args.rtol)

    head = f"{'shape':>11} {'N':>5} {'gen us':>10}"
    for p in PATHS:
        head += f" | {p:>11} {'xgen':>5}"
    clock = "wall" if args.wall else "CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{clock} time per matrix in microseconds (best of repeats), rtol={args.rtol:g}, "
          f"BLAS threads={args.threads}, load average {load:.1f} on {os.cpu_count()} CPUs")
    print(head)
    print("-" * len(head))
    iters_lines = []
    for (m, n), n_full, n_quick in shapes:
        count = n_quick if args.quick else n_full
        big = m * n >= 1024 * 1024
        reps = 2 if (big or args.quick) else 3
        a = rng.standard_normal((count, m, n))
        t_gen = best_time(lambda: rng.standard_normal((count, m, n)), reps) / count
        row = f"{f'{m}x{n}':>11} {count:>5} {t_gen * 1e6:>10.2f}"
        its = []
        for p in PATHS:
            if not applicable(p, m, n, args.quick):
                row += f" | {'-':>11} {'':>5}"
                continue
            if p == "norm2":
                fn = lambda: [np.linalg.norm(x, 2) for x in a]        # noqa: E731
                r = 1 if big else reps
            else:
                fn = lambda: largest_singular_value(a, method=p, rtol=args.rtol)  # noqa: E731
                r = 1 if (big and p in ("svd", "lanczos")) else reps
            t = best_time(fn, r) / count
            row += f" | {t * 1e6:>11.1f} {t / t_gen:>5.2f}"
            if p in ("auto", "fast", "lanczos", "lanczos-gap", "mixed", "tiny"):
                res = largest_singular_value(a[:min(count, 64)], method=p, rtol=args.rtol)
                if p in ("auto", "fast"):
                    its.append(f"{p}={res.method}")
                its.append(f"{p}:{res.iterations.mean():.1f}")
        print(row, flush=True)
        iters_lines.append(f"{f'{m}x{n}':>11}  " + "  ".join(its))
    print("\nmean iterations (tiny: squarings; lanczos paths: matrix passes; mixed: float32 "
          "+ float64 passes)")
    print("\n".join(iters_lines))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller batches, skip big SVDs")
    ap.add_argument("--rtol", type=float, default=1e-10, help="rtol passed to the paths")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    ap.add_argument("--shapes", default="", help="comma separated subset, e.g. 8x8,128x128")
    ap.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = ap.parse_args(argv)
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:                      # pragma: no cover
        os.environ.setdefault("OPENBLAS_NUM_THREADS", str(args.threads))
        run(args)
        return
    with threadpool_limits(limits=args.threads):
        run(args)


if __name__ == "__main__":
    main()
