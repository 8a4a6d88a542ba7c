"""What every command shares: one-line user errors, and JAX set up at the edge.

Compiled programs are kept between runs in JAX's persistent compilation cache, by default
under ``$XDG_CACHE_HOME/jaxmarket/xla`` (``~/.cache/jaxmarket/xla``), every program however
quick it compiled: a repeated or resumed study skips its compilation.
``JAX_COMPILATION_CACHE_DIR`` chooses another folder and ``JAX_ENABLE_COMPILATION_CACHE=false``
switches it off. A cached program is the compiled program itself, so rows do not change.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import typer

from jaxmarket.errors import InputError

SET_HELP = "Override a study key, e.g. --set graph.sparsity=[0,0.5] (repeatable)."


@contextmanager
def user_errors(flags: dict[str, str] | None = None):
    """Print an ``InputError`` as one line and exit with status 2; ``flags`` renames the
    fields of the error to the command-line flags the user typed. A failed read or write
    (``OSError``: permission, disk full) is reported the same way."""
    try:
        yield
    except InputError as error:
        field = (flags or {}).get(error.field, error.field)
        typer.echo(f"error: {InputError(field, error.problem)}", err=True)
        raise typer.Exit(2) from None
    except OSError as error:
        typer.echo(f"error: {error.filename or 'I/O'}: {error.strerror or error}", err=True)
        raise typer.Exit(2) from None


def setup_jax() -> None:
    """float64 by default (arrays are created with explicit dtypes; float32 is a study's
    choice) and the persistent compilation cache."""
    import jax

    jax.config.update("jax_enable_x64", True)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        jax.config.update("jax_compilation_cache_dir", str(Path(home) / "jaxmarket" / "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
