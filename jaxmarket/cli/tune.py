"""``jaxmarket tune``: fit an algorithm's continuous parameters to a study's communities.

Writes into ``--out`` (default ``outputs/tune-STUDY-ALGORITHM``):

    solver.toml   the tuning as a [solver] section (copy it, or --set each key)
    report.md     how it was fitted, and the held-out table: default against tuned
    default/      the study's sweep of ALGORITHM with its own values (a dataset)
    tuned/        the same sweep with the tuning: exactly the sweep the report's command runs

The held-out cases are the study's own (case indices 0 .. cases_per_cell - 1), so the two
datasets are sweeps of the study; the fitting uses the cases after them
(``jaxmarket.tuning``). A rerun reuses a finished dataset of the same sweep and replaces
one of another (an earlier tuning).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Optional

import typer

from jaxmarket.cli.common import SET_HELP, setup_jax, user_errors
from jaxmarket.errors import InputError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command()
def tune(
    file: Path = typer.Argument(..., metavar="FILE", help="Study file (TOML)."),
    algorithm: str = typer.Option(..., metavar="NAME", help="Algorithm to tune (rci, pcmbed, "
                                  "admm, admm_relaxed, admm_fast, admm_anderson, admm_pairwise, "
                                  "ced, ced_mean)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, metavar="DIR",
                                       help="Output directory (default outputs/tune-STUDY-NAME)."),
    unroll: int = typer.Option(500, metavar="K", help="Unrolled iterations of the surrogate."),
    steps: int = typer.Option(40, metavar="S", help="Adam steps (0: random search only)."),
    draws: int = typer.Option(32, metavar="D", help="Random-search draws (0: Adam only)."),
    learning_rate: float = typer.Option(0.05, metavar="LR", help="Adam's learning rate on the "
                                        "encoded knobs (logarithms of scales)."),
    rounds: int = typer.Option(1, metavar="R", help="Random-search rounds of D draws, each "
                               "around the best point so far with half the previous spread."),
    constant: bool = typer.Option(False, "--constant", help="RCI, PCMBED: fit constant "
                                  "sequences (the scales c, with p = 0)."),
    train_cases: int = typer.Option(16, metavar="B", help="Training (and validation) cases at "
                                    "the smallest N; fewer at larger N, by the ratio of trades."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rerun the held-out sweeps from scratch."),
):
    """Fit an algorithm's continuous parameters to a study's communities; write a [solver]
    snippet and a held-out report (default against tuned)."""
    with user_errors({"solver.algorithm": "--algorithm"}):
        setup_jax()
        from jaxmarket import tuning
        from jaxmarket.schema import integer, number
        from jaxmarket.study import plan as planner, run as runner
        from jaxmarket.study.config import load_study
        from jaxmarket.study.store import read_manifest, read_parts

        runner.use_cpu_devices(0)
        for value, flag in ((unroll, "--unroll"), (train_cases, "--train-cases"), (rounds, "--rounds")):
            integer(value, flag, gt=0)
        for value, flag in ((steps, "--steps"), (draws, "--draws")):
            integer(value, flag, ge=0)
        number(learning_rate, "--learning-rate", gt=0)
        if steps == 0 and draws == 0:
            raise InputError("--steps", "nothing to fit: --steps and --draws are both 0")
        sets = [*(set_ or ()), f"solver.algorithm={algorithm}"]
        study = load_study(file, sets)
        solver_swept = [key for key in study.swept if key.startswith("solver.")]
        if solver_swept:
            raise InputError(solver_swept[0], "tune fits one tuning; the study sweeps this solver key")
        base = study.cells[0].algorithm
        chosen = tuning.knobs(base, constant)
        if base.trace_every == 0:
            raise InputError("solver.trace_every", "the report counts iterations to a gap from the "
                                                   "trace; set solver.trace_every > 0")
        out = out or Path("outputs") / f"tune-{study.name}-{algorithm}"
        settings = {}  # one cell per distinct community setting (N, generator, graph)
        for cell in study.cells:
            settings.setdefault((cell.n_agents, repr(cell.generator), repr(cell.section("graph"))), cell)
        cells = list(settings.values())
        smallest = min(cell.n_agents for cell in cells)
        counts = [tuning.cases_for(cell.n_agents, smallest, train_cases) for cell in cells]
        split = tuning.case_split(study.cases_per_cell, max(counts), max(counts))

    start = time.perf_counter()

    def say(line: str) -> None:
        typer.echo(f"[{time.perf_counter() - start:6.0f} s] {line}")

    say(f"{study.name}: tuning {algorithm} ({', '.join(k.name for k in chosen)}) on "
        f"{len(cells)} community settings, N = {', '.join(str(c.n_agents) for c in cells)}; "
        f"training cases {split['training'].start}.., validation {split['validation'].start}.., "
        f"held-out 0..{study.cases_per_cell - 1}")

    def batches(part: str):
        indices = split[part]
        return [tuning.batch(cell.communities(study.seed, list(indices[:count]), study.dtype))
                for cell, count in zip(cells, counts)]

    result = tuning.tune(base, batches("training"), batches("validation"), unroll=unroll,
                         n_draws=draws, steps=steps, learning_rate=learning_rate, seed=study.seed,
                         rounds=rounds, constant=constant, report=say)
    assignments = tuning.overrides(result.values)
    command = shlex.join(["jaxmarket", "sweep", str(file), *[a for s in sets for a in ("--set", s)],
                          *[a for s in assignments for a in ("--set", s)]])
    with user_errors():
        out.mkdir(parents=True, exist_ok=True)
        (out / "solver.toml").write_text(tuning.snippet(
            algorithm, result.values, [f"jaxmarket tune {shlex.join([str(file), '--algorithm', algorithm])}",
                                       f"chosen: {result.source}"]), encoding="utf-8")
        say(f"wrote {out / 'solver.toml'}: " + ", ".join(assignments))
        datasets = {}
        for name, extra in (("default", []), ("tuned", assignments)):
            held_out = load_study(file, sets + extra, out / name)
            # A dataset of another study here is an earlier tune's: this command owns it.
            earlier = read_manifest(held_out.out) if held_out.out.is_dir() else None
            stale = earlier is not None and earlier.get("config_hash") != held_out.config_hash
            plan = planner.prepare(held_out, resume=not (overwrite or stale),
                                   overwrite=overwrite or stale)
            say(f"held-out sweep, {name}: {len(plan.pending)} of {len(plan.assigned)} chunks to run "
                f"({held_out.n_cases} cases)")
            for _ in (runner.run(plan) if plan.pending else ()):
                pass
            datasets[name] = read_parts(held_out.out)
        table = tuning.held_out_table(datasets["default"], datasets["tuned"])
        lines = [f"# Tuning {algorithm} on {file}", "",
                 f"Fitted in {time.perf_counter() - start:.0f} s (held-out sweeps included): "
                 f"surrogate after K = {unroll} iterations, {rounds} × {draws} random draws"
                 f"{' of constant sequences' if constant else ''}, {steps} Adam "
                 f"steps (learning rate {learning_rate}), training cases per N "
                 f"{dict(zip((c.n_agents for c in cells), counts))} from case index "
                 f"{split['training'].start}, as many validation cases from "
                 f"{split['validation'].start}.", "",
                 "| candidate | training surrogate | validation surrogate |", "|---|---|---|",
                 *[f"| {name} | {result.training[name]:.3f} | {result.validation[name]:.3f} |"
                   for name in result.validation], "",
                 f"Chosen: {result.source}: " + ", ".join(assignments), "",
                 f"Held-out cases 0..{study.cases_per_cell - 1} of every N (medians over all cases; "
                 f"every gap against the exact reference). The tuned rows are the sweep",
                 "", "```", command, "```", "", *tuning.markdown_table(table), ""]
        (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    for line in tuning.markdown_table(table):
        typer.echo(line)
    say(f"wrote {out / 'report.md'}")
