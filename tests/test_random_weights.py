"""Random ensembles: distribution parsing, moments against theory, and the seeded block streams."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sntheory.random_weights import (DISTRIBUTION_NAMES, Distribution, block_generator,
                                     case_spawn_key, parse_distribution, sample_kernels,
                                     sample_matrices)

N = 400_000  # draws per moment check


# ---------------------------------------------------------------------------------------------
# parse_distribution
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, name, symmetric, mean_zero, fourth, lower", [
    ("gaussian", "gaussian", True, True, True, True),
    ("normal", "gaussian", True, True, True, True),
    ("  Gaussian ", "gaussian", True, True, True, True),
    ("uniform", "uniform", True, True, True, True),
    ("rademacher", "rademacher", True, True, True, False),
    ("cauchy", "cauchy", True, False, False, False),
    ("exponential", "exponential", False, False, True, False),
    ("shifted-exponential", "shifted-exponential", False, True, True, False),
    ("student-t:3", "student-t:3", True, True, False, False),
    ("t:2.5", "student-t:2.5", True, True, False, False),
    ("STUDENT-T:5", "student-t:5", True, True, True, False),
    ("student-t:1", "student-t:1", True, False, False, False),
    ("student-t:0.5", "student-t:0.5", True, False, False, False),
])
def test_parse_distribution(spec, name, symmetric, mean_zero, fourth, lower):
    d = parse_distribution(spec)
    assert (d.name, d.symmetric, d.mean_zero, d.finite_fourth_moment,
            d.in_lower_bound_hypothesis) == (name, symmetric, mean_zero, fourth, lower)
    assert parse_distribution(d) is d
    assert parse_distribution(d.name) == d  # canonical names parse to themselves


@pytest.mark.parametrize("spec", ["student-t:abc", "student-t:", "t:0", "student-t:-2",
                                  "student-t:inf", "student-t:nan"])
def test_bad_student_t_dof(spec):
    with pytest.raises(ValueError, match=r"`dist`.*degrees of freedom"):
        parse_distribution(spec)


@pytest.mark.parametrize("spec", ["gauss", "", "laplace", "student", "cauchy:1"])
def test_unknown_distribution_lists_the_names(spec):
    with pytest.raises(ValueError, match=r"`dist` must be one of gaussian, uniform") as info:
        parse_distribution(spec)
    for name in DISTRIBUTION_NAMES:
        assert name in str(info.value)


def test_non_string_distribution():
    with pytest.raises(TypeError, match="`dist`"):
        parse_distribution(3)


# ---------------------------------------------------------------------------------------------
# Moments against theory
# ---------------------------------------------------------------------------------------------

# name: (mean, variance, E[(X - mean)^4]) ; None where the moment does not exist
THEORY = {
    "gaussian": (0.0, 1.0, 3.0),
    "uniform": (0.0, 1 / 3, 1 / 5),
    "rademacher": (0.0, 1.0, 1.0),
    "exponential": (1.0, 1.0, 9.0),
    "shifted-exponential": (0.0, 1.0, 9.0),
    "student-t:10": (0.0, 10 / 8, 3 * 10 ** 2 / (8 * 6)),
}


def _draw(name, seed, count=N):
    return sample_matrices(name, 1, 1, count, np.random.default_rng(seed))[:, 0, 0]


@pytest.mark.parametrize("name", sorted(THEORY))
def test_mean_and_variance_match_theory(name):
    seed = sorted(THEORY).index(name) + 100
    mean, var, mu4 = THEORY[name]
    x = _draw(name, seed)
    se_mean = np.sqrt(var / N)
    assert abs(x.mean() - mean) < 5 * se_mean, \
        f"{name}, seed {seed}: mean {x.mean():.5f} vs {mean} (5 se = {5 * se_mean:.2g})"
    # sd of the sample variance ~ sqrt((mu4 - var^2) / N); plus the O(var/N) term from the
    # estimated mean (5 se of the mean, squared), which matters only for Rademacher (X^2 = 1)
    tol = 5 * np.sqrt((mu4 - var ** 2) / N) + 25 * var / N
    sample_var = x.var(ddof=1)
    assert abs(sample_var - var) < tol, \
        f"{name}, seed {seed}: variance {sample_var:.5f} vs {var:.5f} (tol {tol:.2g})"


SYMMETRIC = ["gaussian", "uniform", "rademacher", "student-t:3", "student-t:10", "cauchy"]


@pytest.mark.parametrize("name", SYMMETRIC + ["exponential", "shifted-exponential"])
def test_symmetry(name):
    """P(X > q) = P(X < -q) for symmetric laws (at q = 0 and q = 0.5); not for exponentials."""
    seed = 7 + len(name)
    x = _draw(name, seed)
    assert parse_distribution(name).symmetric == (name in SYMMETRIC)
    for q in (0.0, 0.5):
        up, down = np.mean(x > q), np.mean(x < -q)
        se = np.sqrt((up + down) / N)  # sd of the difference of two multinomial fractions
        if name in SYMMETRIC:
            assert abs(up - down) < 5 * se, f"{name}, seed {seed}, q={q}: {up:.4f} vs {down:.4f}"
        elif q == 0.5:
            assert abs(up - down) > 20 * se, f"{name}, seed {seed}: looks symmetric"


def test_supports_and_heavy_tails():
    seed = 3
    u = _draw("uniform", seed)
    assert u.min() >= -1 and u.max() <= 1
    assert set(np.unique(_draw("rademacher", seed))) == {-1.0, 1.0}
    assert _draw("exponential", seed).min() >= 0
    assert _draw("shifted-exponential", seed).min() >= -1
    # Cauchy: quartiles at -1 and +1 (sd of a sample quartile: sqrt(p(1-p)/N) / density)
    c = _draw("cauchy", seed)
    density = 1 / (np.pi * 2)
    se_q = np.sqrt(0.25 * 0.75 / N) / density
    q1, q3 = np.quantile(c, [0.25, 0.75])
    assert abs(q1 + 1) < 5 * se_q and abs(q3 - 1) < 5 * se_q, f"seed {seed}: quartiles {q1}, {q3}"
    # Student-t with 3 dof: P(|T| > 5) = 0.01539 (vs 5.7e-7 for a normal)
    t3 = _draw("student-t:3", seed)
    p = np.mean(np.abs(t3) > 5)
    assert abs(p - 0.015392) < 5 * np.sqrt(0.0154 / N), f"seed {seed}: P(|T3| > 5) = {p}"


@pytest.mark.parametrize("name", ["gaussian", "uniform", "rademacher", "cauchy", "student-t:3",
                                  "exponential", "shifted-exponential"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shapes_and_dtypes(name, dtype):
    rng = np.random.default_rng(0)
    a = sample_matrices(name, 3, 5, 4, rng, dtype)
    k = sample_kernels(name, 2, 3, 4, 5, 6, rng, dtype)
    assert a.shape == (4, 3, 5) and a.dtype == dtype
    assert k.shape == (6, 2, 3, 4, 5) and k.dtype == dtype
    assert np.isfinite(a).all() and np.isfinite(k).all()


def test_sampling_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`m`"):
        sample_matrices("gaussian", 0, 3, 2, rng)
    with pytest.raises(ValueError, match="`count`"):
        sample_matrices("gaussian", 2, 3, 0, rng)
    with pytest.raises(TypeError, match="`n`"):
        sample_matrices("gaussian", 2, 2.5, 1, rng)
    with pytest.raises(ValueError, match="`c_in`"):
        sample_kernels("gaussian", 1, -1, 3, 3, 1, rng)
    with pytest.raises(ValueError, match="`dist`"):
        sample_matrices("bogus", 2, 2, 1, rng)


def test_sample_uses_only_the_given_generator():
    a = sample_matrices("student-t:4", 3, 3, 10, np.random.default_rng(42))
    np.random.seed(0)  # the legacy global state must not matter
    b = sample_matrices("student-t:4", 3, 3, 10, np.random.default_rng(42))
    assert np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Block streams and case keys
# ---------------------------------------------------------------------------------------------

def test_block_generator_is_reproducible():
    key = case_spawn_key({"m": 4, "n": 8, "dist": "gaussian"})
    a = block_generator(5, key, 3).standard_normal(100)
    b = block_generator(5, key, 3).standard_normal(100)
    assert np.array_equal(a, b)


def test_streams_differ_across_seeds_cases_and_blocks():
    keys = [case_spawn_key({"case": i}) for i in range(50)]
    firsts = {int(block_generator(seed, key, block).integers(0, 2 ** 63))
              for seed in (0, 1) for key in keys for block in range(100)}
    assert len(firsts) == 2 * 50 * 100


def test_streams_are_uncorrelated():
    """Pairwise correlations of 60 streams (blocks of 3 cases x 20 blocks): each r * sqrt(n) is
    about N(0, 1), so no |r| sqrt(n) beyond 5.5 and mean r^2 n near 1."""
    n = 20_000
    keys = [case_spawn_key({"case": i}) for i in range(3)]
    x = np.array([block_generator(9, key, b).standard_normal(n) for key in keys for b in range(20)])
    r = np.corrcoef(x)[np.triu_indices(len(x), 1)]
    z2 = r ** 2 * n
    assert np.abs(r).max() * np.sqrt(n) < 5.5, f"seed 9: max |r| sqrt(n) = {np.sqrt(z2.max()):.2f}"
    assert abs(z2.mean() - 1) < 4 * np.sqrt(2 / r.size), f"seed 9: mean r^2 n = {z2.mean():.3f}"


def test_block_generator_equals_seedsequence_spawning():
    """The documented identity: the block stream is the child SeedSequence(seed).spawn gives."""
    seed = 31
    for block in range(4):
        child = np.random.SeedSequence(seed).spawn(block + 1)[block]
        want = np.random.Generator(np.random.PCG64(child)).random(5)
        assert np.array_equal(block_generator(seed, (), block).random(5), want)
    grandchild = np.random.SeedSequence(seed).spawn(3)[2].spawn(5)[4]
    want = np.random.Generator(np.random.PCG64(grandchild)).random(5)
    assert np.array_equal(block_generator(seed, (2,), 4).random(5), want)


def test_block_generator_argument_errors():
    with pytest.raises(ValueError, match="`seed`"):
        block_generator(-1, (1,), 0)
    with pytest.raises(ValueError, match="`block`"):
        block_generator(0, (1,), -1)
    with pytest.raises(TypeError, match="`seed`"):
        block_generator(1.5, (1,), 0)
    assert block_generator(np.int64(3), (1,), np.int64(2)).random() == \
        block_generator(3, (1,), 2).random()


PARAMS = {"m": 64, "n": 32, "dist": "student-t:3", "normalizer": "sn", "scale": 0.5,
          "flag": True, "shape": [3, 3]}


def test_case_spawn_key_form_and_canonical_json():
    key = case_spawn_key(PARAMS)
    assert isinstance(key, tuple) and len(key) == 4
    assert all(isinstance(w, int) and 0 <= w < 2 ** 32 for w in key)
    reordered = dict(reversed(list(PARAMS.items())))
    assert case_spawn_key(reordered) == key


def test_case_spawn_key_is_stable_across_processes():
    """Computed in fresh interpreters with different hash seeds: hash() randomisation must not
    (and sha256 of canonical JSON does not) change the key."""
    code = ("import json, sys; from sntheory.random_weights import case_spawn_key; "
            "print(json.dumps(case_spawn_key(json.loads(sys.argv[1]))))")
    here = list(case_spawn_key(PARAMS))
    for hash_seed in ("1", "987"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code, json.dumps(PARAMS)], env=env,
                             capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here, f"PYTHONHASHSEED={hash_seed}"


@pytest.mark.parametrize("field, other", [
    ("m", 65), ("n", 33), ("dist", "student-t:4"), ("normalizer", "fro"), ("scale", 0.5000001),
    ("flag", False), ("shape", [3, 4]), ("extra", None),
])
def test_case_spawn_key_is_sensitive_to_each_param(field, other):
    changed = {**PARAMS, field: other}
    assert case_spawn_key(changed) != case_spawn_key(PARAMS)


def test_samplers_take_randomness_only_from_the_stream():
    """Same stream -> same matrices; next block -> different ones (the engine's contract)."""
    key = case_spawn_key({"sampler": "x", "params": {"m": 3}})
    a = sample_matrices("uniform", 3, 3, 5, block_generator(1, key, 0))
    b = sample_matrices("uniform", 3, 3, 5, block_generator(1, key, 0))
    c = sample_matrices("uniform", 3, 3, 5, block_generator(1, key, 1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_distribution_is_plain_frozen_data():
    d = parse_distribution("student-t:3")
    assert isinstance(d, Distribution) and d.dof == 3.0
    with pytest.raises(AttributeError):
        d.name = "gaussian"  # type: ignore[misc]


@pytest.mark.parametrize("name", ["gaussian", "uniform", "exponential", "shifted-exponential",
                                  "cauchy", "rademacher", "student-t:3"])
def test_reuse_gives_the_same_numbers_as_a_fresh_draw(name):
    dist = parse_distribution(name)
    fresh = dist.sample(np.random.default_rng(4), (3, 5, 7))
    reused = dist.sample(np.random.default_rng(4), (3, 5, 7), reuse=True)
    assert np.array_equal(fresh, reused)
    again = dist.sample(np.random.default_rng(5), (3, 5, 7), reuse=True)
    if name in ("gaussian", "uniform", "exponential", "shifted-exponential"):
        assert again is reused or np.shares_memory(again, reused)  # the scratch buffer is reused
