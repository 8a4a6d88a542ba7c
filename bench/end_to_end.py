"""End-to-end sweep time of the two drivers, run one after the other in one invocation.

    python -m bench.end_to_end [--set run.cases_per_cell=100] [--baseline DIR]

Runs ``jaxmarket sweep sweeps/sparsity.toml`` with ``--driver blocked`` and with
``--driver continuous`` (every CPU core a device), each in a fresh process into a
temporary directory, checks that both datasets hold the same rows (timing columns
aside), and prints a Markdown table: wall time of the whole command (imports,
compilation, generation, references, writes), lane utilisation, speed-up. With
``--baseline`` a checkout of an earlier commit is timed first with the same command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def sweep(root: Path, study: Path, out: Path, overrides: list[str], flags: list[str]) -> float:
    command = [sys.executable, "-m", "jaxmarket", "sweep", str(study), "--out", str(out), *flags]
    for assignment in overrides:
        command += ["--set", assignment]
    environment = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=environment, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rows(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "cases").drop(columns=["wall_time_s"])
    return frame.sort_values(["cell", "case_index"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "sweeps" / "sparsity.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=None)
    parser.add_argument("--baseline", type=Path, help="checkout of an earlier commit to time first")
    args = parser.parse_args()
    overrides = args.overrides or ["run.cases_per_cell=100"]
    runs = [("continuous", ROOT, ["--driver", "continuous"]), ("blocked", ROOT, ["--driver", "blocked"])]
    if args.baseline:
        runs.insert(0, ("baseline (blocked, before this work)", args.baseline, []))
    load = os.getloadavg()[0]
    table = []
    with tempfile.TemporaryDirectory() as folder:
        for name, root, flags in runs:
            out = Path(folder) / name.split()[0]
            seconds = sweep(root, args.study, out, overrides, flags)
            execution = json.loads((out / "manifest.json").read_text()).get("execution", {})
            table.append((name, seconds, execution.get("lane_utilisation"), out))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        reference = rows(table[-1][3])
        for name, _, _, out in table[:-1]:
            pd.testing.assert_frame_equal(rows(out), reference, check_exact=True)
    blocked = table[-1][1]
    print(f"- Command: `python -m bench.end_to_end {' '.join('--set ' + o for o in overrides)}`"
          f" on `{args.study.relative_to(ROOT)}`")
    print(f"- Date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("- Rows of every run identical (timing columns aside): checked\n")
    print("| run | wall time (s) | lane utilisation | speed-up over blocked |")
    print("|---|---:|---:|---:|")
    for name, seconds, utilisation, _ in table:
        shown = "–" if utilisation is None else f"{utilisation:.1%}"
        print(f"| {name} | {seconds:.1f} | {shown} | {blocked / seconds:.2f}× |")


if __name__ == "__main__":
    main()
