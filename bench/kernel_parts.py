"""Where the ADMM kernel's time goes, measured in one run.

    python -m bench.kernel_parts [--quick]

Run by ``python -m bench.run --only parts`` in a child process pinned to one core with XLA
on one thread. The communities, penalty and iterations are the kernel benchmark's
(``bench.admm_kernel``: random full graphs with charges, rho = 1, eps = 0, 100 iterations
from zero, the driver's cache-sized blocks). Three iterations of the same ADMM, timed
interleaved, best of the repeats, in nanoseconds per directed trade update:

- *kernel*: the package's ADMM through the driver (``driver.iterate``);
- *solve only*: consensus, the package's exact local solve
  (``jaxmarket.local.solve_agents``) and the price update, without the driver's
  residuals, convergence and finiteness tests or freezing;
- *limit*: ``bench.admm_kernel.straight_line``, two plain Newton passes instead of the
  exact solve.

kernel − solve only is the driver's bookkeeping; solve only − limit is what the exact
solve costs beyond two plain passes. The solve's Newton loop runs until the slowest agent
of a block is done: the table counts its passes per ADMM iteration (a Newton step and its
certificate at least) over the first 100 iterations and over the first 1 000 (the first
blocks only), and times one pass of the exact method (``jaxmarket.local``), one plain
Newton pass and one sum of the clipped trades, each on one block of the same shape, per
trade.
"""

from __future__ import annotations

import argparse
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from bench.admm_kernel import (COMMUNITY, SEED, _newton_pass, repeat, straight_line,
                                whole_blocks)
from jaxmarket import local
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.generator import generate
from jaxmarket.markets.lanes import default_block_size

ITERATIONS = 100
LONG = 1_000  # iterations of the step count's second window
STEP_REPEATS = 50  # passes per timed call of the step timings
FULL = ((25, 1000), (100, 100))
QUICK = ((25, 260), (100, 10))


def _best_interleaved(runs: dict, rounds: int) -> dict:
    """Best seconds of each run (a callable returning arrays) after a warm-up call, the
    runs interleaved ``rounds`` times so that all see the same load."""
    for run in runs.values():
        jax.block_until_ready(run())
    best = dict.fromkeys(runs, np.inf)
    for _ in range(rounds):
        for name, run in runs.items():
            best[name] = min(best[name], *repeat(lambda: jax.block_until_ready(run()), 1, 1))
    return best


@partial(jax.jit, static_argnames=("iterations", "block_size"))
def solve_only(community, rho, iterations: int, block_size: int):
    """ADMM at fixed rho with the exact local solve and nothing else (the same blocks as
    the driver, a trailing partial block left out). Returns the final trades and the
    Newton passes each block ran."""

    def block(args):
        c, rho = args
        rho_agent = jnp.broadcast_to(rho[:, None], c.a.shape)
        rho_trade = rho[:, None, None]

        def iteration(_, carry):
            trades, prices, mu, steps = carry
            consensus = 0.5 * (trades - jnp.swapaxes(trades, -1, -2))
            target = jnp.where(c.edges, consensus + (prices - c.charge) / rho_trade, 0.0)
            decision = local.solve_agents(target, c.trade_min, c.trade_max, c.a, c.b, c.p_min,
                                          c.p_max, rho_agent, guess=mu)
            mismatch = decision.trades + jnp.swapaxes(decision.trades, -1, -2)
            prices = jnp.where(c.edges, prices - 0.5 * rho_trade * mismatch, 0.0)
            return decision.trades, prices, decision.perceived_price, steps + decision.newton_steps

        zeros = jnp.zeros_like(c.charge)
        trades, _, _, steps = jax.lax.fori_loop(0, iterations, iteration,
                                                (zeros, zeros, c.a * 0, jnp.int32(0)))
        return trades, steps

    return jax.lax.map(block, whole_blocks((community, rho), block_size))


