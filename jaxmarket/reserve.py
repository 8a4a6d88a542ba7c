"""The P2P energy and reserve market (T ch. 5, T5.5-5.9): the market, the local update of
its consensus ADMM, and the centralized joint reference.

Every agent n holds an injection ``p_n``, self-procured reserves ``r+_n`` (upward) and
``r-_n`` (downward), and three blocks of bilateral trades on the community's graph:
energy ``p_nm`` (what n sells), upward reserve ``r+_nm`` and downward reserve ``r-_nm``
(what n *buys*). All three blocks are skew-symmetric. The market solves

    min  sum_n c_n(p_n) + c+_n(r+_n) + c-_n(r-_n) + sum_m gamma_nm p_nm
    s.t. p_n = sum_m p_nm,   p_min + r-_n <= p_n <= p_max - r+_n,   0 <= r+-_n <= r+-max_n
         r+tot_n = r+_n + sum_m r+_nm >= 0,   r-tot_n = r-_n + sum_m r-_nm >= 0
         r+tot_n >= p_n - q_low_n,   r-tot_n >= q_high_n - p_n        (uncertain agents)

with ``c+-_n(r) = a+-_n r^2 / 2 + b+-_n r``. The requirement quantiles
``q_low = F_n^-1(beta (1 - delta_n))`` and ``q_high = F_n^-1(1 - (1 - beta)(1 - delta_n))``
are the deterministic equivalent of ``P(-r-tot <= p - p~ <= r+tot) >= delta_n`` with split
tails (``jaxmarket.uncertainty``).

Decisions where the sources are silent:

- Reserve trades use the energy graph and are boxed ``-r+-max_n <= r+-_nm <= r+-max_m``:
  no trade sells more reserve than the seller can hold at all (so an agent with
  ``r+max = 0``, a renewable, only buys upward reserve). Energy trades keep the role
  sign constraints of the P2P market. Reserve trades carry no charge.
- Reserve prices: the ADMM keeps one multiplier per trade and block, updated like the
  energy price, ``lambda <- lambda - rho (x_nm + x_mn) / 2``; since a reserve trade is
  positive when buying, the price a buyer pays is ``-lambda+-_nm``.
- Residuals (T5.9): ``primal^2 = 1/4 sum_blocks sum_nm (x_nm + x_mn)^2`` and
  ``dual^2 = sum_blocks sum_nm (x_nm^{k+1} - x_nm^k)^2``; stop when both are below their
  tolerances (T3.12).
- An agent without any trade (isolated) keeps ``p_n = 0``.

The local problem of an agent (T5.7) couples its three trade blocks with ``p, r+, r-``
through seven linear rows; it is solved by the small dense interior point of
``jaxmarket.smallqp`` to a scaled tolerance of 2.2e-13 (its ``converged`` flag is counted
per iteration in ``ReserveLocal.local_failures``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.community import Community
from jaxmarket.smallqp import solve_qp


class ReserveMarket(NamedTuple):
    community: Community  # energy data, graph, charges, energy trade boxes
    up_a: jax.Array  # (B, N) reserve cost c+(r) = up_a r^2 / 2 + up_b r
    up_b: jax.Array
    down_a: jax.Array
    down_b: jax.Array
    up_max: jax.Array  # (B, N) r+max >= 0
    down_max: jax.Array  # (B, N) r-max >= 0
    uncertain: jax.Array  # (B, N) bool: agent must cover its forecast error
    q_low: jax.Array  # (B, N) F_n^-1(beta (1 - delta_n)), uncertain agents only
    q_high: jax.Array  # (B, N) F_n^-1(1 - (1 - beta)(1 - delta_n))

    @property
    def n_cases(self) -> int:
        return self.community.n_cases


def reserve_trade_bounds(market: ReserveMarket):
    """Boxes of the up and down reserve trades: ``-r_max_n <= r_nm <= r_max_m``."""
    edges = market.community.edges

    def box(r_max):
        lo = jnp.where(edges, -r_max[..., :, None], 0.0)
        hi = jnp.where(edges, r_max[..., None, :], 0.0)
        return lo, hi

    return box(market.up_max), box(market.down_max)


def _swap(x):
    return jnp.swapaxes(x, -1, -2)


class LocalProblems(NamedTuple):
    """The QP of every agent: variables ``[t (N), r+_m (N), r-_m (N), p, r+, r-, w (6)]``."""
    q: jax.Array  # (B, N, 3N + 9)
    c: jax.Array
    A: jax.Array  # (B, N, 7, 3N + 9)
    rhs: jax.Array  # (B, N, 7)
    lo: jax.Array
    hi: jax.Array


def local_problems(market: ReserveMarket, rho, prices, targets) -> LocalProblems:
    """Agent n's problem at penalty ``rho`` (B,), trade prices ``prices`` (B, 3, N, N) and
    proximal centres ``targets`` (B, 3, N, N) (the half-differences y_nm of each block)."""
    c = market.community
    n = c.n_max
    dtype = c.dtype
    (up_lo, up_hi), (down_lo, down_hi) = reserve_trade_bounds(market)
    has_trade = jnp.any(c.edges, -1)
    active = c.active
    p_min = jnp.where(has_trade, c.p_min, 0.0)
    p_max = jnp.where(has_trade, c.p_max, 0.0)
    rho_t = jnp.broadcast_to(rho[:, None, None], c.charge.shape)
    charge = jnp.stack([c.charge, jnp.zeros_like(c.charge), jnp.zeros_like(c.charge)], 1)
    trade_c = charge - prices - rho[:, None, None, None] * targets  # (B, 3, N, N)
    zeros = jnp.zeros_like(c.a)
    uncertain = market.uncertain & active
    up_max = jnp.where(active, market.up_max, 0.0)
    down_max = jnp.where(active, market.down_max, 0.0)

    def per_agent(*blocks):  # three (B, N, N) blocks -> (B, N, 3N) in variable order
        return jnp.concatenate(blocks, -1)

    q = jnp.concatenate([per_agent(rho_t, rho_t, rho_t),
                         jnp.stack([c.a, market.up_a, market.down_a], -1),
                         jnp.zeros(c.a.shape + (6,), dtype)], -1)
    linear = jnp.concatenate([per_agent(trade_c[:, 0], trade_c[:, 1], trade_c[:, 2]),
                              jnp.stack([c.b, market.up_b, market.down_b], -1),
                              jnp.zeros(c.a.shape + (6,), dtype)], -1)
    # Rows: which slack is switched on (inactive agents and certain agents lose rows).
    row_on = jnp.stack([active, active, active, active, uncertain, active, uncertain], -1)
    slack_lo = jnp.zeros(c.a.shape + (6,), dtype)
    slack_hi = jnp.where(row_on[..., 1:], jnp.inf, 0.0)
    lo = jnp.concatenate([per_agent(c.trade_min, up_lo, down_lo),
                          jnp.stack([p_min, zeros, zeros], -1), slack_lo], -1)
    hi = jnp.concatenate([per_agent(c.trade_max, up_hi, down_hi),
                          jnp.stack([p_max, up_max, down_max], -1), slack_hi], -1)

    ones = jnp.ones(n, dtype)
    none = jnp.zeros(n, dtype)

    def row(t, u, d, p, s, v, slack):
        w = jnp.zeros(6, dtype).at[slack - 1].set(1.0) if slack else jnp.zeros(6, dtype)
        return jnp.concatenate([t, u, d, jnp.array([p, s, v], dtype), w])

    template = jnp.stack([
        row(-ones, none, none, 1.0, 0.0, 0.0, 0),  # p - sum t = 0
        row(none, none, none, 1.0, 1.0, 0.0, 1),  # p + r+ + w1 = p_max
        row(none, none, none, -1.0, 0.0, 1.0, 2),  # -p + r- + w2 = -p_min
        row(none, -ones, none, 0.0, -1.0, 0.0, 3),  # -(r+ + sum r+_m) + w3 = 0
        row(none, -ones, none, 1.0, -1.0, 0.0, 4),  # p - r+tot + w4 = q_low
        row(none, none, -ones, 0.0, 0.0, -1.0, 5),  # -(r- + sum r-_m) + w5 = 0
        row(none, none, -ones, -1.0, 0.0, -1.0, 6),  # -p - r-tot + w6 = -q_high
    ])
    A = jnp.where(row_on[..., None], template, 0.0)
    q_low = jnp.where(uncertain, market.q_low, 0.0)
    q_high = jnp.where(uncertain, market.q_high, 0.0)
    rhs = jnp.stack([zeros, p_max, -p_min, zeros, q_low, zeros, -q_high], -1)
    rhs = jnp.where(row_on, rhs, 0.0)
    return LocalProblems(q, linear, A, rhs, lo, hi)


class ReserveLocal(NamedTuple):
    """What the reserve market's local update keeps between iterations."""
    power: jax.Array  # (B, N) p_n
    up: jax.Array  # (B, N) self-procured r+_n
    down: jax.Array  # (B, N) self-procured r-_n
    local_failures: jax.Array  # (B,) local solves that missed their tolerance so far


