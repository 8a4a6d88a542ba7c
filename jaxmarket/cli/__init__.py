"""Command line: ``jaxmarket sweep | report | solve | validate | tune | cases``.

Each command lives in a module of this package, imported only when it runs, so that
``jaxmarket --help`` and ``--version`` answer without importing JAX. User errors
(``InputError``, missing files) print one line ``error: <field>: <problem>`` on stderr and
exit with status 2, before anything is written.
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperGroup

from jaxmarket.version import __version__

# command -> (module of this package, one-line help shown by ``jaxmarket --help``)
COMMANDS = {
    "sweep": ("sweep", "Run a study and write its Parquet dataset."),
    "report": ("report", "Write the figures and tables of a study's dataset."),
    "solve": ("solve", "Solve one case (a packaged case or a JSON file) and print a summary."),
    "validate": ("validate", "Check a study without running it."),
    "tune": ("tune", "Fit an algorithm's continuous parameters to a study's communities."),
    "cases": ("cases", "List the packaged cases."),
}


class _LazyCommands(TyperGroup):
    """Commands imported on first use; the overview uses the help lines above."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"{__name__}.{COMMANDS[name][0]}")
        return typer.main.get_command(module.app)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, text) for name, (_, text) in COMMANDS.items()])


app = typer.Typer(cls=_LazyCommands, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Batched Monte Carlo studies of P2P electricity markets.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jaxmarket {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass
