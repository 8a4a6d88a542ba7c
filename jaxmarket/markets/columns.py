"""The declared schema of every output column: its type, unit and meaning, in one place.

Each column is declared once (``COLUMNS``), with the output kinds whose tables carry it:

============  ===========================================================================
``p2p``       rows of the P2P algorithms (admm, rci, pcmbed; ``solve.tabulate``)
``pool``      rows of the pool algorithms (ced, ced_mean; same columns, pool meanings)
``reserve``   rows of the energy and reserve market (``markets.reserve.tabulate``)
``grid``      extra columns of rows of a case with a grid (``charges.grid_outcome``)
``endogenous`` extra columns of rows under endogenous network charges
              (``markets.endogenous``)
``stopping``  extra columns of rows of a study that gives ``solver.stopping``, and of every
              row under a local stopping rule (``algorithms.local_stopping``), the row of
              ``jaxmarket solve --out`` included
``asynchrony`` extra columns of rows of a study with an ``[asynchrony]`` section
              (``asynchrony.columns``)
``dataset``   identity columns of every sweep row (``sweep.solve_group``)
``trace``     the long residual trace of a sweep (``solve._long_trace``, per case id)
``trades``    the trades table of ``jaxmarket solve --out``
``endogenous_trades`` extra columns of that table under endogenous network charges
``solve``     columns only the row of ``jaxmarket solve --out`` has
============  ===========================================================================

A table is the union of several kinds (a sweep row: ``dataset`` + ``p2p`` + the cell's
labels, + ``grid`` for a case with a grid). ``annotate`` writes each column's unit and
description into the Parquet field metadata and refuses a column declared nowhere; the
cell label columns (a study's config keys) are declared by the caller through ``extra``.

Units: power and energy per hour in MW, prices and charges in EUR/MWh, costs and objectives
in EUR/h, quadratic cost coefficients and penalties in EUR/MW^2h, times in s; ``1`` for a
dimensionless quantity (a fraction, a probability, a ratio), ``count`` for a count and
``n/a`` for what is no quantity (a flag, a name, an index). A column of the types ``float``
and ``int`` may be stored at any width (a float32 run stores its residuals as float32).

``python3 -m jaxmarket.markets.columns`` prints ``docs/columns.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import pyarrow as pa

KINDS = ("p2p", "pool", "reserve", "grid", "endogenous", "stopping", "asynchrony", "dataset",
         "trace", "trades", "endogenous_trades", "solve")


@dataclass(frozen=True)
class DType:
    """A declared column type: the numpy dtype kinds and the Arrow types that hold it."""
    numpy_kinds: str  # numpy ``dtype.kind`` codes a value may have
    arrow: Callable[[pa.DataType], bool]


DTYPES = {
    "float": DType("f", pa.types.is_floating),
    "int": DType("iu", pa.types.is_integer),
    "bool": DType("b", pa.types.is_boolean),
    "string": DType("UO", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
    # (c, p) of a sequence c / k^p; the unit is that of c, p is a dimensionless exponent
    "list[float]": DType("O", lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t)
                                         or pa.types.is_fixed_size_list(t))
                         and pa.types.is_floating(t.value_type)),
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # a key of DTYPES
    unit: str
    description: str
    kinds: frozenset  # of KINDS

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name!r}: unknown dtype {self.dtype!r}; "
                             f"choose one of {list(DTYPES)}")
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"column {self.name!r}: kinds {sorted(self.kinds)} are not a "
                             f"non-empty subset of {list(KINDS)}")
        if not (self.name and self.unit and self.description):
            raise ValueError(f"column {self.name!r}: name, unit and description must be non-empty")

    def accepts(self, arrow_type: pa.DataType) -> bool:
        """Whether an Arrow column of ``arrow_type`` holds this column (an all-null column
        holds any)."""
        return pa.types.is_null(arrow_type) or DTYPES[self.dtype].arrow(arrow_type)


def _column(name: str, dtype: str, unit: str, kinds: str, description: str) -> Column:
    return Column(name, dtype, unit, description, frozenset(kinds.split()))


MARKET = "p2p pool"
STOPPING = "p2p pool reserve"
GAPS = {"e2": "1e-2", "e3": "1e-3", "e4": "1e-4"}  # solve.GAP_THRESHOLDS

COLUMNS: tuple[Column, ...] = (
    # --- identity of a sweep row (and of its trace rows)
    _column("study", "string", "n/a", "dataset trace", "name of the study"),
    _column("cell", "int", "n/a", "dataset trace",
            "index of the cell in the study's product of swept values"),
    _column("case_index", "int", "n/a", "dataset trace",
            "case k of the cell: the community drawn from (seed, k), the same in every cell "
            "that shares the community parameters"),
    _column("seed", "int", "n/a", "dataset", "random seed of the study"),
    _column("dtype", "string", "n/a", "dataset",
            "floating-point type the distributed algorithm ran in (float64 or float32); "
            "the references always run in float64"),
    _column("wall_time_s", "float", "s", "dataset solve",
            "solve time per case: the group's solve and tabulation time over its real cases, "
            "compilation excluded (sweep); the whole solve, compilation included (solve)"),
    # --- how the case stopped (solve.driver_columns)
    _column("iterations", "int", "count", STOPPING,
            "iterations run until the case stopped (converged, diverged or max_iter reached)"),
    _column("converged", "bool", "n/a", STOPPING,
            "the stopping rule held at the last check: primal <= eps_primal and dual <= "
            "eps_dual (RCI/PCMBED: and the price and power changes <= eps_price, eps_power); "
            "under a local rule (admm, solver.stopping), every agent stopped and the global "
            "rule's certificate holds at the stop: primal <= eps_primal and "
            "trial_dual_residual <= eps_dual (docs/stopping.md)"),
    _column("diverged", "bool", "n/a", STOPPING, "a residual was not finite at a check"),
    _column("primal_residual", "float", "MW", STOPPING + " trace",
            "primal residual at the stop (trace: at the iteration): sqrt(sum_nm (p_nm + "
            "p_mn)^2) (P2P), |sum_n p_n| (pool), sqrt(sum over the energy and both reserve "
            "blocks of (x_nm + x_mn)^2 / 4) (reserve)"),
    _column("dual_residual", "float", "MW", STOPPING + " trace",
            "dual residual at the stop (trace: at the iteration), the change of the last "
            "iteration: sqrt(sum_nm (p_nm^k+1 - p_nm^k)^2) (P2P), ||p^k+1 - p^k||_2 (pool), "
            "over the energy and both reserve blocks (reserve)"),
    # --- market outcome (metrics.market_metrics, ced.market_outcome)
    _column("objective", "float", "EUR/h", STOPPING + " trace",
            "objective at the stop: sum_n c_n(p_n) + sum_nm gamma_nm p_nm (P2P), sum_n "
            "c_n(p_n) (pool), energy and reserve cost plus the energy trades' charges "
            "(reserve); trace: the algorithm's objective at the iteration, in the run's dtype"),
    _column("social_welfare", "float", "EUR/h", MARKET,
            "-sum_n c_n(p_n), the charges excluded"),
    _column("charges_collected", "float", "EUR/h", MARKET,
            "network charges sum_nm gamma_nm p_nm, both ends' halves (0 for pool rows)"),
    _column("mean_price", "float", "EUR/MWh", MARKET,
            "mean price of the directed trades weighted by |p_nm| (P2P), the uniform price "
            "(pool); NaN when nothing is traded"),
    _column("price_min", "float", "EUR/MWh", MARKET,
            "lowest price of a traded directed trade, |p_nm| > eps_primal (P2P), the uniform "
            "price (pool); NaN when nothing is traded"),
    _column("price_max", "float", "EUR/MWh", MARKET,
            "highest price of a traded directed trade, |p_nm| > eps_primal (P2P), the "
            "uniform price (pool); NaN when nothing is traded"),
    _column("price_spread", "float", "EUR/MWh", MARKET,
            "price_max - price_min (0 for pool rows that trade); NaN when nothing is traded"),
    _column("total_traded", "float", "MW", MARKET,
            "traded power sum_nm |p_nm| / 2, each trade once (P2P); the total production "
            "sum_n max(p_n, 0), read as trades through the manager (pool)"),
    _column("consumption", "float", "MW", MARKET, "power consumed, sum_n max(-p_n, 0)"),
    _column("power_balance_error", "float", "MW", MARKET,
            "|sum_n p_n| with p_n = sum_m p_nm (P2P) or the dispatch (pool)"),
    _column("imbalance", "float", "MW", MARKET,
            "reciprocity mismatch sum_n |sum_m (p_nm + p_mn)| (P2P); |sum_n p_n| (pool)"),
    _column("messages", "int", "count", MARKET,
            "messages sent until the stop: per iteration one per directed trade plus the N "
            "(N - 1) residual broadcasts, N counting managers (P2P, global rule); one per "
            "directed trade still negotiated, no broadcast (P2P, local rules); 2 per agent "
            "(pool). messages - trade_messages: the residual broadcasts"),
    _column("trade_messages", "int", "count", MARKET,
            "the trade part of messages: iterations x directed trades (P2P, global rule); "
            "equal to messages (pool, local rules)"),
    _column("messages_per_agent_mean", "float", "count", MARKET,
            "messages / agents, managers included (P2P); messages / n_agents (pool)"),
    _column("messages_per_agent_max", "int", "count", MARKET,
            "messages sent by the busiest agent, iterations x (degree + N - 1) (P2P, global "
            "rule), its trade messages (local rules); messages / n_agents (pool)"),
    _column("n_agents", "int", "count", MARKET,
            "agents that produce or consume (the hub and community managers excluded)"),
    _column("n_managers", "int", "count", MARKET,
            "hub or community managers (zero bounds), which only pass trades on"),
    _column("n_trades", "int", "count", MARKET,
            "directed trades (edges) of the case's trade graph, pool rows included"),
    _column("isolated_agents", "int", "count", MARKET, "active agents without a trade partner"),
    _column("n_components", "int", "count", MARKET,
            "connected components of the trade graph over the active agents (an isolated "
            "agent is one)"),
    _column("unsupplied_consumers", "float", "1", MARKET,
            "share of the consumers that no seller reaches through trades able to carry "
            "power (never through a consumer); NaN without consumers"),
    _column("reference_objective", "float", "EUR/h", MARKET,
            "objective of the exact float64 reference: the centralized P2P problem (P2P), "
            "the exact pool dispatch (pool)"),
    _column("reference_converged", "bool", "n/a", MARKET,
            "the reference is valid: the centralized P2P solve met its tolerances and is "
            "finite (P2P), the pool price is finite (pool)"),
    _column("optimality_gap", "float", "1", STOPPING + " trace",
            "|objective - reference_objective| relative to max(1, |reference_objective|) (the "
            "floor 1e-3 of the case's cost scale where that is below 1 EUR/h: "
            "docs/stopping.md), each against its own problem; trace: of the traced "
            "objective; NaN (reserve, or a reference that is not finite)"),
    _column("pool_price", "float", "EUR/MWh", MARKET,
            "uniform price of the exact pool dispatch (float64); NaN when infeasible or "
            "undefined"),
    *(_column(f"iterations_to_gap_{suffix}", "float", "count", MARKET,
              f"first traced iteration from which on optimality_gap stays <= {threshold} "
              f"until the stop; NaN when the final gap is above it or without a trace")
      for suffix, threshold in GAPS.items()),
    # --- energy and reserve market (markets.reserve.tabulate)
    _column("local_failures", "int", "count", "reserve",
            "local QP solves that missed their tolerance, summed over agents and iterations"),
    _column("cost", "float", "EUR/h", "reserve",
            "energy and reserve cost sum_n c_n(p_n) + c+_n(r+_n) + c-_n(r-_n), the charges "
            "excluded"),
    _column("joint_cost", "float", "EUR/h", "reserve",
            "cost of the joint chance-constrained reference (energy cleared as a pool, "
            "aggregate reserve requirement, no charges)"),
    _column("joint_converged", "bool", "n/a", "reserve", "the joint reference converged"),
    _column("cost_gap", "float", "1", "reserve", "(cost - joint_cost) / |joint_cost|"),
    _column("coverage_global", "float", "1", "reserve",
            "empirical probability over fresh forecast samples that the uncertain agents' "
            "total forecast error lies within their total reserves [-R-, R+]"),
    _column("coverage_local_min", "float", "1", "reserve",
            "smallest over the uncertain agents of the empirical probability that the "
            "agent's forecast error lies within its total reserves [-r-tot_n, r+tot_n] "
            "(inf without uncertain agents)"),
    _column("coverage_local_mean", "float", "1", "reserve",
            "mean over the uncertain agents of the empirical probability that the agent's "
            "forecast error lies within its total reserves [-r-tot_n, r+tot_n]"),
    _column("joint_coverage_global", "float", "1", "reserve",
            "coverage_global of the joint reference's dispatch and reserves (all agents' "
            "reserves)"),
    _column("delta_local_min", "float", "1", "reserve",
            "smallest local confidence level delta_n the allocation gives an uncertain agent "
            "(inf without uncertain agents)"),
    _column("delta_local_mean", "float", "1", "reserve",
            "mean local confidence level delta_n the allocation gives the uncertain agents"),
    _column("up_bought_renewable", "float", "MW", "reserve",
            "net upward reserve the uncertain agents buy through trades, sum of r+_nm"),
    _column("down_bought_renewable", "float", "MW", "reserve",
            "net downward reserve the uncertain agents buy through trades, sum of r-_nm"),
    _column("down_held_renewable", "float", "MW", "reserve",
            "downward reserve the uncertain agents hold themselves (spill), sum of r-_n"),
    _column("up_held_producer", "float", "MW", "reserve",
            "self-procured upward reserve r+_n of the certain producers and prosumers"),
    _column("down_held_producer", "float", "MW", "reserve",
            "self-procured downward reserve r-_n of the certain producers and prosumers"),
    _column("up_held_consumer", "float", "MW", "reserve",
            "self-procured upward reserve r+_n of the certain consumers"),
    _column("down_held_consumer", "float", "MW", "reserve",
            "self-procured downward reserve r-_n of the certain consumers"),
    _column("joint_reserve_up", "float", "MW", "reserve",
            "total upward reserve of the joint reference"),
    _column("joint_reserve_down", "float", "MW", "reserve",
            "total downward reserve of the joint reference"),
    _column("n_uncertain", "int", "count", "reserve",
            "agents with an uncertain renewable forecast"),
    # --- grid outcome of a case with a grid (charges.grid_outcome)
    _column("mean_loading", "float", "1", "grid",
            "mean over lines of the DC loading |flow| / rating of the cleared trades "
            "(unlimited lines load 0)"),
    _column("max_loading", "float", "1", "grid", "largest DC line loading |flow| / rating"),
    _column("most_loaded_line", "string", "n/a", "grid",
            "the most loaded line, as \"from-to\" bus ids"),
    _column("overloaded_lines", "int", "count", "grid", "lines loaded above their rating"),
    _column("inter_zone_traded", "float", "MW", "grid",
            "power traded between agents of different zones, sum |p_nm| / 2 over those pairs"),
    # --- endogenous network charges (markets.endogenous, SPEC 7.1)
    _column("endogenous_charge_mean", "float", "EUR/MWh", "endogenous",
            "mean over the agents of the endogenous charge eta_n, the congestion part of the "
            "agent's nodal price relative to the reference bus (paid per MW injected)"),
    _column("endogenous_charge_min", "float", "EUR/MWh", "endogenous",
            "smallest endogenous charge eta_n (most negative: injection there congests)"),
    _column("endogenous_charge_max", "float", "EUR/MWh", "endogenous",
            "largest endogenous charge eta_n"),
    _column("congestion_collected", "float", "EUR/h", "endogenous",
            "money the system operator collects, -sum_n eta_n p_n"),
    _column("so_messages", "int", "count", "endogenous",
            "values the system operator exchanged with the agents, 2 N per iteration (also "
            "counted in messages, with its residual broadcasts)"),
    _column("eta_i", "float", "EUR/MWh", "endogenous_trades",
            "endogenous charge eta_i of agent i"),
    # --- asynchronous negotiation (jaxmarket.asynchrony; rows of an [asynchrony] study)
    _column("synchronous_time_s", "float", "s", "asynchrony",
            "simulated time to an optimality gap of 1e-4 (from then on) of the synchronous run "
            "(eps = d = 0): tau_C times its iterations to gap; NaN: not reached"),
    _column("synchronous_iterations", "float", "count", "asynchrony",
            "iterations of the synchronous run to the 1e-4 gap (NaN: not reached)"),
    _column("async_time_s", "float", "s", "asynchrony",
            "simulated time from which the gap of the asynchronous run stays <= 1e-4, within "
            "3 times the synchronous time (NaN: not reached)"),
    _column("async_iterations", "float", "count", "asynchrony",
            "updates of the slowest agent (or manager) by async_time_s (NaN: not reached)"),
    _column("reached_gap", "bool", "n/a", "asynchrony",
            "the asynchronous run reached the 1e-4 gap within 3 times the synchronous time"),
    _column("time_ratio", "float", "1", "asynchrony",
            "async_time_s / synchronous_time_s (NaN: either not reached)"),
    _column("async_gap", "float", "1", "asynchrony",
            "optimality gap at the end of the asynchronous run (NaN: no synchronous time)"),
    _column("message_overflows", "int", "count", "asynchrony",
            "messages refused by a full link buffer (10 slots per link)"),
    # --- when the agents stopped (algorithms.local_stopping; rows of a study giving
    # solver.stopping, and every row under a local rule)
    _column("all_agents_stopped", "bool", "n/a", "stopping",
            "every agent stopped negotiating before max_iter: by its own local rule (local "
            "rules, T3.15-3.16: the thesis' stop, which does not certify the answer, see "
            "converged), all together when the global rule held (global rule: converged)"),
    _column("trial_dual_residual", "float", "MW", "stopping",
            "change sqrt(sum_nm (p^_nm - p_nm)^2) of the trades at the stop in one unfrozen ADMM "
            "iteration from them, every agent re-solving all its trades at the symmetrised "
            "prices (lambda_nm + lambda_mn) / 2 within the pair's boxes, the two ends' "
            "disagreement on a price counted as (lambda_nm - lambda_mn) / (2 rho) per directed "
            "trade (local rules: converged needs it <= eps_dual, docs/stopping.md); "
            "dual_residual (global rule)"),
    _column("last_agent_stop", "float", "count", "stopping",
            "iteration at which the last agent stopped negotiating: its local rule froze its "
            "last trade (local rules), the case converged (global rule: iterations); NaN when "
            "some agent never stopped (max_iter reached)"),
    _column("mean_agent_stop", "float", "count", "stopping",
            "mean over the agents of the iteration at which each stopped negotiating (an "
            "agent that never stopped counts iterations; global rule: iterations)"),
    # --- long residual trace (solve._long_trace, written by the sweep)
    _column("iteration", "int", "count", "trace",
            "iteration of the traced values, a multiple of trace_every"),
    # --- trades table of ``jaxmarket solve --out``
    _column("i", "int", "n/a", "trades", "id in the case file of agent i, whose side the row is"),
    _column("j", "int", "n/a", "trades", "id in the case file of i's trade partner j"),
    _column("p_ij", "float", "MW", "trades",
            "power i sells to j (negative: i buys); the row (j, i) holds j's side"),
    _column("price_ij", "float", "EUR/MWh", "trades", "price of the trade lambda_ij"),
    # --- the row of ``jaxmarket solve --out``: the case and the charges (its solver options
    # are label columns declared with the algorithms' fields)
    _column("case", "string", "n/a", "solve", "name of the case in the case file"),
    _column("file", "string", "n/a", "solve", "path of the case file as given"),
    _column("policy", "string", "n/a", "solve",
            "network charge policy: none, unique, distance_ptd, distance_thevenin or zonal"),
    _column("fee", "float", "EUR/MWh", "solve",
            "unit network fee u, per unit of the policy's weight w_nm"),
    _column("algorithm", "string", "n/a", "solve",
            "market algorithm (registry name, jaxmarket.algorithms)"),
    _column("market", "string", "n/a", "solve",
            "market the case cleared: p2p, pool (a pool algorithm) or reserve (energy and "
            "reserve, for a case file with reserve data; its confidence and allocation "
            "are label columns)"),
)


def _kinds(kinds: str | Iterable[str]) -> tuple[str, ...]:
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ValueError(f"unknown output kind(s) {unknown}; choose among {list(KINDS)}")
    return kinds


def columns(kind: str | Iterable[str]) -> dict[str, Column]:
    """The columns of one kind (or of several: their union), in declaration order."""
    kinds = set(_kinds(kind))
    return {column.name: column for column in COLUMNS if column.kinds & kinds}


class UndeclaredColumnError(KeyError):
    """A table column that no declaration covers."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def annotate(table: pa.Table, kinds: str | Iterable[str],
             extra: Mapping[str, tuple[str, str]] = {}) -> pa.Table:
    """``table`` with the unit and description of every column in its Parquet field
    metadata (``b"unit"``, ``b"description"``; other field metadata kept).

    A column is described by its declaration in one of ``kinds`` or else by ``extra``
    (column name -> (unit, description): the cell labels). A column covered by neither
    raises ``UndeclaredColumnError`` (a ``KeyError``) naming it; a declared column whose
    Arrow type does not hold the declared type raises ``TypeError``; a label in ``extra``
    that is also declared must agree on the unit (``ValueError``)."""
    kinds = _kinds(kinds)
    declared = columns(kinds)
    for name, described in extra.items():
        unit, description = described
        if not (isinstance(unit, str) and unit and isinstance(description, str) and description):
            raise ValueError(f"extra column {name!r}: unit and description must be "
                             f"non-empty strings")
    fields, undeclared = [], []
    for field in table.schema:
        column = declared.get(field.name)
        if column is not None:
            if not column.accepts(field.type):
                raise TypeError(f"column {field.name!r} is {field.type}, declared {column.dtype}")
            if field.name in extra and extra[field.name][0] != column.unit:
                raise ValueError(f"column {field.name!r}: extra unit {extra[field.name][0]!r} "
                                 f"disagrees with the declared {column.unit!r}")
            unit, description = column.unit, column.description
        elif field.name in extra:
            unit, description = extra[field.name]
        else:
            undeclared.append(field.name)
            continue
        metadata = {**(field.metadata or {}), b"unit": unit.encode(),
                    b"description": description.encode()}
        fields.append(field.with_metadata(metadata))
    if undeclared:
        raise UndeclaredColumnError(
            f"undeclared column(s) {undeclared}: not declared for the kinds {list(kinds)} "
            f"(jaxmarket.markets.columns.COLUMNS) nor given as extra columns")
    schema = pa.schema(fields, metadata=table.schema.metadata)
    return pa.Table.from_arrays(table.columns, schema=schema)


