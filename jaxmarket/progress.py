"""Progress of a running study, from the runner to whoever listens.

The study runner reports the phases of every group of chunks (``phase``: generate,
compile, solve, tabulate, write, with the group's cases). Nothing is reported unless a
listener is installed (``listening``): the command line installs one to draw its display.

Not from inside the device loop: a host callback there (tried: the cases finished every
few refill rounds) makes the driver's program differ in every process, which keeps it out
of the persistent compilation cache (measured on the quickstart: 2 of 55 programs missed
the cache on a warm run, 4.5 s of compilation each time).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

_listener: Callable[[dict], None] | None = None


@contextmanager
def listening(listener: Callable[[dict], None]):
    """Send every event to ``listener`` inside the block."""
    global _listener
    _listener = listener
    try:
        yield
    finally:
        _listener = None


def phase(name: str, **info) -> None:
    """A phase of the run starts: generate, compile, solve, tabulate, write."""
    if _listener is not None:
        _listener({"phase": name, **info})
