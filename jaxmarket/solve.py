"""Solve a batch of cases and tabulate one row per case: the entry point of the CLI and
the sweep runner.

The distributed algorithm runs in the community's dtype (float64 by default, float32 on
request); the exact references (centralized P2P problem, pool price) always run in
float64, so the optimality gap of a float32 run measures the float32 error. The gap of a
P2P algorithm (ADMM, RCI, PCMBED) is taken against the centralized P2P problem, that of a
pool algorithm (CED) against the exact pool dispatch: each against its own problem.

Iterations to a gap. With a trace (``trace_every > 0``) the row carries, for every
threshold t in ``GAP_THRESHOLDS``, the column ``iterations_to_gap_e2`` (t = 1e-2),
``_e3``, ``_e4``: the first traced iteration from which on the optimality gap stays <= t
until the case stopped, the final gap included. "Stays", not "first touches": an
iterate whose reciprocity does not hold yet can cross the optimal objective on its
way and touch a gap of zero by chance (RCI oscillates). The resolution is the trace
stride; a case that settles after its last traced iteration counts its stopping
iteration. NaN when the final gap is above t (never reached within ``max_iter``) and,
for lack of a measure, in every row of a run without a trace. The long trace carries
the gap of every traced iteration (``optimality_gap``).

Three drivers give the same rows (``jaxmarket.driver``): ``continuous`` (the default) serves
the batch as a queue to a fixed number of lanes on every local device, ``blocked`` iterates
it in blocks of the same size (cache-sized on a CPU), each block until its slowest case has
stopped, and ``plain`` iterates the whole batch in one loop until its slowest case has
stopped (the naive vectorised loop, kept as the baseline of the benchmarks).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket import admm, ced, neighbours, rci
from jaxmarket.community import Community, astype, take
from jaxmarket.driver import Algorithm, DriverOptions, DriverResult, iterate
from jaxmarket.errors import InputError
from jaxmarket.metrics import market_metrics, optimality_gap
from jaxmarket.pool import pool_dispatch
from jaxmarket.reference import solve_reference
from jaxmarket.schedules import power_laws


class SolverOptions(NamedTuple):
    algorithm: str = "admm"
    rho: float = 1.0  # ADMM and CED penalty (ADMM with balancing: the initial one)
    # ADMM residual balancing of rho (admm.RhoBalancing): 0 keeps rho fixed (the thesis),
    # else the residual ratio that changes rho by rho_balance_factor every rho_balance_every.
    rho_balance: float = 0.0
    rho_balance_factor: float = admm.RhoBalancing._field_defaults["factor"]
    rho_balance_every: int = admm.RhoBalancing._field_defaults["every"]
    eps_primal: float = 1e-4
    eps_dual: float = 1e-4
    max_iter: int = 10_000
    check_every: int = 1
    trace_every: int = 0  # 0: no trace; else a multiple of check_every
    # RCI / PCMBED: the thesis stopping rule, checked together with eps_primal/eps_dual
    # (inf switches either pair off), and the persistent sequences as (c, p) in c / k^p.
    eps_price: float = 1e-4
    eps_power: float = 1e-4
    alpha: tuple[float, float] = (0.01, 0.01)
    beta: tuple[float, float] = (0.1, 0.1)
    eta: tuple[float, float] = (0.005, 0.0)
    delta: tuple[float, float] = (1.0, 0.0)


class Method(NamedTuple):
    """How ``solve_batch`` runs an algorithm: the driver ``Algorithm`` and its per-case
    parameters built from the options, and whether it solves the pool problem (no trades,
    compared with the exact pool dispatch) instead of the P2P problem."""
    algorithm: Callable[[SolverOptions], Algorithm]
    params: Callable[[SolverOptions, int, Any], Any]
    pool: bool = False


def _admm_params(options: SolverOptions, n_cases: int, dtype):
    return admm.ADMMParams(*(jnp.full(n_cases, v, dtype) for v in
                             (options.rho, options.eps_primal, options.eps_dual)))


def _admm(options: SolverOptions) -> Algorithm:
    if not options.rho_balance:
        return admm.ALGORITHM
    return admm.make(admm.RhoBalancing(options.rho_balance, options.rho_balance_factor,
                                       options.rho_balance_every))


def _rci_params(options: SolverOptions, n_cases: int, dtype):
    return rci.params(n_cases, options.eps_price, options.eps_power, options.eps_primal,
                      options.eps_dual, dtype)


def _ced_params(options: SolverOptions, n_cases: int, dtype, mean_imbalance: bool):
    return ced.params(n_cases, options.rho, options.eps_primal, options.eps_dual,
                      mean_imbalance, dtype)


def _rci(options: SolverOptions, central_node: bool) -> Algorithm:
    sequences = power_laws(options.alpha, options.beta, options.eta, options.delta)
    return rci.make(sequences, central_node)  # memoised: equal options, one compilation


ALGORITHMS = {
    "admm": Method(_admm, _admm_params),
    "rci": Method(partial(_rci, central_node=False), _rci_params),
    "pcmbed": Method(partial(_rci, central_node=True), _rci_params),
    "ced": Method(lambda options: ced.ALGORITHM, partial(_ced_params, mean_imbalance=False),
                  pool=True),
    "ced_mean": Method(lambda options: ced.ALGORITHM, partial(_ced_params, mean_imbalance=True),
                       pool=True),
}


# Trades per block on a CPU: measured best near 1e4 (N = 25: blocks of 10-25 cases ran
# 2-3x faster than one batch of 1000, bench/RESULTS.md); one batch is the GPU pattern.
CPU_TRADES_PER_BLOCK = 8_192


# Lanes per accelerator: enough trades to fill it (not yet measured on a GPU).
GPU_TRADES_PER_DEVICE = 2**22
DRIVERS = ("continuous", "blocked", "plain")
MIN_LANES = 8
CASES_PER_LANE = 16


def default_block_size(community: Community, width: int = 0) -> int:
    """Cases per driver block: cache-sized on a CPU, the whole batch elsewhere. ``width``:
    trade slots per agent on neighbour lists (0: the dense N)."""
    if jax.default_backend() != "cpu":
        return 0
    return max(1, CPU_TRADES_PER_BLOCK // (community.n_max * (width or community.n_max)))


# ADMM runs a case on neighbour lists when it has at least NEIGHBOUR_LIST_AGENTS agents and
# their width, its largest degree rounded up to a multiple of WIDTH_MULTIPLE (few compiled
# shapes), is at most NEIGHBOUR_LIST_SHARE of N: measured 1.3-3x faster per iteration there
# on a CPU (bench/RESULTS.md). Below, the dense kernel is about as fast and a batch split
# into one queue per layout loses more to draining lanes and compiling than it gains.
NEIGHBOUR_LIST_AGENTS = 50
NEIGHBOUR_LIST_SHARE = 0.5
WIDTH_MULTIPLE = 8


def neighbour_widths(community: Community, options: SolverOptions) -> np.ndarray:
    """(B,) trade slots per agent of each case's ADMM kernel on neighbour lists
    (``jaxmarket.neighbours``), 0 for the dense (B, N, N) layout. A function of the case
    alone (its largest degree and N), so a row does not depend on the other cases of its
    batch: the width changes the last bits of the arithmetic."""
    if options.algorithm != "admm" or community.n_max < NEIGHBOUR_LIST_AGENTS:
        return np.zeros(community.n_cases, int)
    width = -(-np.maximum(1, neighbours.degrees(community)) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    return np.where(width <= NEIGHBOUR_LIST_SHARE * community.n_max, width, 0)


def driver_options(community: Community, options: SolverOptions, driver: str,
                   width: int = 0) -> DriverOptions:
    """The driver's settings: the blocked loop, or continuous batching on every local device
    the batch can keep busy, with enough cases queued per lane (``CASES_PER_LANE``) for the
    lanes to drain late, at most as many lanes as a block has cases (cache-sized on a CPU)
    and at least ``MIN_LANES``: XLA vectorises a loop over fewer than about 8 cases
    differently, which changes the last bits of a row (rows are bit-identical for every
    lane count from 8 on, and for every device count)."""
    if driver not in DRIVERS:
        raise InputError("driver", f"unknown driver {driver!r}; choose one of {list(DRIVERS)}")
    n_cases = community.n_cases
    base = DriverOptions(options.max_iter, options.check_every, options.trace_every,
                         block_size=default_block_size(community, width))
    if driver == "blocked":
        return base
    if driver == "plain":
        return base._replace(block_size=0)
    most = base.block_size or max(1, GPU_TRADES_PER_DEVICE // (community.n_max * (width or community.n_max)))
    devices = min(jax.local_device_count(), max(1, n_cases // MIN_LANES))
    per_device = -(-n_cases // devices)
    lanes = min(per_device, most, max(MIN_LANES, -(-per_device // CASES_PER_LANE)))
    return base._replace(lanes=lanes, devices=devices)


class BatchResult(NamedTuple):
    rows: dict[str, np.ndarray]  # one column per metric, one entry per case
    trace: dict[str, np.ndarray] | None  # long format: case, iteration, residuals
    trades: jax.Array  # (B, N, N) p_nm, what n sells to m
    prices: jax.Array  # (B, N, N) trade price lambda_nm
    # Pool algorithms (CED) have no trades: zero trades, the uniform price on every edge.


GAP_THRESHOLDS = {"e2": 1e-2, "e3": 1e-3, "e4": 1e-4}  # column suffix -> optimality gap


def iterations_to_gap(gaps, every: int, final_gap, iterations, threshold: float) -> np.ndarray:
    """(B,) first traced iteration from which on the gap stays <= ``threshold`` (module doc).

    ``gaps`` is the (B, T) gap trace at iterations ``every, 2 every, ...``, NaN after a case
    stopped; ``final_gap`` and ``iterations`` are the gap and iteration count at the stop."""
    gaps = np.asarray(gaps)
    recorded = (~np.isnan(gaps)).sum(1)
    above = gaps > threshold  # NaN (not recorded) compares False
    last_above = np.where(above.any(1), gaps.shape[1] - 1 - np.argmax(above[:, ::-1], 1), -1)
    settled = last_above + 1  # first slot of the final run below the threshold
    first = np.where(settled < recorded, (settled + 1) * every, iterations)
    return np.where(np.asarray(final_gap) <= threshold, first, np.nan)


def solve_batch(community: Community, options: SolverOptions,
                driver: str = "continuous") -> BatchResult:
    return tabulate(community, options, run_market(community, options, driver))


def run_market(community: Community, options: SolverOptions,
               driver: str = "continuous") -> DriverResult:
    """The distributed algorithm alone on every case of the batch (the costly part). Cases
    run on the trade layout ``neighbour_widths`` gives them, one queue per layout; trades
    and prices come back on the dense layout."""
    if options.algorithm not in ALGORITHMS:
        raise InputError("solver.algorithm", f"unknown algorithm {options.algorithm!r}; "
                                             f"choose one of {sorted(ALGORITHMS)}")
    widths = neighbour_widths(community, options)
    layouts = np.unique(widths)
    if len(layouts) == 1:
        return _run_layout(community, options, driver, int(layouts[0]))
    # Each layout's cases first in a queue of the batch's length (padded with copies of its
    # last case that never run), so that one compiled shape per layout serves every batch.
    n_cases = community.n_cases
    parts = [np.flatnonzero(widths == width) for width in layouts]
    results = [_run_layout(take(community, np.pad(cases, (0, n_cases - len(cases)), "edge")),
                           options, driver, int(width), queued=len(cases))
               for cases, width in zip(parts, layouts)]
    order = np.argsort(np.concatenate(parts), kind="stable")
    merged = jax.tree_util.tree_map(
        lambda *v: jnp.concatenate([x[:len(c)] for x, c in zip(v, parts)])[order],
        *(r._replace(lane_iterations=None) for r in results))
    return merged._replace(lane_iterations=sum(r.lane_iterations for r in results))


def _run_layout(community: Community, options: SolverOptions, driver: str, width: int,
                queued: int | None = None) -> DriverResult:
    """The algorithm on the dense layout (``width`` 0) or on neighbour lists of ``width``,
    on every case or on the first ``queued`` ones."""
    method = ALGORITHMS[options.algorithm]
    params = method.params(options, community.n_cases, community.dtype)
    problem = neighbours.neighbour_lists(community, width) if width else community
    # ``queued`` is always traced: a layout's program serves split and unsplit batches.
    result = iterate(method.algorithm(options), problem, params,
                     driver_options(community, options, driver, width),
                     jnp.int32(community.n_cases if queued is None else queued))
    if not width:
        return result
    trades, prices = (neighbours.to_dense(problem.partner, v)
                      for v in (result.state.trades, result.state.prices))
    return result._replace(state=result.state._replace(trades=trades, prices=prices))


def driver_columns(result: DriverResult) -> dict[str, jax.Array]:
    """The columns every algorithm's rows start with: how the case stopped."""
    return {"iterations": result.iterations, "converged": result.converged,
            "diverged": result.diverged, "primal_residual": result.residuals.primal,
            "dual_residual": result.residuals.dual}


