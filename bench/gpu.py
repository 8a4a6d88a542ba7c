"""The GPU section of RESULTS.md, run by ``bench/gpu.sh`` (see there) on whatever backend
JAX has: the ADMM kernel in float32 and float64 at N = 25, 50, 100, 200, the full
sparsity study end to end with its lane utilisation.

    python -m bench.gpu [--tiny]

``--tiny`` (or ``JAXMARKET_BENCH_TINY=1``) shrinks every size so that the script can be
checked on a CPU in a few minutes. The section goes to ``bench/RESULTS.md`` (key
``gpu-<backend>``; a tiny check's does not) and, when ``$OUT`` is set, to
``$OUT/RESULTS-gpu.md`` with the whole ``RESULTS.md`` next to it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench.admm_kernel import RESULTS, Row, cpu_model, kernel_version, time_kernel, write_section
from jaxmarket.generator import GeneratorParams, generate

ROOT = Path(__file__).resolve().parents[1]
# Batches of about 2^22 trades (the lanes a GPU gets, markets.lanes.GPU_TRADES_PER_DEVICE).
FULL = dict(batches={25: 4096, 50: 1024, 100: 256, 200: 64}, iterations=200, study=[])
TINY = dict(batches={25: 8, 50: 4, 100: 2, 200: 1}, iterations=5,
            study=["run.cases_per_cell=4", "run.chunk_size=4", "graph.sparsity=[0.0,0.5]",
                   "solver.max_iter=200"])


def kernel(plan: dict) -> list[str]:
    lines = ["| dtype | N | B | trade updates/s | ns/trade-update | limit ns/trade-update "
             "| kernel / limit | µs/case-iter | compile (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dtype in (jnp.float32, jnp.float64):
        for n, batch in plan["batches"].items():
            community = generate(0, np.arange(batch), n, GeneratorParams(charge_per_distance=1.0),
                                 dtype=dtype)
            first, times, case_iterations, limit_s = time_kernel(community, plan["iterations"])
            row = Row(n, batch, first, times[0], min(times), statistics.median(times),
                      case_iterations, math.nan, limit_s)  # no NumPy loop here
            lines.append(f"| {jnp.dtype(dtype).name} | {n} | {batch} | {row.trade_rate:.3g} "
                         f"| {row.ns_per_trade:.3g} | {row.limit_ns_per_trade:.3g} "
                         f"| {row.ns_per_trade / row.limit_ns_per_trade:.2f}× "
                         f"| {1e6 / row.case_iter_rate:.3g} | {row.compile_s:.1f} |")
            print(lines[-1], flush=True)
    return lines


def study(plan: dict) -> list[str]:
    """The sparsity study through the command line, fresh process, cold compilation cache."""
    lines = ["| study | cases | wall time (s) | solve (s) | lane utilisation | converged |",
             "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "sparsity"
        command = [sys.executable, "-m", "jaxmarket", "sweep", "sweeps/sparsity.toml",
                   "--out", str(out), "--quiet"]
        for assignment in plan["study"]:
            command += ["--set", assignment]
        env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(Path(folder) / "cache"))
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        manifest = json.loads((out / "manifest.json").read_text())
        execution = manifest.get("execution", {})
        import pandas as pd

        rows = pd.read_parquet(out / "cases")
        solve = sum(group.get("solve_s", 0.0) for group in execution.get("groups", []))
        lines.append(f"| sparsity.toml {' '.join(plan['study'])} | {len(rows)} | {wall:.1f} "
                     f"| {solve:.1f} "
                     f"| {execution.get('lane_utilisation', float('nan')):.1%} "
                     f"| {rows.converged.mean():.1%} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true",
                        default=os.environ.get("JAXMARKET_BENCH_TINY") == "1")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    plan = TINY if args.tiny else FULL
    device = jax.devices()[0]
    backend = jax.default_backend()
    header = [f"## {'TINY CHECK, not a measurement: ' if args.tiny else ''}"
              f"{backend.upper()}: kernel, sparsity study, lane utilisation", "",
              f"- Command: `bench/gpu.sh`{' (JAXMARKET_BENCH_TINY=1)' if args.tiny else ''}",
              f"- Date: {time.strftime('%Y-%m-%d')}; device {device.platform} "
              f"({device.device_kind}), {jax.device_count()} device(s); host {cpu_model()}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
              f"- jax {jax.__version__}, code at {kernel_version()}",
              f"- Kernel: consensus ADMM, fixed rho = 1, eps = 0, {plan['iterations']} "
              "iterations, random full-graph communities with unit distance charges, one "
              "batch (the driver's block size on this backend); best of repeated runs after "
              "the first; compile = first - second call; limit: the straight-line iteration "
              "(`bench.admm_kernel.straight_line`), timed alternately with the kernel", ""]
    lines = header + kernel(plan) + [""]
    write(lines, backend, args.tiny)  # kept if the study runs past the time limit
    write(lines + study(plan) + [""], backend, args.tiny)


def write(lines: list[str], backend: str, tiny: bool) -> None:
    """The section into RESULTS.md (not a tiny check's) and into $OUT when set."""
    section = "\n".join(lines)
    print(section, flush=True)
    if not tiny:
        write_section(section, f"gpu-{backend}")
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "RESULTS-gpu.md").write_text(section)
        shutil.copy(RESULTS, Path(out) / "RESULTS.md")


if __name__ == "__main__":
    main()
