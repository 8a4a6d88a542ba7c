"""The plain NumPy ADMM baseline (bench/numpy_admm.py) against the JAX kernel: two
independent implementations of SPEC 3.1 must take the same iterations to the same
trades and prices."""

import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_case
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.community import concatenate
from jaxmarket.driver import DriverOptions, iterate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package
from bench.numpy_admm import solve_community_case  # noqa: E402

EPS = 1e-6
MAX_ITER = 5_000


@pytest.fixture(scope="module")
def cases():
    """Mixed sizes (padded into one batch), sparsity, charges and prosumers."""
    rng = np.random.default_rng(2029)
    options = [(4, 0.0, False, False), (7, 0.3, True, True), (12, 0.0, True, False),
               (15, 0.5, True, True), (20, 0.2, False, True), (9, 0.0, True, True)]
    community = concatenate([
        random_case(rng, n, sparsity=s, charges=c, prosumers=p) for n, s, c, p in options])
    n = community.n_cases
    params = ADMMParams(jnp.ones(n), jnp.full(n, EPS), jnp.full(n, EPS))
    return community, iterate(ConsensusADMM().static(), community, params, DriverOptions(MAX_ITER))


@pytest.mark.parametrize("i", range(6))
def test_numpy_baseline_matches_jax(cases, i):
    community, result = cases
    assert bool(result.converged[i])
    trades, prices, iterations = solve_community_case(community, i, eps=EPS, max_iter=MAX_ITER)
    assert iterations == int(result.iterations[i])
    np.testing.assert_allclose(trades, np.asarray(result.state.trades[i]), rtol=0, atol=1e-8)
    np.testing.assert_allclose(prices, np.asarray(result.state.prices[i]), rtol=0, atol=1e-8)


def test_numpy_baseline_runs_max_iter_without_tolerance(cases):
    """eps = 0 never stops early: the benchmark counts exactly max_iter iterations."""
    community, _ = cases
    *_, iterations = solve_community_case(community, 2, eps=0.0, max_iter=50)
    assert iterations == 50


def test_solve_only_iteration_is_the_kernels_admm(cases):
    """bench.kernel_parts splits the kernel's time by timing the same ADMM without the
    driver: both must compute the same trades (the same arithmetic, up to fusion)."""
    from bench.kernel_parts import solve_only

    community, _ = cases
    n = community.n_cases
    params = ADMMParams(jnp.ones(n), jnp.zeros(n), jnp.zeros(n))
    driven = iterate(ConsensusADMM().static(), community, params, DriverOptions(40, block_size=2))
    trades, steps = solve_only(community, params.rho, 40, 2)
    np.testing.assert_allclose(np.asarray(trades).reshape(driven.state.trades.shape),
                               np.asarray(driven.state.trades), rtol=0, atol=1e-10)
    assert np.all((np.asarray(steps) >= 40) & (np.asarray(steps) <= 40 * 16))
