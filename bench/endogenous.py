"""Endogenous network charges on New England: the cost of the system operator's step.

    python -m bench.endogenous [--tol 1e-3] [--repeats 3]

Both mechanisms (``endogenous_dc``, 4.24, and ``endogenous_dc_decentralized``, 4.29) on the
published case at the thesis' setting (rho = 1, eps = --tol), float64, as ``jaxmarket
solve`` runs them (``markets.endogenous.run``, continuous driver). The first run includes
compilation; then the minimum over ``--repeats`` runs of the solve alone, in wall and in
process CPU seconds (on a shared machine the CPU time moves less than the wall time).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.endogenous import DecentralizedEndogenousADMM, EndogenousADMM
from jaxmarket.charges import load_grid_case
from jaxmarket.congestion import line_limits
from jaxmarket.markets import endogenous


def timed(run):
    wall, cpu = time.perf_counter(), time.process_time()
    result = jax.block_until_ready(run())
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    grid_case = load_grid_case("new_england")
    community = grid_case.case.community
    limits = line_limits(grid_case.grid.network, community.n_cases)
    print(f"New England, rho = 1, eps = {args.tol:g}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| mechanism | iterations | first run (s, with compilation) | solve wall (s) | "
          "solve CPU (s) | wall per iteration (ms) |")
    print("|---|---|---|---|---|---|")
    for cls in (EndogenousADMM, DecentralizedEndogenousADMM):
        algorithm = cls(rho=1.0, eps_primal=args.tol, eps_dual=args.tol, max_iter=100_000)
        run = lambda: endogenous.run(community, limits, algorithm)  # noqa: E731
        result, first, _ = timed(run)
        repeats = [timed(run)[1:] for _ in range(args.repeats)]
        wall, cpu = min(r[0] for r in repeats), min(r[1] for r in repeats)
        iterations = int(jnp.asarray(result.iterations)[0])
        print(f"| {cls.name} | {iterations} | {first:.1f} | {wall:.2f} | {cpu:.2f} | "
              f"{1e3 * wall / iterations:.2f} |")


if __name__ == "__main__":
    main()
