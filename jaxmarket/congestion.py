"""DC line limits on the agents' net injections (SPEC section 7.1, T4.3): the exact
line-constrained P2P reference and the system operator's projection of endogenous ADMM.

The grid enters as the agents' shift factors ``H = PTDF · M`` (MW on line l per MW
injected by agent n and withdrawn at the reference bus) and the ratings of the limited
lines; lines with ``rate_a`` 0 are unlimited (MATPOWER) and left out. Since every cleared
market is balanced (``sum_n p_n = 0``), the flows do not depend on the reference bus.

Both problems are small convex QPs with a diagonal Hessian, solved exactly by the batched
interior point of ``jaxmarket.smallqp`` with the flows as boxed variables,
``f - H p = 0``, ``-rate <= f <= rate``:

* **reference**: the P2P problem of ``jaxmarket.reference`` (one variable per undirected
  trade, so reciprocity holds by construction) plus the line rows. Its multipliers give
  the perceived prices ``mu_n`` (of ``p = A x``) and the line prices ``zeta_l`` (of
  ``f = H p``; positive on a line at its upper rating). The **congestion price** of agent n
  is ``eta_n = -(H^T zeta)_n``: at an interior optimum ``a_n p_n + b_n = mu_n + eta_n``,
  so eta is the congestion part of the agent's nodal price, relative to the reference bus
  (where it is 0). It is negative where extra injection would load a congested line.
* **projection**: the system operator's step, the Euclidean projection of a vector of
  injections on ``{q : sum q = 0, -rate <= H q <= rate}``.

Dual prices of a line-constrained market are unique only up to one constant: shifting
every trade price and perceived price by c and every eta_n by -c keeps all optimality
conditions (the balance is implied by reciprocity). The reference fixes that constant by
the reference bus; ``-sum_n eta_n p_n`` (the money the system operator collects) does not
depend on it. Shift factors are built with NumPy once per case file; the solvers run in
float64.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.community import Community, astype
from jaxmarket.network import Network
from jaxmarket.smallqp import TOLERANCE_EPS, solve_qp


class LineLimits(NamedTuple):
    """The limited lines of every case of a batch."""
    shift: jax.Array  # (B, L, N) MW on line l per MW injected by agent n
    rate: jax.Array  # (B, L) rating of line l, MW (> 0)


def line_limits(network: Network, n_cases: int, n_agents: int | None = None) -> LineLimits:
    """The limited lines of ``network`` for a batch of ``n_cases`` copies of its case (agents
    beyond the case's own, padding, get zero shift factors)."""
    limited = network.rate > 0
    shift = network.ptdf[limited][:, network.agent_bus]
    if n_agents is not None and n_agents > shift.shape[1]:
        shift = np.pad(shift, ((0, 0), (0, n_agents - shift.shape[1])))
    return LineLimits(jnp.asarray(np.repeat(shift[None], n_cases, 0)),
                      jnp.asarray(np.repeat(network.rate[limited][None], n_cases, 0)))


def limited_line_names(network: Network) -> list[str]:
    return [name for name, rate in zip(network.line_names(), network.rate) if rate > 0]


class DCReferenceSolution(NamedTuple):
    objective: jax.Array  # (B,) sum_n c_n(p_n) + sum_nm gamma_nm p_nm
    p: jax.Array  # (B, N) net injections
    trades: jax.Array  # (B, N, N) p_nm, antisymmetric
    price: jax.Array  # (B, N) perceived price mu_n (the trades' side of the nodal price)
    line_price: jax.Array  # (B, L) zeta_l, EUR/MWh per MW of flow; > 0 at the upper rating
    congestion: jax.Array  # (B, N) eta_n = -(H^T zeta)_n, 0 at the reference bus
    flows: jax.Array  # (B, L) H p, MW
    iterations: jax.Array  # (B,)
    converged: jax.Array  # (B,)


def _reference_qp(c: Community, limits: LineLimits):
    """One case as ``smallqp``'s arrays: z = (x over the upper-triangle pairs, p, f)."""
    n = c.a.shape[0]
    n_lines = limits.rate.shape[0]
    rows, cols = np.triu_indices(n, 1)
    pair = (c.edges & c.active[:, None] & c.active[None, :])[rows, cols]
    # x_nm = p_nm = -p_mn: the intersection of the two directed boxes.
    x_lo = jnp.where(pair, jnp.maximum(c.trade_min[rows, cols], -c.trade_max[cols, rows]), 0.0)
    x_hi = jnp.where(pair, jnp.minimum(c.trade_max[rows, cols], -c.trade_min[cols, rows]), 0.0)
    x_cost = jnp.where(pair, c.charge[rows, cols] - c.charge[cols, rows], 0.0)
    p_lo = jnp.where(c.active, c.p_min, 0.0)
    p_hi = jnp.where(c.active, c.p_max, 0.0)
    net = np.zeros((n, rows.size))  # p = net @ x: what each agent sells in total
    net[rows, np.arange(rows.size)] = 1.0
    net[cols, np.arange(rows.size)] = -1.0
    shift = jnp.where(c.active[None, :], limits.shift, 0.0)
    matrix = jnp.block([
        [jnp.asarray(-net), jnp.eye(n), jnp.zeros((n, n_lines))],
        [jnp.zeros((n_lines, rows.size)), -shift, jnp.eye(n_lines)]])
    zeros_x, zeros_f = jnp.zeros(rows.size), jnp.zeros(n_lines)
    q = jnp.concatenate([zeros_x, jnp.where(c.active, c.a, 0.0), zeros_f])
    cost = jnp.concatenate([x_cost, jnp.where(c.active, c.b, 0.0), zeros_f])
    lo = jnp.concatenate([x_lo, p_lo, -limits.rate])
    hi = jnp.concatenate([x_hi, p_hi, limits.rate])
    return q, cost, matrix, jnp.zeros(n + n_lines), lo, hi


@jax.jit
def solve_dc_reference(community: Community, limits: LineLimits) -> DCReferenceSolution:
    """The P2P problem with DC line limits on the net injections (T4.3), every case of the
    batch exactly (module doc): trades, injections, perceived, line and congestion prices."""
    community = astype(community, jnp.float64)
    limits = LineLimits(*(v.astype(jnp.float64) for v in limits))
    n = community.n_max
    n_pairs = n * (n - 1) // 2
    solution = solve_qp(*jax.vmap(_reference_qp)(community, limits))
    x, p, flows = solution.z[:, :n_pairs], solution.z[:, n_pairs:n_pairs + n], solution.z[:, n_pairs + n:]
    rows, cols = np.triu_indices(n, 1)
    upper = jnp.zeros((community.n_cases, n, n)).at[:, rows, cols].set(x)
    trades = upper - jnp.swapaxes(upper, -1, -2)
    price, line_price = solution.y[:, :n], solution.y[:, n:]
    objective = jnp.where(community.active, 0.5 * community.a * p**2 + community.b * p,
                          0.0).sum(-1) + (community.charge * trades).sum((-1, -2))
    return DCReferenceSolution(
        objective=objective, p=p, trades=trades, price=price, line_price=line_price,
        congestion=-jnp.einsum("bln,bl->bn", limits.shift, line_price), flows=flows,
        iterations=solution.iterations, converged=solution.converged)


class Projection(NamedTuple):
    q: jax.Array  # (B, N) the projected injections
    balance_price: jax.Array  # (B,) multiplier of sum q = 0
    line_price: jax.Array  # (B, L) multipliers of the flow rows (> 0 at the upper rating)
    bound: jax.Array  # (B, L) -1 / 1: line at its lower / upper rating, 0: inside
    converged: jax.Array  # (B,)


# Primal-dual active-set steps tried before the interior point: the SO's target moves
# little between two ADMM iterations, so the last active set is almost always right or one
# swap away (measured on New England: docs/endogenous.md).
ACTIVE_SET_STEPS = 4


def project(target, active, limits: LineLimits, bound=None) -> Projection:
    """The system operator's step: ``argmin_q ||q - target||^2 / 2`` s.t. ``sum q = 0``,
    ``-rate <= H q <= rate``; padding agents are held at 0.

    Warm-started from ``bound`` (the lines at a rating in the last projection; None: none):
    up to ``ACTIVE_SET_STEPS`` primal-dual active-set steps, each the exact projection on
    the active lines held at their ratings, accepted only when it satisfies every
    optimality condition of the full problem (every line within its rating, every active
    line's multiplier of the right sign, the active rows and the balance held), to
    ``smallqp``'s tolerance. A case whose active set is not found so takes the interior
    point's solution; both are exact, and which one a case gets depends on its own data
    only."""
    n_lines = limits.rate.shape[-1]
    if bound is None:
        bound = jnp.zeros(target.shape[:-1] + (n_lines,), jnp.int8)
    warm = _active_set(target, active, limits, bound)
    return jax.lax.cond(jnp.all(warm.converged), lambda: warm,
                        lambda: _select(warm, _interior_point(target, active, limits)))


def _select(warm: Projection, cold: Projection) -> Projection:
    return jax.tree_util.tree_map(
        lambda u, v: jnp.where(warm.converged.reshape(warm.converged.shape + (1,) * (u.ndim - 1)), u, v),
        warm, cold)


def _active_set(target, active, limits: LineLimits, bound) -> Projection:
    """Primal-dual active-set steps from ``bound`` (``project``); a case stops at the
    first step whose solution is optimal (``converged``) and keeps it."""
    dtype = target.dtype
    shift = jnp.where(active[..., None, :], limits.shift, 0.0)
    target = jnp.where(active, target, 0.0)
    # q = target + rows^T y, rows = (balance, every line); a row off is held at y = 0.
    rows = jnp.concatenate([jnp.where(active, 1.0, 0.0)[..., None, :], shift], -2)
    gram = rows @ jnp.swapaxes(rows, -1, -2)
    scale = jnp.maximum(jnp.abs(target).max(-1), limits.rate.max(-1))
    tol = TOLERANCE_EPS * jnp.finfo(dtype).eps * scale[..., None]
    zero = jnp.zeros(target.shape[:-1] + (1,), dtype)

    def solve(bound):
        on = jnp.concatenate([jnp.ones(target.shape[:-1] + (1,), bool), bound != 0], -1)
        system = (jnp.where(on[..., :, None] & on[..., None, :], gram, 0.0)
                  + jnp.eye(on.shape[-1], dtype=dtype) * jnp.where(on, 0.0, 1.0)[..., None, :])
        goal = jnp.concatenate([zero, bound * limits.rate], -1) - (rows @ target[..., None])[..., 0]
        goal = jnp.where(on, goal, 0.0)
        y = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(system), True), goal[..., None])[..., 0]
        q = target + (y[..., None, :] @ rows)[..., 0, :]
        flows = (shift @ q[..., None])[..., 0]
        line_y = y[..., 1:]
        # Optimal: the active rows and the balance hold, no line above its rating, and a line
        # held at its upper (lower) rating pushes the flow down (up): y s <= 0.
        held = jnp.where(bound != 0, jnp.abs(flows - bound * limits.rate), 0.0)
        optimal = ((jnp.abs(jnp.where(active, q, 0.0).sum(-1)) <= tol[..., 0])
                   & jnp.all(held <= tol, -1)
                   & jnp.all(jnp.abs(flows) <= limits.rate + tol, -1)
                   & jnp.all(line_y * bound <= tol, -1)
                   & jnp.all(jnp.isfinite(y), -1))
        # Next set: drop the lines whose multiplier has the wrong sign, add the violated ones.
        keep = jnp.where(line_y * bound > 0, 0, bound)
        following = jnp.where(flows > limits.rate, 1, jnp.where(flows < -limits.rate, -1, keep))
        solution = Projection(jnp.where(active, q, 0.0), y[..., 0], -line_y, bound, optimal)
        return solution, following.astype(bound.dtype)

    def keep_going(state):
        _, _, k = state
        return (k < ACTIVE_SET_STEPS) & ~jnp.all(state[0].converged)

    def body(state):
        best, bound, k = state
        solution, following = solve(bound)
        best = _select(best, solution)
        return best, jnp.where(best.converged[..., None], best.bound, following), k + 1

    first, following = solve(bound)
    best, _, _ = jax.lax.while_loop(keep_going, body, (first, following, jnp.ones((), jnp.int32)))
    return best


