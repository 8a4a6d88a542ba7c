"""``jaxmarket validate``: check a study without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from jaxmarket.cli.common import SET_HELP, setup_jax, user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command()
def validate(
    file: Path = typer.Argument(..., metavar="FILE", help="Study file (TOML)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=SET_HELP),
):
    """Check a study without running it."""
    with user_errors():
        setup_jax()
        from jaxmarket.study.config import load_study
        from jaxmarket.study.resources import check_resources

        study = load_study(file, set_ or ())  # refuses a study beyond the limits
        need = check_resources(len(study.cells), max(c.n_agents for c in study.cells),
                               study.cases_per_cell, study.chunk_size)
    swept = ", ".join(f"{key} ({len({cell.values[key] for cell in study.cells})})"
                      for key in study.swept) or "nothing"
    typer.echo(f"{file}: study {study.name} is valid: {len(study.cells)} cells x {study.cases_per_cell} "
               f"cases = {study.n_cases} cases; swept: {swept}; output {study.out}; "
               f"config hash {study.config_hash}; {need['chunks']} chunks, about "
               f"{need['queue_bytes'] / 2**20:.3g} MiB per queue")
