"""Solve a batch of cases and tabulate one row per case: the entry point of the CLI and
the sweep runner.

The distributed algorithm runs in the community's dtype (float64 by default, float32 on
request); the exact references (centralized P2P problem, pool price) always run in
float64, so the optimality gap of a float32 run measures the float32 error.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket import admm
from jaxmarket.community import Community, astype
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.errors import InputError
from jaxmarket.metrics import market_metrics, optimality_gap
from jaxmarket.pool import pool_dispatch
from jaxmarket.reference import solve_reference

ALGORITHMS = {"admm": admm.ALGORITHM}


class SolverOptions(NamedTuple):
    algorithm: str = "admm"
    rho: float = 1.0
    eps_primal: float = 1e-4
    eps_dual: float = 1e-4
    max_iter: int = 10_000
    check_every: int = 1
    trace_every: int = 0  # 0: no trace; else a multiple of check_every


class BatchResult(NamedTuple):
    rows: dict[str, np.ndarray]  # one column per metric, one entry per case
    trace: dict[str, np.ndarray] | None  # long format: case, iteration, residuals
    trades: jax.Array  # (B, N, N) p_nm, what n sells to m
    prices: jax.Array  # (B, N, N) trade price lambda_nm


def solve_batch(community: Community, options: SolverOptions) -> BatchResult:
    if options.algorithm not in ALGORITHMS:
        raise InputError("solver.algorithm", f"unknown algorithm {options.algorithm!r}; "
                                             f"choose one of {sorted(ALGORITHMS)}")
    n_cases, dtype = community.n_cases, community.dtype
    params = admm.ADMMParams(*(jnp.full(n_cases, v, dtype) for v in
                               (options.rho, options.eps_primal, options.eps_dual)))
    driver = DriverOptions(options.max_iter, options.check_every, options.trace_every)
    result = iterate(ALGORITHMS[options.algorithm], community, params, driver)

    exact = astype(community, jnp.float64)
    reference = solve_reference(exact)
    pool = pool_dispatch(exact)
    trades = result.state.trades.astype(jnp.float64)
    prices = result.state.prices.astype(jnp.float64)
    metrics = market_metrics(exact, trades, prices, result.iterations,
                             jnp.full(n_cases, options.eps_primal, jnp.float64))
    rows = {
        "iterations": result.iterations,
        "converged": result.converged,
        "diverged": result.diverged,
        "primal_residual": result.residuals.primal,
        "dual_residual": result.residuals.dual,
        **metrics,
        "reference_objective": reference.objective,
        "reference_converged": reference.converged,
        "optimality_gap": optimality_gap(metrics["objective"], reference.objective),
        "pool_price": pool.price,
    }
    rows = {k: np.asarray(v) for k, v in rows.items()}
    return BatchResult(rows, _long_trace(result.trace, options.trace_every), trades, prices)


def _long_trace(trace, every: int):
    """(B, T) residual traces to long format, dropping the slots after a case stopped."""
    if trace is None:
        return None
    primal, dual = np.asarray(trace.primal), np.asarray(trace.dual)
    objective = np.asarray(trace.objective)
    case, slot = np.nonzero(~np.isnan(primal))
    return {"case": case, "iteration": (slot + 1) * every, "primal_residual": primal[case, slot],
            "dual_residual": dual[case, slot], "objective": objective[case, slot]}
