"""A small dense convex QP with a diagonal Hessian, solved by a primal-dual interior point.

    min  1/2 sum_i q_i z_i^2 + c^T z
    s.t. A z = rhs,   lo <= z <= hi      (q >= 0; lo = -inf / hi = inf allowed)

Inequality rows are written by the caller as equalities with a slack variable boxed
``[0, inf)``. Variables with ``lo == hi`` are fixed and left out of the Newton system;
an all-zero row of ``A`` (a switched-off constraint) is kept harmless by a unit diagonal.

Method: Mehrotra predictor-corrector on the normal equations ``(A H^-1 A^T) dy = r`` with
``H = q + bound-dual / slack``; ``A`` has few rows (at most a few dozen), so one dense
Cholesky per iteration is cheap, and every problem of a batch runs the same linear
algebra (``vmap``). Each problem is scaled (powers by its largest finite bound or
right-hand side, prices by its largest cost coefficient) so that one tolerance means the
same everywhere. A problem stops when its scaled primal and dual residuals and its
relative complementarity gap are all below ``tol``; ``converged`` says whether that
happened within ``max_iter`` iterations.

Why an interior point: the energy + reserve local problem couples three trade blocks
and three scalar decisions through up to seven linear rows, so the one-dimensional
breakpoint search of ``jaxmarket.local`` does not apply; an interior point reaches any
float64 tolerance we choose (2.2e-13 by default, the residual of the result is returned and
tested) in a number of iterations that barely depends on the data.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

# Floor on the Newton curvature (scaled units): a variable strictly inside its box with
# no cost curvature would otherwise get an unbounded weight as the gap closes.
CURVATURE_FLOOR = 1e-10
# Default tolerance in machine epsilons (2.2e-13 in float64). The gap is measured in scaled
# units, where the objective's terms are of size 1 and may cancel: at 1e-11 a local
# objective of 16 (terms of 3e4 in physical units) was off by 3e-7; the last interior-point
# iterations converge quadratically, so 2.2e-13 costs about one more iteration.
TOLERANCE_EPS = 1000
# Target of the fallback centring step, as a fraction of the mean complementarity.
CENTRING = 0.3


class QPSolution(NamedTuple):
    z: jax.Array  # (..., n) primal solution
    y: jax.Array  # (..., m) multipliers of A z = rhs (Lagrangian c^T z - y^T (A z - rhs))
    objective: jax.Array  # (...)
    iterations: jax.Array  # (...)
    converged: jax.Array  # (...) bool


class _Point(NamedTuple):
    z: jax.Array
    y: jax.Array
    w_lo: jax.Array  # duals of z >= lo
    w_hi: jax.Array  # duals of z <= hi


def _solve_one(q, c, A, rhs, lo, hi, tol, max_iter, eta):
    dtype = c.dtype
    q0, c0 = q, c
    fixed = lo >= hi
    has_lo = jnp.isfinite(lo) & ~fixed
    has_hi = jnp.isfinite(hi) & ~fixed
    free = ~fixed
    finite = jnp.concatenate([jnp.where(jnp.isfinite(lo), lo, 0.0), jnp.where(jnp.isfinite(hi), hi, 0.0),
                              rhs])
    power = jnp.maximum(jnp.max(jnp.abs(finite)), 1e-300)
    price = jnp.max(jnp.abs(jnp.concatenate([c, q * power])))
    price = jnp.where(price > 0, price, 1.0)
    q, c = q * power / price, c / price
    rhs = rhs / power
    lo = jnp.where(has_lo | fixed, lo / power, 0.0)
    hi = jnp.where(has_hi, hi / power, 0.0)
    # Fixed variables move to the right-hand side.
    rhs = rhs - A @ jnp.where(fixed, lo, 0.0)
    A = jnp.where(free[None, :], A, 0.0)
    empty_row = ~jnp.any(A != 0, axis=1)

    one = jnp.ones_like(c)
    middle = jnp.where(has_lo & has_hi, 0.5 * (lo + hi),
                       jnp.where(has_lo, lo + 1.0, jnp.where(has_hi, hi - 1.0, 0.0)))
    start = _Point(jnp.where(free, middle, 0.0), jnp.zeros_like(rhs),
                   jnp.where(has_lo, one, 0.0), jnp.where(has_hi, one, 0.0))

    def slacks(z):
        return jnp.where(has_lo, z - lo, 1.0), jnp.where(has_hi, hi - z, 1.0)

    def measures(pt):
        s_lo, s_hi = slacks(pt.z)
        primal = jnp.max(jnp.abs(A @ pt.z - rhs), initial=0.0)
        grad = jnp.where(free, q * pt.z + c - A.T @ pt.y - pt.w_lo + pt.w_hi, 0.0)
        gap = jnp.sum(s_lo * pt.w_lo) + jnp.sum(s_hi * pt.w_hi)
        objective = jnp.sum(jnp.where(free, 0.5 * q * pt.z**2 + c * pt.z, 0.0))
        return primal, jnp.max(jnp.abs(grad)), gap, objective

    def done(m):
        primal, dual, gap, objective = m
        return (primal <= tol) & (dual <= tol) & (gap <= tol * jnp.maximum(1.0, jnp.abs(objective)))

    def newton(pt):
        s_lo, s_hi = slacks(pt.z)
        h = jnp.where(free, q + pt.w_lo / s_lo + pt.w_hi / s_hi + CURVATURE_FLOOR, 1.0)
        inv_h = jnp.where(free, 1.0 / h, 0.0)
        normal = (A * inv_h[None, :]) @ A.T + jnp.diag(jnp.where(empty_row, 1.0, 0.0))
        factor = jnp.linalg.cholesky(normal)
        r_primal = A @ pt.z - rhs
        r_dual = jnp.where(free, q * pt.z + c - A.T @ pt.y - pt.w_lo + pt.w_hi, 0.0)
        pairs = jnp.maximum(jnp.sum(has_lo) + jnp.sum(has_hi), 1)

        def direction(t_lo, t_hi):
            g = -r_dual + jnp.where(has_lo, t_lo / s_lo - pt.w_lo, 0.0) \
                - jnp.where(has_hi, t_hi / s_hi - pt.w_hi, 0.0)
            r = -r_primal - A @ (inv_h * g)
            dy = jax.scipy.linalg.cho_solve((factor, True), r)
            # One step of iterative refinement against the unassembled matrix.
            dy = dy + jax.scipy.linalg.cho_solve(
                (factor, True), r - A @ (inv_h * (A.T @ dy)) - jnp.where(empty_row, dy, 0.0))
            dz = inv_h * (g + A.T @ dy)
            dw_lo = jnp.where(has_lo, (t_lo - s_lo * pt.w_lo - pt.w_lo * dz) / s_lo, 0.0)
            dw_hi = jnp.where(has_hi, (t_hi - s_hi * pt.w_hi + pt.w_hi * dz) / s_hi, 0.0)
            return _Point(dz, dy, dw_lo, dw_hi)

        def max_step(value, step, mask):
            neg = mask & (step < 0)
            return jnp.min(jnp.where(neg, value / jnp.where(neg, -step, 1.0), jnp.inf))

        def length(d):
            return jnp.min(jnp.stack([max_step(s_lo, d.z, has_lo), max_step(s_hi, -d.z, has_hi),
                                      max_step(pt.w_lo, d.w_lo, has_lo),
                                      max_step(pt.w_hi, d.w_hi, has_hi)]))

        zero = jnp.zeros_like(c)
        affine = direction(zero, zero)
        alpha = jnp.minimum(1.0, length(affine))
        comp = jnp.sum(jnp.where(has_lo, s_lo * pt.w_lo, 0.0)) + jnp.sum(jnp.where(has_hi, s_hi * pt.w_hi, 0.0))
        predicted = jnp.sum(jnp.where(has_lo, (s_lo + alpha * affine.z) * (pt.w_lo + alpha * affine.w_lo), 0.0)) \
            + jnp.sum(jnp.where(has_hi, (s_hi - alpha * affine.z) * (pt.w_hi + alpha * affine.w_hi), 0.0))
        sigma = (predicted / jnp.maximum(comp, jnp.finfo(dtype).tiny)) ** 3
        target = sigma * comp / pairs
        corrected = direction(jnp.where(has_lo, target - affine.z * affine.w_lo, 0.0),
                              jnp.where(has_hi, target + affine.z * affine.w_hi, 0.0))
        alpha = jnp.minimum(1.0, eta * length(corrected))
        # Mehrotra's step can cycle on these problems (observed: a period-4 cycle with a
        # constant gap); each iteration also tries a plain centring step and keeps the
        # one that leaves the smaller complementarity.
        centring = CENTRING * comp / pairs
        centred = direction(jnp.where(has_lo, centring, 0.0), jnp.where(has_hi, centring, 0.0))
        alpha_centred = jnp.minimum(1.0, eta * length(centred))

        def moved(d, a):
            return jax.tree_util.tree_map(lambda v, dv: v + a * dv, pt, d)

        first, second = moved(corrected, alpha), moved(centred, alpha_centred)

        def complementarity(p):
            lo_s, hi_s = slacks(p.z)
            return (jnp.sum(jnp.where(has_lo, lo_s * p.w_lo, 0.0))
                    + jnp.sum(jnp.where(has_hi, hi_s * p.w_hi, 0.0)))

        keep_first = complementarity(first) <= complementarity(second)
        return jax.tree_util.tree_map(lambda u, v: jnp.where(keep_first, u, v), first, second)

    def keep_going(state):
        _, m, k, broken = state
        return ~done(m) & (k < max_iter) & ~broken

    def body(state):
        pt, _, k, _ = state
        new = newton(pt)
        broken = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in new]))
        new = jax.tree_util.tree_map(lambda u, v: jnp.where(broken, u, v), pt, new)
        return new, measures(new), k + 1, broken

    pt, m, k, _ = jax.lax.while_loop(
        keep_going, body, (start, measures(start), jnp.zeros((), jnp.int32), jnp.zeros((), bool)))
    z = jnp.where(fixed, lo, pt.z) * power
    objective = jnp.sum(0.5 * q0 * z**2 + c0 * z)
    return QPSolution(z, pt.y * price, objective, k, done(m))


@partial(jax.jit, static_argnames=("tol", "max_iter", "eta"))
def solve_qp(q, c, A, rhs, lo, hi, tol=None, max_iter=80, eta=0.995) -> QPSolution:
    """Solve a batch of QPs: every argument has the same leading batch axes (any number),
    then ``(n,)`` or, for ``A``, ``(m, n)``. ``tol`` defaults to ``TOLERANCE_EPS`` machine
    epsilons of the dtype. Compiled (once per shape): called eagerly, the vmapped loop was
    traced and compiled anew on every call."""
    if tol is None:
        tol = TOLERANCE_EPS * float(jnp.finfo(c.dtype).eps)
    batch = c.ndim - 1
    fn = lambda *args: _solve_one(*args, tol, max_iter, eta)  # noqa: E731
    for _ in range(batch):
        fn = jax.vmap(fn)
    return fn(q, c, A, rhs, lo, hi)
