"""The outcome engine (``algorithm = "exact"``) against Clarabel's direct API, per core.

    python -m bench.outcome [--quick]

Run by ``python -m bench.run --only outcome`` in a child process pinned to one core
(``taskset -c 0`` where available) with XLA on one thread, so that both sides get one core.
Random full-graph communities with unit distance charges (generator seed 0). Both sides
solve the centralized P2P problem in its reduced form (one variable per pair of agents,
the balance ``p = A x`` as equality rows, boxes as inequalities); Clarabel gets it
through ``clarabel.DefaultSolver(P, q, A, b, cones, settings)`` with the matrices built
beforehand (setup and solve are timed, model building is not). Accuracy: the objective of
the cases Clarabel solves against Clarabel at the test oracle's tolerances, 1e-10 (an
independent truth); both sides must be within the target relative error on every case. Timing: the engine on the batch as a study runs
it (``markets.p2p.run``: driver, lanes, blocks), Clarabel case by case on the same cases,
the two interleaved, the minimum of the repeats.

Where it fits, qpax (a batched dense interior point in JAX, ``jax.vmap`` of
``qpax.solve_qp``, at its default 30 iterations) runs on the same cases as Clarabel in the
same interleaving: the reduced QPs of a batch padded to one size (a padding variable is
boxed in [0, 1] at no cost and touches nothing). Dense, so at N = 25 only: at N = 100 one
case has 2 600 variables and 5 000 inequalities, dense systems of that size per step. qpax
is optional (``pip install -e '.[bench]'``); without it its columns read "not installed".
"""

from __future__ import annotations

import argparse
import sys
import time

import clarabel
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from jaxmarket.algorithms.exact import Exact
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.markets import p2p
from jaxmarket.metrics import p2p_objective

TARGET = 1e-8  # relative objective error both sides must reach
# The engine at its default tolerance: 1e-11 left objective errors up to 2.3e-8 (N = 25).
ENGINE_TOLERANCE = 1e-12
CLARABEL = dict(verbose=False)  # its default tolerances (1e-8) already reach TARGET
TRUTH = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, max_iter=200, verbose=False)
FULL = {25: (200, 40), 100: (20, 6)}  # N -> (engine batch, Clarabel cases)
QUICK = {25: (26, 6), 100: (4, 2)}
REPEATS = 3
QPAX_SIZES = (25,)  # where its dense systems fit (module doc)


def clarabel_problem(community, index: int):
    """The reduced QP of case ``index`` as Clarabel's (P, q, A, b, cones), and a function
    from its solution to the objective."""
    c = {k: np.asarray(v[index], np.float64) for k, v in community._asdict().items()}
    active = c["active"].astype(bool)
    upper = np.triu(c["edges"].astype(bool) & active[:, None] & active[None, :], 1)
    lo = np.maximum(c["trade_min"], -c["trade_max"].T)[upper]
    hi = np.minimum(c["trade_max"], -c["trade_min"].T)[upper]
    sender, receiver = np.nonzero(upper)
    free = hi > lo
    fixed_flow = np.zeros(len(active))
    np.add.at(fixed_flow, sender[~free], lo[~free])
    np.add.at(fixed_flow, receiver[~free], -lo[~free])
    cost = (c["charge"] - c["charge"].T)[upper]
    constant = float(cost[~free] @ lo[~free])  # the fixed trades' charges
    sender, receiver, lo, hi, cost = sender[free], receiver[free], lo[free], hi[free], cost[free]
    agents = np.flatnonzero(active)
    n, e = agents.size, sender.size
    where = -np.ones(len(active), int)
    where[agents] = np.arange(n)
    columns = np.arange(e)
    incidence = sp.csc_matrix((np.r_[np.ones(e), -np.ones(e)],
                               (np.r_[where[sender], where[receiver]], np.r_[columns, columns])),
                              shape=(n, e))
    eye_x, eye_p = sp.identity(e, format="csc"), sp.identity(n, format="csc")
    zero_xp, zero_px = sp.csc_matrix((e, n)), sp.csc_matrix((n, e))
    balance = sp.hstack([-incidence, eye_p])  # p - A x = fixed flows
    boxes = sp.vstack([sp.hstack([eye_x, zero_xp]), sp.hstack([-eye_x, zero_xp]),
                       sp.hstack([zero_px, eye_p]), sp.hstack([zero_px, -eye_p])])
    A = sp.vstack([balance, boxes]).tocsc()
    b = np.r_[fixed_flow[agents], hi, -lo, c["p_max"][agents], -c["p_min"][agents]]
    P = sp.diags(np.r_[np.zeros(e), c["a"][agents]]).tocsc()
    q = np.r_[cost, c["b"][agents]]
    cones = [clarabel.ZeroConeT(n), clarabel.NonnegativeConeT(2 * e + 2 * n)]

    def objective(z):
        return float(0.5 * z @ (P @ z) + q @ z + constant)

    return (P, q, A, b, cones), objective


