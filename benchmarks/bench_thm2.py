"""Time to reach +-0.5% relative precision (95% CI) on Theorem 2's variance, side by side.

    python benchmarks/bench_thm2.py            # the five shapes of the issue
    python benchmarks/bench_thm2.py --quick    # smaller shapes, seconds
    python benchmarks/bench_thm2.py --shapes 4096x1024 --repeat 3   # chosen shapes only

For each shape (Gaussian entries, exact SN), three timings for the SAME number of samples N:

* sntheory   the engine end to end (sequential stopping, fast spectral paths, 2 workers by default)
             N is where its stopping rule met the precision;
* naive      a Python loop over samples: generate A, ``np.linalg.norm(A, 2)``, accumulate
             (numpy's default BLAS threads); for large shapes timed on a subset and scaled to N;
  (sntheory and floor: best of ``--repeat`` runs; the pool is started and warmed first)
* floor      the engine with a sampler that only generates the same random numbers and makes one
             pass over each matrix (same blocks, workers and stopping machinery).

Ratios: naive / sntheory (targets: >= 10x at 1024x1024 and above, >= 3x at 128x128) and
sntheory / floor (target: <= 3x everywhere).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np

from sntheory.claims import thm2
from sntheory.claims.base import parse_shapes
from sntheory.monte_carlo import StoppingRule, make_executor, run_tasks
from sntheory.provenance import provenance

SHAPES = [(8, 8), (128, 128), (1024, 1024), (2048, 2048), (4096, 1024)]
QUICK_SHAPES = [(8, 8), (64, 64), (128, 128), (512, 512)]


def _engine_time(task, rule, seed, executor, workers, repeat):
    """Best of ``repeat`` runs (same seed: every run does identical work)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        (result,) = run_tasks([task], seed=seed, rule=rule, executor=executor, workers=workers,
                              progress=False)
        best = min(best, time.perf_counter() - start)
    return best, result


def _naive_time(m, n, n_samples, budget_s, seed):
    rng = np.random.default_rng(seed)
    done, start, acc = 0, time.perf_counter(), 0.0
    while done < n_samples:
        a = rng.standard_normal((m, n))
        sigma = np.linalg.norm(a, 2)
        acc += float((a * a).sum()) / (sigma * sigma * m * n)
        done += 1
        if time.perf_counter() - start > budget_s and done >= 3:
            break
    elapsed = time.perf_counter() - start
    return elapsed * n_samples / done, done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes only")
    parser.add_argument("--shapes", type=str, default=None,
                        help="comma-separated shapes such as 4096x1024,128x128 (default: the "
                             "five shapes of the issue; --quick: smaller ones)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--precision", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3,
                        help="best of this many runs for sntheory and the floor (default 3)")
    parser.add_argument("--naive-budget", type=float, default=20.0,
                        help="seconds of naive loop per shape before extrapolating")
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    if args.shapes is not None:
        shapes = parse_shapes(args.shapes)
    prov = provenance(seed=args.seed, config=vars(args))
    print(f"# sntheory T2 time-to-precision benchmark; commit {prov['git_commit']}; "
          f"{prov['device']['cpu']} ({prov['device']['logical_cores']} logical cores); "
          f"workers={args.workers}; precision={args.precision}")
    executor = make_executor(args.workers)
    rule = StoppingRule(precision=args.precision)
    try:
        # warm the pool (imports, numba compilation or cache loading, every path the shapes
        # take) outside the timings: a few samples of each shape
        warm = thm2.make_tasks([thm2.Thm2Case(m, n, "gaussian") for m, n in shapes])
        run_tasks(warm, seed=args.seed + 1, rule=StoppingRule(precision=0.5, min_samples=4),
                  executor=executor, workers=args.workers, progress=False)
        header = (f"{'shape':>11} {'N':>7} {'sntheory s':>11} {'naive s':>10} {'floor s':>9} "
                  f"{'naive/sntheory':>15} {'sntheory/floor':>15}  note")
        print(header)
        print("-" * len(header))
        for m, n in shapes:
            (task,) = thm2.make_tasks([thm2.Thm2Case(m, n, "gaussian")])
            t_engine, result = _engine_time(task, rule, args.seed, executor, args.workers,
                                            args.repeat)
            n_samples = result.moments.count
            floor_task = dataclasses.replace(task,
                                         sampler="sntheory.claims.thm2:sample_block_floor")
            floor_rule = StoppingRule(precision=1e9, min_samples=n_samples,
                                      max_samples=max(n_samples, 2))
            t_floor, floor_result = _engine_time(floor_task, floor_rule, args.seed, executor,
                                                 args.workers, args.repeat)
            t_naive, naive_done = _naive_time(m, n, n_samples, args.naive_budget, args.seed)
            note = "" if naive_done == n_samples else f"naive timed on {naive_done} samples, scaled"
            print(f"{m:>5}x{n:<5} {n_samples:>7} {t_engine:>11.3f} {t_naive:>10.2f} "
                  f"{t_floor:>9.3f} {t_naive / t_engine:>15.1f} {t_engine / t_floor:>15.2f}  {note}",
                  flush=True)
    finally:
        if executor is not None:
            executor.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
