"""The P2P market (T3.9): run an algorithm on a batch of communities, one row per case.

The distributed algorithm runs in the community's dtype (float64 by default, float32 on
request); the exact references (centralized P2P problem, pool price) always run in
float64, so the optimality gap of a float32 run measures the float32 error. The gap is
taken against the centralized P2P problem (``jaxmarket.reference``).

Cases run on the trade layout ``lanes.neighbour_widths`` gives them, one queue per layout
(``run``); trades and prices come back on the dense layout. Three drivers give the same
rows (``jaxmarket.driver``): ``continuous`` (the default) serves the batch as a queue to a
fixed number of lanes on every local device, ``blocked`` iterates it in blocks of the same
size (cache-sized on a CPU), each block until its slowest case has stopped, and ``plain``
iterates the whole batch in one loop until its slowest case has stopped (the naive
vectorised loop, kept as the baseline of the benchmarks).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket import neighbours
from jaxmarket.algorithms import Algorithm, local_stopping
from jaxmarket.community import Community, astype, take
from jaxmarket.driver import DriverResult, iterate
from jaxmarket.markets.lanes import driver_options, neighbour_widths
from jaxmarket.markets.rows import BatchResult, reference_rows
from jaxmarket.metrics import market_metrics
from jaxmarket.reference import solve_reference


def run(community: Community, algorithm: Algorithm, driver: str = "continuous") -> DriverResult:
    """The distributed algorithm alone on every case of the batch (the costly part)."""
    widths = neighbour_widths(community, algorithm)
    layouts = np.unique(widths)
    if len(layouts) == 1:
        return _run_layout(community, algorithm, driver, int(layouts[0]))
    # Each layout's cases first in a queue of the batch's length (padded with copies of its
    # last case that never run), so that one compiled shape per layout serves every batch.
    n_cases = community.n_cases
    parts = [np.flatnonzero(widths == width) for width in layouts]
    results = [_run_layout(take(community, np.pad(cases, (0, n_cases - len(cases)), "edge")),
                           algorithm, driver, int(width), queued=len(cases))
               for cases, width in zip(parts, layouts)]
    order = np.argsort(np.concatenate(parts), kind="stable")
    merged = jax.tree_util.tree_map(
        lambda *v: jnp.concatenate([x[:len(c)] for x, c in zip(v, parts)])[order],
        *(r._replace(lane_iterations=None) for r in results))
    return merged._replace(lane_iterations=sum(r.lane_iterations for r in results))


def _run_layout(community: Community, algorithm: Algorithm, driver: str, width: int,
                queued: int | None = None) -> DriverResult:
    """The algorithm on the dense layout (``width`` 0) or on neighbour lists of ``width``,
    on every case or on the first ``queued`` ones."""
    params = algorithm.case_params(algorithm.params(community.n_cases, community.dtype), community)
    problem = neighbours.neighbour_lists(community, width) if width else community
    # ``queued`` is always traced: a layout's program serves split and unsplit batches.
    result = iterate(algorithm.static(), problem, params,
                     driver_options(community, algorithm, driver, width),
                     jnp.int32(community.n_cases if queued is None else queued))
    if getattr(result.state, "stopping", None) is not None:  # a local rule: flag certified
        result = local_stopping.certify(algorithm.static(), problem, params, result)
    if not width:
        return result
    trades, prices = (neighbours.to_dense(problem.partner, v)
                      for v in (result.state.trades, result.state.prices))
    return result._replace(state=result.state._replace(trades=trades, prices=prices))


def tabulate(community: Community, algorithm: Algorithm, result: DriverResult) -> BatchResult:
    """One row per case from the driver's result: metrics and exact references (float64).
    Their last bits depend on the batch size (XLA vectorises reductions by shape), so
    sweeps and ``markets.solve`` tabulate in blocks of one shape (``rows.tabulate_in_blocks``)."""
    exact = astype(community, jnp.float64)
    trades = result.state.trades.astype(jnp.float64)
    prices = result.state.prices.astype(jnp.float64)
    floor = jnp.full(community.n_cases, algorithm.eps_primal, jnp.float64)
    metrics = market_metrics(exact, trades, prices, result.iterations, floor)
    if getattr(result.state, "stopping", None) is not None:  # a local stopping rule
        metrics.update(local_stopping.columns(exact, result.state.stopping, result.iterations))
    rows, trace = reference_rows(exact, result, metrics, solve_reference(exact),
                                 algorithm.trace_every)
    return BatchResult(rows, trace, trades, prices)
