"""RCI and PCMBED at two scales, with both tunings (docs/studies/algorithms.md, "RCI and
the units"): iterations to an optimality gap of 1e-3 and 1e-4 on the same random
communities drawn at this generator's scale (MW, EUR/MWh) and at the thesis' (kW,
c$/kWh, ``generator.THESIS_SCALE``).

    python3 -m bench.rci_scale [--cases 5] [--max-iter 100000]

Full P2P graph, N = 25, no charges; every case stops on the thesis rule and the ADMM
rule at 1e-4 or at max_iter; the gap is traced every 100 iterations.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=5)
    parser.add_argument("--max-iter", type=int, default=100_000)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    from jaxmarket import algorithms
    from jaxmarket.generator import THESIS_SCALE, GeneratorParams, generate
    from jaxmarket.markets import solve

    scales = {"MW, EUR/MWh": GeneratorParams(), "kW, c$/kWh (thesis)": THESIS_SCALE}
    print("| scale | algorithm | tuning | converged | iterations to 1e-3 (median, max) | "
          "iterations to 1e-4 (median, max) | final gap (max) |")
    print("|---|---|---|---|---|---|---|")
    for scale, params in scales.items():
        community = generate(0, range(args.cases), 25, params)
        for name in ("rci", "pcmbed"):
            for tuning in ("thesis", "reference_2018"):
                algorithm = algorithms.get(name)(tuning=tuning, max_iter=args.max_iter,
                                                 check_every=100, trace_every=100)
                rows = solve(community, algorithm).rows

                def spread(column):
                    values = np.asarray(rows[column], float)
                    if np.isnan(values).any():  # not reached within max_iter
                        return f"{np.isnan(values).sum()} of {values.size} not reached"
                    return f"{np.median(values):.0f}, {values.max():.0f}"

                print(f"| {scale} | {algorithm.label} | {tuning} | "
                      f"{int(np.sum(rows['converged']))}/{args.cases} | "
                      f"{spread('iterations_to_gap_e3')} | {spread('iterations_to_gap_e4')} | "
                      f"{np.max(rows['optimality_gap']):.1e} |", flush=True)


if __name__ == "__main__":
    main()