def qpax_batch(problems, n: int):
    """The reduced QPs (``clarabel_problem``) of ``n`` agents each, dense and padded to one
    size as qpax's (Q, q, A, b, G, h) stacked over the cases, and the columns of each
    case's own variables."""
    width = max(P.shape[0] for (P, *_), _ in problems) - n  # trade variables, padded
    size, rows = width + n, 2 * width + 2 * n
    stacked, columns = [], []
    for (P, q, A, b, _), _ in problems:
        A, e = A.toarray(), P.shape[0] - n
        own = np.r_[np.arange(e), width + np.arange(n)]  # trades, then powers after the padding
        Q = np.zeros((size, size))
        Q[np.ix_(own, own)] = P.toarray()
        linear = np.zeros(size)
        linear[own] = q
        equality = np.zeros((n, size))
        equality[:, own] = A[:n]
        G, h = np.zeros((rows, size)), np.zeros(rows)
        box = np.r_[np.arange(e), width + np.arange(e), 2 * width + np.arange(2 * n)]
        G[np.ix_(box, own)] = A[n:]
        h[box] = b[n:]
        padding = e + np.arange(width - e)
        G[padding, padding], h[padding] = 1.0, 1.0  # x <= 1
        G[width + padding, padding] = -1.0  # -x <= 0
        stacked.append((Q, linear, equality, b[:n], G, h))
        columns.append(own)
    return [jnp.asarray(np.stack(part)) for part in zip(*stacked)], columns


def solve_clarabel(problem, options=CLARABEL):
    settings = clarabel.DefaultSettings()
    for key, value in options.items():
        setattr(settings, key, value)
    solver = clarabel.DefaultSolver(*problem, settings)
    return solver.solve()


def measure(n: int, batch: int, clarabel_cases: int, qpax_solve=None) -> dict:
    """Engine, Clarabel and (``qpax_solve``, from ``qpax_solver``) qpax on the same cases."""
    community = generate(0, list(range(batch)), n, GeneratorParams(charge_per_distance=1.0),
                         dtype=jnp.float64)
    engine = Exact(ipm_tolerance=ENGINE_TOLERANCE)

    def run_engine():
        return jax.block_until_ready(p2p.run(community, engine))

    start = time.perf_counter()
    result = run_engine()
    first = time.perf_counter() - start
    objective = np.asarray(p2p_objective(community, result.state.trades))[:clarabel_cases]
    problems = [clarabel_problem(community, i) for i in range(clarabel_cases)]
    truth, found = [], []
    for problem, value in problems:
        for options, values in ((TRUTH, truth), (CLARABEL, found)):
            solution = solve_clarabel(problem, options)
            assert str(solution.status) == "Solved", solution.status
            values.append(value(np.asarray(solution.x)))
    truth = np.array(truth)
    scale = np.maximum(1.0, np.abs(truth))
    engine_error = np.max(np.abs(objective - truth) / scale)
    errors = np.abs(np.array(found) - truth) / scale
    data, qpax = None, dict(status="not installed" if qpax_solve is None else "does not fit")
    if qpax_solve is not None and n in QPAX_SIZES:
        data, columns = qpax_batch(problems, n)
        x, *_, converged, _ = jax.block_until_ready(qpax_solve(*data))
        values = [value(np.asarray(x[i])[columns[i]]) for i, (_, value) in enumerate(problems)]
        qpax = dict(status="", converged=int(np.asarray(converged).sum()),
                    error=float(np.max(np.abs(np.array(values) - truth) / scale)), s=[])
    engine_s, clarabel_s = [], []
    for _ in range(REPEATS):  # interleaved
        start = time.perf_counter()
        run_engine()
        engine_s.append((time.perf_counter() - start) / batch)
        start = time.perf_counter()
        for problem, _ in problems:
            solve_clarabel(problem)
        clarabel_s.append((time.perf_counter() - start) / clarabel_cases)
        if data is not None:
            start = time.perf_counter()
            jax.block_until_ready(qpax_solve(*data))
            qpax["s"].append((time.perf_counter() - start) / clarabel_cases)
    return dict(n=n, batch=batch, clarabel_cases=clarabel_cases, first_s=first,
                converged=int(np.asarray(result.converged).sum()),
                engine_error=float(engine_error), clarabel_error=float(max(errors)),
                engine_s=min(engine_s), clarabel_s=min(clarabel_s), qpax=qpax)


def qpax_solver():
    """qpax's solve, vmapped over the cases and compiled; None when it is not installed."""
    try:
        import qpax
    except ImportError:
        return None
    return jax.jit(jax.vmap(qpax.solve_qp))


def table(plan: dict) -> list[str]:
    qpax_solve = qpax_solver()
    lines = ["| N | engine cases | converged | engine ms/case | Clarabel cases | Clarabel ms/case "
             "| engine / Clarabel speed | largest objective error engine / Clarabel | first call (s) "
             "| qpax ms/case (Clarabel's cases) | engine / qpax speed | qpax: converged by its flag, "
             "largest objective error |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n, (batch, cases) in plan.items():
        r = measure(n, batch, cases, qpax_solve)
        q = r["qpax"]
        qpax = (f"{q['status']} | – | –" if q["status"] else
                f"{1e3 * min(q['s']):.3g} | {min(q['s']) / r['engine_s']:.1f}× "
                f"| {q['converged']} of {cases}, {q['error']:.1e}")
        lines.append(f"| {n} | {batch} | {r['converged']} | {1e3 * r['engine_s']:.3g} | {cases} "
                     f"| {1e3 * r['clarabel_s']:.3g} | {r['clarabel_s'] / r['engine_s']:.2f}× "
                     f"| {r['engine_error']:.1e} / {r['clarabel_error']:.1e} | {r['first_s']:.1f} "
                     f"| {qpax} |")
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batches")
    args = parser.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    print("\n".join(table(QUICK if args.quick else FULL)))


if __name__ == "__main__":
    main()
