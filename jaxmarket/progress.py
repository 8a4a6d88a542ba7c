"""Progress of a running study, from the places that know it to whoever listens.

The study runner reports its phases (``phase``); the continuous driver reports, from inside
its compiled loop, how many cases of the queue have finished (``queue_callback``, a host
callback every ``REPORT_EVERY_ROUNDS`` refill rounds). Nothing is reported unless a
listener is installed (``listening``): the command line installs one to draw its display.
Reporting never changes a row: the callback only reads a counter.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable

REPORT_EVERY_ROUNDS = 8  # refill rounds (of 16 iterations each) between two reports

_listener: Callable[[dict], None] | None = None
_lock = threading.Lock()
_finished: dict[int, int] = {}  # device -> cases of the current queue finished on it


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
    if name == "solve":
        with _lock:
            _finished.clear()
    if _listener is not None:
        _listener({"phase": name, **info})


def queue_callback(device, finished) -> None:
    """Host side of the driver's report: ``finished`` cases of the queue done on ``device``."""
    if _listener is None:
        return
    with _lock:
        _finished[int(device)] = int(finished)
        total = sum(_finished.values())
    _listener({"finished_in_queue": total})
