"""Statistical properties of the engine's whole sequential procedure, over many repetitions.

Slow (minutes): run with ``pytest -m slow``. Seeds are fixed; the measured numbers are in the
assertion messages (and printed: ``pytest -m slow -s``).

Note on what is tested: the stopping rule looks at the estimate it stops on (half-width <=
precision * |estimate|), so at loose precision the final estimate is slightly biased away from 0
and the one-sided tails of its t-statistic are heavier than Student's t (optional stopping). The
effect vanishes as precision -> 0; the configurations here (a few hundred samples per case) are
the regime the tests are meant to cover, and the tolerances are the brief's +- 3 standard errors.
"""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from sntheory.monte_carlo import (BoundCheck, StoppingRule, Task, Verdict, assign_verdicts,
                                  make_executor, mean_estimate, run_tasks)

pytestmark = pytest.mark.slow

S = "sntheory.monte_carlo._test_samplers"
MEAN0 = partial(mean_estimate, index=0)


@pytest.mark.parametrize("sampler, params, true_mean", [
    ("normal", {"mu": 1.0, "sd": 1.0}, 1.0),
    ("exponential", {"scale": 2.0}, 2.0),          # skewed: skewness 2
])
def test_ci_coverage_of_the_sequential_procedure(sampler, params, true_mean):
    """400 independent seeds of one case; the reported 95% CI must cover the true mean in
    0.95 +- 3 sqrt(0.95 * 0.05 / 400) of them."""
    reps, level = 400, 0.95
    rule = StoppingRule(precision=0.1, level=level, min_samples=32, max_samples=100_000)
    task = Task("coverage", params, f"{S}:{sampler}", 16, MEAN0, 1)
    hits, ns = 0, []
    for seed in range(1000, 1000 + reps):
        [result] = run_tasks([task], seed=seed, rule=rule, unit_cost=1e9, progress=False)
        assert result.precision_reached
        low, high = MEAN0(result.moments).ci(level)
        hits += low <= true_mean <= high
        ns.append(result.moments.count)
    coverage = hits / reps
    tol = 3 * np.sqrt(level * (1 - level) / reps)
    message = (f"{sampler}: coverage {coverage:.4f} over seeds 1000..{999 + reps} (target "
               f"{level} +- {tol:.4f}); samples per case median {np.median(ns):.0f}, "
               f"range {min(ns)}..{max(ns)}")
    print(message)
    assert 150 <= np.median(ns) <= 800, message  # "a few hundred samples"
    assert abs(coverage - level) <= tol, message


def test_family_wise_error_of_real_sweeps_at_the_bound():
    """100 sweeps of 200 cases whose true mean equals the bound (all upper bounds on a positive
    mean: the side toward which stopping on |estimate| biases), each run by the real engine with
    Holm verdicts. The fraction of sweeps with any VIOLATED must be <= 0.05 + 3 SE."""
    sweeps, cases, alpha = 100, 200, 0.05
    rule = StoppingRule(precision=0.1, level=0.95, min_samples=64, max_samples=100_000)
    tasks = [Task("fwer", {"mu": 1.0, "sd": 1.0, "case": c}, f"{S}:normal", 64, MEAN0, 1)
             for c in range(cases)]
    executor = make_executor(2)
    any_violated, p_values, ns = 0, [], []
    try:
        for sweep in range(sweeps):
            seed = 50_000 + sweep
            results = run_tasks(tasks, seed=seed, rule=rule, executor=executor, unit_cost=1e9,
                                progress=False)
            checks = [BoundCheck(f"c{i}", "mean <= 1", "upper", MEAN0(r.moments), 1.0)
                      for i, r in enumerate(results)]
            assign_verdicts(checks, alpha)
            any_violated += any(c.verdict == Verdict.VIOLATED for c in checks)
            p_values += [c.p_violation() for c in checks]
            ns += [r.moments.count for r in results]
    finally:
        executor.shutdown()
    p = np.array(p_values)
    fwer = any_violated / sweeps
    limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / sweeps)
    message = (f"FWER {fwer:.3f} over {sweeps} sweeps of {cases} cases (seeds 50000..{49999 + sweeps}; "
               f"limit {limit:.3f}); per check P(p_violation <= 0.05) = {np.mean(p <= 0.05):.4f} "
               f"(nominal 0.05, se {np.sqrt(0.05 * 0.95 / p.size):.4f}), P(p_violation <= "
               f"alpha/{cases}) = {np.mean(p <= alpha / cases):.5f} (nominal {alpha / cases:.5f}); "
               f"samples per case median {np.median(ns):.0f}")
    print(message)
    assert fwer <= limit, message