def markdown(kinds: str | Iterable[str] | None = None) -> str:
    """The reference table of the columns (of ``kinds``, default all) in Markdown."""
    selected = COLUMNS if kinds is None else tuple(columns(kinds).values())

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| name | type | unit | kinds | description |", "|---|---|---|---|---|"]
    for column in selected:
        listed = ", ".join(kind for kind in KINDS if kind in column.kinds)
        lines.append(f"| `{column.name}` | {cell(column.dtype)} | {cell(column.unit)} | {listed} "
                     f"| {cell(column.description)} |")
    return "\n".join(lines) + "\n"


def document() -> str:
    """The text of ``docs/columns.md``."""
    counts = ", ".join(f"{kind} {len(columns(kind))}" for kind in KINDS)
    return (
        "# Output columns\n\n"
        "Every column jaxmarket writes, declared once in `jaxmarket/markets/columns.py`; the "
        "unit and description of each also travel in the Parquet field metadata (`unit`, "
        "`description`). Kinds: `p2p` rows of admm, rci and pcmbed; `pool` rows of ced and "
        "ced_mean; `reserve` rows of the energy and reserve market; `grid` extra columns of a "
        "case with a grid; `endogenous` extra columns under endogenous network charges "
        "(`endogenous_trades`: the agents' charges in their trades table); `asynchrony` extra "
        "columns of a study with an `[asynchrony]` section; `dataset` identity columns of "
        "every sweep row; `trace` the long "
        "residual trace; `trades` and `solve` the trades table and the row of "
        "`jaxmarket solve --out`. The label columns of a row are the keys of its study, with "
        f"their units in [the study-file reference](study-file.md). Columns per kind: {counts}.\n\n"
        "Units: MW for power, EUR/MWh for prices and charges, EUR/h for costs and objectives, "
        "EUR/MW^2h for penalties and quadratic coefficients, s for times, `1` for fractions "
        "and other dimensionless quantities, `count` for counts, `n/a` for flags, names and "
        "indices. `float` and `int` columns may be stored at any width.\n\n"
        "Generated by `python3 -m jaxmarket.markets.columns > docs/columns.md`.\n\n"
        + markdown())


if __name__ == "__main__":
    print(document(), end="")
