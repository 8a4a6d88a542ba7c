"""``jaxmarket sweep``: run a study and write its Parquet dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from jaxmarket.cli.common import SET_HELP, setup_jax, user_errors
from jaxmarket.cli.display import Display
from jaxmarket.errors import InputError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command()
def sweep(
    file: Path = typer.Argument(..., metavar="FILE", help="Study file (TOML)."),
    out: Optional[Path] = typer.Option(None, metavar="DIR", help="Output directory (default: run.out)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an unfinished study."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the existing dataset and start over."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    driver: str = typer.Option("continuous", metavar="NAME",
                               help="continuous (lanes refilled as cases stop), blocked (cache-sized blocks) "
                                    "or plain (one loop per batch); the same iteration counts, the last "
                                    "bits of a row may differ at small N; --resume keeps the driver."),
    cpu_devices: int = typer.Option(0, metavar="N", help="JAX devices on a CPU (0: one per core)."),
    distributed: bool = typer.Option(False, "--distributed", help=(
        "One of several processes of a study (jax.distributed; Slurm and Open MPI are detected, "
        "else give the three options below): each takes every P-th chunk.")),
    coordinator: Optional[str] = typer.Option(None, metavar="HOST:PORT",
                                              help="--distributed: address of process 0."),
    num_processes: Optional[int] = typer.Option(None, metavar="P", help="--distributed: processes."),
    process_id: Optional[int] = typer.Option(None, metavar="I", help="--distributed: this process."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress display on stderr."),
):
    """Run a study and write its Parquet dataset."""
    with user_errors():
        setup_jax()
        import jax

        from jaxmarket.markets.lanes import check_driver
        from jaxmarket.progress import listening
        from jaxmarket.study import plan as planner, run as runner, store
        from jaxmarket.study.config import load_study

        runner.use_cpu_devices(cpu_devices)
        check_driver(driver)
        if not distributed and (coordinator, num_processes, process_id) != (None, None, None):
            raise InputError("--coordinator", "--coordinator, --num-processes and --process-id "
                                              "need --distributed")
        if distributed:  # before JAX computes anything
            _join(jax, coordinator, num_processes, process_id)
        study = load_study(file, set_ or (), out)
        plan = planner.prepare(study, resume=resume, overwrite=overwrite,
                              process=jax.process_index(), processes=jax.process_count())
        # Locked at once: a second writer is refused before anything is said or done.
        chunks = runner.run(plan, driver) if plan.pending else iter(())
    if plan.repairs:
        more = f" and {len(plan.repairs) - 1} more" if len(plan.repairs) > 1 else ""
        typer.echo(f"{study.name}: recomputing {len(plan.repairs)} chunks whose listed parts are "
                   f"missing or damaged: {plan.repairs[0]}{more}", err=True)
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
    start = time.perf_counter()
    display = Display(study.name, cases, f"{done}/{total}", Console(stderr=True), quiet)
    with user_errors(), display, listening(display.event):
        try:
            for chunk in chunks:
                done += 1
                display.chunk_written(f"{done}/{total}")
        except KeyboardInterrupt:
            typer.echo(f"interrupted after {done}/{total} chunks; rerun the same command with "
                       f"--resume to continue", err=True)
            raise typer.Exit(130) from None
    execution = store.read_manifest(study.out, plan.manifest)["execution"]
    typer.echo(f"{study.name}: {len(pending)} chunks ({cases} cases) written to {study.out} "
               f"in {time.perf_counter() - start:.1f} s ({driver} driver, lane utilisation "
               f"{execution['lane_utilisation']:.1%})")


def _join(jax, coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join the ``jax.distributed`` run; what is missing is taken from Slurm or Open MPI."""
    host, _, port = (coordinator or "").rpartition(":")
    if coordinator is not None and not (host and port.isdigit()):
        raise InputError("--coordinator", f"must be HOST:PORT, got {coordinator!r}")
    if num_processes is not None and num_processes < 1:
        raise InputError("--num-processes", f"must be >= 1, got {num_processes}")
    if process_id is not None and process_id < 0:
        raise InputError("--process-id", f"must be >= 0, got {process_id}")
    if None not in (process_id, num_processes) and process_id >= num_processes:
        raise InputError("--process-id", f"must be in [0, {num_processes}), got {process_id}")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except (ValueError, RuntimeError, IndexError) as error:  # JAX's own checks and failures
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError("--distributed", f"cannot join the run: {first}") from None
