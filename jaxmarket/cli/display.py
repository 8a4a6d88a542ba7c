"""The live progress display of ``jaxmarket sweep`` on stderr.

It listens to ``jaxmarket.progress``: the phase of the run (generate, compile, solve,
tabulate, write) of every group of chunks, and shows the phase, the cases solved (counted
as groups finish), cases/s, the time left and the time elapsed. On a terminal it is a rich progress bar refreshed ten times a
second; without one (a log file, a batch job) it prints one plain line every
``PLAIN_EVERY_S`` seconds, compilation included, so that a working run is never silent.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

PLAIN_EVERY_S = 5.0


class Display:
    def __init__(self, name: str, cases: int, chunks: str, console: Console, quiet: bool = False):
        self.name, self.total, self.chunks = name, cases, chunks
        self.phase, self.solved, self.queue = "start", 0, 0
        self.start = time.perf_counter()
        self.lock = threading.Lock()
        self.console, self.quiet = console, quiet
        self.bar = None
        self.stop = threading.Event()

    def __enter__(self):
        if self.quiet:
            return self
        if self.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.fields[status]}"), console=self.console)
            self.bar.start()
            self.task = self.bar.add_task(self.name, total=self.total, status=self.status())
        threading.Thread(target=self._tick, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.bar is not None:
            self.bar.stop()

    def event(self, event: dict) -> None:
        """A ``jaxmarket.progress`` event."""
        with self.lock:
            if event["phase"] == "solve":
                self.queue = event["cases"]
            elif event["phase"] == "write" and self.phase != "write":
                self.solved, self.queue = self.solved + self.queue, 0
            self.phase = event["phase"]
        self._refresh()

    def chunk_written(self, chunks: str) -> None:
        with self.lock:
            self.chunks = chunks
        self._refresh()

    def status(self) -> str:
        done = self.solved
        elapsed = time.perf_counter() - self.start
        rate = done / elapsed if done else 0.0
        left = f"{timedelta(seconds=round((self.total - done) / rate))}" if rate else "-:--:--"
        return (f"{self.phase:<8} {done}/{self.total} cases  {rate:.1f} cases/s  "
                f"left {left}  chunks {self.chunks}  elapsed {timedelta(seconds=round(elapsed))}")

    def _refresh(self) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.update(self.task, completed=self.solved,
                                status=self.status())

    def _tick(self) -> None:
        while not self.stop.wait(PLAIN_EVERY_S if self.bar is None else 0.5):
            if self.bar is None:
                with self.lock:
                    line = f"{self.name}: {self.status()}"
                self.console.print(line, highlight=False, soft_wrap=True)
            else:
                self._refresh()
