"""End-to-end sweep time of the drivers, run one after the other in one invocation.

    python -m bench.end_to_end [--set run.cases_per_cell=100] [--baseline DIR]

Runs ``jaxmarket sweep sweeps/sparsity.toml`` with ``--driver continuous`` on every CPU
core as a device and on one device, with ``--driver blocked`` (cache-sized blocks, each
until its slowest case stops) and with ``--driver plain`` (one loop per queue of chunks
until its slowest case stops: the naive vectorised loop), both on one device, each in a
fresh process into a temporary directory, checks that all datasets hold the same rows
(timing columns aside), and prints a Markdown table: wall and CPU time of the whole
command (imports, compilation, generation, references, writes), lane utilisation,
speed-up over the blocked and the plain driver. With ``--baseline`` a checkout of an
earlier commit is timed too, with the same command. The machine may be shared: the load
average is printed.
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


def sweep(root: Path, study: Path, out: Path, overrides: list[str], flags: list[str]
          ) -> tuple[float, float]:
    command = [sys.executable, "-m", "jaxmarket", "sweep", str(study), "--out", str(out), *flags]
    for assignment in overrides:
        command += ["--set", assignment]
    # Every run compiles afresh: the persistent cache would hand later runs the programs
    # that earlier ones compiled.
    environment = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1",
                   "JAX_ENABLE_COMPILATION_CACHE": "false"}
    start, children = time.perf_counter(), os.times()
    subprocess.run(command, cwd=root, env=environment, check=True, stdout=subprocess.DEVNULL)
    after = os.times()
    cpu = after.children_user + after.children_system - children.children_user - children.children_system
    return time.perf_counter() - start, cpu


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
    cores = os.cpu_count()
    runs = [(f"continuous, {cores} CPU devices", ROOT, ["--driver", "continuous"]),
            ("continuous, 1 CPU device", ROOT, ["--driver", "continuous", "--cpu-devices", "1"])]
    if args.baseline:
        runs.append(("blocked, runner before this work", args.baseline, []))
    runs.append(("blocked, 1 CPU device", ROOT, ["--driver", "blocked", "--cpu-devices", "1"]))
    runs.append(("plain, 1 CPU device", ROOT, ["--driver", "plain", "--cpu-devices", "1"]))
    load = os.getloadavg()[0]
    table = []
    with tempfile.TemporaryDirectory() as folder:
        for name, root, flags in runs:
            out = Path(folder) / str(len(table))
            seconds, cpu = sweep(root, args.study, out, overrides, flags)
            execution = json.loads((out / "manifest.json").read_text()).get("execution", {})
            table.append((name, seconds, cpu, execution.get("lane_utilisation"), out))
            print(f"{name}: {seconds:.1f} s", file=sys.stderr, flush=True)
        reference = rows(table[-1][-1])
        for *_, out in table[:-1]:
            pd.testing.assert_frame_equal(rows(out), reference, check_exact=True)
    blocked, plain = table[-2][1], table[-1][1]
    print(f"- Command: `python -m bench.end_to_end {' '.join('--set ' + o for o in overrides)}`"
          f" on `{args.study.relative_to(ROOT)}`")
    print(f"- Date: {datetime.date.today()}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("- Rows of every run identical (timing columns aside): checked\n")
    print("| run | wall time (s) | CPU time (s) | lane utilisation | speed-up over blocked "
          "| speed-up over plain |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, seconds, cpu, utilisation, _ in table:
        shown = "–" if utilisation is None else f"{utilisation:.1%}"
        print(f"| {name} | {seconds:.1f} | {cpu:.1f} | {shown} | {blocked / seconds:.2f}× "
              f"| {plain / seconds:.2f}× |")


if __name__ == "__main__":
    main()
