"""The Monte Carlo engine: moments, intervals, stopping, determinism, resumption, verdicts.

Everything runs on the synthetic samplers of ``sntheory.monte_carlo._test_samplers`` (known
answers, importable by spawned pool workers). Statistical tolerances are derived from standard
errors, with fixed seeds that assertion messages show.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sntheory.monte_carlo import (BoundCheck, Estimate, Moments, ResultStore, StoppingRule, Task,
                                  Verdict, WorkUnit, assign_verdicts, delta_estimate,
                                  execute_unit, holm_reject, make_executor, mean_estimate,
                                  run_tasks, t_quantile)
from sntheory.monte_carlo import _test_samplers as samplers
from sntheory.random_weights import block_generator, case_spawn_key

S = "sntheory.monte_carlo._test_samplers"
MEAN0 = partial(mean_estimate, index=0)


def _ratio(mean):
    return mean[0] / mean[1]


def _ratio_grad(mean):
    return np.array([1 / mean[1], -mean[0] / mean[1] ** 2])


RATIO = partial(delta_estimate, fn=_ratio, gradient=_ratio_grad)


def normal_task(mu, sd, block_size=16, **extra):
    return Task("test", {"mu": mu, "sd": sd, **extra}, f"{S}:normal", block_size, MEAN0, 1)


def ratio_task(ratio, block_size=8, **extra):
    params = {"ratio": ratio, "mu_b": 3.0, "noise": 0.5, **extra}
    return Task("test", params, f"{S}:ratio_pair", block_size, RATIO, 2)


def saver(store):
    """What a claim does in ``on_case_done``: write the finished case to the store."""
    def save(result):
        result.record = {"moments": result.moments.to_json(), "n_blocks": result.n_blocks,
                         "precision_reached": result.precision_reached, "wall_s": result.wall_s}
        store.save_case(result.key, result.record)
    return save


def assert_same_result(a, b, context=""):
    """Bitwise equality of two CaseResults' numbers."""
    assert a.key == b.key, context
    assert a.moments.count == b.moments.count, f"{context}: n {a.moments.count} != {b.moments.count}"
    assert a.n_blocks == b.n_blocks, context
    assert a.precision_reached == b.precision_reached, context
    assert np.array_equal(a.moments.mean, b.moments.mean), f"{context}: means differ"
    assert np.array_equal(a.moments.comoment, b.moments.comoment), f"{context}: comoments differ"


def log_lines(path):
    return len(path.read_text().splitlines()) if path.exists() else 0


# ---------------------------------------------------------------------------------------------
# 1. Moments
# ---------------------------------------------------------------------------------------------

_DATA = np.random.default_rng(20211).normal(size=(120, 3)) * [1.0, 10.0, 0.1] + [1e3, -5.0, 0.0]
_REF = Moments.from_samples(_DATA)


def _assert_moments_close(got, want, rtol=1e-12):
    assert got.count == want.count
    np.testing.assert_allclose(got.mean, want.mean, rtol=rtol, atol=rtol * np.abs(want.mean).max())
    np.testing.assert_allclose(got.comoment, want.comoment, rtol=rtol,
                               atol=rtol * np.abs(want.comoment).max())


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(1, 119), unique=True, max_size=15),
       order=st.randoms(use_true_random=False))
def test_merge_of_any_split_equals_moments_of_the_concatenation(cuts, order):
    pieces = np.split(_DATA, sorted(cuts))
    parts = [Moments.from_samples(p) for p in pieces]
    # left fold in block order
    folded = Moments.empty(3)
    for part in parts:
        folded = folded.merge(part)
    _assert_moments_close(folded, _REF)
    # any association (a random binary merge tree over the ordered pieces)
    while len(parts) > 1:
        i = order.randrange(len(parts) - 1)
        parts[i:i + 2] = [parts[i].merge(parts[i + 1])]
    _assert_moments_close(parts[0], _REF)


