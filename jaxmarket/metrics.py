"""Per-case market outcomes (SPEC section 5), computed from final trades and prices.

Conventions decided here:

* ``objective`` is the P2P objective of T3.9 including the charges,
  ``sum_n c_n(p_n) + sum_{n,m} gamma_nm p_nm``; ``social_welfare = -sum_n c_n(p_n)``;
  ``charges_collected = sum_{n,m} gamma_nm p_nm`` (both ends' halves).
* Trade prices are summarised over *traded* directed trades only, those with
  ``|p_nm| > traded_floor`` (the primal tolerance of the run): an edge that carries no
  power has no meaningful price. ``mean_price`` is volume weighted; ``price_spread`` is
  ``price_max - price_min``; all are NaN when nothing is traded.
* ``messages`` counts one message per directed trade per iteration plus the residual
  broadcasts of the global stopping rule, ``N (N - 1)`` per iteration (SPEC section 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmarket.community import Community


def agent_costs(community: Community, power):
    """c_n(p_n) of every agent (zero for padding)."""
    cost = 0.5 * community.a * power**2 + community.b * power
    return jnp.where(community.active, cost, 0.0)


def p2p_objective(community: Community, trades):
    """sum_n c_n(sum_m p_nm) + sum_nm gamma_nm p_nm of every case (T3.9)."""
    trades = jnp.where(community.edges, trades, 0.0)
    charges = (community.charge * trades).sum((-1, -2))
    return agent_costs(community, trades.sum(-1)).sum(-1) + charges


@jax.jit
def market_metrics(community: Community, trades, prices, iterations, traded_floor):
    """Outcome columns of every case, as a dict of (B,) arrays."""
    edges = community.edges
    trades = jnp.where(edges, trades, 0.0)
    power = trades.sum(-1)
    costs = agent_costs(community, power).sum(-1)
    charges = (community.charge * trades).sum((-1, -2))
    volume = jnp.abs(trades)
    traded = edges & (volume > traded_floor[:, None, None])
    any_traded = traded.any((-1, -2))
    nan = jnp.nan
    price_min = jnp.where(any_traded, jnp.where(traded, prices, jnp.inf).min((-1, -2)), nan)
    price_max = jnp.where(any_traded, jnp.where(traded, prices, -jnp.inf).max((-1, -2)), nan)
    total_volume = volume.sum((-1, -2))
    mean_price = jnp.where(total_volume > 0,
                           (volume * prices).sum((-1, -2)) / jnp.where(total_volume > 0, total_volume, 1),
                           nan)
    n_agents = community.active.sum(-1)
    n_trades = edges.sum((-1, -2))
    degree = edges.sum(-1)
    reciprocity = trades + jnp.swapaxes(trades, -1, -2)
    return {
        "objective": costs + charges,
        "social_welfare": -costs,
        "charges_collected": charges,
        "mean_price": mean_price,
        "price_min": price_min,
        "price_max": price_max,
        "price_spread": price_max - price_min,
        "total_traded": 0.5 * total_volume,
        "power_balance_error": jnp.abs(power.sum(-1)),
        "imbalance": jnp.abs(reciprocity.sum(-1)).sum(-1),
        "messages": iterations.astype(jnp.int64) * (n_trades + n_agents * (n_agents - 1)),
        "n_agents": n_agents,
        "n_trades": n_trades,
        "isolated_agents": (community.active & (degree == 0)).sum(-1),
    }


def optimality_gap(value, reference):
    """|obj - obj*| / max(1, |obj*|) (SPEC section 5)."""
    return jnp.abs(value - reference) / jnp.maximum(1.0, jnp.abs(reference))