@dataclasses.dataclass(frozen=True)
class ReserveUpdate:
    """The local update of consensus ADMM (``jaxmarket.algorithms.admm``) on this market:
    every agent's QP (T5.7) over its three trade blocks, ``p``, ``r+`` and ``r-``; the
    primal residual weighs the reciprocity mismatch by 1/4 (T5.9)."""

    primal_weight: ClassVar[float] = 0.25

    @staticmethod
    def layout(market: ReserveMarket):
        return market.community.edges[:, None], _swap

    @staticmethod
    def init(market: ReserveMarket):
        c = market.community
        zeros = jnp.zeros((c.n_cases, 3) + c.charge.shape[1:], c.dtype)
        return zeros, ReserveLocal(c.a * 0, c.a * 0, c.a * 0, jnp.zeros(c.n_cases, jnp.int32))

    @staticmethod
    def solve(market: ReserveMarket, consensus, prices, rho, local: ReserveLocal):
        c = market.community
        n = c.n_max
        edges = c.edges[:, None]
        problems = local_problems(market, rho, prices, jnp.where(edges, consensus, 0.0))
        solution = solve_qp(*problems)
        z = solution.z
        trades = jnp.stack([z[..., :n], z[..., n:2 * n], z[..., 2 * n:3 * n]], 1)
        failures = (~solution.converged & c.active).sum(-1).astype(jnp.int32)
        return jnp.where(edges, trades, 0.0), ReserveLocal(
            z[..., 3 * n], z[..., 3 * n + 1], z[..., 3 * n + 2], local.local_failures + failures)

    @staticmethod
    def objective(market: ReserveMarket, state):
        return objective(market, state.trades, state.local)


