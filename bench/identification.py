"""Where ADMM's iterations go: finding the active trades, then converging on them.

    python -m bench.identification [--n-agents 25] [--cases 100]

Random full-graph communities (generator seed 0, case indices 0..cases-1) with unit
distance charges and without charges, solved to the stopping rule (eps = 1e-4) by
residual-balanced ADMM and ``admm_pairwise`` (defaults, and with the symmetric rule,
``pair_rho_stiffen = 1.5``). Each case is then replayed step by step from the start; its
*identification* is the last iteration at which the set of non-zero trades differed from
the final one (the local solve clips a trade at its bound exactly, so an inactive trade is
0.0). Prints medians over the cases: iterations, identification, the rest, and the share
of the iterations spent identifying. An iteration-count analysis (docs/acceleration.md,
"Why the charged case resists acceleration"), not a timing.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxmarket import api  # noqa: E402
from jaxmarket.driver import DriverOptions, iterate  # noqa: E402

ALGORITHMS = {
    "admm, balanced": ("admm", {"rho_balance": 3.0}),
    "admm_pairwise": ("admm_pairwise", {}),
    "admm_pairwise, symmetric rule": ("admm_pairwise", {"pair_rho_stiffen": 1.5}),
}


def identification(algorithm, community, max_iter: int = 10_000):
    """(iterations, identification iteration) of every case."""
    n_cases = community.n_cases
    static, params = algorithm.static(), algorithm.params(n_cases, jnp.float64)
    result = iterate(static, community, params, DriverOptions(max_iter=max_iter))
    iterations = np.asarray(result.iterations)
    edges = np.asarray(community.edges)
    final = (np.asarray(result.state.trades) != 0) & edges
    state = static.init(community, params)
    step = jax.jit(lambda s: static.step(community, params, s))
    identified = np.zeros(n_cases, int)
    for k in range(1, iterations.max() + 1):
        state = step(state)
        active = (np.asarray(state.trades) != 0) & edges
        identified[(active != final).any((1, 2)) & (k <= iterations)] = k
    return iterations, identified


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-agents", type=int, default=25)
    parser.add_argument("--cases", type=int, default=100)
    args = parser.parse_args(argv)
    print(f"N = {args.n_agents}, {args.cases} cases, eps = 1e-4; medians over the cases\n")
    print("| charges | algorithm | iterations | identification | after it "
          "| identification / iterations |")
    print("|---|---|---:|---:|---:|---:|")
    for charge in (1.0, 0.0):
        community = api.generate(args.n_agents, range(args.cases), charge_per_distance=charge)
        for label, (name, options) in ALGORITHMS.items():
            iterations, identified = identification(api.algorithm(name, **options), community)
            print(f"| {'c = 1' if charge else 'none'} | {label} | {np.median(iterations):g} | "
                  f"{np.median(identified):g} | {np.median(iterations - identified):g} | "
                  f"{np.median(identified / iterations):.2f} |", flush=True)


if __name__ == "__main__":
    main()
