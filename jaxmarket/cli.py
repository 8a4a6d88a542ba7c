"""Command line: ``jaxmarket sweep | report | solve | validate``.

User errors (``InputError``, missing files) print one line ``error: <field>: <problem>`` on
stderr and exit with status 2, before anything is written.

Compiled programs are kept between runs in JAX's persistent compilation cache, by default
under ``$XDG_CACHE_HOME/jaxmarket/xla`` (``~/.cache/jaxmarket/xla``): a repeated or resumed
study skips most of its compilation (quickstart: 29 s, then 10 s). ``JAX_COMPILATION_CACHE_DIR``
chooses another folder and ``JAX_ENABLE_COMPILATION_CACHE=false`` switches it off. A cached
program is the compiled program itself, so rows do not change.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import jax
import numpy as np
import pyarrow as pa
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from jaxmarket import sweep as runner
from jaxmarket.case import load_case
from jaxmarket.charges import POLICIES, apply_policy, grid_outcome, load_grid_case
from jaxmarket.config import load_study, solver_options
from jaxmarket.errors import InputError
from jaxmarket.report import write_report
from jaxmarket.schema import number, text
from jaxmarket.solve import solve_batch

# Plain click error output: a usage error stays a short, greppable message.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, help="Batched Monte Carlo studies of P2P electricity markets.")


@app.callback()
def _use_compilation_cache() -> None:
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        jax.config.update("jax_compilation_cache_dir", str(Path(home) / "jaxmarket" / "xla"))


SET_HELP = "Override a study key, e.g. --set graph.sparsity=[0,0.5] (repeatable)."


@contextmanager
def _user_errors():
    try:
        yield
    except InputError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


class _CasesPerSecond(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} cases/s" if task.speed else "- cases/s")


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("chunks {task.fields[chunks]}"),
                    _CasesPerSecond(), TimeRemainingColumn(), console=console,
                    disable=not console.is_terminal)


@app.command()
def sweep(
    file: Path = typer.Argument(..., metavar="FILE", help="Study file (TOML)."),
    out: Optional[Path] = typer.Option(None, metavar="DIR", help="Output directory (default: run.out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished study."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the existing dataset and start over."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    driver: str = typer.Option("continuous", metavar="NAME",
                               help="continuous (lanes refilled as cases stop), blocked (cache-sized blocks) "
                                    "or plain (one loop per batch); same rows."),
    cpu_devices: int = typer.Option(0, metavar="N", help="JAX devices on a CPU (0: one per core)."),
    distributed: bool = typer.Option(False, "--distributed", help=(
        "One of several processes of a study (jax.distributed; Slurm and Open MPI are detected, "
        "else give the three options below): each takes every P-th chunk.")),
    coordinator: Optional[str] = typer.Option(None, metavar="HOST:PORT",
                                              help="--distributed: address of process 0."),
    num_processes: Optional[int] = typer.Option(None, metavar="P", help="--distributed: processes."),
    process_id: Optional[int] = typer.Option(None, metavar="I", help="--distributed: this process."),
):
    """Run a study and write its Parquet dataset."""
    with _user_errors():
        runner.use_cpu_devices(cpu_devices)
        runner.check_driver(driver)
        if not distributed and (coordinator, num_processes, process_id) != (None, None, None):
            raise InputError("--coordinator", "--coordinator, --num-processes and --process-id "
                                              "need --distributed")
        if distributed:  # before JAX computes anything
            jax.distributed.initialize(coordinator, num_processes, process_id)
        study = load_study(file, set_ or (), out)
        plan = runner.prepare(study, resume=resume, overwrite=overwrite,
                              process=jax.process_index(), processes=jax.process_count())
    # A process of a multi-process run counts the chunks it takes.
    total, pending = len(plan.assigned), plan.pending
    share = "" if plan.processes == 1 else f" (process {plan.process} of {plan.processes})"
    if not pending:
        typer.echo(f"{study.name}: all {total} chunks{share} are already in {study.out}; nothing "
                   f"to do (--overwrite reruns the study)")
        return
    done, cases = total - len(pending), sum(c.n_cases for c in pending)
    typer.echo(f"{study.name}: running {len(pending)} of {total} chunks ({cases} cases) into "
               f"{study.out}{share}")
    console, start = Console(stderr=True), time.perf_counter()
    with _user_errors(), _progress(console) as progress:
        task = progress.add_task(study.name, total=cases, chunks=f"{done}/{total}")
        try:
            for chunk in runner.run(plan, driver):
                done += 1
                progress.update(task, advance=chunk.n_cases, chunks=f"{done}/{total}")
                if progress.disable:  # a log file gets one line per chunk instead of a bar
                    typer.echo(f"{chunk.name}: {done}/{total} chunks", err=True)
        except KeyboardInterrupt:
            typer.echo(f"interrupted after {done}/{total} chunks; rerun the same command with "
                       f"--resume to continue", err=True)
            raise typer.Exit(130) from None
    execution = runner.read_manifest(study.out, plan.manifest)["execution"]
    typer.echo(f"{study.name}: {len(pending)} chunks ({cases} cases) written to {study.out} "
               f"in {time.perf_counter() - start:.1f} s ({driver} driver, lane utilisation "
               f"{execution['lane_utilisation']:.1%})")


@app.command()
def report(out: Path = typer.Argument(..., metavar="OUT_DIR", help="A study's dataset directory.")):
    """Write the figures (PNG, PDF) and tables (Markdown, CSV) of a study into OUT_DIR/report."""
    with _user_errors():
        written = write_report(out)
    for path in written:
        typer.echo(str(path))


@app.command()
def validate(
    file: Path = typer.Argument(..., metavar="FILE", help="Study file (TOML)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
):
    """Check a study without running it."""
    with _user_errors():
        study = load_study(file, set_ or ())
    swept = ", ".join(f"{key} ({len({cell.values[key] for cell in study.cells})})"
                      for key in study.swept) or "nothing"
    typer.echo(f"{file}: study {study.name} is valid: {len(study.cells)} cells x {study.cases_per_cell} "
               f"cases = {study.n_cases} cases; swept: {swept}; output {study.out}; "
               f"config hash {study.config_hash}")


def _trades_table(case, trades, prices) -> pa.Table:
    """One row per directed trade on the graph, agents named by their ids in the file."""
    n, m = np.nonzero(np.asarray(case.community.edges[0]))
    ids = np.asarray(case.agent_ids)
    return pa.table({"i": ids[n], "j": ids[m], "p_ij": np.asarray(trades[0])[n, m],
                     "price_ij": np.asarray(prices[0])[n, m]})


@app.command()
def solve(
    case_file: Path = typer.Argument(..., metavar="CASE.json", help="Case file (JSON)."),
    algorithm: str = typer.Option("admm", metavar="NAME", help="Market algorithm."),
    rho: float = typer.Option(1.0, metavar="R", help="ADMM penalty."),
    rho_balance: float = typer.Option(0.0, metavar="M", help="ADMM residual balancing of rho at "
                                      "residual ratio M (0: fixed rho)."),
    tol: float = typer.Option(1e-4, metavar="T", help="Primal and dual tolerance (both eps)."),
    max_iter: int = typer.Option(10_000, metavar="K", help="Iteration limit."),
    policy: str = typer.Option("none", metavar="POLICY", help=f"Network charges: {', '.join(POLICIES)}."),
    fee: float = typer.Option(0.0, metavar="U", help="Unit network fee u (€/MWh per unit of distance)."),
    out: Optional[Path] = typer.Option(None, metavar="FILE.parquet",
                                       help="Write the case row here and the trades to FILE.trades.parquet."),
):
    """Solve one case file and print a summary."""
    with _user_errors():
        case = load_case(case_file)
        options = solver_options({"algorithm": algorithm, "rho": rho, "rho_balance": rho_balance,
                                  "eps_primal": tol, "eps_dual": tol, "max_iter": max_iter})
        if out is not None and out.suffix != ".parquet":
            raise InputError("--out", f"expected a .parquet file name, got {str(out)!r}")
        text(policy, "--policy", choices=POLICIES)
        number(fee, "--fee", ge=0)
        grid = load_grid_case(case_file).grid if policy != "none" or "branches" in case.meta else None
    community = case.community if grid is None else apply_policy(case.community, grid, policy, fee)
    start = time.perf_counter()
    result = jax.block_until_ready(solve_batch(community, options))
    elapsed = time.perf_counter() - start
    columns = {**result.rows, **(grid_outcome(grid, result.trades) if grid is not None else {})}
    row = {key: np.asarray(value)[0].item() for key, value in columns.items()}
    typer.echo(
        f"{case.name}: {row['iterations']} iterations, converged {row['converged']}\n"
        f"  price min/mean/max  {row['price_min']:.4f} / {row['mean_price']:.4f} / {row['price_max']:.4f}\n"
        f"  total traded        {row['total_traded']:.4f}\n"
        f"  objective           {row['objective']:.4f}\n"
        f"  reference objective {row['reference_objective']:.4f} (gap {row['optimality_gap']:.3e})\n"
        f"  wall time           {elapsed:.3f} s (including compilation)")
    if grid is not None:
        typer.echo(f"  network             {policy} at u = {fee:g}: charges collected "
                   f"{row['charges_collected']:.2f}, inter-zone traded {row['inter_zone_traded']:.2f}, "
                   f"max line loading {row['max_loading']:.1%} ({row['most_loaded_line']}), "
                   f"{row['overloaded_lines']} overloaded")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        labels = {"case": case.name, "file": str(case_file), "policy": policy, "fee": fee,
                  **options._asdict()}
        table = pa.table({**{k: [v] for k, v in labels.items()}, **{k: [v] for k, v in row.items()},
                          "wall_time_s": [elapsed]})
        runner.write_table(out, table, {"case": case.name})
        trades = out.with_name(out.stem + ".trades.parquet")
        runner.write_table(trades, _trades_table(case, result.trades, result.prices), {"case": case.name})
        typer.echo(f"  wrote {out} and {trades}")
