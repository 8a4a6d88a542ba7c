"""Live progress: the runner's phases reach a listener, the command line shows them without
a terminal at a steady pace, and reporting changes no row."""

import io
import re
import time

from rich.console import Console
from typer.testing import CliRunner

from jaxmarket import progress
from jaxmarket.cli import app
from jaxmarket.cli import display
from test_sweep import TINY, assert_same_dataset, baseline, run_study, tiny_study  # noqa: F401


def test_events_reach_the_listener_and_rows_do_not_change(tmp_path, baseline):  # noqa: F811
    events = []
    study = tiny_study(tmp_path)
    with progress.listening(events.append):
        run_study(study)
    phases = [e["phase"] for e in events if "phase" in e]
    assert phases[:5] == ["generate", "compile", "solve", "tabulate", "write"]
    assert set(phases) == {"generate", "compile", "solve", "tabulate", "write"}
    assert all(e["cases"] > 0 for e in events)
    assert_same_dataset(study.out, baseline)
    progress.phase("solve", cases=1)  # no listener: nothing happens


def test_plain_progress_lines_without_a_terminal(tmp_path, monkeypatch):
    monkeypatch.setattr(display, "PLAIN_EVERY_S", 0.05)
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if re.match(r"tiny: \w+ +\d+/32 cases", line)]
    assert lines, result.stderr  # a run of a few milliseconds may print just one
    assert "cases/s" in lines[-1] and "left" in lines[-1]
    quiet = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "q"), "--quiet"])
    assert quiet.exit_code == 0 and "cases/s" not in quiet.stderr


def test_plain_lines_come_at_a_steady_pace_whatever_the_run_does(monkeypatch):
    """Without a terminal the display prints a line every PLAIN_EVERY_S, also while a phase
    (compilation, say) reports nothing."""
    monkeypatch.setattr(display, "PLAIN_EVERY_S", 0.02)
    out = io.StringIO()
    with display.Display("tiny", 10, "0/1", Console(file=out, force_terminal=False)) as shown:
        shown.event({"phase": "compile", "cases": 10})
        time.sleep(0.3)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("tiny: compile")]
    assert len(lines) >= 3, out.getvalue()
