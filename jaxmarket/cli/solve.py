"""``jaxmarket solve``: one case, a packaged one or a JSON file, and a summary with units.

The solver options are the fields of the registered algorithms (``jaxmarket.algorithms``):
one flag per field, ``--rho``, ``--eps-primal``, ``--alpha C P``..., whose default is the
chosen algorithm's own, except the iteration limit: one case is cheap and RCI-type
negotiations need 10^4-10^5 iterations, so ``solve`` allows ``SOLVE_MAX_ITER`` unless
``--max-iter`` says otherwise. ``--tol`` sets every stopping tolerance of the chosen algorithm.
A flag that is not an option of the chosen algorithm is an error, never ignored.
A case file with reserve data (``jaxmarket.case``) clears the energy + reserve market
(consensus ADMM only); its row says so in ``market``, ``confidence`` and ``allocation``.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from pathlib import Path
from typing import Optional

import typer

from jaxmarket import algorithms
from jaxmarket.cli.common import setup_jax, user_errors
from jaxmarket.errors import InputError

SOLVE_MAX_ITER = 100_000  # iterations

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _solver_options() -> list[inspect.Parameter]:
    """One option per ``[solver]`` key, typed by its default; None means "the algorithm's"."""
    parameters = []
    for key, field in algorithms.solver_schema().items():
        pair = isinstance(field.default, tuple) or field.metadata["suffixes"] is not None
        annotation = Optional[tuple[float, float]] if pair else Optional[type(field.default)]
        unit = field.metadata["unit"]
        default = "from --tuning" if field.default is None else field.default
        default = SOLVE_MAX_ITER if key == "max_iter" else default
        help_ = f"{field.metadata['description']} [{unit}; default {default}]"
        parameters.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                            default=typer.Option(None, _flag(key), help=help_)))
    return parameters


def _trades_table(case, result):
    """One row per directed trade on the graph, agents named by their ids in the file; under
    endogenous charges, with the charge eta_i of agent i."""
    import numpy as np
    import pyarrow as pa

    n, m = np.nonzero(np.asarray(case.community.edges[0]))
    ids = np.asarray(case.agent_ids)
    columns = {"i": ids[n], "j": ids[m], "p_ij": np.asarray(result.trades[0])[n, m],
               "price_ij": np.asarray(result.prices[0])[n, m]}
    if result.agent_charge is not None:
        columns["eta_i"] = np.asarray(result.agent_charge[0])[n]
    return pa.table(columns)


def _summary(name: str, algorithm: str, row: dict, study) -> str:
    """The printed summary of a case's row: the P2P or pool market, or the energy +
    reserve market (``study``: its confidence level and allocation)."""
    head = f"{name}: {algorithm}, {row['iterations']} iterations, converged {row['converged']}"
    if "all_agents_stopped" in row:  # a local stopping rule (docs/stopping.md)
        head += f", all agents stopped {row['all_agents_stopped']}"
    if study is None:
        return (f"{head}\n"
                f"  pool price            {row['pool_price']:.2f} EUR/MWh\n"
                f"  trade price min/mean/max {row['price_min']:.4f} / {row['mean_price']:.4f} / "
                f"{row['price_max']:.4f} EUR/MWh\n"
                f"  total traded          {row['total_traded']:.1f} MW\n"
                f"  objective             {row['objective']:.2f} EUR/h\n"
                f"  reference objective   {row['reference_objective']:.2f} EUR/h "
                f"(gap {row['optimality_gap']:.3e})")
    return (f"{head}\n"
            f"  market                energy + reserve (confidence {study.delta:g}, allocation "
            f"{study.allocation}; uncertain agents: {row['n_uncertain']})\n"
            f"  objective             {row['objective']:.2f} EUR/h (energy and reserve cost "
            f"{row['cost']:.2f} EUR/h)\n"
            f"  joint reference cost  {row['joint_cost']:.2f} EUR/h (converged "
            f"{row['joint_converged']}; cost gap {row['cost_gap']:.3e})\n"
            f"  coverage              {row['coverage_global']:.4f} (local min "
            f"{row['coverage_local_min']:.4f}; joint reference {row['joint_coverage_global']:.4f})\n"
            f"  reserves bought by renewables  up {row['up_bought_renewable']:.2f} MW, down "
            f"{row['down_bought_renewable']:.2f} MW")


def solve(case_file: Path, algorithm: str, tol: Optional[float], policy: str, fee: float,
          out: Optional[Path], **solver):
    """Solve one case (a packaged case such as new_england, or a JSON case file) and print
    a summary with units."""
    flags = {f"solver.{key}": _flag(key) for key in algorithms.solver_schema()}
    flags.update({"solver.algorithm": "--algorithm"})
    with user_errors(flags):
        setup_jax()
        import jax
        import numpy as np
        import pyarrow as pa

        from jaxmarket.case import load_case
        from jaxmarket.charges import ENDOGENOUS, NETWORK_POLICIES, apply_policy, grid_outcome, load_grid_case
        from jaxmarket.congestion import line_limits
        from jaxmarket.markets import kind, reserve, solve as solve_market
        from jaxmarket.markets.columns import annotate
        from jaxmarket.schema import quantity, text
        from jaxmarket.study.cell import flat_labels
        from jaxmarket.study.config import solver_options
        from jaxmarket.study.keys import label_units
        from jaxmarket.study.store import environment, write_table

        text(policy, "--policy", choices=NETWORK_POLICIES)
        if policy in ENDOGENOUS:
            if algorithm != "admm":
                raise InputError("--algorithm", f"--policy {policy} runs its own negotiation (the "
                                                f"agents' ADMM with the system operator): leave "
                                                f"--algorithm out, got {algorithm!r}")
            algorithm = policy
        chosen = algorithms.get(text(algorithm, "--algorithm", choices=algorithms.names()))
        if "endogenous" in chosen.markets and policy not in ENDOGENOUS:
            raise InputError("--algorithm", f"{algorithm} is chosen with --policy {algorithm}")
        # A flag of another algorithm would be ignored: say so rather than run without it.
        own = [f.name for f in chosen.declarations()]
        for key, value in solver.items():
            if value is not None and key not in own:
                raise InputError(_flag(key), f"not an option of {chosen.name} (its options: "
                                          f"{', '.join(_flag(name) for name in own)})")
        values = {"max_iter": SOLVE_MAX_ITER} | {key: v for key, v in solver.items() if v is not None}
        if tol is not None:
            quantity(tol, "--tol", gt=0)
            values.update({f.name: tol for f in chosen.declarations() if f.metadata["tolerance"]})
        options = solver_options({"algorithm": algorithm, **values})
        if out is not None and out.suffix != ".parquet":
            raise InputError("--out", f"expected a .parquet file name, got {str(out)!r}")
        if out is not None and out.is_dir():
            raise InputError("--out", f"{out} is a directory")
        quantity(fee, "--fee", ge=0)
        case = load_case(case_file)
        grid = load_grid_case(case_file).grid if policy != "none" or "branches" in case.meta else None
        endogenous = policy in ENDOGENOUS
        if grid is not None and not endogenous:
            case = dataclasses.replace(case, community=apply_policy(case.community, grid, policy, fee))
        # A case with reserve data clears the energy + reserve market, never silently the
        # energy-only one.
        study = reserve.case_params(case) if reserve.has_reserve(case) else None
        if study is not None:
            reserve.check_algorithm(options)
    limits = line_limits(grid.network, 1) if endogenous else None
    start = time.perf_counter()
    if study is None:
        result = jax.block_until_ready(solve_market(case.community, options, limits=limits))
        market = kind(options)
    else:
        run = jax.block_until_ready(reserve.run_case(case, options))
        result, market = reserve.tabulate(case.community, study, run), "reserve"
    elapsed = time.perf_counter() - start
    columns = {**result.rows, **(grid_outcome(grid, result.trades, result.injections) if grid is not None else {})}
    row = {key: np.asarray(value)[0].item() for key, value in columns.items()}
    typer.echo(_summary(case.name, options.name, row, study) +
               f"\n  wall time             {elapsed:.3f} s (including compilation)")
    if endogenous:
        typer.echo(f"  network               {policy}: the system operator collects "
                   f"{row['congestion_collected']:.2f} EUR/h, charges eta_n from "
                   f"{row['endogenous_charge_min']:.4f} to {row['endogenous_charge_max']:.4f} EUR/MWh, "
                   f"inter-zone traded {row['inter_zone_traded']:.2f} MW, max line loading "
                   f"{row['max_loading']:.1%} ({row['most_loaded_line']}), "
                   f"{row['overloaded_lines']} overloaded")
    elif grid is not None:
        typer.echo(f"  network               {policy} at u = {fee:g} EUR/MWh: charges collected "
                   f"{row['charges_collected']:.2f} EUR/h, inter-zone traded "
                   f"{row['inter_zone_traded']:.2f} MW, max line loading {row['max_loading']:.1%} "
                   f"({row['most_loaded_line']}), {row['overloaded_lines']} overloaded")
    if out is not None:
        with user_errors():
            out.parent.mkdir(parents=True, exist_ok=True)
            labels = {"case": case.name, "file": str(case_file), "policy": policy, "fee": fee,
                      **flat_labels({f"solver.{f.name}": getattr(options, f.name)
                                     for f in options.declarations()}),
                      "algorithm": options.name, "market": market,
                      **({} if study is None else {"confidence": study.delta,
                                                   "allocation": study.allocation})}
            table = pa.table({**{k: [v] for k, v in labels.items()},
                              **{k: [v] for k, v in row.items()}, "wall_time_s": [elapsed]})
            metadata = {"case": case.name, "environment": environment()}
            kinds = ("solve", market, *(("grid",) if grid is not None else ()),
                     *(("endogenous",) if endogenous else ()),
                     *(("stopping",) if getattr(options, "local_rule", False) else ()))
            write_table(out, annotate(table, kinds, label_units()), metadata)
            trades = out.with_name(out.stem + ".trades.parquet")
            write_table(trades, annotate(_trades_table(case, result),
                                         ("trades", *(("endogenous_trades",) if endogenous else ()))),
                        metadata)
        typer.echo(f"  wrote {out} and {trades}")


solve.__signature__ = inspect.Signature([
    inspect.Parameter("case_file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                      default=typer.Argument(..., metavar="CASE", help="A packaged case "
                                             "(jaxmarket cases) or a JSON case file.")),
    inspect.Parameter("algorithm", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("admm", metavar="NAME", help="Market algorithm: "
                                           + ", ".join(algorithms.names()) + ".")),
    inspect.Parameter("tol", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[float],
                      default=typer.Option(None, metavar="T", help="Every stopping tolerance of "
                                           "the algorithm (overrides --eps-*).")),
    inspect.Parameter("policy", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                      default=typer.Option("none", metavar="POLICY", help="Network charges: none, "
                                           "unique, distance_ptd, distance_thevenin, zonal "
                                           "(exogenous, at --fee), or endogenous_dc, "
                                           "endogenous_dc_decentralized (the system operator "
                                           "prices congestion in the negotiation).")),
    inspect.Parameter("fee", inspect.Parameter.KEYWORD_ONLY, annotation=float,
                      default=typer.Option(0.0, metavar="U", help="Unit network fee u (EUR/MWh per "
                                           "unit of distance).")),
    inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                      default=typer.Option(None, metavar="FILE.parquet", help="Write the case row "
                                           "here and the trades to FILE.trades.parquet.")),
    *_solver_options(),
])
app.command()(solve)
