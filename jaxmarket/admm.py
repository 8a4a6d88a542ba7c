"""P2P consensus ADMM (T Algorithm 2, T3.10, B19-6) as an ``init/step/residuals`` triple.

Every agent n solves its local problem exactly (``jaxmarket.local``) against the
half-difference ``y_nm = (p_nm - p_mn) / 2`` of the last trades and the trade prices
``lambda_nm``; the prices then move with the reciprocity mismatch,
``lambda_nm <- lambda_nm - rho (p_nm + p_mn) / 2``. Prices start at 0 and receive the same
update on both ends of a trade, so ``lambda_nm = lambda_mn`` throughout. The trades live on
the dense (B, N, N) layout or on neighbour lists (``jaxmarket.neighbours``); the same
functions serve both.

The penalty is the thesis' fixed rho by default. With ``RhoBalancing`` it follows residual
balancing (Boyd et al. 2011, section 3.4.1): every ``every`` iterations rho is multiplied by
``factor`` where the primal residual exceeds ``ratio`` times the dual one, and divided by it
where the dual residual exceeds ``ratio`` times the primal one, within a factor
``eps^(-1/3)`` of the initial rho (203 in float32, 1.6e5 in float64): in float32 an
unbounded rho fell so low that the price updates ``rho (p_nm + p_mn) / 2`` vanished below
the rounding of the prices and the iteration locked, while float64 cases do use a rho
below 1e-3 of the initial one to speed up. Both residuals are the
global ones of the stopping rule (T3.13), which every agent already receives, so the update
costs no message; the prices are unscaled, so they need no rescaling when rho changes.
Distance-based charges make the optimal trades a vertex of a transportation-like polytope
that fixed-rho ADMM approaches only at the speed ``(lambda - gamma - mu) / rho`` of tiny
reduced costs; a smaller rho speeds that drift up, and balancing finds it per case.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket import neighbours
from jaxmarket.community import Community
from jaxmarket.driver import Algorithm
from jaxmarket.local import solve_agents
from jaxmarket.metrics import p2p_objective
from jaxmarket.neighbours import NeighbourLists


class ADMMParams(NamedTuple):
    rho: jax.Array  # (B,) penalty (the initial one under residual balancing)
    eps_primal: jax.Array  # (B,) tolerance on sqrt(sum_n r_n)
    eps_dual: jax.Array  # (B,) tolerance on sqrt(sum_n s_n)


class ADMMState(NamedTuple):
    trades: jax.Array  # (B, N, N) p_nm; (B, N, D) on neighbour lists
    prices: jax.Array  # (B, N, N) lambda_nm; (B, N, D) on neighbour lists
    power: jax.Array  # (B, N) p_n = sum_m p_nm
    perceived_price: jax.Array  # (B, N) mu_n
    rho: jax.Array  # (B,) penalty of the next iteration
    count: jax.Array  # (B,) iterations done


class RhoBalancing(NamedTuple):
    """Residual balancing of rho (module doc); the defaults were the fastest of the
    settings tried on random N = 25 communities with and without charges."""
    ratio: float = 3.0  # change rho when one residual exceeds ratio x the other (> 1)
    factor: float = 2.0  # by this factor (> 1)
    every: int = 10  # at every this many iterations


class Residuals(NamedTuple):
    primal: jax.Array  # (B,) sqrt(sum_n r_n), r_n = sum_m (p_nm + p_mn)^2   (T3.13)
    dual: jax.Array  # (B,) sqrt(sum_n s_n), s_n = sum_m (p_nm^{k+1} - p_nm^k)^2
    objective: jax.Array  # (B,) P2P objective of the current trades (for gap traces)


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def _unpack(problem: Community | NeighbourLists):
    """The community and the map to the reverse trades p_mn: a transpose on the dense
    layout, a gather on neighbour lists (``jaxmarket.neighbours``)."""
    if isinstance(problem, NeighbourLists):
        return problem.community, functools.partial(neighbours.reverse, problem.mirror)
    return problem, _swap


def _residual_norms(previous_trades, trades, reverse):
    """(B,) sqrt(sum_n r_n) and sqrt(sum_n s_n) (T3.13)."""
    mismatch = trades + reverse(trades)
    change = trades - previous_trades
    return jnp.sqrt((mismatch**2).sum((-1, -2))), jnp.sqrt((change**2).sum((-1, -2)))


def init(problem: Community | NeighbourLists, params: ADMMParams) -> ADMMState:
    community, _ = _unpack(problem)
    zeros = jnp.zeros_like(community.charge)
    return ADMMState(zeros, zeros, community.a * 0, community.a * 0, params.rho,
                     jnp.zeros(params.rho.shape, jnp.int32))


def step(balancing: RhoBalancing | None, problem: Community | NeighbourLists,
         params: ADMMParams, state: ADMMState) -> ADMMState:
    community, reverse = _unpack(problem)
    rho = state.rho[:, None]
    half_difference = 0.5 * (state.trades - reverse(state.trades))
    target = half_difference + (state.prices - community.charge) / rho[..., None]
    target = jnp.where(community.edges, target, 0.0)
    decision = solve_agents(target, community.trade_min, community.trade_max, community.a,
                            community.b, community.p_min, community.p_max, rho,
                            guess=state.perceived_price)
    trades = decision.trades
    prices = state.prices - 0.5 * rho[..., None] * (trades + reverse(trades))
    count = state.count + 1
    next_rho = state.rho
    if balancing is not None:
        primal, dual = _residual_norms(state.trades, trades, reverse)
        due = count % balancing.every == 0
        next_rho = jnp.where(due & (primal > balancing.ratio * dual), next_rho * balancing.factor,
                             jnp.where(due & (dual > balancing.ratio * primal),
                                       next_rho / balancing.factor, next_rho))
        limit = float(jnp.finfo(next_rho.dtype).eps) ** (-1 / 3)
        next_rho = jnp.clip(next_rho, params.rho / limit, params.rho * limit)
    return ADMMState(trades, jnp.where(community.edges, prices, 0.0), decision.power,
                     decision.perceived_price, next_rho, count)


def residuals(problem: Community | NeighbourLists, params: ADMMParams, previous: ADMMState,
              current: ADMMState) -> Residuals:
    community, reverse = _unpack(problem)
    return Residuals(*_residual_norms(previous.trades, current.trades, reverse),
                     p2p_objective(community, current.trades))


def converged(params: ADMMParams, res: Residuals) -> jax.Array:
    """Global stop (T3.12): sum_n r_n <= eps_p^2 and sum_n s_n <= eps_d^2."""
    return (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)


@functools.cache
def make(balancing: RhoBalancing | None = None) -> Algorithm:
    """ADMM with a fixed rho (``None``, the thesis) or residual balancing. Memoised, so equal
    arguments give the same ``Algorithm`` and the driver's compiled program is reused."""
    return Algorithm(init, functools.partial(step, balancing), residuals, converged)


ALGORITHM = make()
