"""Memory of a very long sweep: host memory must not grow with the number of cases.

    python -m bench.streaming [--cases 1000000] [--seconds S] [--out DIR]

Runs ``jaxmarket sweep`` on a one-cell study of ``--cases`` random communities of 25
agents (no charges, fixed rho = 1, eps = 1e-4, chunks of 4096 cases) in a child process
and samples its resident memory (``VmRSS``) and the chunks on disk every 5 s. With
``--seconds`` the sweep is interrupted after that long (as a killed run would be; the
dataset resumes with ``--resume``). Prints a Markdown table of the samples.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUDY = """
[run]
name = "streaming"
cases_per_cell = {cases}
chunk_size = 4096
[community]
n_agents = 25
[solver]
rho = 1.0
eps_primal = 1e-4
eps_dual = 1e-4
"""


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def chunks_done(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["chunks"])
    except (OSError, ValueError, KeyError):
        return 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=None, help="interrupt after this long")
    parser.add_argument("--out", type=Path, default=None, help="dataset folder (default: temporary)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        study = Path(folder) / "streaming.toml"
        study.write_text(STUDY.format(cases=args.cases))
        out = args.out or Path(folder) / "out"
        command = [sys.executable, "-m", "jaxmarket", "sweep", str(study), "--out", str(out)]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env={**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"})
        start, samples = time.perf_counter(), []
        while child.poll() is None:
            elapsed = time.perf_counter() - start
            samples.append((elapsed, chunks_done(out), resident_mb(child.pid)))
            print(f"{elapsed:7.0f} s  {samples[-1][1]:4d} chunks  {samples[-1][2]:7.0f} MB",
                  file=sys.stderr, flush=True)
            if args.seconds is not None and elapsed > args.seconds:
                child.send_signal(signal.SIGINT)
                child.wait()
                break
            time.sleep(5)
        elapsed = time.perf_counter() - start
        done = chunks_done(out)
    print(f"- Command: `python -m bench.streaming --cases {args.cases}"
          + (f" --seconds {args.seconds:g}`" if args.seconds is not None else "`"))
    print(f"- {done} chunks of 4096 cases ({done * 4096} cases) on disk after {elapsed:.0f} s"
          f"{' (interrupted)' if child.returncode else ''}\n")
    print("| elapsed (s) | chunks on disk | resident memory (MB) |")
    print("|---:|---:|---:|")
    for elapsed, chunks, memory in samples[::max(1, len(samples) // 20)]:
        print(f"| {elapsed:.0f} | {chunks} | {memory:.0f} |")


if __name__ == "__main__":
    main()
