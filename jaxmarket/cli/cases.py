"""``jaxmarket cases``: the cases that ship with the package."""

from __future__ import annotations

import json

import typer

from jaxmarket import cases

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.command("cases")
def list_cases():
    """List the packaged cases: name, agents, description."""
    for name in cases.names():
        doc = json.loads(cases.locate(name).read_text(encoding="utf-8"))
        summary = doc.get("description", "").split(":")[0].split(".")[0]
        typer.echo(f"{name}: {len(doc['agents'])} agents; {summary}")
