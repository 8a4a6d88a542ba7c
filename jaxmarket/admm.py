"""P2P consensus ADMM (T Algorithm 2, T3.10, B19-6) as an ``init/step/residuals`` triple.

Every agent n solves its local problem exactly (``jaxmarket.local``) against the
half-difference ``y_nm = (p_nm - p_mn) / 2`` of the last trades and the trade prices
``lambda_nm``; the prices then move with the reciprocity mismatch,
``lambda_nm <- lambda_nm - rho (p_nm + p_mn) / 2``. Prices start at 0 and receive the same
update on both ends of a trade, so ``lambda_nm = lambda_mn`` throughout.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.community import Community
from jaxmarket.driver import Algorithm
from jaxmarket.local import solve_agents
from jaxmarket.metrics import p2p_objective


class ADMMParams(NamedTuple):
    rho: jax.Array  # (B,) penalty
    eps_primal: jax.Array  # (B,) tolerance on sqrt(sum_n r_n)
    eps_dual: jax.Array  # (B,) tolerance on sqrt(sum_n s_n)


class ADMMState(NamedTuple):
    trades: jax.Array  # (B, N, N) p_nm
    prices: jax.Array  # (B, N, N) lambda_nm
    power: jax.Array  # (B, N) p_n = sum_m p_nm
    perceived_price: jax.Array  # (B, N) mu_n


class Residuals(NamedTuple):
    primal: jax.Array  # (B,) sqrt(sum_n r_n), r_n = sum_m (p_nm + p_mn)^2   (T3.13)
    dual: jax.Array  # (B,) sqrt(sum_n s_n), s_n = sum_m (p_nm^{k+1} - p_nm^k)^2
    objective: jax.Array  # (B,) P2P objective of the current trades (for gap traces)


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def init(community: Community, params: ADMMParams) -> ADMMState:
    zeros = jnp.zeros_like(community.charge)
    return ADMMState(zeros, zeros, community.a * 0, community.a * 0)


def step(community: Community, params: ADMMParams, state: ADMMState) -> ADMMState:
    rho = params.rho[:, None]
    half_difference = 0.5 * (state.trades - _swap(state.trades))
    target = half_difference + (state.prices - community.charge) / rho[..., None]
    target = jnp.where(community.edges, target, 0.0)
    decision = solve_agents(target, community.trade_min, community.trade_max, community.a,
                            community.b, community.p_min, community.p_max, rho,
                            guess=state.perceived_price)
    trades = decision.trades
    prices = state.prices - 0.5 * rho[..., None] * (trades + _swap(trades))
    return ADMMState(trades, jnp.where(community.edges, prices, 0.0), decision.power,
                     decision.perceived_price)


def residuals(community: Community, params: ADMMParams, previous: ADMMState,
              current: ADMMState) -> Residuals:
    mismatch = current.trades + _swap(current.trades)
    change = current.trades - previous.trades
    return Residuals(jnp.sqrt((mismatch**2).sum((-1, -2))), jnp.sqrt((change**2).sum((-1, -2))),
                     p2p_objective(community, current.trades))


def converged(params: ADMMParams, res: Residuals) -> jax.Array:
    """Global stop (T3.12): sum_n r_n <= eps_p^2 and sum_n s_n <= eps_d^2."""
    return (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)


ALGORITHM = Algorithm(init, step, residuals, converged)
