"""Throughput of the batched JAX ADMM kernel (SPEC 3.1) against the plain NumPy loop.

    python -m bench.admm_kernel [--quick] [--dtype float32]

For every agent count N and batch size B, random full-graph communities with charges run
a fixed number of iterations (``eps = 0``, so no case stops early) through
``driver.iterate(ConsensusADMM().static(), ...)``. The first call includes tracing and compilation;
the following calls are timed (best and median; the machine is shared, so the best run is
the one least disturbed by other work and gives the throughput). The NumPy baseline
(``bench.numpy_admm``) runs the first few cases of each N in the same process for the same
number of iterations. "The machine's limit" is a straight-line XLA iteration of the same
arithmetic (``straight_line``: the same blocks, two fixed Newton passes of the local
solve, no exactness safeguard, no residuals, no convergence test, no freezing), timed
interleaved with the kernel, so the ratio kernel / limit of a row compares two runs under
the same load. A full run rewrites its own dtype's section of ``bench/RESULTS.md``
and leaves the rest of the file as it is; ``--quick`` only prints.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.markets.lanes import default_block_size

from bench.numpy_admm import case_arrays, solve_case

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADLINE = (25, 1000)  # (N, B)
HEADLINE_TARGET = 80.0  # speed-up over the NumPy loop the iteration aims for (N = 25, B = 1000)
SEED = 0
COMMUNITY = GeneratorParams(charge_per_distance=10.0)  # gamma up to ~7 EUR/MWh per side


def _newton_pass(mu, target, lo, hi, a, b, p_min, p_max, rho):
    """One plain Newton step on h(mu) = sum_m clip(target_m - mu / rho, lo_m, hi_m) - p(mu),
    without the exactness safeguard of ``jaxmarket.local``."""
    free_trades = target - mu[..., None] / rho[..., None]
    free = (free_trades > lo) & (free_trades < hi)
    safe_a = jnp.where(a > 0, a, 1.0)
    injection = jnp.clip((mu - b) / safe_a, p_min, p_max)
    injection_free = (a > 0) & (injection > p_min) & (injection < p_max)
    slope = free.sum(-1).astype(mu.dtype) / rho + jnp.where(injection_free, 1 / safe_a, 0.0)
    excess = jnp.clip(free_trades, lo, hi).sum(-1) - injection
    return jnp.where(slope > 0, mu + excess / jnp.where(slope > 0, slope, 1.0), mu)


def whole_blocks(tree, size: int):
    """The leading (case) axis of every leaf cut into blocks of ``size`` cases; a trailing
    partial block is left out."""
    n_blocks = jax.tree_util.tree_leaves(tree)[0].shape[0] // size
    return jax.tree_util.tree_map(
        lambda v: v[:n_blocks * size].reshape((n_blocks, size) + v.shape[1:]), tree)


@partial(jax.jit, static_argnames=("iterations", "block_size"))
def straight_line(community, rho, iterations: int, block_size: int):
    """ADMM at fixed rho as a straight-line XLA iteration: consensus, two Newton passes of
    the local solve from the last perceived price, the trades and the price update, and
    nothing else (no residuals, convergence test, freezing or exact fallback). The same
    cache-sized blocks as the driver (a trailing partial block is left out)."""
    c, rho = whole_blocks((community, rho), block_size)

    def block(args):
        c, rho = args
        rho_agent = jnp.broadcast_to(rho[:, None], c.a.shape)
        rho_trade = rho[:, None, None]

        def iteration(_, carry):
            trades, prices, mu = carry
            consensus = 0.5 * (trades - jnp.swapaxes(trades, -1, -2))
            target = jnp.where(c.edges, consensus + (prices - c.charge) / rho_trade, 0.0)
            for _ in range(2):
                mu = _newton_pass(mu, target, c.trade_min, c.trade_max, c.a, c.b, c.p_min,
                                  c.p_max, rho_agent)
            trades = jnp.clip(target - mu[..., None] / rho_agent[..., None], c.trade_min,
                              c.trade_max)
            mismatch = trades + jnp.swapaxes(trades, -1, -2)
            prices = jnp.where(c.edges, prices - 0.5 * rho_trade * mismatch, 0.0)
            return trades, prices, mu

        zeros = jnp.zeros_like(c.charge)
        return jax.lax.fori_loop(0, iterations, iteration, (zeros, zeros, c.a * 0))

    return jax.lax.map(block, (c, rho))


class Plan(NamedTuple):
    batches: dict  # N -> batch sizes
    iterations: int
    numpy_cases: int  # cases of each N run through the NumPy loop


# B * N^2 <= ~1e6 trades: a timed run takes seconds on two cores and the full run a few
# minutes on a shared machine; beyond, throughput only drops (see RESULTS.md).
FULL = Plan({10: (1, 100, 1000), 25: (1, 100, 1000), 50: (1, 100, 400), 100: (1, 10, 100),
             200: (1, 10)}, iterations=100, numpy_cases=3)
QUICK = Plan({10: (1, 100), 25: (1, 1000), 100: (1, 10)}, iterations=50, numpy_cases=2)


class Row(NamedTuple):
    n: int
    batch: int
    first_s: float  # first call: trace, compile and one run
    second_s: float
    best_s: float  # over the second and later calls
    median_s: float
    case_iterations: int
    numpy_s: float  # NumPy seconds per case-iteration
    limit_s: float  # the straight-line iteration: best seconds per case-iteration

    @property
    def compile_s(self):
        return self.first_s - self.second_s

    @property
    def case_iter_rate(self):
        return self.case_iterations / self.best_s

    @property
    def trade_rate(self):
        """Directed trade updates per second: N (N - 1) per case-iteration."""
        return self.n * (self.n - 1) * self.case_iter_rate

    @property
    def speedup(self):
        return self.numpy_s * self.case_iter_rate

    @property
    def ns_per_trade(self):
        """Nanoseconds per directed trade update (one thread of the kernel)."""
        return 1e9 / self.trade_rate

    @property
    def limit_ns_per_trade(self):
        return 1e9 * self.limit_s / (self.n * (self.n - 1))


def repeat(run, min_runs=2, max_runs=5, budget_s=3.0):
    """Wall times of repeated calls: at least ``min_runs``, more while within budget."""
    times = []
    while len(times) < min_runs or (len(times) < max_runs and sum(times) < budget_s):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def time_kernel(community, iterations):
    """(first call, second and later calls, case-iterations run, the straight-line
    iteration's best seconds per case-iteration) of the ADMM kernel; the two are timed
    alternately."""
    n_cases = community.n_cases
    dtype = community.dtype
    params = ADMMParams(jnp.ones(n_cases, dtype), jnp.zeros(n_cases, dtype),
                        jnp.zeros(n_cases, dtype))
    # The block size markets.solve uses on this backend (cache-sized blocks on a CPU).
    block_size = min(default_block_size(community) or n_cases, n_cases)
    options = DriverOptions(max_iter=iterations, block_size=block_size)

    def run():
        return jax.block_until_ready(iterate(ConsensusADMM().static(), community, params, options))

    def limit():
        return jax.block_until_ready(straight_line(community, params.rho, iterations,
                                                   block_size))

    start = time.perf_counter()
    result = run()
    first = time.perf_counter() - start
    limit()
    times, limit_times = [], []
    while len(times) < 2 or (len(times) < 5 and sum(times) + sum(limit_times) < 6.0):
        times += repeat(run, min_runs=1, max_runs=1)
        limit_times += repeat(limit, min_runs=1, max_runs=1)
    limit_cases = n_cases // block_size * block_size
    return (first, times, int(np.asarray(result.iterations).sum()),
            min(limit_times) / (limit_cases * iterations))


def time_numpy(community, n_cases, iterations):
    """Best seconds per case-iteration of the NumPy loop over the first ``n_cases``."""
    cases = [case_arrays(community, i) for i in range(n_cases)]

    def run():
        for case in cases:
            solve_case(**case, rho=1.0, eps=0.0, max_iter=iterations)

    return min(repeat(run, min_runs=3, max_runs=10, budget_s=5.0)) / (n_cases * iterations)


def benchmark(plan: Plan, dtype):
    rows = []
    for n, batches in plan.batches.items():
        largest = generate(SEED, np.arange(max(batches)), n, COMMUNITY, dtype=dtype)
        numpy_s = time_numpy(largest, plan.numpy_cases, plan.iterations)
        for batch in batches:
            community = jax.tree_util.tree_map(lambda v: v[:batch], largest)
            first, times, case_iterations, limit_s = time_kernel(community, plan.iterations)
            row = Row(n, batch, first, times[0], min(times), statistics.median(times),
                      case_iterations, numpy_s, limit_s)
            print(format_row(row), flush=True)
            rows.append(row)
    return rows


TABLE_HEADER = (
    "| N | B | case-iter/s | trade updates/s | ns/trade update | limit ns/trade update "
    "| kernel / limit | µs/case-iter | NumPy µs/case-iter | speed-up "
    "| first / second call (s) | compile (s) | run best / median (s) |\n"
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def format_row(r: Row) -> str:
    return (f"| {r.n} | {r.batch} | {r.case_iter_rate:.3g} | {r.trade_rate:.3g} "
            f"| {r.ns_per_trade:.3g} | {r.limit_ns_per_trade:.3g} "
            f"| {r.ns_per_trade / r.limit_ns_per_trade:.2f}× "
            f"| {1e6 / r.case_iter_rate:.3g} | {1e6 * r.numpy_s:.3g} | {r.speedup:.1f}× "
            f"| {r.first_s:.2f} / {r.second_s:.3g} | {r.compile_s:.2f} "
            f"| {r.best_s:.3g} / {r.median_s:.3g} |")


def headline(rows) -> str:
    r = next(r for r in rows if (r.n, r.batch) == HEADLINE)
    verdict = "meets" if r.speedup >= HEADLINE_TARGET else "misses"
    return (f"Headline N = {r.n}, B = {r.batch}: {r.case_iter_rate:.3g} case-iterations/s, "
            f"{r.trade_rate:.3g} trade updates/s ({r.ns_per_trade:.3g} ns each; the "
            f"straight-line limit {r.limit_ns_per_trade:.3g} ns, "
            f"{r.ns_per_trade / r.limit_ns_per_trade:.2f}×), {r.speedup:.1f}× the NumPy loop "
            f"({1e6 * r.numpy_s:.0f} µs vs {1e6 / r.case_iter_rate:.1f} µs per case-iteration; "
            f"{verdict} the {HEADLINE_TARGET:.0f}× target).")


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def kernel_version() -> str:
    """Commit of the measured kernel, marked when jaxmarket/ has uncommitted changes."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "jaxmarket"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" with uncommitted changes in jaxmarket/" if dirty else "")


def report(rows, plan: Plan, dtype, command: str, load_before, load_after) -> str:
    device = jax.devices()[0]
    iterations = plan.iterations
    return "\n".join([
        f"## CPU, {jnp.dtype(dtype).name}",
        "",
        f"- Command: `{command}`",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (shared machine)",
        f"- Pinned to cores {sorted(os.sched_getaffinity(0))}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')}",
        f"- jax {jax.__version__}, device {device.platform} ({device.device_kind}), "
        f"dtype {jnp.dtype(dtype).name}, kernel at {kernel_version()}",
        f"- Random full-graph communities with charges (generator seed {SEED}, "
        f"charge_per_distance {COMMUNITY.charge_per_distance}), rho = 1, eps = 0, "
        f"{iterations} iterations per run",
        f"- Throughput from the best run after the first call; compile = first − second "
        f"call. Limit: the straight-line iteration (`straight_line`: same blocks, two "
        f"fixed Newton passes, no residuals, tests or freezing), best run, timed "
        f"alternately with the kernel. NumPy: "
        f"the first {plan.numpy_cases} cases of each N, same dtype and iterations, best of "
        f"repeated runs.",
        "",
        TABLE_HEADER,
        *map(format_row, rows),
        "",
        headline(rows),
        "",
    ])


def write_section(section: str, key: str, path: Path = RESULTS):
    """Replace (or append) the block between this key's markers, keeping the rest."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    block = f"{begin}\n{section}{end}\n"
    text = path.read_text() if path.exists() else "# ADMM kernel benchmark\n\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + "\n" + block
    path.write_text(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)  # float64 arrays (importing jaxmarket sets nothing)
    plan = QUICK if args.quick else FULL
    dtype = jnp.dtype(args.dtype)
    command = "python -m bench.admm_kernel" + " --quick" * args.quick + (
        f" --dtype {args.dtype}" if args.dtype != "float64" else "")

    load_before = os.getloadavg()
    print(TABLE_HEADER)
    rows = benchmark(plan, dtype)
    section = report(rows, plan, dtype, command, load_before, os.getloadavg())
    print()
    print(section)
    if not args.quick:
        write_section(section, f"cpu-{dtype.name}")


if __name__ == "__main__":
    main()