def test_moments_basics():
    m = Moments.from_samples(_DATA)
    np.testing.assert_allclose(m.covariance, np.cov(_DATA, rowvar=False, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(m.mean, _DATA.mean(axis=0), rtol=1e-14)
    empty = Moments.empty(3)
    assert empty.merge(m) is m and m.merge(empty) is m
    assert np.isnan(Moments.from_samples(_DATA[:1]).covariance).all()


def test_moments_json_round_trip_is_exact():
    m = Moments.from_samples(np.random.default_rng(3).standard_normal((37, 4)) * np.pi)
    back = Moments.from_json(json.loads(json.dumps(m.to_json())))
    assert back.count == m.count
    assert np.array_equal(back.mean, m.mean) and np.array_equal(back.comoment, m.comoment)
    assert back.mean.dtype == np.float64 and back.comoment.shape == (4, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_moments_reject_non_finite_samples(bad):
    data = np.ones((5, 2))
    data[3, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        Moments.from_samples(data)


@pytest.mark.parametrize("shape", [(5,), (0, 2), (2, 3, 4)])
def test_moments_reject_bad_shapes(shape):
    with pytest.raises(ValueError, match="`samples` must have shape"):
        Moments.from_samples(np.ones(shape))


# ---------------------------------------------------------------------------------------------
# 2. Estimates and intervals
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 5, 12, 200])
@pytest.mark.parametrize("level", [0.8, 0.95, 0.99])
def test_mean_ci_matches_scipy_t_interval(n, level):
    x = np.random.default_rng(n).exponential(size=n) + 2.0
    est = mean_estimate(Moments.from_samples(x[:, None]), 0)
    low, high = stats.t.interval(level, df=n - 1, loc=x.mean(), scale=stats.sem(x))
    got = est.ci(level)
    assert got == pytest.approx((low, high), rel=1e-12)
    assert est.df == n - 1
    assert est.half_width(level) == pytest.approx((high - low) / 2, rel=1e-12)


def test_small_n_uses_the_t_quantile_not_the_normal_one():
    x = np.array([1.0, 2.0, 4.0, 7.0, 11.0])
    est = mean_estimate(Moments.from_samples(x[:, None]), 0)
    ratio = est.half_width(0.95) / est.se
    assert ratio == pytest.approx(stats.t.ppf(0.975, 4), rel=1e-12)
    assert ratio > 2.7 > stats.norm.ppf(0.975)  # t_4 quantile 2.776, normal 1.960
    assert t_quantile(0.95, np.inf) == pytest.approx(stats.norm.ppf(0.975), rel=1e-14)
    assert t_quantile(0.95, 4) > t_quantile(0.95, 40) > t_quantile(0.95, np.inf)


def test_estimates_need_two_samples_and_a_valid_level():
    one = Moments.from_samples(np.ones((1, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        mean_estimate(one, 0)
    with pytest.raises(ValueError, match="at least 2 samples"):
        delta_estimate(one, _ratio, _ratio_grad)
    with pytest.raises(ValueError, match="`level`"):
        t_quantile(1.0, 10)
    with pytest.raises(ValueError, match="`level`"):
        Estimate(1.0, 0.1, 10).ci(0.0)


def test_zero_se_interval_is_a_point():
    est = Estimate(2.5, 0.0, 9)
    assert est.ci(0.99) == (2.5, 2.5) and est.half_width() == 0


def test_delta_estimate_against_finite_differences_and_replications():
    """se from the delta method vs (a) a numerically differentiated gradient, (b) the actual spread
    of the ratio of means over many independent replications (the brute-force truth)."""
    seed, reps, n = 77, 2000, 400
    params = {"ratio": 2.0, "mu_b": 3.0, "noise": 0.5}
    rng = np.random.default_rng(seed)
    values, ses = [], []
    for _ in range(reps):
        m = Moments.from_samples(samplers.ratio_pair(params, rng, n))
        est = delta_estimate(m, _ratio, _ratio_grad)
        values.append(est.value)
        ses.append(est.se)
        assert est.df == n - 1 and est.value == m.mean[0] / m.mean[1]
    # (a) numerical gradient, central differences, on the last replication
    h = 1e-6

    def numeric_grad(mean):
        return np.array([(_ratio(mean + h * e) - _ratio(mean - h * e)) / (2 * h)
                         for e in np.eye(2)])

    assert delta_estimate(m, _ratio, numeric_grad).se == pytest.approx(est.se, rel=1e-6)
    # (b) the sd of an sd estimate from R replications is about sd / sqrt(2R)
    spread = np.std(values, ddof=1)
    tol = 4 * spread / np.sqrt(2 * reps)
    assert abs(np.mean(ses) - spread) < tol, (
        f"seed {seed}: delta se {np.mean(ses):.5g} vs replication sd {spread:.5g} (tol {tol:.2g})")
    assert abs(np.mean(values) - 2.0) < 4 * spread / np.sqrt(reps), f"seed {seed}: biased ratio"


def test_estimate_map_and_scale():
    est = Estimate(4.0, 0.2, 30)
    logged = est.map(np.log, lambda x: 1 / x)
    assert logged.value == pytest.approx(np.log(4.0)) and logged.se == pytest.approx(0.05)
    neg = est.scale(-3.0)
    assert (neg.value, neg.se, neg.df) == (-12.0, pytest.approx(0.6), 30)


# ---------------------------------------------------------------------------------------------
# 3. Argument validation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, pattern", [
    ({"precision": 0.0}, ValueError, "`precision`"),
    ({"precision": -0.1}, ValueError, "`precision`"),
    ({"precision": float("nan")}, ValueError, "`precision`"),
    ({"precision": "0.1"}, TypeError, "`precision`"),
    ({"level": 0.0}, ValueError, "`level`"),
    ({"level": 1.0}, ValueError, "`level`"),
    ({"level": 1.5}, ValueError, "`level`"),
    ({"level": -0.5}, ValueError, "`level`"),
    ({"min_samples": 1}, ValueError, "`min_samples`"),
    ({"min_samples": 10.5}, TypeError, "`min_samples`"),
    ({"max_samples": 0}, ValueError, "`max_samples`"),
    ({"min_samples": 100, "max_samples": 50}, ValueError, r"`max_samples` \(50\).*`min_samples`"),
])
def test_stopping_rule_validation(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        StoppingRule(**kwargs)


def test_other_argument_errors_name_the_argument():
    rule = StoppingRule(precision=0.5, min_samples=4)
    with pytest.raises(ValueError, match="`seed`"):
        run_tasks([normal_task(1, 1)], seed=-1, rule=rule, progress=False)
    with pytest.raises(ValueError, match="`workers`"):
        make_executor(0)
    with pytest.raises(ValueError, match="`sampler` must look like"):
        execute_unit(WorkUnit("no_colon_here", "{}", 0, 4, 0, 1))
    with pytest.raises(ValueError, match="`direction`"):
        BoundCheck("x", "x", "sideways", Estimate(1, 1, 1), 1.0)
    with pytest.raises(ValueError, match="`alpha`"):
        assign_verdicts([], alpha=1.0)


def test_make_executor():
    assert make_executor(1) is None
    pool = make_executor(2)
    try:
        assert isinstance(pool, ProcessPoolExecutor) and pool._max_workers == 2
    finally:
        pool.shutdown()


# ---------------------------------------------------------------------------------------------
# 4. Determinism: workers, unit sizes, task order, arrival order
# ---------------------------------------------------------------------------------------------

DET_RULE = StoppingRule(precision=0.05, level=0.95, min_samples=40, max_samples=20_000)
DET_SEED = 12345


def det_tasks():
    return [normal_task(1.0, 1.0), normal_task(-2.0, 3.0, block_size=24),
            normal_task(5.0, 0.5, block_size=10), ratio_task(2.0), ratio_task(-0.7, block_size=5)]


class ControlledExecutor(Executor):
    """Runs work at submission but completes futures strictly one at a time, in a chosen order.

    A future is completed only after the driver has read the previously completed one, as with one
    slow worker: ``"fifo"`` completes units in submission order, ``"lifo"`` always completes the
    most recently submitted one first (blocks arrive out of order). Deterministic, no threads.
    """

    _max_workers = 1  # the driver keeps 2 units in flight

    def __init__(self, order: str = "fifo") -> None:
        self.order = order
        self.queue: deque = deque()
        self.busy = False
        self.submitted = 0

    def submit(self, fn, /, *args, **kwargs):
        future = _ReadNotifyingFuture(self)
        self.queue.append((future, fn(*args, **kwargs)))
        self.submitted += 1
        if not self.busy:
            self._complete_next()
        return future

    def _complete_next(self) -> None:
        if not self.queue:
            self.busy = False
            return
        future, value = self.queue.popleft() if self.order == "fifo" else self.queue.pop()
        self.busy = True
        future.set_result(value)


class _ReadNotifyingFuture(Future):
    def __init__(self, owner: ControlledExecutor) -> None:
        super().__init__()
        self._owner, self._read = owner, False

    def result(self, timeout=None):
        value = super().result(timeout)
        if not self._read:
            self._read = True
            self._owner._complete_next()
        return value


@pytest.fixture(scope="module")
def det_reference():
    """In-process, one block per unit: the plainest execution."""
    return run_tasks(det_tasks(), seed=DET_SEED, rule=DET_RULE, unit_cost=1, progress=False)


def _check_reference_sane(results):
    for r in results:
        assert r.precision_reached and r.moments.count >= DET_RULE.min_samples
        assert r.n_blocks * r.task.block_size == r.moments.count


@pytest.mark.parametrize("unit_cost", [40.0, 200.0, 1e12])
def test_results_do_not_depend_on_unit_size(det_reference, unit_cost):
    _check_reference_sane(det_reference)
    got = run_tasks(det_tasks(), seed=DET_SEED, rule=DET_RULE, unit_cost=unit_cost,
                    progress=False)
    for a, b in zip(got, det_reference):
        assert_same_result(a, b, f"unit_cost={unit_cost}, seed {DET_SEED}")


def test_results_do_not_depend_on_task_order(det_reference):
    got = run_tasks(det_tasks()[::-1], seed=DET_SEED, rule=DET_RULE, unit_cost=100,
                    progress=False)[::-1]
    for a, b in zip(got, det_reference):
        assert_same_result(a, b, f"reversed order, seed {DET_SEED}")


@pytest.mark.parametrize("order", ["fifo", "lifo"])
@pytest.mark.parametrize("unit_cost", [1, 50])
def test_results_do_not_depend_on_arrival_order(det_reference, order, unit_cost):
    """Out-of-order arrival (lifo) and one-at-a-time completion (fifo) through a real driver loop.

    fifo with one block per unit is also the regression test of a driver bug: when the last
    in-flight unit completed in a round that submitted nothing, the driver declared a stall
    although the received blocks had just planned more work.
    """
    executor = ControlledExecutor(order)
    got = run_tasks(det_tasks(), seed=DET_SEED, rule=DET_RULE, executor=executor,
                    unit_cost=unit_cost, progress=False)
    assert executor.submitted > len(det_tasks())
    for a, b in zip(got, det_reference):
        assert_same_result(a, b, f"{order}, unit_cost={unit_cost}, seed {DET_SEED}")


def test_single_case_one_at_a_time_does_not_stall():
    """Minimal form of the stall: one case whose 2 first blocks complete in separate rounds."""
    task = normal_task(1.0, 1.0)
    rule = StoppingRule(precision=0.2, min_samples=32)  # not met at n = 32: more blocks planned
    got = run_tasks([task], seed=1, rule=rule, executor=ControlledExecutor("fifo"), unit_cost=1,
                    progress=False)
    want = run_tasks([task], seed=1, rule=rule, unit_cost=1, progress=False)
    assert got[0].n_blocks > 2
    assert_same_result(got[0], want[0], "seed 1")


def test_process_pool_gives_bitwise_identical_results(det_reference):
    got = run_tasks(det_tasks(), seed=DET_SEED, rule=DET_RULE, workers=2, unit_cost=40,
                    progress=False)
    for a, b in zip(got, det_reference):
        assert_same_result(a, b, f"workers=2, seed {DET_SEED}")


def test_different_seeds_and_params_give_different_numbers(det_reference):
    other = run_tasks(det_tasks()[:1], seed=DET_SEED + 1, rule=DET_RULE, progress=False)[0]
    assert other.moments.mean[0] != det_reference[0].moments.mean[0]
    assert other.key != det_reference[0].key
    shifted = normal_task(1.0, 1.0, tag="x")
    again = run_tasks([shifted], seed=DET_SEED, rule=DET_RULE, progress=False)[0]
    assert again.moments.mean[0] != det_reference[0].moments.mean[0]


def test_task_key_depends_on_everything_that_determines_the_numbers():
    base = normal_task(1.0, 1.0)
    keys = {base.key(0), base.key(1), normal_task(1.0, 2.0).key(0),
            normal_task(1.0, 1.0, block_size=8).key(0),
            Task("other", base.params, base.sampler, 16, MEAN0, 1).key(0),
            Task("test", base.params, f"{S}:uniform", 16, MEAN0, 1).key(0)}
    assert len(keys) == 6
    # not on dict order, nor on the primary estimate or the cost (they do not change the numbers)
    assert Task("test", {"sd": 1.0, "mu": 1.0}, base.sampler, 16, RATIO, 2, 9.0).key(0) == base.key(0)


# ---------------------------------------------------------------------------------------------
# 5. Sequential stopping
# ---------------------------------------------------------------------------------------------

def _blocks_of(task, seed, count):
    """Per-block moments recomputed by hand, one unit per block."""
    params_json = json.dumps(task.params)  # deliberately not the driver's canonical form
    out = []
    for b in range(count):
        [data] = execute_unit(WorkUnit(task.sampler, params_json, seed, task.block_size, b, 1))
        out.append(Moments.from_json(data))
    return out


def _independent_rule_met(moments, rule):
    """The documented rule, written out with scipy: n >= min and t-CI half-width <= p*|mean|."""
    n = moments.count
    if n < rule.min_samples:
        return False
    half = stats.t.ppf((1 + rule.level) / 2, n - 1) * np.sqrt(moments.comoment[0, 0] / (n - 1) / n)
    return half <= rule.precision * abs(moments.mean[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mu, sd, bs", [(1.0, 1.0, 16), (3.0, 5.0, 7), (-0.5, 0.3, 32)])
def test_stops_at_the_first_block_meeting_the_rule(tmp_path, seed, mu, sd, bs):
    rule = StoppingRule(precision=0.08, level=0.9, min_samples=50, max_samples=100_000)
    task = normal_task(mu, sd, block_size=bs)
    store = ResultStore(tmp_path)
    [result] = run_tasks([task], seed=seed, rule=rule, store=store, unit_cost=1, progress=False)
    assert result.precision_reached
    blocks = _blocks_of(task, seed, result.n_blocks + 3)
    prefix = Moments.empty(1)
    first = None
    for b, block in enumerate(blocks):
        prefix = prefix.merge(block)
        if _independent_rule_met(prefix, rule):
            first = b + 1
            break
    assert first == result.n_blocks, f"seed {seed}: stopped after {result.n_blocks} blocks, " \
                                     f"rule first met after {first}"
    expected = Moments.empty(1)
    for block in blocks[:first]:
        expected = expected.merge(block)
    assert np.array_equal(expected.mean, result.moments.mean)
    assert np.array_equal(expected.comoment, result.moments.comoment)
    # the block log (keyed by the block identity, which excludes the rule) holds the same blocks
    logged = store.load_blocks(task.key(seed))
    assert sorted(logged) == list(range(result.n_blocks))
    for b in range(result.n_blocks):
        assert np.array_equal(logged[b].mean, blocks[b].mean), f"seed {seed}, block {b}"
        assert np.array_equal(logged[b].comoment, blocks[b].comoment), f"seed {seed}, block {b}"


def test_max_samples_cap_reports_precision_not_reached():
    rule = StoppingRule(precision=0.01, min_samples=20, max_samples=100)
    [result] = run_tasks([normal_task(0.0, 1.0)], seed=3, rule=rule, progress=False)
    assert not result.precision_reached
    assert result.n_blocks == 7 and result.moments.count == 112  # ceil(100 / 16) blocks of 16
    assert rule.max_samples <= result.moments.count < rule.max_samples + 16


def test_deterministic_statistic_stops_at_min_samples():
    rule = StoppingRule(precision=1e-6, min_samples=30)
    task = Task("test", {"value": 2.5}, f"{S}:constant", 8, MEAN0, 1)
    [result] = run_tasks([task], seed=0, rule=rule, progress=False)
    assert result.precision_reached and result.moments.count == 32
    assert MEAN0(result.moments).se == 0 and result.moments.mean[0] == 2.5


def test_min_samples_is_respected():
    """Precision is met after one block, but not before min_samples."""
    rule = StoppingRule(precision=0.5, min_samples=100)
    [result] = run_tasks([normal_task(10.0, 0.1)], seed=0, rule=rule, progress=False)
    assert result.moments.count == 112


def test_samples_needed_projection():
    rule = StoppingRule(precision=0.01, level=0.95, min_samples=10, max_samples=10 ** 6)
    est = Estimate(1.0, 0.01, 99)   # half-width ~0.0198: needs ~(1.98)^2 = 3.9 times the samples
    need = rule.samples_needed(est, 100)
    assert abs(need - 100 * t_quantile(0.95, 99) ** 2) <= 1
    assert rule.samples_needed(Estimate(0.0, 0.1, 9), 10) == rule.max_samples
    assert rule.samples_needed(Estimate(1.0, 10.0, 9), 10) == rule.max_samples


# ---------------------------------------------------------------------------------------------
# 6. Resumption
# ---------------------------------------------------------------------------------------------

RES_RULE = StoppingRule(precision=0.1, min_samples=40, max_samples=50_000)


LOG = "calls.log"  # sampler call log, relative to the working directory (see ``workdir``)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in tmp_path, so that the log file named in a case's parameters has the same relative
    path, hence the same case key and random streams, in every test run."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.usefixtures("workdir")
def test_second_run_recomputes_nothing(tmp_path):
    log = tmp_path / "calls.log"
    tasks = [normal_task(mu, 1.0, log=LOG) for mu in (1.0, 2.0, 4.0)] + \
            [ratio_task(1.5, log=LOG)]
    store = ResultStore(tmp_path / "store")
    first = run_tasks(tasks, seed=5, rule=RES_RULE, store=store, on_case_done=saver(store),
                      unit_cost=1, progress=False)
    calls = log_lines(log)
    assert calls == sum(r.n_blocks for r in first)  # one sampler call per block, in process
    assert not any(r.resumed for r in first)
    second = run_tasks(tasks, seed=5, rule=RES_RULE, store=store, on_case_done=saver(store),
                       unit_cost=1, progress=False)
    assert log_lines(log) == calls, "the second run called the sampler"
    assert all(r.resumed for r in second)
    for a, b in zip(first, second):
        assert_same_result(a, b, "resumed, seed 5")
    # block logs stay (they do not depend on the rule): a tighter rule resumes from them
    tighter = StoppingRule(precision=RES_RULE.precision / 2, level=RES_RULE.level,
                           min_samples=RES_RULE.min_samples, max_samples=RES_RULE.max_samples)
    third = run_tasks(tasks, seed=5, rule=tighter, store=store, unit_cost=1, progress=False)
    third_calls = log_lines(log) - calls
    fresh = run_tasks(tasks, seed=5, rule=tighter, unit_cost=1, progress=False)
    assert third_calls == sum(r.n_blocks for r in fresh) - sum(r.n_blocks for r in first)
    for a, b in zip(third, fresh):
        assert_same_result(a, b, "tighter rule resumed from block logs, seed 5")


def _uninterrupted(task, seed):
    return run_tasks([task], seed=seed, rule=RES_RULE, unit_cost=1, progress=False)[0]


@pytest.mark.usefixtures("workdir")
def test_case_whose_blocks_are_all_logged_is_finished_without_sampling(tmp_path):
    """Killed after the last block was logged but before the case file was written."""
    seed = 8
    log = tmp_path / "calls.log"
    task = normal_task(2.0, 1.0, log=LOG)
    store = ResultStore(tmp_path / "store")
    [first] = run_tasks([task], seed=seed, rule=RES_RULE, store=store, progress=False)
    assert store.load_case(first.key) is None
    assert set(range(first.n_blocks)) <= set(store.load_blocks(first.block_key))
    before = log_lines(log)
    [again] = run_tasks([task], seed=seed, rule=RES_RULE, store=store, on_case_done=saver(store),
                        progress=False)
    assert log_lines(log) == before, f"seed {seed}: logged blocks were recomputed"
    assert_same_result(again, first, f"seed {seed}")
    assert store.load_case(first.key)["n_blocks"] == first.n_blocks


@pytest.mark.usefixtures("workdir")
@pytest.mark.parametrize("cut", ["mid-line", "before-newline", "only-brace"])
def test_torn_last_line_is_skipped_and_resume_matches(tmp_path, cut):
    seed = 11
    log = tmp_path / "calls.log"
    task = normal_task(1.0, 1.0, log=LOG)
    reference = _uninterrupted(task, seed)
    store = ResultStore(tmp_path / "store")
    # a run whose case never finished (no on_case_done): the block log holds every block
    run_tasks([task], seed=seed, rule=RES_RULE, store=store, unit_cost=1, progress=False)
    path = tmp_path / "store" / "blocks" / f"{reference.block_key}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == reference.n_blocks >= 4
    keep = len(lines) // 2
    torn = {"mid-line": lines[keep][: len(lines[keep]) // 2],
            "before-newline": lines[keep][:-1],
            "only-brace": "{"}[cut]
    path.write_text("".join(lines[:keep]) + torn)
    before = log_lines(log)
    [resumed] = run_tasks([task], seed=seed, rule=RES_RULE, store=store,
                          on_case_done=saver(store), unit_cost=1, progress=False)
    assert_same_result(resumed, reference, f"torn line ({cut}), seed {seed}")
    assert log_lines(log) - before == reference.n_blocks - keep, "restored blocks were recomputed"
    assert sorted(store.load_blocks(reference.block_key)) == list(range(reference.n_blocks))
    assert store.load_case(reference.key)["n_blocks"] == reference.n_blocks


def test_load_blocks_drops_the_torn_tail_so_appends_start_clean(tmp_path):
    store = ResultStore(tmp_path)
    blocks = [Moments.from_samples(np.full((3, 1), float(i))) for i in range(3)]
    for i, m in enumerate(blocks[:2]):
        store.append_block("k", i, m)
    path = tmp_path / "blocks" / "k.jsonl"
    with open(path, "a") as handle:
        handle.write('{"block": 2, "mome')
    assert sorted(store.load_blocks("k")) == [0, 1]
    store.append_block("k", 2, blocks[2])
    loaded = store.load_blocks("k")
    assert sorted(loaded) == [0, 1, 2] and loaded[2].mean[0] == 2.0
    assert all(json.loads(line) for line in path.read_text().splitlines())


@pytest.mark.usefixtures("workdir")
def test_resume_fills_gaps_without_recomputing_restored_blocks(tmp_path):
    """A pool can log blocks out of order; a kill leaves gaps. Only the gaps (and, with large work
    units, blocks past the stopping point) are computed, never a restored block."""
    seed = 4
    log = tmp_path / "calls.log"
    task = normal_task(1.0, 1.0, log=LOG)
    reference = _uninterrupted(task, seed)
    store = ResultStore(tmp_path / "store")
    run_tasks([task], seed=seed, rule=RES_RULE, store=store, unit_cost=1, progress=False)
    path = tmp_path / "store" / "blocks" / f"{reference.block_key}.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == reference.n_blocks >= 10
    missing = {1, 4, 5, 8}
    restored = set(range(len(lines))) - missing
    kept = "".join(line for i, line in enumerate(lines) if i not in missing)
    path.write_text(kept)
    before = log_lines(log)
    # no on_case_done: the block log survives, and every computed block is appended to it
    [resumed] = run_tasks([task], seed=seed, rule=RES_RULE, store=store, unit_cost=1e12,
                          progress=False)
    assert_same_result(resumed, reference, f"gaps, seed {seed}")
    computed = [json.loads(line)["block"] for line in path.read_text()[len(kept):].splitlines()]
    assert missing <= set(computed), f"seed {seed}: computed {computed}"
    assert not restored & set(computed), f"seed {seed}: recomputed restored blocks {computed}"
    assert all(b >= reference.n_blocks for b in set(computed) - missing), computed
    assert log_lines(log) - before == len(computed)


@pytest.mark.usefixtures("workdir")
def test_cases_are_reported_as_they_finish_in_process(tmp_path):
    """on_case_done (which writes the case file) runs when a case finishes, not when the whole
    in-process sweep does: otherwise a killed single-worker sweep leaves no finished case."""
    log = tmp_path / "calls.log"
    tasks = [normal_task(0.5, 1.0, log=LOG), normal_task(4.0, 1.0, log=LOG)]
    seen = []
    results = run_tasks(tasks, seed=0, rule=RES_RULE, unit_cost=1, progress=False,
                        on_case_done=lambda r: seen.append((r.task.params["mu"], log_lines(log))))
    assert [mu for mu, _ in seen] == [4.0, 0.5]
    assert seen[0][1] < seen[1][1] == sum(r.n_blocks for r in results), seen


KILL_SCRIPT = r"""
import json, sys
from functools import partial
from sntheory.monte_carlo import ResultStore, StoppingRule, Task, mean_estimate, run_tasks
spec = json.loads(sys.argv[1])
store = ResultStore(spec["store"])
tasks = [Task("kill", p, spec["sampler"], spec["block_size"], partial(mean_estimate, index=0), 1)
         for p in spec["params"]]
def save(result):
    store.save_case(result.key, {"moments": result.moments.to_json(), "n_blocks": result.n_blocks,
                                 "precision_reached": result.precision_reached,
                                 "wall_s": result.wall_s})
results = run_tasks(tasks, seed=spec["seed"], rule=StoppingRule(**spec["rule"]), store=store,
                    unit_cost=1, progress=False, on_case_done=save)
print(json.dumps([{"key": r.key, "resumed": r.resumed} for r in results]))
"""


@pytest.mark.usefixtures("workdir")
def test_sigkill_part_way_then_resume(tmp_path):
    """Kill a real sweep process with SIGKILL, restart it: finished case files are untouched and the
    numbers equal an uninterrupted in-process run; at most the in-flight block is recomputed."""
    log = tmp_path / "calls.log"
    rule = {"precision": 0.2, "level": 0.95, "min_samples": 16, "max_samples": 100_000}
    # 4 / 2 / 1 / 0.7 / 0.5 sd-units away from 0: 1, 2, 3, 10 and 28 blocks of 16 with seed 21
    params = [{"mu": mu, "sd": 1.0, "sleep": 0.04, "log": LOG}
              for mu in (4.0, 2.0, 1.0, 0.7, 0.5)]
    spec = {"store": str(tmp_path / "killed"), "sampler": f"{S}:normal", "block_size": 16,
            "params": params, "seed": 21, "rule": rule}
    tasks = [Task("kill", p, spec["sampler"], 16, MEAN0, 1) for p in params]
    reference = run_tasks(tasks, seed=21, rule=StoppingRule(**rule), unit_cost=1, progress=False)
    reference_calls = log_lines(log)
    log.unlink()
    blocks = [r.n_blocks for r in reference]
    assert blocks == sorted(blocks) and blocks[-1] >= blocks[1] + 8, \
        f"seed 21: cases must finish far apart, got {blocks} blocks"

    cases = tmp_path / "killed" / "cases"
    cmd = [sys.executable, "-c", KILL_SCRIPT, json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (cases.exists() and len(list(cases.glob("*.json"))) >= 2):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no case finished within 60 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
                for p in cases.glob("*.json")}
    assert 2 <= len(finished) < len(params), f"kill not part way: {len(finished)} cases done"

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    resumed_keys = {s["key"] for s in summary if s["resumed"]}
    assert resumed_keys == {name[:-len(".json")] for name in finished}
    for name, (ino, mtime, content) in finished.items():
        p = cases / name
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) == (ino, mtime, content), \
            f"finished case {name} was rewritten"
    store = ResultStore(tmp_path / "killed")
    for want in reference:
        record = store.load_case(want.key)
        got = Moments.from_json(record["moments"])
        assert record["n_blocks"] == want.n_blocks and got.count == want.moments.count
        assert np.array_equal(got.mean, want.moments.mean), "seed 21: resumed mean differs"
        assert np.array_equal(got.comoment, want.moments.comoment)
    assert log_lines(log) <= reference_calls + 1, \
        f"{log_lines(log)} sampler calls with a kill vs {reference_calls} without"


# ---------------------------------------------------------------------------------------------
# 7. Work units as plain data
# ---------------------------------------------------------------------------------------------

def test_work_unit_json_round_trip_and_purity():
    unit = WorkUnit(f"{S}:ratio_pair", json.dumps({"ratio": 2.0, "mu_b": 3.0, "noise": 0.5}),
                    seed=9, block_size=6, first_block=3, n_blocks=4)
    text = unit.to_json()
    assert json.loads(text)["first_block"] == 3
    back = WorkUnit.from_json(text)
    assert back == unit
    out = execute_unit(unit)
    assert execute_unit(back) == out
    assert json.loads(json.dumps(out)) == out
    assert len(out) == 4 and all(d["count"] == 6 for d in out)
    # splitting a unit does not change its blocks
    halves = (execute_unit(WorkUnit(unit.sampler, unit.params_json, 9, 6, 3, 2))
              + execute_unit(WorkUnit(unit.sampler, unit.params_json, 9, 6, 5, 2)))
    assert halves == out
    # block b is the sampler run on the stream block_generator(seed, case key, b)
    params = json.loads(unit.params_json)
    key = case_spawn_key({"sampler": unit.sampler, "params": params})
    direct = samplers.ratio_pair(params, block_generator(9, key, 5), 6)
    assert np.array_equal(Moments.from_samples(direct).mean, np.asarray(out[2]["mean"]))


# ---------------------------------------------------------------------------------------------
# 8. Verdicts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, expected", [
    # sorted 0.005 <= .05/4, 0.01 <= .05/3, then 0.03 > .05/2: stop
    ([0.01, 0.04, 0.03, 0.005], [True, False, False, True]),
    # every step passes (Bonferroni .05/4 would reject only the first two)
    ([0.01, 0.02, 0.04, 0.001], [True, True, True, True]),
    ([0.01, 0.02, 0.06, 0.001], [True, True, False, True]),
    # step-down stops at the first failure, even though 0.016 <= .05 / 1
    ([0.013, 0.014, 0.015, 0.016], [False, False, False, False]),
    ([0.05], [True]),
    ([], []),
])
def test_holm_hand_worked(p, expected):
    assert holm_reject(p, 0.05).tolist() == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=30), st.sampled_from([0.01, 0.05, 0.2]))
def test_holm_matches_its_definition(p, alpha):
    """Reject H_(i) iff p_(j) <= alpha / (k - j + 1) for every j <= i (1-based, sorted)."""
    k = len(p)
    order = np.argsort(p, kind="stable")
    expected = np.zeros(k, dtype=bool)
    for i in range(k):
        if all(p[order[j]] <= alpha / (k - j) for j in range(i + 1)):
            expected[order[i]] = True
    assert holm_reject(p, alpha).tolist() == expected.tolist()


def _check(value, se, bound=1.0, direction="upper", df=100, **kw):
    return BoundCheck("c", "q <= b", direction, Estimate(value, se, df), bound, **kw)


def test_verdicts_clear_cases_both_directions():
    checks = [_check(2.0, 0.01), _check(0.5, 0.01), _check(1.0, 10.0),
              _check(0.5, 0.01, direction="lower"), _check(2.0, 0.01, direction="lower")]
    assign_verdicts(checks)
    assert [c.verdict for c in checks] == [Verdict.VIOLATED, Verdict.HOLDS, Verdict.INCONCLUSIVE,
                                           Verdict.VIOLATED, Verdict.HOLDS]
    assert [c.observed for c in checks] == ["bound-fails", "bound-holds", "undecided",
                                            "bound-fails", "bound-holds"]
    assert str(Verdict.OUTSIDE_HYPOTHESES) == "OUTSIDE-HYPOTHESES"
    record = checks[0].to_json()
    assert record["verdict"] == "VIOLATED" and record["slack"] == pytest.approx(-1.0)
    assert record["ci_low"] < 2.0 < record["ci_high"]


def test_outside_hypotheses_are_a_separate_family():
    inside = _check(1.0 + stats.t.isf(0.03, 100) * 0.1, 0.1)   # p_violation = 0.03
    assert inside.p_violation() == pytest.approx(0.03)
    outside = [_check(2.0, 0.01, in_hypotheses=False, hypothesis_note="heavy tails"),
               _check(0.5, 0.01, in_hypotheses=False), _check(1.0, 10.0, in_hypotheses=False)]
    outside += [_check(1.0, 1.0, in_hypotheses=False) for _ in range(7)]
    assign_verdicts([inside] + outside)
    assert inside.verdict == Verdict.VIOLATED  # alone in its family: 0.03 <= 0.05
    assert all(c.verdict == Verdict.OUTSIDE_HYPOTHESES for c in outside)
    assert [c.observed for c in outside[:3]] == ["bound-fails", "bound-holds", "undecided"]
    # the same check in a family of 10 in-hypothesis checks is not significant after Holm
    others = [_check(1.0, 1.0) for _ in range(9)]
    assign_verdicts([inside] + others)
    assert inside.verdict == Verdict.INCONCLUSIVE


def test_deterministic_checks_compare_directly():
    checks = [_check(1.0, 0.0), _check(1.0 + 1e-13, 0.0), _check(1.0 + 1e-9, 0.0),
              _check(0.999, 0.0), _check(1.0 - 1e-9, 0.0, direction="lower"),
              _check(1.0 - 1e-13, 0.0, direction="lower")]
    assign_verdicts(checks)
    assert [c.verdict for c in checks] == [Verdict.HOLDS, Verdict.HOLDS, Verdict.VIOLATED,
                                           Verdict.HOLDS, Verdict.VIOLATED, Verdict.HOLDS]


def test_rel_tol_allowance():
    # 5 standard errors above the bound, but inside a 0.1% round-off allowance
    tolerant = _check(1.0005, 1e-4, rel_tol=1e-3)
    strict = _check(1.0005, 1e-4)
    assign_verdicts([tolerant])
    assign_verdicts([strict])
    assert tolerant.verdict == Verdict.HOLDS and strict.verdict == Verdict.VIOLATED
    assert tolerant.p_violation() > 0.5 and strict.p_violation() < 1e-4
    lower = _check(-2.001, 1e-4, bound=-2.0, direction="lower", rel_tol=1e-3)  # |bound| scales
    assign_verdicts([lower])
    assert lower.verdict == Verdict.HOLDS


# ---------------------------------------------------------------------------------------------
# 9. Family-wise error control over a sweep (sampling distribution simulated directly)
# ---------------------------------------------------------------------------------------------

def _boundary_sweep(rng, n_checks=200):
    """n_checks estimates whose true value is exactly at the bound: estimate = bound + se * T."""
    df = rng.integers(30, 2000, n_checks).astype(float)
    se = rng.uniform(0.01, 1.0, n_checks)
    bound = rng.uniform(-3, 3, n_checks)
    direction = rng.choice(["upper", "lower"], n_checks)
    t = rng.standard_t(df)
    return [BoundCheck("c", "", str(d), Estimate(float(b + s * x), float(s), float(f)), float(b))
            for d, b, s, x, f in zip(direction, bound, se, t, df)]


def test_family_wise_error_at_the_bound_is_controlled():
    seed, sweeps, alpha = 2024, 400, 0.05
    rng = np.random.default_rng(seed)
    any_violated = any_holds = any_marginal = 0
    for _ in range(sweeps):
        checks = _boundary_sweep(rng)
        assign_verdicts(checks, alpha)
        any_violated += any(c.verdict == Verdict.VIOLATED for c in checks)
        any_holds += any(c.verdict == Verdict.HOLDS for c in checks)
        # negative control: the same checks, each tested on its own (no multiplicity correction)
        any_marginal += any(c.p_violation() <= alpha for c in checks)
    limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / sweeps)
    fwer, fwer_holds, marginal = any_violated / sweeps, any_holds / sweeps, any_marginal / sweeps
    assert fwer <= limit, f"seed {seed}: FWER {fwer:.4f} > {limit:.4f} over {sweeps} sweeps"
    # at the bound "the bound fails" is also a boundary null: HOLDS is just as controlled
    assert fwer_holds <= limit, f"seed {seed}: any-HOLDS rate {fwer_holds:.4f} > {limit:.4f}"
    assert marginal > 0.9, f"seed {seed}: uncorrected rate {marginal:.3f} should be ~1"


def test_without_holm_the_family_wise_error_explodes():
    """Negative control through assign_verdicts itself: each check its own family."""
    seed, sweeps = 7, 60
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sweeps):
        checks = _boundary_sweep(rng)
        for c in checks:
            assign_verdicts([c])
        hits += any(c.verdict == Verdict.VIOLATED for c in checks)
    assert hits / sweeps > 0.9, f"seed {seed}: {hits}/{sweeps} sweeps with a false VIOLATED"
