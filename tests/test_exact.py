"""The outcome engine (``exact``) against Clarabel; its trade prices support every agent's
decision (the market equilibrium conditions, checked from their definition)."""

import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_batch
from oracle import clarabel_p2p
from jaxmarket import algorithms
from jaxmarket.algorithms.exact import Exact
from jaxmarket.community import astype
from jaxmarket.markets import p2p, solve
from jaxmarket.markets.lanes import driver_options
from jaxmarket.study.config import solver_options


@pytest.fixture(scope="module")
def solved():
    """Six random cases (3-14 agents, sparsity 0/0.3/0.6, charges on every other one, a
    third with prosumers) through the P2P market's rows."""
    community = random_batch(41, 6, sizes=(3, 14))
    return community, solve(community, Exact())


def test_rows_match_clarabel(solved):
    community, result = solved
    rows = result.frame()
    assert (rows.iterations == 1).all() and rows.converged.all() and not rows.diverged.any()
    assert (rows.primal_residual <= 1e-9).all() and (rows.dual_residual <= 1e-9).all()
    for i in range(community.n_cases):
        oracle = clarabel_p2p(community, i)
        scale = max(1.0, abs(oracle["objective"]))
        assert abs(rows.objective[i] - oracle["objective"]) <= 1e-8 * scale
        # Injections are unique where the cost is strictly convex.
        curved = np.asarray(community.active[i]) & (np.asarray(community.a[i]) > 0)
        power = np.asarray(result.trades[i]).sum(-1)
        np.testing.assert_allclose(power[curved], oracle["p"][curved], atol=1e-6)


def test_prices_support_every_agent(solved):
    """Every agent, taking the trade prices as given, cannot do better: with its perceived
    price mu_n, each trade is at its upper bound where lambda - gamma > mu, at its lower
    bound where lambda - gamma < mu, and mu is the marginal cost of an interior injection.
    Prices are symmetric on every trade."""
    community, result = solved
    c = {k: np.asarray(v) for k, v in community._asdict().items()}
    trades, prices = np.asarray(result.trades), np.asarray(result.prices)
    edges = c["edges"]
    np.testing.assert_allclose(prices, np.swapaxes(prices, 1, 2), atol=1e-7)
    power = np.where(c["active"], trades.sum(-1), 0.0)
    interior = c["active"] & (power > c["p_min"] + 1e-6) & (power < c["p_max"] - 1e-6)
    # mu from an interior trade of each agent (their reduced prices agree, below)
    reduced = prices - c["charge"]  # lambda_nm - gamma_nm
    free = edges & (trades > c["trade_min"] + 1e-6) & (trades < c["trade_max"] - 1e-6)
    for b in range(community.n_cases):
        for n in np.flatnonzero(c["active"][b]):
            own = reduced[b, n][free[b, n]]
            if own.size == 0:
                continue
            mu = own.mean()
            np.testing.assert_allclose(own, mu, atol=1e-6)
            up = edges[b, n] & (reduced[b, n] > mu + 1e-6)
            down = edges[b, n] & (reduced[b, n] < mu - 1e-6)
            assert np.all(trades[b, n][up] >= c["trade_max"][b, n][up] - 1e-6)
            assert np.all(trades[b, n][down] <= c["trade_min"][b, n][down] + 1e-6)
            if interior[b, n]:
                assert abs(c["a"][b, n] * power[b, n] + c["b"][b, n] - mu) <= 1e-6


def test_unconverged_is_not_flagged_converged(solved):
    """An interior point stopped after two iterations has not met its tolerance: the case
    stops after its one step, unconverged, whatever max_iter says."""
    community, _ = solved  # the module's batch shape: fewer programs to compile
    algorithm = Exact(ipm_max_iter=2)
    result = p2p.run(community, algorithm, "blocked")
    assert not np.asarray(result.converged).any()
    np.testing.assert_array_equal(np.asarray(result.iterations), 1)


def test_float32_rows_are_the_float64_solution_rounded(solved):
    """A float32 study gets the float64 solution: converged, objective to float32 rounding."""
    community, result = solved
    rows32 = solve(astype(community, jnp.float32), Exact()).frame()
    rows64 = result.frame()
    assert rows32.converged.all()
    np.testing.assert_allclose(rows32.objective, rows64.objective, rtol=1e-5)


def test_registered_and_configured_from_its_fields():
    assert algorithms.get("exact") is Exact
    assert solver_options({"algorithm": "exact", "ipm_tolerance": 1e-9}) == Exact(ipm_tolerance=1e-9)
    options = driver_options(random_batch(43, 2, sizes=(3, 4)), Exact(trace_every=10), "continuous")
    assert (options.max_iter, options.check_every, options.trace_every) == (1, 1, 0)
    assert options.checks_per_refill == 1
