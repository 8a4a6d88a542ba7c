"""The benchmark suite: every table of ``bench/RESULTS.md`` from one command.

    python -m bench.run [--quick] [--dtype float32]
                        [--only kernel,parts,layouts,cases,outcome,compile,end-to-end]

Sections (each rewrites its own block of RESULTS.md, keyed by backend and dtype; the
rest of the file is kept; ``--quick`` only prints):

- ``kernel``: the ADMM kernel at a fixed number of iterations vs N and batch size:
  case-iterations/s, trade updates/s, compile time, and the ratio against the per-case
  NumPy loop in the same process (``bench.admm_kernel``, in a child pinned to one core
  with XLA on one thread).
- ``parts``: where the kernel's time goes: the driver's bookkeeping, the exact local
  solve against two plain Newton passes, Newton passes per iteration and the cost of one
  pass (``bench.kernel_parts``, in a child pinned to one core with XLA on one thread).
- ``layouts``: one ADMM iteration on the dense layout against neighbour lists
  (``jaxmarket.neighbours``) vs N and sparsity: where the runner's choice of layout comes
  from (``markets.lanes.neighbour_widths``).
- ``cases``: whole cases solved to the tolerance, as a study solves them (random
  communities with unit distance charges, residual-balanced ADMM and ADMM with pairwise
  penalties, eps = 1e-4, the continuous driver with its lane utilisation), against the
  centralized problem solved case by case with cvxpy + Clarabel (model building included:
  what a user would otherwise run; the test oracle ``tests/oracle.py``, tight tolerances).
- ``outcome``: the outcome engine (``algorithm = "exact"``) against Clarabel's direct API
  and (N = 25) qpax vmapped, one core each, interleaved (``bench.outcome``, run in a child
  pinned to one core with XLA on one thread).
- ``compile``: compilation time of ``sweeps/sparsity.toml --set run.cases_per_cell=50``
  with an empty persistent cache and again warm, each in a fresh process
  (``bench.compile_cache``; about two study runs).
- ``end-to-end``: ``bench.end_to_end`` (the sparsity study through the CLI with every
  driver, several minutes; not in the default set).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bench.admm_kernel import cpu_model, kernel_version, repeat, write_section
from jaxmarket import neighbours
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.algorithms.admm_pairwise import PairwiseADMM
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.markets import p2p
from jaxmarket.markets.lanes import default_block_size

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("kernel", "parts", "layouts", "cases", "outcome", "compile", "end-to-end")
DEFAULT = ("kernel", "parts", "layouts", "cases", "outcome", "compile")
# One core and one XLA thread: per-core comparisons (NumPy, Clarabel) on a shared machine.
ONE_THREAD = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
              "OMP_NUM_THREADS": "1"}
UNIT_CHARGES = GeneratorParams(charge_per_distance=1.0)


def header(title: str, command: str, dtype, notes: list[str]) -> list[str]:
    device = jax.devices()[0]
    return [f"## {title}", "", f"- Command: `{command}`",
            f"- Date: {datetime.date.today().isoformat()}; machine: {cpu_model()}, "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}",
            f"- jax {jax.__version__}, device {device.platform} ({device.device_kind}), "
            f"dtype {jnp.dtype(dtype).name}, code at {kernel_version()}",
            *notes, ""]


def layouts(quick: bool, dtype) -> list[str]:
    """Microseconds per case-iteration of ADMM (fixed iterations, eps = 0) on both layouts."""
    plan = {50: (200, (0.5, 0.9)), 100: (40, (0.5, 0.9))} if quick else \
        {25: (400, (0.0, 0.5, 0.8, 0.95)), 50: (200, (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)),
         100: (40, (0.5, 0.7, 0.8, 0.9, 0.95)), 200: (10, (0.5, 0.8, 0.9, 0.95))}
    iterations = 50 if quick else 100
    lines = ["| N | B | sparsity | largest degree | width D | dense µs/case-iter "
             "| neighbour lists µs/case-iter | speed-up |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, (batch, sparsities) in plan.items():
        for sparsity in sparsities:
            community = generate(0, range(batch), n, UNIT_CHARGES, sparsity=sparsity, dtype=dtype)
            degree = int(neighbours.degrees(community).max())
            width = -(-degree // 8) * 8
            dense = _per_case_iteration(community, community, 0, iterations)
            if width > n:
                continue
            lists = _per_case_iteration(neighbours.neighbour_lists(community, width), community,
                                        width, iterations)
            lines.append(f"| {n} | {batch} | {sparsity:.0%} | {degree} | {width} | {dense:.3g} "
                         f"| {lists:.3g} | {dense / lists:.2f}× |")
            print(lines[-1], flush=True)
    return lines


def _per_case_iteration(problem, community, width: int, iterations: int) -> float:
    n_cases, dtype = community.n_cases, community.dtype
    params = ADMMParams(jnp.ones(n_cases, dtype), jnp.zeros(n_cases, dtype),
                        jnp.zeros(n_cases, dtype))
    options = DriverOptions(max_iter=iterations, block_size=default_block_size(community, width))

    def run():
        jax.block_until_ready(iterate(ConsensusADMM().static(), problem, params, options))

    run()
    return 1e6 * min(repeat(run)) / (n_cases * iterations)


def cases(quick: bool, dtype) -> list[str]:
    """Cases per second solved to the tolerance by residual-balanced ADMM and by ADMM with
    pairwise penalties (timed alternately), against Clarabel case by case."""
    sys.path.insert(0, str(ROOT / "tests"))
    from oracle import clarabel_p2p  # the tests' independent oracle: cvxpy + Clarabel

    plan = {25: (64, 3)} if quick else {25: (1000, 10), 50: (200, 5), 100: (40, 3)}
    tolerances = dict(eps_primal=1e-4, eps_dual=1e-4)
    solvers = {"admm, balanced": ConsensusADMM(rho_balance=3.0, **tolerances),
               "admm_pairwise": PairwiseADMM(**tolerances)}
    lines = ["| N | algorithm | cases | converged | median iterations | first call (s) | cases/s "
             "| lane utilisation | Clarabel s/case | speed-up over Clarabel |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, (batch, clarabel_cases) in plan.items():
        community = generate(0, range(batch), n, UNIT_CHARGES, dtype=dtype)
        results, first, seconds = {}, {}, {label: [] for label in solvers}
        for label, options in solvers.items():
            start = time.perf_counter()
            results[label] = jax.block_until_ready(p2p.run(community, options))
            first[label] = time.perf_counter() - start
        for _ in range(3):  # alternately, up to three rounds within about a minute
            for label, options in solvers.items():
                start = time.perf_counter()
                jax.block_until_ready(p2p.run(community, options))
                seconds[label].append(time.perf_counter() - start)
            if sum(map(sum, seconds.values())) > 60:
                break
        clarabel = []
        for index in range(clarabel_cases):
            start = time.perf_counter()
            clarabel_p2p(community, index)
            clarabel.append(time.perf_counter() - start)
        for label, result in results.items():
            iterations = np.asarray(result.iterations)
            utilisation = iterations.sum() / int(result.lane_iterations)
            per_case = min(seconds[label]) / batch
            lines.append(f"| {n} | {label} | {batch} | {int(np.asarray(result.converged).sum())} "
                         f"| {np.median(iterations):.0f} | {first[label]:.1f} | {1 / per_case:.3g} "
                         f"| {utilisation:.1%} | {np.median(clarabel):.3g} "
                         f"| {np.median(clarabel) / per_case:.1f}× |")
            print(lines[-1], flush=True)
    return lines


def _pinned(module: str, quick: bool, *args: str, capture: bool = False):
    """``python -m module`` in a child pinned to one core with XLA on one thread."""
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    return subprocess.run([*pin, sys.executable, "-m", module, *["--quick"] * quick, *args],
                          cwd=ROOT, env=dict(os.environ, **ONE_THREAD), check=True,
                          stdout=subprocess.PIPE if capture else None, text=True)


def _one_core(module: str, quick: bool, *args: str) -> list[str]:
    """The table lines ``python -m module`` prints, run pinned (``_pinned``)."""
    child = _pinned(module, quick, *args, capture=True)
    return [line for line in child.stdout.splitlines() if line.startswith("|")]


def outcome(quick: bool, dtype) -> list[str]:
    """The outcome engine vs Clarabel, one core each."""
    return _one_core("bench.outcome", quick)


def parts(quick: bool, dtype) -> list[str]:
    return _one_core("bench.kernel_parts", quick, "--dtype", jnp.dtype(dtype).name)


def compile_times(quick: bool, dtype) -> list[str]:
    from bench import compile_cache

    return compile_cache.measure("sweeps/sparsity.toml", compile_cache.DEFAULT_SETS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; print only")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated sections of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 arrays (importing jaxmarket sets nothing)
    chosen = args.only.split(",")
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    dtype = jnp.dtype(args.dtype)
    backend = jax.default_backend()
    command = "python -m bench.run" + " --quick" * args.quick + (
        f" --dtype {args.dtype}" if args.dtype != "float64" else "")
    if "kernel" in chosen:
        _pinned("bench.admm_kernel", args.quick, "--dtype", args.dtype)  # writes its section
    for name, measure, title, notes in (
            ("parts", parts, "Where the kernel's time goes",
             [f"- Pinned: `taskset -c 0` (when available), `XLA_FLAGS={ONE_THREAD['XLA_FLAGS']}`",
              "- The kernel benchmark's communities (random full graphs with charges, seed 0), "
              "rho = 1, eps = 0, 100 iterations from zero, the driver's blocks; nanoseconds per "
              "directed trade update, best of 3 interleaved runs. Solve only: the same ADMM "
              "with the exact local solve and no driver; limit: two plain Newton passes "
              "instead of the exact solve (`bench.kernel_parts`). Newton passes: those of a "
              "block's slowest agent, per ADMM iteration (the first 1 000 iterations on the "
              "first 4 blocks). Pass timings: one pass on one block of random targets, "
              "per trade"]),
            ("layouts", layouts, "ADMM iteration: dense layout vs neighbour lists",
             ["- Random communities with unit distance charges, rho = 1, eps = 0, fixed "
              "iterations; best of repeated runs after the first call; D = largest degree "
              "rounded up to a multiple of 8"]),
            ("cases", cases, "Cases solved to the tolerance vs Clarabel",
             ["- Random full-graph communities with unit distance charges; ADMM with residual "
              "balancing from rho = 1 and ADMM with pairwise penalties (`admm_pairwise`, its "
              "defaults), eps = 1e-4, max_iter = 10000, continuous driver; cases/s from the "
              "best of up to three runs after the first (compiling) one, the two algorithms "
              "timed alternately",
              "- Clarabel: the centralized P2P problem of the first cases, one by one, cvxpy "
              "model building included (median seconds per case)"]),
            ("outcome", outcome, "The outcome engine vs Clarabel, one core each",
             [f"- Pinned: `taskset -c 0` (when available), `XLA_FLAGS={ONE_THREAD['XLA_FLAGS']}`",
              "- Random full-graph communities with unit distance charges (seed 0). Engine: "
              "`exact` at its default `ipm_tolerance` (1e-12) through `markets.p2p.run` (driver, lanes), "
              "whole batch; Clarabel: `clarabel.DefaultSolver` on the same reduced QP, default "
              "settings, setup + solve timed, matrices built beforehand; qpax (where installed, "
              "N = 25 only: dense): `jax.vmap(qpax.solve_qp)` at its defaults (30 iterations) on "
              "Clarabel's cases, padded to one size, compiled beforehand. All interleaved, "
              "minimum of 3 repeats, per case",
              "- Objective errors relative to Clarabel at tolerances of 1e-10, on the cases "
              "Clarabel solves; the target is 1e-8 on every case"]),
            ("compile", compile_times, "Compilation time, cold and warm persistent cache",
             ["- `jaxmarket sweep sweeps/sparsity.toml --set run.cases_per_cell=50`, twice, "
              "each in a fresh process with the same empty `JAX_COMPILATION_CACHE_DIR` and a "
              "fresh output folder; times from JAX's compilation events (`jax.monitoring`). "
              "XLA compile = backend compile minus persistent-cache reads; tracing and "
              "lowering are redone by JAX in every process"])):
        if name in chosen:
            lines = header(f"{title} ({backend}, {dtype.name})",
                           command + f" --only {name}", dtype, notes)
            section = "\n".join(lines + measure(args.quick, dtype) + [""])
            print(section)
            if not args.quick:
                write_section(section, f"{name}-{backend}-{dtype.name}")
    if "end-to-end" in chosen:
        subprocess.run([sys.executable, "-m", "bench.end_to_end"], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
