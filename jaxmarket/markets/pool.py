"""The pool market (T2.1, T3.1) cleared by community ADMM: the dispatch read as rows with
the columns of the P2P market.

The dispatch is read as trades through the manager, so ``total_traded`` is the total
production ``sum_n p_n^+``, every price column is the uniform price (spread 0; NaN when
nothing is traded, as for P2P rows), ``charges_collected`` is 0, ``imbalance`` and
``power_balance_error`` are ``|sum_n p_n|``, and ``messages`` counts ``2 N`` per iteration
(each agent sends ``p_n`` to the manager and receives the price and the imbalance). The
case columns (``n_trades``, ``isolated_agents``) still describe the trade graph of the
case. The gap is taken against the exact pool dispatch (``jaxmarket.pool``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmarket.algorithms import Algorithm
from jaxmarket.community import Community, astype
from jaxmarket.driver import DriverResult
from jaxmarket.markets.p2p import run
from jaxmarket.markets.rows import BatchResult, driver_columns, with_gap_columns
from jaxmarket.metrics import agent_costs, gap_floor, market_metrics, optimality_gap
from jaxmarket.pool import pool_dispatch

__all__ = ["run", "tabulate"]


def tabulate(community: Community, algorithm: Algorithm, result: DriverResult) -> BatchResult:
    """One row per case, compared with the exact pool dispatch (float64)."""
    exact = astype(community, jnp.float64)
    pool = pool_dispatch(exact)
    gap = gap_floor(exact)
    floor = jnp.full(community.n_cases, algorithm.eps_primal, jnp.float64)
    state = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), result.state)
    metrics, trades, prices = market_outcome(exact, state, result.iterations, floor)
    rows = {
        **driver_columns(result),
        **metrics,
        "reference_objective": pool.objective,
        "reference_converged": jnp.isfinite(pool.price),
        "optimality_gap": optimality_gap(metrics["objective"], pool.objective, gap),
        "pool_price": pool.price,
    }
    rows, trace = with_gap_columns(rows, result, pool.objective, gap, algorithm.trace_every)
    return BatchResult(rows, trace, trades, prices,
                       injections=jnp.where(exact.active, state.power, 0.0))


@jax.jit
def market_outcome(community: Community, state, iterations, traded_floor):
    """Row columns of ``metrics.market_metrics`` for a pool dispatch (community ADMM's
    state), plus the (B, N, N) trades (none) and trade prices (the uniform price on every
    edge) of the result."""
    power = jnp.where(community.active, state.power, 0.0)
    none = jnp.zeros_like(community.charge)
    rows = market_metrics(community, none, none, iterations, traded_floor)  # case columns
    costs = agent_costs(community, power).sum(-1)
    production = jax.nn.relu(power).sum(-1)
    price = jnp.where(production > traded_floor, state.price, jnp.nan)
    balance = jnp.abs(power.sum(-1))
    rows.update(objective=costs, social_welfare=-costs, charges_collected=jnp.zeros_like(costs),
                mean_price=price, price_min=price, price_max=price, price_spread=price - price,
                total_traded=production, power_balance_error=balance, imbalance=balance,
                messages=iterations.astype(jnp.int64) * 2 * rows["n_agents"],
                consumption=jax.nn.relu(-power).sum(-1))
    rows.update(trade_messages=rows["messages"],
                messages_per_agent_mean=rows["messages"] / jnp.maximum(rows["n_agents"], 1),
                # every agent sends its power and receives the price: 2 per iteration
                messages_per_agent_max=rows["messages"] // jnp.maximum(rows["n_agents"], 1))
    prices = jnp.where(community.edges, state.price[:, None, None], 0.0)
    return rows, none, prices
