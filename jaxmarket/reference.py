"""Exact reference for the centralized P2P dispatch (SPEC section 2, T3.9, B19-5).

    min  sum_n [c_n(p_n) + sum_m gamma_nm p_nm]
    s.t. p_nm = -p_mn,  p_n = sum_m p_nm,  p_min_n <= p_n <= p_max_n,
         trade_min_nm <= p_nm <= trade_max_nm

Method: a primal-dual interior-point method (Mehrotra predictor-corrector) on the reduced
problem with one variable per undirected trade, ``x_nm = p_nm`` for n < m (kept on the
upper triangle of an N x N matrix), so reciprocity holds by construction. Its box is the
intersection of the two directed boxes, ``[max(trade_min_nm, -trade_max_mn),
min(trade_max_nm, -trade_min_mn)]``; its cost is ``(gamma_nm - gamma_mn) x_nm``. With the
agent variables p and the balance ``p - A x = 0`` (A the signed incidence matrix; its
dual is the perceived price mu), the problem is a convex QP with a diagonal Hessian
(a_n on p, 0 on x) and box constraints only, so each Newton step reduces, by eliminating
x and p, to the N x N system

    (A H_x^-1 A^T + H_p^-1) d_mu = r,

a weighted graph Laplacian built elementwise from the N x N matrix of trade weights plus
a diagonal: one batched Cholesky per iteration, no E x E matrices.

Why this method: it is exact up to a tolerance we choose (by default 1e-12 on the relative
gap and on the scaled primal and dual residuals, in float64), its iteration count
(typically 10-20, at most about 40 for N = 300) barely depends on N or on the data,
every case of a batch runs the same dense linear algebra (so it vectorizes under
``vmap``), and it shares nothing with the ADMM iterations it is used to check. An active
set or simplex-like method would need data-dependent pivoting per case; a first-order
method would not reach 1e-12.

Trades strictly inside their boxes make the Newton matrix ill-conditioned as the gap
closes (their weights grow like 1/gap). Three safeguards keep the last digits: a floor on
the trade curvature (``TRADE_CURVATURE``), a relative diagonal shift with one step of
iterative refinement against the unassembled matrix (``DIAGONAL_SHIFT``), and, once the
gap meets the tolerance, residual-only steps that hold every complementarity product,
whose small size keeps their rounding small. Trades are not unique in general (without
charges any flow decomposition of the same dispatch is optimal); the interior point
converges towards the centre of the optimal set. Compare objectives, p and prices: the
objective is accurate to about 1e-11 relative, p and the prices typically to 1e-11 and
to about 1e-7 in nearly degenerate cases (an agent that would sit just at a bound).

Variables whose box has zero width (trades forced to 0 by the sign constraints between
two producers, padding agents, agents with p_min = p_max) are fixed and left out of the
Newton system. Each case is scaled (powers by its largest bound, or by the power its
prices can move where the bounds are far larger: ``community.reach``; prices by its
largest marginal cost within those powers: ``community.marginal_cost_scale``) so that
the tolerance means the same for every case. A case whose solution or objective is not
finite (bounds so large that costs overflow) is not converged. The solver always runs in float64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.community import (Community, astype, marginal_cost_scale, reach,
                                 within_reach)

# Floor on the Newton curvature of a trade (scaled units). A trade strictly inside its box
# has zero cost curvature and a barrier curvature that vanishes with the gap; the floor
# caps its weight in the Laplacian at 1e8, which keeps the factorization accurate. It is
# a proximal term centred on the current point: it changes the path, not the solution.
TRADE_CURVATURE = 1e-8
# Relative diagonal shift of the Newton matrix, in units of N * eps: keeps the Cholesky
# factorization positive where the perceived prices of a group of agents are not unique
# (every agent of the group at a bound), at the cost of rounding-level inexactness that
# one step of iterative refinement removes elsewhere.
DIAGONAL_SHIFT = 4.0


class ReferenceSolution(NamedTuple):
    objective: jax.Array  # (B,) sum_n c_n(p_n) + sum_nm gamma_nm p_nm
    p: jax.Array  # (B, N) net injections
    trades: jax.Array  # (B, N, N) p_nm, antisymmetric
    price: jax.Array  # (B, N) perceived price mu_n (= a_n p_n + b_n when p_n is interior)
    iterations: jax.Array  # (B,) interior-point iterations
    converged: jax.Array  # (B,) tolerances met
    gap: jax.Array  # (B,) complementarity sum s*w (objective units): the primal-dual gap
    primal_residual: jax.Array  # (B,) max_n |p_n - sum_m p_nm|
    dual_residual: jax.Array  # (B,) max stationarity violation, price units


class _Problem(NamedTuple):
    """One case, scaled, with the trades on the upper triangle."""
    a: jax.Array  # (N,)
    b: jax.Array  # (N,)
    p_lo: jax.Array  # (N,)
    p_hi: jax.Array  # (N,)
    p_free: jax.Array  # (N,) bool: p_hi > p_lo
    cost: jax.Array  # (N, N) linear cost of x_nm
    x_lo: jax.Array  # (N, N)
    x_hi: jax.Array  # (N, N)
    x_free: jax.Array  # (N, N) bool: a trade (n < m) with x_hi > x_lo


class _Point(NamedTuple):
    """Primal-dual iterate; the bound duals of fixed variables stay 0."""
    x: jax.Array  # (N, N) trades x_nm = p_nm, n < m
    p: jax.Array  # (N,)
    mu: jax.Array  # (N,) dual of p - A x = 0, the perceived price
    x_wlo: jax.Array  # (N, N) duals of x >= x_lo
    x_whi: jax.Array  # (N, N) duals of x <= x_hi
    p_wlo: jax.Array  # (N,)
    p_whi: jax.Array  # (N,)


class _Measures(NamedTuple):
    """Convergence measures of a point, in scaled units."""
    primal: jax.Array  # max |p - A x|
    dual: jax.Array  # max stationarity violation
    gap: jax.Array  # sum of s * w
    objective: jax.Array


def _net(x):
    """A x: what each agent sells in total, from the upper-triangle trades."""
    return x.sum(axis=1) - x.sum(axis=0)


def _spread(mu):
    """A^T mu on every pair: mu_n - mu_m."""
    return mu[:, None] - mu[None, :]


def _slacks(problem, point):
    """Distances to the four bounds; 1 for fixed variables (their duals are 0)."""
    xf, pf = problem.x_free, problem.p_free
    return (jnp.where(xf, point.x - problem.x_lo, 1.0), jnp.where(xf, problem.x_hi - point.x, 1.0),
            jnp.where(pf, point.p - problem.p_lo, 1.0), jnp.where(pf, problem.p_hi - point.p, 1.0))


def _gradients(problem, point):
    """Gradient of the Lagrangian without the bound duals, on the free variables."""
    grad_x = jnp.where(problem.x_free, problem.cost + _spread(point.mu), 0.0)
    grad_p = jnp.where(problem.p_free, problem.a * point.p + problem.b - point.mu, 0.0)
    return grad_x, grad_p


def _complementarity(slacks, duals):
    return sum(jnp.sum(s * w) for s, w in zip(slacks, duals))


def _measure(problem, point) -> _Measures:
    grad_x, grad_p = _gradients(problem, point)
    dual_x = jnp.where(problem.x_free, grad_x - point.x_wlo + point.x_whi, 0.0)
    dual_p = jnp.where(problem.p_free, grad_p - point.p_wlo + point.p_whi, 0.0)
    return _Measures(
        primal=jnp.max(jnp.abs(point.p - _net(point.x))),
        dual=jnp.maximum(jnp.max(jnp.abs(dual_x)), jnp.max(jnp.abs(dual_p))),
        gap=_complementarity(_slacks(problem, point),
                             (point.x_wlo, point.x_whi, point.p_wlo, point.p_whi)),
        objective=(0.5 * problem.a * point.p**2 + problem.b * point.p).sum()
        + (problem.cost * point.x).sum())


def _max_step(value, step):
    """Largest alpha with value + alpha * step >= 0 (inf where step >= 0)."""
    negative = step < 0
    return jnp.min(jnp.where(negative, value / jnp.where(negative, -step, 1.0), jnp.inf))


def _iterate(problem, point, eta, gap_small):
    """One Mehrotra predictor-corrector step (a residual-only step once ``gap_small``)."""
    xf, pf = problem.x_free, problem.p_free
    slacks = _slacks(problem, point)
    s_xlo, s_xhi, s_plo, s_phi = slacks
    duals = (point.x_wlo, point.x_whi, point.p_wlo, point.p_whi)
    grad_x, grad_p = _gradients(problem, point)
    residual = point.p - _net(point.x)
    complementarity = _complementarity(slacks, duals)
    pairs = jnp.maximum(2 * (xf.sum() + pf.sum()), 1)

    # Eliminating dx and dp leaves (A H_x^-1 A^T + H_p^-1) d_mu = rhs: a weighted
    # Laplacian over the free trades plus a diagonal over the free agents.
    h_x = jnp.where(xf, point.x_wlo / s_xlo + point.x_whi / s_xhi + TRADE_CURVATURE, 1.0)
    h_p = jnp.where(pf, problem.a + point.p_wlo / s_plo + point.p_whi / s_phi, 1.0)
    weight = jnp.where(xf, 1.0 / h_x, 0.0)
    inv_p = jnp.where(pf, 1.0 / h_p, 0.0)
    weight = weight + weight.T
    diagonal = weight.sum(axis=1) + inv_p
    # An agent with nothing free (padding; fixed and isolated) has an empty row.
    empty = jnp.where(diagonal > 0, 0.0, 1.0)
    diagonal = diagonal + empty
    shift = DIAGONAL_SHIFT * diagonal.shape[0] * jnp.finfo(diagonal.dtype).eps
    factor = jnp.linalg.cholesky(jnp.diag(diagonal * (1 + shift)) - weight)

    def newton_matrix_times(d_mu):
        # Unassembled, so exactly 0 on prices that are equal across heavy trades.
        return (inv_p + empty) * d_mu + _net(jnp.where(xf, _spread(d_mu) / h_x, 0.0))

    def direction(targets):
        """Newton step towards s * w = targets (per bound), zero on fixed variables."""
        t_xlo, t_xhi, t_plo, t_phi = targets
        rhs_x = jnp.where(xf, -grad_x + t_xlo / s_xlo - t_xhi / s_xhi, 0.0)
        rhs_p = jnp.where(pf, -grad_p + t_plo / s_plo - t_phi / s_phi, 0.0)
        rhs = -residual - inv_p * rhs_p + _net(jnp.where(xf, rhs_x / h_x, 0.0))
        d_mu = jax.scipy.linalg.cho_solve((factor, True), rhs)
        d_mu = d_mu + jax.scipy.linalg.cho_solve((factor, True), rhs - newton_matrix_times(d_mu))
        d_x = jnp.where(xf, (rhs_x - _spread(d_mu)) / h_x, 0.0)
        d_p = inv_p * (rhs_p + d_mu)
        return _Point(
            x=d_x, p=d_p, mu=d_mu,
            x_wlo=(t_xlo - point.x_wlo * (s_xlo + d_x)) / s_xlo,
            x_whi=(t_xhi - point.x_whi * (s_xhi - d_x)) / s_xhi,
            p_wlo=(t_plo - point.p_wlo * (s_plo + d_p)) / s_plo,
            p_whi=(t_phi - point.p_whi * (s_phi - d_p)) / s_phi)

    def step_length(d):
        return jnp.min(jnp.stack([
            _max_step(s_xlo, d.x), _max_step(s_xhi, -d.x),
            _max_step(s_plo, d.p), _max_step(s_phi, -d.p),
            _max_step(point.x_wlo, d.x_wlo), _max_step(point.x_whi, d.x_whi),
            _max_step(point.p_wlo, d.p_wlo), _max_step(point.p_whi, d.p_whi)]))

    zeros = (jnp.zeros_like(point.x),) * 2 + (jnp.zeros_like(point.p),) * 2
    affine = direction(zeros)
    alpha = jnp.minimum(1.0, step_length(affine))
    slack_steps = (affine.x, -affine.x, affine.p, -affine.p)
    dual_steps = (affine.x_wlo, affine.x_whi, affine.p_wlo, affine.p_whi)
    predicted = _complementarity([s + alpha * d for s, d in zip(slacks, slack_steps)],
                                 [w + alpha * d for w, d in zip(duals, dual_steps)])
    sigma = (predicted / jnp.maximum(complementarity, jnp.finfo(predicted.dtype).tiny)) ** 3
    free = (xf, xf, pf, pf)
    mehrotra = [jnp.where(f, sigma * complementarity / pairs - ds * dw, 0.0)
                for f, ds, dw in zip(free, slack_steps, dual_steps)]
    # Once the gap meets the tolerance, hold every product s * w and only remove the
    # residuals: that step is tiny, and so is its rounding, which the huge weights of
    # interior trades would otherwise amplify into the primal residual.
    hold = [s * w for s, w in zip(slacks, duals)]
    targets = [jnp.where(gap_small, u, v) for u, v in zip(hold, mehrotra)]
    corrected = direction(targets)
    alpha = jnp.minimum(1.0, eta * step_length(corrected))
    return jax.tree_util.tree_map(lambda v, d: v + alpha * d, point, corrected)


def _scale(c):
    """Per-case scaled problem, the power and price scales, and whether boxes are consistent."""
    upper = jnp.triu(c.edges & c.active[:, None] & c.active[None, :], 1)
    # x_nm = p_nm = -p_mn: the intersection of the two directed boxes.
    x_lo = jnp.where(upper, jnp.maximum(c.trade_min, -c.trade_max.T), 0.0)
    x_hi = jnp.where(upper, jnp.minimum(c.trade_max, -c.trade_min.T), 0.0)
    cost = jnp.where(upper, c.charge - c.charge.T, 0.0)
    p_lo = jnp.where(c.active, c.p_min, 0.0)
    p_hi = jnp.where(c.active, c.p_max, 0.0)
    a = jnp.where(c.active, c.a, 0.0)
    b = jnp.where(c.active, c.b, 0.0)
    consistent = jnp.all(x_lo <= x_hi) & jnp.all(p_lo <= p_hi)

    power = jnp.max(jnp.abs(jnp.concatenate([p_lo, p_hi, x_lo.ravel(), x_hi.ravel()])))
    power = within_reach(power, reach(c))
    price = jnp.max(jnp.abs(jnp.concatenate([b, marginal_cost_scale(c, power)[None],
                                             cost.ravel()])))
    price = jnp.where(price > 0, price, 1.0)
    problem = _Problem(
        a=a * power / price, b=b / price, p_lo=p_lo / power, p_hi=p_hi / power,
        p_free=p_hi > p_lo, cost=cost / price, x_lo=x_lo / power, x_hi=x_hi / power,
        x_free=upper & (x_hi > x_lo))
    return problem, power, price, consistent


def _solve_case(case: Community, tol, max_iterations, eta) -> ReferenceSolution:
    problem, power, price, consistent = _scale(case)
    xf = jnp.where(problem.x_free, 1.0, 0.0)
    pf = jnp.where(problem.p_free, 1.0, 0.0)
    # Box midpoints (fixed variables sit on their value) and unit bound duals.
    start = _Point(x=0.5 * (problem.x_lo + problem.x_hi), p=0.5 * (problem.p_lo + problem.p_hi),
                   mu=jnp.zeros_like(problem.b), x_wlo=xf, x_whi=xf, p_wlo=pf, p_whi=pf)

    def gap_small(m):
        return m.gap <= tol * jnp.maximum(1.0, jnp.abs(m.objective))

    def done(m):
        return (m.primal <= tol) & (m.dual <= tol) & gap_small(m)

    def keep_going(state):
        _, measures, iteration, broken = state
        return ~done(measures) & (iteration < max_iterations) & ~broken

    def body(state):
        point, measures, iteration, _ = state
        new = _iterate(problem, point, eta, gap_small(measures))
        # A failed factorization (the case cannot get more accurate) keeps the last point.
        broken = ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in new]))
        new = jax.tree_util.tree_map(lambda u, v: jnp.where(broken, u, v), point, new)
        return new, _measure(problem, new), iteration + 1, broken

    point, measures, iterations, _ = jax.lax.while_loop(
        keep_going, body,
        (start, _measure(problem, start), jnp.zeros((), jnp.int32), jnp.zeros((), bool)))

    trades = (point.x - point.x.T) * power
    p = point.p * power
    objective = jnp.where(case.active, 0.5 * case.a * p**2 + case.b * p, 0.0).sum() + (
        case.charge * trades).sum()
    return ReferenceSolution(
        objective=objective, p=p, trades=trades, price=point.mu * price,
        iterations=iterations,
        converged=done(measures) & consistent & jnp.isfinite(objective)
        & jnp.all(jnp.isfinite(p)) & jnp.all(jnp.isfinite(point.mu * price)),
        gap=measures.gap * power * price,
        primal_residual=jnp.max(jnp.abs(p - trades.sum(axis=1))),
        dual_residual=measures.dual * price)


@jax.jit
def solve_reference(community: Community, tol=1e-12, max_iterations=100,
                    eta=0.995) -> ReferenceSolution:
    """Solve every case of the batch until its scaled primal and dual residuals and its
    relative gap are all <= ``tol``, or ``max_iterations``.

    ``eta`` is the fraction of the step to the boundary taken at each iteration. Cases
    stop independently; ``converged`` is False for a case that ran out of iterations,
    whose factorization broke down first, or whose boxes are inconsistent (infeasible).
    """
    return jax.vmap(_solve_case, in_axes=(0, None, None, None))(
        astype(community, jnp.float64), tol, max_iterations, eta)