def market_cost(market: ReserveMarket, power, up, down):
    """(B,) energy and reserve cost ``sum_n c_n(p_n) + c+_n(r+_n) + c-_n(r-_n)`` (no charges)."""
    c = market.community
    cost = (0.5 * c.a * power**2 + c.b * power + 0.5 * market.up_a * up**2 + market.up_b * up
            + 0.5 * market.down_a * down**2 + market.down_b * down)
    return jnp.where(c.active, cost, 0.0).sum(-1)


def objective(market: ReserveMarket, trades, local: ReserveLocal):
    """(B,) the market objective: cost plus the charges on energy trades."""
    return market_cost(market, local.power, local.up, local.down) + (
        market.community.charge * trades[:, 0]).sum((-1, -2))


def reserve_totals(trades, local: ReserveLocal):
    """(B, N) r+tot_n and r-tot_n: self-procured plus bought."""
    return local.up + trades[:, 1].sum(-1), local.down + trades[:, 2].sum(-1)


class JointSolution(NamedTuple):
    cost: jax.Array  # (B,) sum_n c_n(p_n) + c+_n(r+_n) + c-_n(r-_n)
    power: jax.Array  # (B, N)
    up: jax.Array  # (B, N) r+_n
    down: jax.Array  # (B, N) r-_n
    price: jax.Array  # (B,) energy price (dual of the balance)
    converged: jax.Array  # (B,)


