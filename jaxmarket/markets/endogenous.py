"""The P2P market with endogenous DC network charges (SPEC 7.1): the system operator joins
the negotiation (``jaxmarket.algorithms.endogenous``), one row per case.

Rows carry the P2P market's columns, with the optimality gap taken against the exact
line-constrained reference (``jaxmarket.congestion.solve_dc_reference``), plus the
endogenous charges: their mean, min and max over the agents (relative to the reference
bus, EUR/MWh) and the money the SO collects, ``-sum_n eta_n p_n``. Messages count the SO as
one more party: per iteration it exchanges one value with every agent each way (2 N,
``so_messages``) and takes part in the residual broadcasts of the global stop (2 N more
than among the agents alone).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxmarket.algorithms import Algorithm
from jaxmarket.algorithms.endogenous import GridProblem, congestion_charge, trade_prices
from jaxmarket.community import Community, astype
from jaxmarket.congestion import LineLimits, solve_dc_reference
from jaxmarket.driver import DriverResult, iterate
from jaxmarket.markets.lanes import driver_options
from jaxmarket.markets.rows import BatchResult, reference_rows
from jaxmarket.metrics import market_metrics


def run(community: Community, limits: LineLimits, algorithm: Algorithm,
        driver: str = "continuous") -> DriverResult:
    """The endogenous ADMM on every case of the batch (dense trade layout)."""
    params = algorithm.case_params(algorithm.params(community.n_cases, community.dtype), community)
    limits = LineLimits(*(v.astype(community.dtype) for v in limits))
    return iterate(algorithm.static(), GridProblem(community, limits), params,
                   driver_options(community, algorithm, driver), jnp.int32(community.n_cases))


def tabulate(community: Community, limits: LineLimits, algorithm: Algorithm,
             result: DriverResult) -> BatchResult:
    exact = astype(community, jnp.float64)
    state = result.state
    trades = state.admm.trades.astype(jnp.float64)
    prices = trade_prices(GridProblem(community, limits), state).astype(jnp.float64)
    floor = jnp.full(community.n_cases, algorithm.eps_primal, jnp.float64)
    metrics = market_metrics(exact, trades, prices, result.iterations, floor)
    parties = exact.active.sum(-1)
    rounds = result.iterations.astype(jnp.int64)
    so_messages = rounds * 2 * parties
    metrics["messages"] = metrics["messages"] + 2 * so_messages
    metrics["messages_per_agent_mean"] = metrics["messages"] / jnp.maximum(parties + 1, 1)
    charge = jnp.where(exact.active, congestion_charge(state).astype(jnp.float64), 0.0)
    power = jnp.where(exact.active, trades.sum(-1), 0.0)
    rows, trace = reference_rows(
        exact, result, metrics, solve_dc_reference(exact, limits), algorithm.trace_every,
        endogenous_charge_mean=charge.sum(-1) / jnp.maximum(parties, 1),
        endogenous_charge_min=jnp.where(exact.active, charge, jnp.inf).min(-1),
        endogenous_charge_max=jnp.where(exact.active, charge, -jnp.inf).max(-1),
        congestion_collected=-(charge * power).sum(-1),
        so_messages=so_messages)
    return BatchResult(rows, trace, trades, prices, agent_charge=charge)
