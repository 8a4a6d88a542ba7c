"""``python -m jaxmarket``: the same command line as the ``jaxmarket`` script."""

from jaxmarket.cli import app

app(prog_name="jaxmarket")