def _step_timings(community, block_size: int) -> tuple[float, float, float]:
    """Seconds per trade of one pass of the exact method, one plain pass and one sum of the
    clipped trades, on the first block with random targets around the trade bounds."""
    c = jax.tree_util.tree_map(lambda v: v[:block_size], community)
    noise = jax.random.normal(jax.random.key(SEED), c.charge.shape, c.charge.dtype)
    target = jnp.where(c.edges, noise * jnp.maximum(c.trade_max - c.trade_min, 1.0), 0.0)
    rho = jnp.ones_like(c.a)
    problem = local._LocalProblem.build(target, c.trade_min, c.trade_max, c.a, c.b, c.p_min,
                                        c.p_max, rho)
    # Every repeat starts away from the root, so that each step does the full work.
    drift = 1e-3 * jnp.arange(STEP_REPEATS, dtype=rho.dtype)

    @jax.jit
    def exact(problem, mu):
        def one(i, m):
            start = local._NewtonState.start(problem, m)
            return local._newton_step(problem, start).mu + drift[i]

        return jax.lax.fori_loop(0, STEP_REPEATS, one, mu)

    @jax.jit
    def plain(problem, mu):
        def one(i, m):
            return _newton_pass(m, problem.target, problem.lo, problem.hi, problem.a, problem.b,
                                problem.p_min, problem.p_max, problem.rho) + drift[i]

        return jax.lax.fori_loop(0, STEP_REPEATS, one, mu)

    @jax.jit
    def row_sum(problem, mu):
        def one(i, m):
            return m + 1e-3 * problem.trades(m).sum(-1) + drift[i]

        return jax.lax.fori_loop(0, STEP_REPEATS, one, mu)

    mu = jnp.zeros_like(rho)
    best = _best_interleaved({f: partial(f, problem, mu) for f in (exact, plain, row_sum)}, 5)
    return tuple(b / (STEP_REPEATS * target.size) for b in best.values())


def measure(n: int, batch: int, dtype) -> dict:
    community = generate(SEED, np.arange(batch), n, COMMUNITY, dtype=dtype)
    size = min(default_block_size(community) or batch, batch)
    params = ADMMParams(jnp.ones(batch, dtype), jnp.zeros(batch, dtype), jnp.zeros(batch, dtype))
    options = DriverOptions(max_iter=ITERATIONS, block_size=size)
    runs = {
        "kernel": lambda: iterate(ConsensusADMM().static(), community, params, options),
        "solve only": lambda: solve_only(community, params.rho, ITERATIONS, size),
        "limit": lambda: straight_line(community, params.rho, ITERATIONS, size),
    }
    best = _best_interleaved(runs, 3)
    timed_cases = batch // size * size  # solve only and the limit leave out a partial block
    trade_updates = ITERATIONS * n * (n - 1)
    ns = {name: 1e9 * t / ((batch if name == "kernel" else timed_cases) * trade_updates)
          for name, t in best.items()}
    _, steps = solve_only(community, params.rho, ITERATIONS, size)
    first_blocks = jax.tree_util.tree_map(lambda v: v[:min(4, batch // size) * size], community)
    _, long_steps = solve_only(first_blocks, params.rho[:first_blocks.n_cases], LONG, size)
    exact, plain, row_sum = _step_timings(community, size)
    return dict(n=n, batch=batch, block=size, **ns,
                steps=float(np.mean(steps)) / ITERATIONS, long_steps=float(np.mean(long_steps)) / LONG,
                exact_ns=1e9 * exact, plain_ns=1e9 * plain, sum_ns=1e9 * row_sum)


HEADER = ("| N | B | block | kernel ns | solve only ns | limit ns | driver ns (kernel − solve only) "
          f"| Newton passes per iteration, first {ITERATIONS} / first {LONG:_} "
          "| exact Newton pass ns | plain Newton pass ns | sum of clipped trades ns |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|").replace("_", " ")


def format_row(r: dict) -> str:
    return (f"| {r['n']} | {r['batch']} | {r['block']} | {r['kernel']:.3g} | {r['solve only']:.3g} "
            f"| {r['limit']:.3g} | {r['kernel'] - r['solve only']:.3g} "
            f"| {r['steps']:.2f} / {r['long_steps']:.2f} | {r['exact_ns']:.3g} "
            f"| {r['plain_ns']:.3g} | {r['sum_ns']:.3g} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    print(HEADER)
    for n, batch in QUICK if args.quick else FULL:
        print(format_row(measure(n, batch, jnp.dtype(args.dtype))), flush=True)


if __name__ == "__main__":
    main()
