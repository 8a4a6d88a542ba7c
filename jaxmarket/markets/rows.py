"""What every market's rows share: the driver's columns, iterations to a gap, traces.

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
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxmarket.community import cases_of
from jaxmarket.driver import DriverResult
from jaxmarket.metrics import gap_floor, optimality_gap
from jaxmarket.pool import pool_dispatch


class BatchResult(NamedTuple):
    rows: dict[str, np.ndarray]  # one column per metric, one entry per case
    trace: dict[str, np.ndarray] | None  # long format: case, iteration, residuals
    trades: jax.Array  # (B, N, N) p_nm, what n sells to m
    prices: jax.Array  # (B, N, N) trade price lambda_nm
    agent_charge: jax.Array | None = None  # (B, N) endogenous charge eta_n (SPEC 7.1)
    # Pool algorithms (CED) have no trades: zero trades, the uniform price on every edge,
    # and their dispatch here; None: the injections are the trades' sums.
    injections: jax.Array | None = None  # (B, N) p_n

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, one row per case."""
        return pd.DataFrame(self.rows)


GAP_THRESHOLDS = {"e2": 1e-2, "e3": 1e-3, "e4": 1e-4}  # column suffix -> optimality gap

# Cases tabulated together (metrics, exact references). XLA's CPU backend vectorises a
# batched reduction by the batch shape, so a row's last bits depend on how many cases are
# tabulated together (measured at N = 20 with charges: 16 cases together against 1, 3, 4,
# 7, 8 or 9, up to 9 rows differ by an ulp or two); one fixed block shape makes them
# independent of the chunk size. Within a block a row does not depend on its position.
TABULATE_CASES = 8


def tabulate_in_blocks(tabulate: Callable[[Any], BatchResult], batch, n_cases: int) -> BatchResult:
    """``tabulate(block)`` over the first ``n_cases`` cases of ``batch`` (a pytree of
    batch-first arrays; scalars are shared), ``TABULATE_CASES`` cases at a time, the last
    block padded with copies of its last case; the blocks' results merged."""
    def block(first):
        return cases_of(batch, np.minimum(np.arange(first, first + TABULATE_CASES), n_cases - 1))

    parts = [tabulate(block(first)) for first in range(0, n_cases, TABULATE_CASES)]
    rows = {key: np.concatenate([np.asarray(part.rows[key]) for part in parts])[:n_cases]
            for key in parts[0].rows}
    trace = None
    if parts[0].trace is not None:
        trace = {key: np.concatenate([np.asarray(part.trace[key]) + (
            k * TABULATE_CASES if key == "case" else 0) for k, part in enumerate(parts)])
            for key in parts[0].trace}
        keep = trace["case"] < n_cases
        trace = {key: value[keep] for key, value in trace.items()}
    arrays = [None if parts[0][k] is None else
              jnp.concatenate([part[k] for part in parts])[:n_cases]
              for k in range(2, len(BatchResult._fields))]
    return BatchResult(rows, trace, *arrays)


def driver_columns(result: DriverResult) -> dict[str, jax.Array]:
    """The columns every algorithm's rows start with: how the case stopped."""
    return {"iterations": result.iterations, "converged": result.converged,
            "diverged": result.diverged, "primal_residual": result.residuals.primal,
            "dual_residual": result.residuals.dual}


# rows of a study giving solver.stopping
STOP_COLUMNS = ("all_agents_stopped", "trial_dual_residual", "last_agent_stop", "mean_agent_stop")


def global_stop_columns(rows: dict) -> dict[str, np.ndarray]:
    """When the agents stopped under a global rule: all together, at the case's stop, when
    the global rule held (its certificate: the residuals of the last iteration)."""
    iterations = np.asarray(rows["iterations"], np.float64)
    converged = np.asarray(rows["converged"])
    return {"all_agents_stopped": converged,
            "trial_dual_residual": np.asarray(rows["dual_residual"]),
            "last_agent_stop": np.where(converged, iterations, np.nan),
            "mean_agent_stop": iterations}


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


def with_gap_columns(rows: dict, result: DriverResult, reference_objective, floor, every: int):
    """The rows (numpy) with their iterations-to-gap columns, and the long trace
    (``floor``: the gap's ``metrics.gap_floor``)."""
    rows = {k: np.asarray(v) for k, v in rows.items()}
    gaps = None
    if result.trace is not None:
        gaps = np.asarray(optimality_gap(result.trace.objective.astype(jnp.float64),
                                         reference_objective[:, None], floor[:, None]))
    for suffix, threshold in GAP_THRESHOLDS.items():
        rows[f"iterations_to_gap_{suffix}"] = (
            np.full(len(rows["iterations"]), np.nan) if gaps is None else
            iterations_to_gap(gaps, every, rows["optimality_gap"], rows["iterations"], threshold))
    return rows, long_trace(result.trace, gaps, every)


def long_trace(trace, gaps, every: int):
    """(B, T) residual traces to long format, dropping the slots after a case stopped."""
    if trace is None:
        return None
    primal, dual = np.asarray(trace.primal), np.asarray(trace.dual)
    objective = np.asarray(trace.objective)
    case, slot = np.nonzero(~np.isnan(primal))
    return {"case": case, "iteration": (slot + 1) * every, "primal_residual": primal[case, slot],
            "dual_residual": dual[case, slot], "objective": objective[case, slot],
            "optimality_gap": gaps[case, slot]}


def reference_rows(exact, result: DriverResult, metrics: dict, reference, trace_every: int,
                   **extra):
    """The rows of a market checked against an exact reference (``objective``,
    ``converged``): driver columns, metrics, the reference and the optimality gap on the
    case's floor, the pool price, ``extra`` columns; with the iterations-to-gap columns and
    the long trace."""
    floor = gap_floor(exact)
    rows = {
        **driver_columns(result),
        **metrics,
        "reference_objective": reference.objective,
        "reference_converged": reference.converged,
        "optimality_gap": optimality_gap(metrics["objective"], reference.objective, floor),
        "pool_price": pool_dispatch(exact).price,
        **extra,
    }
    return with_gap_columns(rows, result, reference.objective, floor, trace_every)