def tabulate(community: Community, options: SolverOptions, result: DriverResult) -> BatchResult:
    """One row per case from the driver's result: metrics and exact references (float64).
    Their last bits can depend on the batch size (XLA vectorises reductions by shape), so
    the sweep tabulates every chunk at the chunk size, whatever the driver's queue."""
    method = ALGORITHMS[options.algorithm]
    n_cases = community.n_cases
    exact = astype(community, jnp.float64)
    pool = pool_dispatch(exact)
    floor = jnp.full(n_cases, options.eps_primal, jnp.float64)
    if method.pool:
        state = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), result.state)
        metrics, trades, prices = ced.market_outcome(exact, state, result.iterations, floor)
        reference_objective, reference_converged = pool.objective, jnp.isfinite(pool.price)
    else:
        trades = result.state.trades.astype(jnp.float64)
        prices = result.state.prices.astype(jnp.float64)
        metrics = market_metrics(exact, trades, prices, result.iterations, floor)
        reference = solve_reference(exact)
        reference_objective, reference_converged = reference.objective, reference.converged
    rows = {
        **driver_columns(result),
        **metrics,
        "reference_objective": reference_objective,
        "reference_converged": reference_converged,
        "optimality_gap": optimality_gap(metrics["objective"], reference_objective),
        "pool_price": pool.price,
    }
    rows = {k: np.asarray(v) for k, v in rows.items()}
    gaps = None
    if result.trace is not None:
        gaps = np.asarray(optimality_gap(result.trace.objective.astype(jnp.float64),
                                         reference_objective[:, None]))
    for suffix, threshold in GAP_THRESHOLDS.items():
        rows[f"iterations_to_gap_{suffix}"] = (
            np.full(n_cases, np.nan) if gaps is None else
            iterations_to_gap(gaps, options.trace_every, rows["optimality_gap"],
                              rows["iterations"], threshold))
    return BatchResult(rows, _long_trace(result.trace, gaps, options.trace_every), trades, prices)


def _long_trace(trace, gaps, every: int):
    """(B, T) residual traces to long format, dropping the slots after a case stopped."""
    if trace is None:
        return None
    primal, dual = np.asarray(trace.primal), np.asarray(trace.dual)
    objective = np.asarray(trace.objective)
    case, slot = np.nonzero(~np.isnan(primal))
    return {"case": case, "iteration": (slot + 1) * every, "primal_residual": primal[case, slot],
            "dual_residual": dual[case, slot], "objective": objective[case, slot],
            "optimality_gap": gaps[case, slot]}
