"""Compilation time of a study, cold (empty persistent cache) and warm (the same command
again), each in a fresh process.

    python -m bench.compile_cache [--study sweeps/sparsity.toml] [--set KEY=VALUE ...]

Runs ``jaxmarket sweep`` twice with an empty ``JAX_COMPILATION_CACHE_DIR`` of its own and a
fresh output folder each time, and reads JAX's own compilation events in the child
(``jax.monitoring``): the XLA compile time is the backend compile duration minus the time
spent reading programs from the persistent cache; tracing and lowering to MLIR are
counted apart (JAX redoes them in every process, cache or not).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SETS = ["run.cases_per_cell=50"]

# The child: the jaxmarket command line with a listener on JAX's compilation events that
# writes their totals to the file named by $COMPILE_EVENTS at exit.
CHILD = """
import atexit, collections, json, os, sys
import jax.monitoring as monitoring
totals, counts = collections.defaultdict(float), collections.Counter()
def on_duration(event, seconds, **kwargs):
    totals[event] += seconds
    counts[event] += 1
monitoring.register_event_duration_secs_listener(on_duration)
atexit.register(lambda: json.dump({"seconds": totals, "counts": counts},
                                  open(os.environ["COMPILE_EVENTS"], "w")))
sys.argv = ["jaxmarket", *sys.argv[1:]]
from jaxmarket.cli import app
app(prog_name="jaxmarket")
"""
BACKEND = "/jax/core/compile/backend_compile_duration"
RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"
TRACING = ("/jax/core/compile/jaxpr_trace_duration",
           "/jax/core/compile/jaxpr_to_mlir_module_duration")


def run(study: str, sets: list[str], cache: Path, work: Path, label: str) -> dict:
    events = work / f"{label}.json"
    command = [sys.executable, "-c", CHILD, "sweep", study, "--out", str(work / label)]
    for assignment in sets:
        command += ["--set", assignment]
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(cache), COMPILE_EVENTS=str(events))
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    found = json.loads(events.read_text())
    seconds, counts = found["seconds"], found["counts"]
    retrieval = seconds.get(RETRIEVAL, 0.0)
    return dict(wall_s=wall, programs=counts.get(BACKEND, 0), cache_hits=counts.get(RETRIEVAL, 0),
                xla_compile_s=seconds.get(BACKEND, 0.0) - retrieval, cache_read_s=retrieval,
                tracing_s=sum(seconds.get(e, 0.0) for e in TRACING))


def measure(study: str, sets: list[str]) -> list[str]:
    lines = ["| run | wall time (s) | programs | persistent-cache hits | XLA compile (s) "
             "| cache reads (s) | tracing + lowering (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        cache, work = Path(tmp) / "cache", Path(tmp)
        for label in ("cold", "warm"):
            r = run(study, sets, cache, work, label)
            lines.append(f"| {label} | {r['wall_s']:.1f} | {r['programs']} | {r['cache_hits']} "
                         f"| {r['xla_compile_s']:.2f} | {r['cache_read_s']:.2f} "
                         f"| {r['tracing_s']:.2f} |")
            print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="sweeps/sparsity.toml")
    parser.add_argument("--set", dest="sets", action="append", default=None)
    args = parser.parse_args(argv)
    print("\n".join(measure(args.study, args.sets or DEFAULT_SETS)))


if __name__ == "__main__":
    main()