def _interior_point(target, active, limits: LineLimits) -> Projection:
    """The projection by the interior point of ``smallqp`` (cold start)."""
    n = target.shape[-1]
    n_lines = limits.rate.shape[-1]
    batch = target.shape[:-1]
    shift = jnp.where(active[..., None, :], limits.shift, 0.0)
    balance = jnp.broadcast_to(jnp.concatenate([jnp.where(active, 1.0, 0.0),
                                                jnp.zeros(batch + (n_lines,))], -1)[..., None, :],
                               batch + (1, n + n_lines))
    flow_rows = jnp.concatenate([-shift, jnp.broadcast_to(jnp.eye(n_lines), batch + (n_lines, n_lines))], -1)
    matrix = jnp.concatenate([balance, flow_rows], -2)
    free = jnp.where(active, jnp.inf, 0.0)
    solution = solve_qp(
        jnp.concatenate([jnp.where(active, 1.0, 0.0), jnp.zeros(batch + (n_lines,))], -1),
        jnp.concatenate([-jnp.where(active, target, 0.0), jnp.zeros(batch + (n_lines,))], -1),
        matrix, jnp.zeros(batch + (1 + n_lines,)),
        jnp.concatenate([-free, -limits.rate], -1), jnp.concatenate([free, limits.rate], -1))
    flows = solution.z[..., n:]
    # The lines at a rating, to warm-start the next projection.
    at_rating = jnp.abs(flows) >= limits.rate * (1 - 1e-9)
    bound = jnp.where(at_rating, jnp.sign(flows), 0).astype(jnp.int8)
    return Projection(solution.z[..., :n], solution.y[..., 0], solution.y[..., 1:], bound,
                      solution.converged)
