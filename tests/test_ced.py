"""Community ADMM (CED) against the exact pool dispatch and Clarabel."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cases import random_batch, random_case
from oracle import clarabel_pool
from jaxmarket import markets
from jaxmarket.algorithms.ced import CED, CEDMean
from jaxmarket.community import concatenate
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.markets.rows import GAP_THRESHOLDS
from jaxmarket.metrics import gap_floor, market_metrics, optimality_gap
from jaxmarket.pool import pool_dispatch

EPS = 1e-7
OPTIONS = DriverOptions(max_iter=100_000, check_every=1)
# (rho, mean imbalance): the textbook form converges for any rho; the thesis form (each
# agent absorbs the whole imbalance) only for rho below about a / N.
VARIANTS = {"mean": (1.0, True), "thesis": (1e-3, False)}


def run(community, rho, mean, eps=EPS, options=OPTIONS):
    # One compiled program for both forms: the share of the imbalance is a per-case value.
    params = (CEDMean if mean else CED)(rho=rho, eps_primal=eps, eps_dual=eps).params(
        community.n_cases, jnp.float64)
    return iterate(CED().static(), community, params, options)


@pytest.fixture(scope="module")
def batch():
    """24 random cases of 3-40 agents (sparsity, charges and prosumers mixed: the pool
    ignores the graph and the charges) and their exact pool dispatch."""
    community = random_batch(31, 24)
    return community, pool_dispatch(community)


@pytest.mark.parametrize("variant", VARIANTS)
def test_price_and_dispatch_are_the_pool_ones(batch, variant):
    community, pool = batch
    result = run(community, *VARIANTS[variant])
    assert np.asarray(result.converged).all()  # measured: all 24, within 5 000 iterations
    price = np.asarray(pool.price)
    np.testing.assert_allclose(np.asarray(result.state.price), price, rtol=0,
                               atol=1e-5 * np.abs(price).max())
    gaps = np.asarray(optimality_gap(result.residuals.objective, pool.objective,
                                     gap_floor(community)))
    assert gaps.max() <= 1e-8
    power = np.asarray(result.state.power)
    assert np.all(np.abs(power.sum(-1)) <= EPS)
    assert np.all(power >= np.asarray(community.p_min))
    assert np.all(power <= np.asarray(community.p_max))
    # The dispatch of an agent with a > 0 is unique (a step agent's may split a tie), as a
    # share of the case's largest agent: measured within 7e-9 (mean) and 5e-9 (thesis).
    unique = (np.asarray(community.a) > 0) & np.asarray(community.active)
    size = np.abs(np.r_["-1", community.p_min, community.p_max]).max(-1, keepdims=True)
    error = np.abs(power - np.asarray(pool.p)) / size
    assert error[unique].max() <= 1e-7
    for i in range(0, community.n_cases, 6):  # an independent solver on a few cases
        exact = clarabel_pool(community, i)
        assert float(result.state.price[i]) == pytest.approx(exact["price"], abs=1e-4)
        assert float(result.residuals.objective[i]) == pytest.approx(exact["objective"], rel=1e-8)
        assert (np.abs(power[i] - exact["p"]) / size[i])[unique[i]].max() <= 1e-7


def test_new_england(new_england):
    thesis_rho_1, thesis, mean = (run(new_england, rho, m, eps=1e-6, options=DriverOptions(5000, 1))
                                  for rho, m in ((1.0, False), (1e-3, False), (1.0, True)))
    # With rho = 1 the thesis form overshoots by about N: it oscillates, finite, for ever.
    assert not bool(thesis_rho_1.converged[0]) and not bool(thesis_rho_1.diverged[0])
    for result in (thesis, mean):
        assert bool(result.converged[0])  # measured: 78 and 364 iterations (eps 1e-6)
        assert float(result.state.price[0]) == pytest.approx(57.23, abs=0.01)
        assert float(result.residuals.objective[0]) == pytest.approx(-92547.9, abs=1.0)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(sorted(VARIANTS)),
       check_every=st.sampled_from([1, 7]))
def test_padding_and_batch_neighbours_do_not_change_a_case(seed, variant, check_every):
    rng = np.random.default_rng(seed)
    small = random_case(rng, 9, prosumers=True)
    large = random_case(rng, 16)
    options = DriverOptions(20_000, check_every)
    alone = run(small, *VARIANTS[variant], options=options)
    together = run(concatenate([large, small, large]), *VARIANTS[variant], options=options)
    assert int(together.iterations[1]) == int(alone.iterations[0])
    assert bool(together.converged[1]) == bool(alone.converged[0])
    padded = np.asarray(together.state.power[1])
    np.testing.assert_allclose(padded[:9], np.asarray(alone.state.power[0]), rtol=0, atol=1e-9)
    assert np.all(padded[9:] == 0)
    assert float(together.state.price[1]) == pytest.approx(float(alone.state.price[0]), abs=1e-9)


def test_rows_have_the_p2p_columns_and_pool_values():
    community = random_batch(7, 5, sizes=(4, 12))
    result = markets.solve(community, CEDMean(eps_primal=1e-6, eps_dual=1e-6))
    rows = result.rows
    n = community.n_cases
    p2p_columns = market_metrics(community, jnp.zeros_like(community.charge),
                                 jnp.zeros_like(community.charge), jnp.zeros(n, jnp.int32),
                                 jnp.zeros(n)).keys()
    assert set(rows) == {"iterations", "converged", "diverged", "primal_residual", "dual_residual",
                         *p2p_columns, "reference_objective", "reference_converged",
                         "optimality_gap", "pool_price",
                         *(f"iterations_to_gap_{suffix}" for suffix in GAP_THRESHOLDS)}
    pool = pool_dispatch(community)
    assert rows["converged"].all() and rows["optimality_gap"].max() <= 1e-8
    np.testing.assert_allclose(rows["mean_price"], rows["pool_price"], atol=1e-4)
    np.testing.assert_array_equal(rows["price_spread"], 0.0)
    np.testing.assert_allclose(rows["total_traded"], np.maximum(np.asarray(pool.p), 0).sum(-1),
                               atol=1e-5)
    np.testing.assert_array_equal(rows["charges_collected"], 0.0)
    np.testing.assert_array_equal(rows["messages"], 2 * rows["iterations"] * rows["n_agents"])
    assert not np.asarray(result.trades).any()
