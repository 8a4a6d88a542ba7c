"""``jaxmarket report``: the figures and tables of a study's dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from jaxmarket.cli.common import setup_jax, user_errors

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command()
def report(out: Path = typer.Argument(..., metavar="OUT_DIR", help="A study's dataset directory.")):
    """Write the figures (PNG, PDF) and tables (Markdown, CSV) of a study into OUT_DIR/report."""
    with user_errors():
        setup_jax()  # float64: the study is re-resolved (a case per cell) and some sections
        # solve cases again (trade maps, endogenous charges)
        from jaxmarket.report import write_report

        written = write_report(out)
    for path in written:
        typer.echo(str(path))
