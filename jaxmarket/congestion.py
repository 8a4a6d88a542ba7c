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
from jaxmarket.smallqp import solve_qp


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
    line_price: jax.Array  # (B, L) multipliers of the flow rows
    converged: jax.Array  # (B,)


def project(target, active, limits: LineLimits) -> Projection:
    """The system operator's step: ``argmin_q ||q - target||^2 / 2`` s.t. ``sum q = 0``,
    ``-rate <= H q <= rate``; padding agents are held at 0."""
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
    return Projection(solution.z[..., :n], solution.y[..., 0], solution.y[..., 1:],
                      solution.converged)