@jax.jit
def solve_joint(market: ReserveMarket, sum_low, sum_high) -> JointSolution:
    """The centralized joint chance-constrained market (T5.1), every case of the batch:

        min  sum_n c_n(p_n) + c+_n(r+_n) + c-_n(r-_n)
        s.t. sum_n p_n = 0,   p_min + r-_n <= p_n <= p_max - r+_n,   0 <= r+-_n <= r+-max_n
             sum_n r+_n >= p_nc - F_nc^-1(d-),   sum_n r-_n >= F_nc^-1(d+) - p_nc

    with ``p_nc`` the scheduled injection of the uncertain agents and ``sum_low``,
    ``sum_high`` (B,) the two quantiles of the sum of their forecasts. The operator
    clears energy as a pool (no trade graph, no charges) and buys reserves from every
    agent. Solved by ``jaxmarket.smallqp`` to 2.2e-13 (dense, 5N + 2 variables)."""
    c = market.community
    dtype = c.dtype
    active, uncertain = c.active, c.active & market.uncertain
    b, n = c.a.shape
    eye = jnp.eye(n, dtype=dtype)
    zero_n, zero_nn = jnp.zeros((b, n), dtype), jnp.zeros((b, n, n), dtype)
    on = active.astype(dtype)
    nc = uncertain.astype(dtype)
    # Variables [p (N), r+ (N), r- (N), w_upper (N), w_lower (N), W_up, W_down].
    ones_col = jnp.ones((b, 1), dtype)
    balance = jnp.concatenate([on, zero_n, zero_n, zero_n, zero_n, 0 * ones_col, 0 * ones_col], -1)
    diag_on = eye * on[:, :, None]
    upper = jnp.concatenate([diag_on, diag_on, zero_nn, diag_on, zero_nn,
                             jnp.zeros((b, n, 2), dtype)], -1)
    lower = jnp.concatenate([-diag_on, zero_nn, diag_on, zero_nn, diag_on,
                             jnp.zeros((b, n, 2), dtype)], -1)
    need_up = jnp.concatenate([nc, -on, zero_n, zero_n, zero_n, ones_col, 0 * ones_col], -1)
    need_down = jnp.concatenate([-nc, zero_n, -on, zero_n, zero_n, 0 * ones_col, ones_col], -1)
    A = jnp.concatenate([balance[:, None], upper, lower, need_up[:, None], need_down[:, None]], 1)
    p_min = jnp.where(active, c.p_min, 0.0)
    p_max = jnp.where(active, c.p_max, 0.0)
    rhs = jnp.concatenate([jnp.zeros((b, 1), dtype), p_max, -p_min, sum_low[:, None],
                           -sum_high[:, None]], -1)
    inf_n = jnp.where(active, jnp.inf, 0.0)
    lo = jnp.concatenate([p_min, zero_n, zero_n, zero_n, zero_n, jnp.zeros((b, 2), dtype)], -1)
    hi = jnp.concatenate([p_max, jnp.where(active, market.up_max, 0.0),
                          jnp.where(active, market.down_max, 0.0), inf_n, inf_n,
                          jnp.full((b, 2), jnp.inf, dtype)], -1)
    q = jnp.concatenate([c.a, market.up_a, market.down_a, zero_n, zero_n,
                         jnp.zeros((b, 2), dtype)], -1)
    linear = jnp.concatenate([c.b, market.up_b, market.down_b, zero_n, zero_n,
                              jnp.zeros((b, 2), dtype)], -1)
    solution = solve_qp(q, linear, A, rhs, lo, hi)
    z = solution.z
    power, up, down = z[:, :n], z[:, n:2 * n], z[:, 2 * n:3 * n]
    return JointSolution(market_cost(market, power, up, down), power, up, down,
                         solution.y[:, 0], solution.converged)
