"""Compiled (numba) kernels behind :mod:`sntheory.spectral`.  Private: no argument checks here.

Conventions shared by every kernel
----------------------------------
* A matrix is handed over as ``X`` of shape ``(ell, d)``, C-contiguous, float64 or float32.
  The operator that is worked on is the ``d x d`` Gram matrix ``B = f^2 X^T X`` (sum of the
  outer products of the *rows* of ``X``), where ``f = 2**-e`` is an exact power of two chosen
  per matrix so that ``max|f X|`` lies in [1/2, 1).  The scaling keeps every intermediate
  quantity far from overflow and underflow for any finite input, and it is undone exactly at
  the end (multiplication by a power of two).
* All arithmetic is float64, also for float32 storage (a float32 entry is converted exactly).
* Per matrix a kernel reports ``amax = max|X|``: NaN when the matrix holds NaN or infinity and
  0 for an all-zero matrix; the Python layer turns those into errors.  Such matrices are
  skipped (their outputs are NaN / 0).
* Determinism: every matrix is processed by the same sequence of floating-point operations,
  whatever its position in the batch (loops are vectorised without alignment peeling), so a
  result never depends on the batch it came in.

``fastmath`` is restricted to re-association and FMA contraction: the rounding-error bounds
used below (``gamma_n = n u / (1 - n u)`` for a sum of ``n`` products) hold for any order of
summation and for fused multiply-adds, and no flag assumes finite values.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["tiny_batch", "lanczos_batch", "mixed_batch", "scan_batch", "sums_batch",
           "start_vector", "EXTREME_EXPONENT"]

_FM = {"reassoc", "contract"}
_U = 2.0 ** -53                      # unit round-off of float64
_U32 = 2.0 ** -24                    # unit round-off of float32
_BIG = 1.7976931348623157e308
# For |e| <= EXTREME_EXPONENT the scale 2^-e and its square are normal numbers and one
# multiplication applies them (exactly).  Beyond, entries are scaled one by one with ldexp.
# (Chained multiplications x * 2^a * 2^b are NOT safe: numba propagates the fastmath flags of
# a caller into its callees, and re-association then forms 2^(a+b), which may overflow.)
EXTREME_EXPONENT = 500


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
@njit(fastmath=_FM, cache=True, error_model="numpy")
def _amax2(X):
    """max |X| of a 2-D array; NaN if it holds NaN or +-inf."""
    ell, d = X.shape
    amax = 0.0
    bad = False
    for i in range(ell):
        for j in range(d):
            v = abs(X[i, j])
            if not (v <= _BIG):
                bad = True
            amax = max(amax, v)
    if bad:
        return np.nan
    return amax


@njit(cache=True, error_model="numpy")
def _exponent(amax):
    """e with amax * 2**-e in [1/2, 1)."""
    return math.frexp(amax)[1]


@njit(cache=True, error_model="numpy")
def _pow2(e):
    """2**e as a float for -1074 <= e <= 1023 (exact)."""
    return math.ldexp(1.0, e)


@njit(cache=True, error_model="numpy")
def _mul_pow2(x, e):
    """x * 2**e, exact unless the result over- or underflows (then correctly rounded)."""
    return math.ldexp(x, e)


@njit(cache=True, error_model="numpy")
def _scaled(x, e, f):
    """x * 2**-e given f = 2**-e when |e| <= EXTREME_EXPONENT (f unused otherwise)."""
    if abs(e) <= EXTREME_EXPONENT:
        return x * f
    return math.ldexp(x, -e)


@njit(fastmath=_FM, cache=True, error_model="numpy")
def scan_batch(a3, amax_out):
    """amax per matrix of a 3-D C-contiguous batch (NaN marks NaN/inf)."""
    for b in range(a3.shape[0]):
        amax_out[b] = _amax2(a3[b])


@njit(cache=True, error_model="numpy")
def start_vector(d, seed):
    """Deterministic pseudo-random unit vector of length d (splitmix64 -> uniform(-1, 1))."""
    v = np.empty(d)
    state = np.uint64(seed)
    s = 0.0
    for j in range(d):
        state = state + np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        x = float(z >> np.uint64(11)) * (2.0 ** -53)          # [0, 1)
        v[j] = 2.0 * x - 1.0
        s += v[j] * v[j]
    s = math.sqrt(s)
    for j in range(d):
        v[j] /= s
    return v


# --------------------------------------------------------------------------------------------
# "tiny": certified bracket by repeated squaring of the k x k Gram matrix
# --------------------------------------------------------------------------------------------
@njit(fastmath=_FM, cache=True, error_model="numpy")
def tiny_batch(a3, rtol, sigma, bound, amax_out, steps_out):
    """Two-sided certified bracket for sigma_1 of every matrix of a (N, m, n) batch.

    With k = min(m, n), G = f^2 A^T A or f^2 A A^T (k x k, the small side) and
    M_s = G^p / tr(G^p), p = 2^s (formed by repeated squaring with trace normalisation, the
    normalisers c_s = tr(M_s^2) being kept), one has exactly

        lambda_1(G) = tr(G) * prod_s c_s^(1/2^(s+1)) * mu_1(M_s)^(1/p).

    mu_1(M_s) is bracketed, without knowing the spectrum, by
      lower: max(tr(M^2)/tr(M), Rayleigh quotient of M at the dominant column x of M^2),
      upper: min( sqrt(tr(M^2)),                         (mu_1^2 <= sum mu_i^2)
                  c' + eps / c'                           (|mu (mu - c')| <= ||M^2 - c'M||_2 for
                                                           every eigenvalue mu; c' <= mu_1)
                  rho + |r|^2 / (rho - b) if b < rho )    (Kato-Temple with the trace bound
                                                           mu_2 <= sqrt(tr(M^2) - rho^2))
    and the relative width of the bracket of lambda_1 is that of mu_1 divided by p.  The
    second upper bound handles exactly equal top singular values (M_s tends to P/m, P the
    projector on the top eigenspace), the third makes the upper bound converge as fast as the
    lower one when there is a gap.  Rounding errors of every step are added to the bracket:
    forming G (gamma_ell * tr G, ell = long side), the squarings (k gamma_k per squaring,
    weighted by 1/2^(s+1), so at most ~k gamma_k overall), the Rayleigh quotients and the
    final square roots.  The result is a bracket of sigma_1(A) that holds rigorously under the
    standard floating-point model; sigma is its midpoint and bound its half-width.
    """
    N, m, n = a3.shape
    k = min(m, n)
    ell = max(m, n)
    G = np.empty((k, k))
    M = np.empty((k, k))
    S = np.empty((k, k))
    x = np.empty(k)
    y = np.empty(k)
    row = np.empty(k)
    cs = np.empty(64)
    u = _U
    gk = (k + 2) * u / (1.0 - (k + 2) * u)
    gl = (ell + 2) * u / (1.0 - (ell + 2) * u)
    # target relative width of the bracket of lambda_1 (sigma width is about half of it)
    # (half-width of the sigma bracket ~ a quarter of the relative width of the lambda one)
    tol = max(3.0 * rtol, 16.0 * (k + 1) * u)
    for b in range(N):
        amax = _amax2(a3[b])
        amax_out[b] = amax
        if not (amax > 0.0):                 # NaN/inf (NaN) or all zero (0): reported upstream
            sigma[b] = amax
            bound[b] = amax
            steps_out[b] = 0
            continue
        e = _exponent(amax)
        f = _pow2(-e) if abs(e) <= EXTREME_EXPONENT else 1.0
        # ---- Gram matrix of the small side, scaled by 2^-2e --------------------------------
        if m > n:
            for p in range(k):
                for q in range(k):
                    G[p, q] = 0.0
            for i in range(m):
                for p in range(k):
                    row[p] = _scaled(float(a3[b, i, p]), e, f)
                for p in range(k):
                    rp = row[p]
                    for q in range(k):                # full rows: vectorises, stays symmetric
                        G[p, q] += rp * row[q]
        else:
            for p in range(k):
                for q in range(p, k):
                    s = 0.0
                    for j in range(n):
                        s += (_scaled(float(a3[b, p, j]), e, f)
                              * _scaled(float(a3[b, q, j]), e, f))
                    G[p, q] = s
                    G[q, p] = s
        trG = 0.0
        for p in range(k):
            trG += G[p, p]
        inv = 1.0 / trG
        for p in range(k):
            for q in range(k):
                M[p, q] = G[p, q] * inv
        # ---- repeated squaring -------------------------------------------------------------
        p2 = 1.0
        nst = 0
        mu_lo = 1.0 / k
        mu_up = 1.0
        for it in range(62):
            for p in range(k):
                for q in range(p, k):
                    s = 0.0
                    for r in range(k):
                        s += M[p, r] * M[q, r]
                    S[p, q] = s
                    S[q, p] = s
            c = 0.0
            trM = 0.0
            ib = 0
            bestd = -1.0
            for p in range(k):
                trM += M[p, p]
                c += S[p, p]
                if S[p, p] > bestd:
                    bestd = S[p, p]
                    ib = p
            cp = c / trM
            sqc = math.sqrt(c)
            if it < 6 and (sqc - cp) > 0.01 * cp * p2:
                # cheap bracket [c', sqrt(c)] of mu_1 still wider than 1% in lambda: the full
                # bounds below cannot meet the tolerance yet (they converge ~4x faster in
                # the exponent), skip them (exactly equal top values: evaluated from it = 6)
                cs[it] = c
                invc = 1.0 / c
                for p in range(k):
                    for q in range(k):
                        M[p, q] = S[p, q] * invc
                p2 *= 2.0
                continue
            rr = 0.0
            for p in range(k):
                for q in range(k):
                    dlt = S[p, q] - cp * M[p, q]
                    rr += dlt * dlt
            # ||fl(M^2) - M^2||_F <= gamma_k ||M||_F^2 = gamma_k c, plus forming S - c'M
            eps = math.sqrt(rr) * (1.0 + 2.0 * u) + 4.0 * gk * c
            lo_mu = cp * (1.0 - 4.0 * gk)
            ub = min(sqc * (1.0 + gk), cp + eps / lo_mu)
            xx = 0.0
            for p in range(k):
                x[p] = S[p, ib]
                xx += x[p] * x[p]
            xmx = 0.0
            for p in range(k):
                s = 0.0
                for q in range(k):
                    s += M[p, q] * x[q]
                y[p] = s
                xmx += x[p] * s
            rho = xmx / xx
            dd = 0.0
            for p in range(k):
                dlt = y[p] - rho * x[p]
                dd += dlt * dlt
            # rounding of y = Mx is <= gamma_k ||M||_F ||x|| = gamma_k sqrt(c) ||x||
            delta = math.sqrt(dd / xx) * (1.0 + 4.0 * u) + 2.0 * gk * sqc
            rho_lo = rho - 3.0 * gk * sqc
            lo_mu = max(lo_mu, rho_lo)
            b2 = c - lo_mu * lo_mu + 6.0 * gk * c
            bmu = math.sqrt(max(b2, 0.0))
            if bmu < rho_lo:                       # Kato-Temple needs rho in (b, inf)
                ub = min(ub, rho + 3.0 * gk * sqc + delta * delta / (rho_lo - bmu))
            nst = it
            mu_lo = lo_mu
            mu_up = ub
            width = (ub - lo_mu) / (lo_mu * p2)      # >= relative width of the lambda bracket
            if width <= tol:                          # (terminates: p doubles every step)
                break
            cs[it] = c
            invc = 1.0 / c
            for p in range(k):
                for q in range(k):
                    M[p, q] = S[p, q] * invc
            p2 *= 2.0
        # ---- assemble lambda_1 bracket -----------------------------------------------------
        # P = prod_s c_s^(1/2^(s+1)) * mu_lo^(1/p) by nested square roots, and
        # (mu_up / mu_lo)^(1/p) <= 1 + (mu_up / mu_lo - 1) / p (Bernoulli)
        prod = mu_lo
        for s_ in range(nst - 1, -1, -1):
            prod = math.sqrt(cs[s_] * prod)
        # accumulated rounding of the squaring chain and of the square roots (relative)
        eta = (2.0 * k * k + 8.0 * k + 4.0 * nst + 16.0) * u
        lam_lo = trG * prod * (1.0 - eta)
        lam_up = trG * prod * (1.0 + (mu_up / mu_lo - 1.0) / p2) * (1.0 + eta)
        # rounding of the Gram matrix itself: ||fl(G) - G||_2 <= gamma_ell tr(G) (+ underflow)
        dG = gl * trG * (1.0 + gk) + ell * k * 2.0 ** -1000
        lam_lo = max(lam_lo - dG, 0.0)
        lam_up = lam_up + dG
        slo = math.sqrt(lam_lo) * (1.0 - 2.0 * u)
        sup = math.sqrt(lam_up) * (1.0 + 2.0 * u)
        mid = 0.5 * (slo + sup)
        half = 0.5 * (sup - slo) * (1.0 + 4.0 * u) + 2.0 * u * mid
        sigma[b] = _mul_pow2(mid, e)
        # + 2 ulp of the smallest subnormal: sigma itself may be a (rounded) subnormal
        bound[b] = _mul_pow2(half, e) + 1e-323
        steps_out[b] = nst + 1


# --------------------------------------------------------------------------------------------
# Lanczos on the implicit Gram operator
# --------------------------------------------------------------------------------------------
@njit(fastmath=_FM, cache=True, error_model="numpy")
def _gram_apply(X, ff, v, w):
    """w = ff X^T (X v) in one pass over the rows of X (ff = 2^-2e, a normal number).

    Rows are taken 8 at a time: 8 dot products with v (8 independent accumulators hide the
    latency of the float32 -> float64 conversion), then the 8 rows, still in cache, are added
    into w.  Measured on 4096 x 4096 (1 core): 3.4 ms per pass in float32 storage, 6.5 ms in
    float64, against 2.4 / 5.5 ms for a single BLAS GEMV (and a pass needs two GEMVs)."""
    ell, d = X.shape
    for j in range(d):
        w[j] = 0.0
    i = 0
    while i + 8 <= ell:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        s4 = 0.0
        s5 = 0.0
        s6 = 0.0
        s7 = 0.0
        for j in range(d):
            vj = v[j]
            s0 += X[i, j] * vj
            s1 += X[i + 1, j] * vj
            s2 += X[i + 2, j] * vj
            s3 += X[i + 3, j] * vj
            s4 += X[i + 4, j] * vj
            s5 += X[i + 5, j] * vj
            s6 += X[i + 6, j] * vj
            s7 += X[i + 7, j] * vj
        s0 *= ff
        s1 *= ff
        s2 *= ff
        s3 *= ff
        s4 *= ff
        s5 *= ff
        s6 *= ff
        s7 *= ff
        for j in range(d):
            w[j] += (s0 * X[i, j] + s1 * X[i + 1, j] + s2 * X[i + 2, j] + s3 * X[i + 3, j]
                     + s4 * X[i + 4, j] + s5 * X[i + 5, j] + s6 * X[i + 6, j]
                     + s7 * X[i + 7, j])
        i += 8
    while i < ell:
        s0 = 0.0
        for j in range(d):
            s0 += X[i, j] * v[j]
        s0 *= ff
        for j in range(d):
            w[j] += s0 * X[i, j]
        i += 1


@njit(cache=True, error_model="numpy")
def _tri_eval(alpha, beta, n, lam):
    """One pass of the LDL^T recurrence of lam I - T (T tridiagonal: diag alpha, off-diagonal
    beta): returns (number of eigenvalues of T above lam, last pivot q_n(lam), dq_n/dlam).
    The count is Sylvester's inertia (negative pivots); q_n is increasing in lam between
    consecutive eigenvalues of T[:n-1, :n-1], and its roots are the eigenvalues of T."""
    q = lam - alpha[0]
    dq = 1.0
    cnt = 0
    for i in range(1, n):
        if q < 0.0:
            cnt += 1
        elif q == 0.0:
            q = 1e-300
        inv = 1.0 / q                                 # one division per step
        b2i = beta[i - 1] * beta[i - 1] * inv
        dq = 1.0 + b2i * dq * inv
        q = lam - alpha[i] - b2i
    if q < 0.0:
        cnt += 1
    return cnt, q, dq


@njit(cache=True, error_model="numpy")
def _tri_kth(alpha, beta, n, kth, a, b, x, atol, pole):
    """The kth largest eigenvalue of the tridiagonal T, given a bracket a <= . <= b and a
    starting point x in it: Newton on q_n, safeguarded by bisection, the side of every point
    being decided by the Sturm count (count >= kth  <=>  point below the eigenvalue).
    Returns the upper end of the bracket once it is narrower than atol.

    ``pole`` (if finite) is a pole of q_n next to the root (for the top eigenvalue: the top
    eigenvalue of T[:n-1, :n-1]); Newton then runs on q_n(l) (l - pole), which has no pole
    there and converges quadratically even when the root is extremely close to the pole (as
    it is once Lanczos has converged)."""
    for _ in range(200):
        cnt, q, dq = _tri_eval(alpha, beta, n, x)
        if cnt >= kth:
            a = x
        else:
            b = x
        if b - a <= max(atol, 2.0 * _U * max(abs(a), abs(b))):
            return b
        nxt = 0.5 * (a + b)
        if pole == pole:                              # not NaN: deflate the pole
            dd = x - pole
            dq = dq * dd + q
            q = q * dd
        if dq > 0.0 and dq < np.inf:
            step = q / dq
            if abs(step) <= max(4.0 * _U * abs(x), 0.5 * atol):
                # Newton has converged to a root of q_n: accept it if it is the kth one (for
                # kth = 1 the callers' bracket starts at the top pole of q_n: only one root)
                if kth == 1:
                    return x
                eps = max(16.0 * _U * abs(x), atol) + 1e-300
                c_hi, q_, dq_ = _tri_eval(alpha, beta, n, x + eps)
                c_lo, q_, dq_ = _tri_eval(alpha, beta, n, x - eps)
                if c_hi < kth <= c_lo:
                    return x
                if c_hi >= kth:
                    a = max(a, x + eps)
                else:
                    b = min(b, x - eps)
                x = 0.5 * (a + b)
                continue
            cand = x - step
            if a < cand < b:
                nxt = cand
        x = nxt
    return 0.5 * (a + b)


@njit(cache=True, error_model="numpy")
def _tri_last_component(alpha, beta, n, lam, z):
    """|last component| of the unit eigenvector of T for its top eigenvalue lam.

    Three steps of inverse iteration from e_n on K = lam' I - T, lam' = lam + eps slightly
    above the top eigenvalue, so that K is positive definite and its LDL^T factorisation
    without pivoting is stable.  After t steps the components along the other eigenvectors
    are damped by (eps / gap)^t; one step is not enough when the top Ritz vector has
    converged (its last component is then tiny and the others would dominate), three make
    the estimate accurate far below any tolerance.  z: workspace of length >= 2 n."""
    if n == 1:
        return 1.0
    scale = abs(lam)
    for i in range(n):
        scale = max(scale, abs(alpha[i]))
    shift = lam + 64.0 * _U * scale + 1e-300
    # pivots d_i of K = L D L^T (stored in z[n:2n]); L has sub-diagonal -beta_i / d_i
    # z[n:2n] = 1 / d_i, reciprocals of the pivots
    di = shift - alpha[0]
    z[n] = 1.0 / di
    for i in range(1, n):
        di = shift - alpha[i] - beta[i - 1] * beta[i - 1] * z[n + i - 1]
        if not (di > 0.0):
            di = 64.0 * _U * scale + 1e-300
        z[n + i] = 1.0 / di
    for i in range(n):
        z[i] = 0.0
    z[n - 1] = 1.0
    for step in range(3):
        # L y = z (forward), y / D, L^T x = . (backward); L_{i+1,i} = -beta_i / d_i
        for i in range(1, n):
            z[i] = z[i] + beta[i - 1] * z[n + i - 1] * z[i - 1]
        for i in range(n):
            z[i] = z[i] * z[n + i]
        for i in range(n - 2, -1, -1):
            z[i] = z[i] + beta[i] * z[n + i] * z[i + 1]
        # (no rescaling needed: ||K^-1|| <= 1 / (64 u scale) and scale >= 1/4 for the
        # scaled operators, so three solves stay far below the overflow threshold)
    nrm = 0.0
    for i in range(n):
        nrm += z[i] * z[i]
    return abs(z[n - 1]) / math.sqrt(nrm)


@njit(cache=True, error_model="numpy")
def _tri_solve_pp(alpha, beta, n, lam, b, x, work):
    """Solve (T - lam I) x = b, T tridiagonal, Gaussian elimination with partial pivoting."""
    # work rows: 0 diag, 1 super, 2 super2, 3 sub (multipliers)
    dl = work[0]
    dd = work[1]
    du = work[2]
    du2 = work[3]
    for i in range(n):
        dd[i] = alpha[i] - lam
        x[i] = b[i]
    for i in range(n - 1):
        dl[i] = beta[i]
        du[i] = beta[i]
        du2[i] = 0.0
    tiny = 1e-300
    for i in range(n - 1):
        if abs(dd[i]) >= abs(dl[i]):
            if dd[i] == 0.0:
                dd[i] = tiny
            fact = dl[i] / dd[i]
            dd[i + 1] -= fact * du[i]
            x[i + 1] -= fact * x[i]
            dl[i] = 0.0
        else:
            fact = dd[i] / dl[i]
            dd[i] = dl[i]
            temp = dd[i + 1]
            dd[i + 1] = du[i] - fact * temp
            if i < n - 2:
                du2[i] = du[i + 1]
                du[i + 1] = -fact * du2[i]
            du[i] = temp
            temp = x[i]
            x[i] = x[i + 1]
            x[i + 1] = temp - fact * x[i + 1]
    if dd[n - 1] == 0.0:
        dd[n - 1] = tiny
    x[n - 1] /= dd[n - 1]
    if n > 1:
        x[n - 2] = (x[n - 2] - du[n - 2] * x[n - 1]) / dd[n - 2]
    for i in range(n - 3, -1, -1):
        x[i] = (x[i] - du[i] * x[i + 1] - du2[i] * x[i + 2]) / dd[i]


@njit(cache=True, error_model="numpy")
def _second_ritz(alpha, beta, n, theta1, a, b, x0, pole, tw, tx, twork):
    """(theta2, |last component of its unit eigenvector|) for the tridiagonal T (n >= 2).

    theta2 lies in [a, b] (interlacing: theta2(T_n) is between theta2(T_{n-1}) and
    theta1(T_{n-1})); its eigenvector comes from one step of inverse iteration with a pivoted
    tridiagonal solve."""
    cnt, q, dq = _tri_eval(alpha, beta, n, a)
    while cnt < 2:                                   # widen until a is below theta2
        a = a - (b - a + abs(theta1) * 1e-3 + 1e-300)
        cnt, q, dq = _tri_eval(alpha, beta, n, a)
    if pole == pole:                 # a = theta2(T_{n-1}), a pole of q_n: start right above it
        x0 = a + 1e-9 * (b - a)
    if not (a <= x0 <= b):
        x0 = 0.5 * (a + b)
    # theta2 only enters the gap estimate: 1e-6 theta1 absolute accuracy is plenty, and the
    # upper end of the bracket is returned (smaller gap, larger bound)
    theta2 = _tri_kth(alpha, beta, n, 2, a, b, x0, 1e-6 * abs(theta1), pole)
    for i in range(n):
        tw[i] = 1.0
    lam = theta2 + 1e-9 * (theta1 - theta2)
    _tri_solve_pp(alpha, beta, n, lam, tw, tx, twork)
    nrm = 0.0
    for i in range(n):
        nrm += tx[i] * tx[i]
    nrm = math.sqrt(nrm)
    if not (nrm > 0.0) or not (nrm < np.inf):
        return theta2, 1.0
    return theta2, abs(tx[n - 1]) / nrm


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _lanczos_one(X, ff, v0, tol, maxit, V, alpha, beta, w, h, tz, tw, tx, twork,
                 delta_hint, rho_coef, quad, confirm):
    """Lanczos with full reorthogonalisation on B = ff X^T X from the unit vector v0.

    Stops when the error bound on the Ritz value, in sigma units, is <= tol * sigma (with
    quad and confirm: at the second consecutive step where it is).
    Returns (theta1, err_lam, iterations, theta2, r2, gap_used).

    err_lam = min(r1, r1^2 / delta) + rho where r1 = beta_j |s_j| is the residual norm of the
    top Ritz pair, delta = theta1 - theta2 - r2 the estimated distance from theta1 to the rest
    of the spectrum (or delta_hint when that is larger, from an earlier stage) and
    rho = rho_coef * u * theta1 a rounding allowance.  With quad=False only the residual
    bound r1 + rho is used (for the stopping test and the result).
    """
    ell, d = X.shape
    for j in range(d):
        V[0, j] = v0[j]
    theta1 = 0.0
    err = np.inf
    theta2 = 0.0
    r2 = np.inf
    gap_used = 0.0
    last_gap = 0
    lo2 = 0.0
    b2nd = 0.0
    slast = 1.0
    confirming = False
    it = 0
    for jj in range(maxit):
        it = jj + 1
        _gram_apply(X, ff, V[jj], w)
        if jj > 0:
            bprev = beta[jj - 1]
            for t in range(d):
                w[t] -= bprev * V[jj - 1, t]
        a = 0.0
        for t in range(d):
            a += V[jj, t] * w[t]
        alpha[jj] = a
        for t in range(d):
            w[t] -= a * V[jj, t]
        # full reorthogonalisation, classical Gram-Schmidt, second pass only when needed
        nrm0 = 0.0
        for t in range(d):
            nrm0 += w[t] * w[t]
        for rep in range(2):
            for i in range(jj + 1):
                s = 0.0
                for t in range(d):
                    s += V[i, t] * w[t]
                h[i] = s
            for i in range(jj + 1):
                hi = h[i]
                for t in range(d):
                    w[t] -= hi * V[i, t]
            nrm1 = 0.0
            for t in range(d):
                nrm1 += w[t] * w[t]
            if nrm1 > 0.5 * nrm0:
                break
            nrm0 = nrm1
        bj = math.sqrt(nrm1)
        beta[jj] = bj
        n = jj + 1
        # ---- top Ritz value and residual --------------------------------------------------
        if n == 1:
            theta1 = alpha[0]
        else:
            # bracket of theta1(T_n): below by the top Ritz value of the 2x2 problem on
            # span{(s_prev, 0), e_n} (s_prev the previous top Ritz vector, coupling
            # beta_{n-1} * s_prev_last), above by Weyl's bound; start Newton from below.
            tprev = theta1
            hh = 0.5 * (tprev - alpha[jj])
            cpl = beta[jj - 1] * slast
            lo1 = 0.5 * (tprev + alpha[jj]) + math.sqrt(hh * hh + cpl * cpl)
            up1 = (max(tprev, alpha[jj]) + beta[jj - 1]) * (1.0 + 4.0 * _U)
            lo1 = min(max(lo1, tprev), up1)
            theta1 = _tri_kth(alpha, beta, n, 1, tprev, up1, lo1, 0.0, tprev)
            b2nd = tprev
        slast = _tri_last_component(alpha, beta, n, theta1, tz)
        r1 = bj * slast
        rho = rho_coef * _U * abs(theta1)
        breakdown = bj <= 8.0 * _U * abs(theta1) * math.sqrt(d) or n >= d
        err_lin = r1 + rho
        err = err_lin
        # quadratic (gap) bound, only when it can matter: delta <= theta1 always (B is PSD)
        if not quad:
            pass
        elif (n >= 2 and r1 * r1 <= 2.0 * tol * theta1 * (theta1 - lo2)
              and (gap_used <= 0.0 or r1 * r1 <= 4.0 * tol * theta1 * gap_used
                   or jj - last_gap >= 4)):
            # Necessary for a pass: delta <= theta1 - theta2 <= theta1 - lo2 (lo2 <= theta2
            # by interlacing; lo2 = 0 <= every eigenvalue of the PSD operator at first).
            # Once a gap has been computed, recompute it only when the previous one would
            # (nearly) let the test pass: it changes slowly, and this saves most of the
            # O(n) tridiagonal work in the late iterations.
            # lo2 is theta2(T_{n-1}) when it was computed at the previous step: then it is a
            # pole of q_n next to theta2(T_n) and Newton can deflate it
            pole2 = lo2 if last_gap == jj - 1 and lo2 > 0.0 else np.nan
            theta2, z2 = _second_ritz(alpha, beta, n, theta1, lo2, b2nd, theta2, pole2, tw,
                                      tx, twork)
            lo2 = theta2
            r2 = bj * z2
            delta = theta1 - theta2 - r2
            delta = max(delta, delta_hint)
            gap_used = delta
            last_gap = jj
            if delta > r1:
                err = min(err_lin, r1 * r1 / delta + rho)
        elif n == 1 and delta_hint > r1:
            gap_used = delta_hint
            err = min(err_lin, r1 * r1 / delta_hint + rho)
        # ---- convergence in sigma units -------------------------------------------------
        sq = math.sqrt(max(theta1, 0.0))
        err_sig = err / (sq + math.sqrt(max(theta1 - err, 0.0))) if sq > 0.0 else math.sqrt(err)
        if breakdown:
            break
        if err_sig <= tol * sq:
            # Confirm with one more step before stopping.  If a singular value next to
            # sigma_1 is still unresolved (hidden in the top Ritz value), the residual, hence
            # the next Lanczos vector, lies mostly in the plane of the two singular vectors;
            # the next step then produces a second Ritz value next to theta1, the gap
            # estimate collapses and the iteration goes on until the pair is resolved.
            if confirming or not quad or not confirm:
                break
            confirming = True
        else:
            confirming = False
        if jj + 1 < maxit:
            inv = 1.0 / bj
            for t in range(d):
                V[jj + 1, t] = w[t] * inv
    return theta1, err, it, theta2, r2, gap_used


@njit(cache=True, error_model="numpy")
def _ritz_vector(alpha, beta, n, V, theta1, y, tw, tx, twork):
    """y = V[:n]^T s, s the unit eigenvector of T_n for theta1 (inverse iteration, 2 steps)."""
    for i in range(n):
        tw[i] = 1.0
    d = V.shape[1]
    scale = abs(theta1) + 1e-300
    lam = theta1 + 1e-13 * scale
    for rep in range(2):
        _tri_solve_pp(alpha, beta, n, lam, tw, tx, twork)
        nrm = 0.0
        for i in range(n):
            nrm += tx[i] * tx[i]
        nrm = math.sqrt(nrm)
        for i in range(n):
            tw[i] = tx[i] / nrm
    for t in range(d):
        y[t] = 0.0
    for i in range(n):
        si = tw[i]
        for t in range(d):
            y[t] += si * V[i, t]
    nrm = 0.0
    for t in range(d):
        nrm += y[t] * y[t]
    nrm = math.sqrt(nrm)
    for t in range(d):
        y[t] /= nrm


@njit(cache=True, error_model="numpy")
def _finish(theta1, err, e, rtol):
    """(sigma, bound) in the units of the input from a Ritz value of the scaled operator."""
    theta1 = max(theta1, 0.0)
    sq = math.sqrt(theta1)
    if sq > 0.0:
        eb = err / (sq + math.sqrt(max(theta1 - err, 0.0)))
    else:
        eb = math.sqrt(err)
    eb = eb * (1.0 + 8.0 * _U) + 2.0 * _U * sq
    return _mul_pow2(sq, e), _mul_pow2(eb, e) + 1e-323


@njit(fastmath=_FM, cache=True, error_model="numpy")
def lanczos_batch(a3, rtol, maxit, seed, rho_coef, quad, sigma, bound, amax_out, iters_out):
    """Lanczos path for every matrix of a (N, ell, d) C-contiguous batch (operator d x d)."""
    N, ell, d = a3.shape
    mx = min(maxit, d)          # lazily allocated: only the rows used are touched
    V = np.empty((mx + 1, d))
    alpha = np.empty(mx + 1)
    beta = np.empty(mx + 1)
    w = np.empty(d)
    h = np.empty(mx + 1)
    tz = np.empty(2 * mx + 2)
    tw = np.empty(mx + 1)
    tx = np.empty(mx + 1)
    twork = np.empty((4, mx + 1))
    v0 = start_vector(d, seed)
    Xs = np.empty((0, 0))
    for b in range(N):
        X = a3[b]
        amax = _amax2(X)
        amax_out[b] = amax
        if not (amax > 0.0):
            sigma[b] = amax
            bound[b] = amax
            iters_out[b] = 0
            continue
        e = _exponent(amax)
        if abs(e) > EXTREME_EXPONENT:
            if Xs.shape[0] != ell:
                Xs = np.empty((ell, d))
            for i in range(ell):
                for j in range(d):
                    Xs[i, j] = math.ldexp(float(X[i, j]), -e)
            th, err, it, t2, r2, gp = _lanczos_one(Xs, 1.0, v0, rtol, mx, V, alpha, beta,
                                                   w, h, tz, tw, tx, twork, 0.0, rho_coef,
                                                   quad, True)
        else:
            th, err, it, t2, r2, gp = _lanczos_one(X, _pow2(-2 * e), v0, rtol, mx, V, alpha,
                                                   beta, w, h, tz, tw, tx, twork, 0.0,
                                                   rho_coef, quad, True)
        sg, eb = _finish(th, err, e, rtol)
        sigma[b] = sg
        bound[b] = eb
        iters_out[b] = it


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _to_f32_scaled(X, e, out):
    """out = float32(X * 2^-e); returns ||X 2^-e - out||_F (exact float64 evaluation)."""
    ell, d = X.shape
    f = _pow2(-e) if abs(e) <= EXTREME_EXPONENT else 1.0
    s = 0.0
    for i in range(ell):
        for j in range(d):
            t = _scaled(float(X[i, j]), e, f)
            o = np.float32(t)
            out[i, j] = o
            r = t - float(o)
            s += r * r
    return math.sqrt(s)


# nonzero |entries| in [2^-126, 2^127): float32 rounding is then exact-scaling invariant
# (fl32(2^-e x) = 2^-e fl32(x): no float32 subnormal, no overflow) and every square below is a
# normal float64 number, so the unscaled copy of _convert_f32 can serve the scaled operator
_F32_TINY = 2.0 ** -126
_F32_HUGE = 2.0 ** 127


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _convert_f32(X, out):
    """One read of X: out = float32(X) (unscaled) and, in the same pass,
    (amax, ||X - out||_F^2, sum X^2, sum X, in_range).

    amax is NaN if X holds NaN or +-inf.  in_range: every nonzero |x| lies in
    [2^-126, 2^127), so that ``2^-e out`` is exactly the float32 rounding of ``2^-e X`` for
    any exponent e and no sum below over- or underflows; otherwise the caller falls back to
    the scaled conversion (_to_f32_scaled) and discards these sums."""
    ell, d = X.shape
    amax = 0.0
    amin = _BIG
    bad = False
    err2 = 0.0
    ssq = 0.0
    tot = 0.0
    for i in range(ell):
        for j in range(d):                 # branch-free body: vectorises
            x = float(X[i, j])
            v = abs(x)
            bad |= not (v <= _BIG)
            amax = max(amax, v)
            amin = min(amin, v if v != 0.0 else _BIG)
            o = np.float32(x)
            out[i, j] = o
            r = x - float(o)
            err2 += r * r
            ssq += x * x
            tot += x
    if bad:
        return np.nan, 0.0, 0.0, 0.0, False
    return amax, err2, ssq, tot, (amax < _F32_HUGE and amin >= _F32_TINY)


@njit(fastmath=_FM, cache=True, error_model="numpy")
def _scaled_sums(X, e):
    """(sum (2^-e x)^2, sum 2^-e x) over the entries of X, scaled entry by entry (exact)."""
    ell, d = X.shape
    f = _pow2(-e) if abs(e) <= EXTREME_EXPONENT else 1.0
    ssq = 0.0
    tot = 0.0
    for i in range(ell):
        for j in range(d):
            t = _scaled(float(X[i, j]), e, f)
            ssq += t * t
            tot += t
    return ssq, tot


@njit(fastmath=_FM, cache=True, error_model="numpy")
def sums_batch(a3, amax_out, fro2_out, sum_out):
    """Per matrix: amax (NaN marks NaN/inf), and with e its scaling exponent (amax in
    [2^(e-1), 2^e)): fro2 = ||2^-e A||_F^2 and sum = sum_ij 2^-e A_ij (no over/underflow)."""
    for b in range(a3.shape[0]):
        X = a3[b]
        amax = _amax2(X)
        amax_out[b] = amax
        if not (amax > 0.0):
            fro2_out[b] = amax
            sum_out[b] = amax
            continue
        ssq, tot = _scaled_sums(X, _exponent(amax))
        fro2_out[b] = ssq
        sum_out[b] = tot


@njit(fastmath=_FM, cache=True, error_model="numpy")
def mixed_batch(a3, rtol, maxit, seed, rho_coef, sigma, bound, amax_out, iters_out,
                iters64_out, fro2_out, sum_out):
    """Float64 input, two stages per matrix.

    Stage 1: Lanczos on the float32 rounding A32 of the scaled matrix (float64 arithmetic,
    half the memory traffic) until its own bound is below rtol/4.  Stage 2: Lanczos on the
    float64 matrix started from the stage-1 Ritz vector; its first step already gives the
    Rayleigh quotient and the residual of that vector for the float64 operator (the residual
    is about ||A^T A - A32^T A32|| ~ 1e-7 sigma_1^2, so the gap bound r^2/delta is ~1e-12
    relative).  The gap estimate of stage 1 carries over after widening it by the rigorous
    Weyl bound ||A^T A - A32^T A32||_2 <= (2 sigma_1 + ||E||_F) ||E||_F, E = A - A32.  Stage 2
    stops at the first step that meets rtol (one float64 pass as a rule: stage 1 stops at
    rtol/4) and goes on iterating (plain Lanczos) otherwise.  It has no confirming step:
    stage 1 already confirmed that its top Ritz value is resolved, and a second stage-2 step
    could not revise that (its gap estimate is at least the stage-1 hint), so the step would
    only sharpen sigma beyond rtol at the price of a pass over the float64 matrix.

    The float32 copy is made in one read of the matrix that also yields amax, ||E||_F and the
    two sums reported per matrix (the float32 copy stays unscaled; the scale 2^-2e is applied
    in the Gram products, which gives bitwise the products of the scaled copy).  Outside the
    float32 normal range (entries beyond 2^127 or nonzero below 2^-126) the scaled conversion
    and the sums are redone entry by entry.  fro2_out = ||A||_F^2 / sigma_1^2 (the stable
    rank) and sum_out = sum_ij A_ij / sigma_1, both from the scaled quantities.
    """
    N, ell, d = a3.shape
    mx = min(maxit, d)          # lazily allocated: only the rows used are touched
    V = np.empty((mx + 1, d))
    alpha = np.empty(mx + 1)
    beta = np.empty(mx + 1)
    w = np.empty(d)
    h = np.empty(mx + 1)
    tz = np.empty(2 * mx + 2)
    tw = np.empty(mx + 1)
    tx = np.empty(mx + 1)
    twork = np.empty((4, mx + 1))
    y = np.empty(d)
    v0 = start_vector(d, seed)
    X32 = np.empty((ell, d), dtype=np.float32)
    Xs = np.empty((0, 0))
    for b in range(N):
        X = a3[b]
        amax, err2, ssq, tot, in_range = _convert_f32(X, X32)
        amax_out[b] = amax
        if not (amax > 0.0):
            sigma[b] = amax
            bound[b] = amax
            iters_out[b] = 0
            iters64_out[b] = 0
            fro2_out[b] = amax
            sum_out[b] = amax
            continue
        e = _exponent(amax)
        if in_range:
            ff32 = _pow2(-2 * e)
            efro = math.sqrt(err2) * _pow2(-e)
            ssq = ssq * ff32
            tot = tot * _pow2(-e)
        else:
            ff32 = 1.0
            efro = _to_f32_scaled(X, e, X32)
            ssq, tot = _scaled_sums(X, e)
        th1, err1, it1, t2, r2, gp = _lanczos_one(X32, ff32, v0, 0.25 * rtol, mx, V,
                                                  alpha, beta, w, h, tz, tw, tx, twork, 0.0,
                                                  rho_coef, True, True)
        _ritz_vector(alpha, beta, it1, V, th1, y, tw, tx, twork)
        # rigorous Weyl shift between the spectra of the two operators
        shift = (2.0 * math.sqrt(max(th1, 0.0) + err1) + efro) * efro * 1.01
        hint = 0.0
        if r2 < np.inf:
            hint = th1 - (t2 + r2) - 2.0 * shift
        if abs(e) > EXTREME_EXPONENT:
            if Xs.shape[0] != ell:
                Xs = np.empty((ell, d))
            for i in range(ell):
                for j in range(d):
                    Xs[i, j] = math.ldexp(float(X[i, j]), -e)
            th, err, it, t2b, r2b, gpb = _lanczos_one(Xs, 1.0, y, rtol, mx, V, alpha,
                                                      beta, w, h, tz, tw, tx, twork,
                                                      max(hint, 0.0), rho_coef, True, False)
        else:
            th, err, it, t2b, r2b, gpb = _lanczos_one(X, _pow2(-2 * e), y, rtol, mx, V, alpha,
                                                      beta, w, h, tz, tw, tx, twork,
                                                      max(hint, 0.0), rho_coef, True, False)
        sg, eb = _finish(th, err, e, rtol)
        sigma[b] = sg
        bound[b] = eb
        iters_out[b] = it1
        iters64_out[b] = it
        sq = math.sqrt(max(th, 0.0))
        fro2_out[b] = ssq / (sq * sq)
        sum_out[b] = tot / sq
