"""ADMM with pairwise penalties (``admm_pairwise``) against Clarabel, its symmetry, and on
neighbour lists."""

import numpy as np
import pytest

from cases import random_batch
from jaxmarket import algorithms, neighbours
from jaxmarket.algorithms.admm_pairwise import PairwiseADMM
from jaxmarket.errors import InputError
from jaxmarket.study.config import solver_options
from test_admm import clarabel_gaps
from test_admm_relaxed import EPS, assert_relaxed_optimum, run


@pytest.mark.parametrize("charges", [False, True], ids=["no-charges", "charges"])
def test_pairwise_admm_matches_clarabel(charges):
    community = random_batch(41 + charges, 24, charges=charges)
    assert_relaxed_optimum(community, run(community, PairwiseADMM(eps_primal=EPS, eps_dual=EPS)))


def test_penalties_and_prices_stay_symmetric_and_bounded():
    """Both ends of a trade compute the same penalty, to the last bit, so the prices stay
    symmetric; the penalties spread but stay within eps^(-1/3) of the initial one, and a
    pair that is not an edge keeps it."""
    community = random_batch(5, 12, charges=True)
    result = run(community, PairwiseADMM(rho=0.5, eps_primal=1e-300, eps_dual=1e-300),
                 max_iter=400)
    rho, prices = np.asarray(result.state.rho), np.asarray(result.state.prices)
    np.testing.assert_array_equal(rho, np.swapaxes(rho, 1, 2))
    np.testing.assert_array_equal(prices, np.swapaxes(prices, 1, 2))
    edges = np.asarray(community.edges)
    limit = np.finfo(np.float64).eps ** (-1 / 3)
    assert rho[edges].min() >= 0.5 / limit and rho[edges].max() <= 0.5 * limit
    assert rho[edges].max() / rho[edges].min() > 100  # the trades found different penalties
    np.testing.assert_array_equal(rho[~edges], 0.5)


def test_on_neighbour_lists_matches_the_dense_layout():
    """The same optimum; the iterations differ by a few: the layouts sum an agent's trades in
    another order, and each trade's rule reads the ratio of two residuals that are tiny near
    the end, so rounding differences change a few late penalties (plain ADMM keeps its
    counts, ``test_neighbours``)."""
    batch = random_batch(3, 12, sizes=(3, 30))
    algorithm = PairwiseADMM(eps_primal=EPS, eps_dual=EPS)
    lists = neighbours.neighbour_lists(batch, int(neighbours.degrees(batch).max()) + 3)
    dense, sparse = run(batch, algorithm), run(lists, algorithm)
    assert np.asarray(dense.converged).all() and np.asarray(sparse.converged).all()
    np.testing.assert_allclose(np.asarray(sparse.iterations), np.asarray(dense.iterations),
                               rtol=0.05)
    trades = np.asarray(neighbours.to_dense(lists.partner, sparse.state.trades))
    np.testing.assert_allclose(trades, np.asarray(dense.state.trades), rtol=0, atol=1e-5)
    assert clarabel_gaps(batch, trades).max() <= 1e-6


def test_registered_with_its_own_rule_instead_of_residual_balancing():
    assert algorithms.get("admm_pairwise") is PairwiseADMM
    declared = {f.name for f in PairwiseADMM.declarations()}
    assert {"rho", "relaxation", "pair_rho_stiffen", "pair_rho_soften"} <= declared
    assert not declared & {"rho_balance", "rho_balance_factor", "rho_balance_every"}
    schema = algorithms.solver_schema()
    assert (schema["pair_rho_stiffen"].default, schema["pair_rho_soften"].default) == (3.0, 1.5)
    assert (solver_options({"algorithm": "admm_pairwise", "pair_rho_stiffen": 2.0,
                            "pair_rho_soften": 1.25})
            == PairwiseADMM(pair_rho_stiffen=2.0, pair_rho_soften=1.25))
    for key in ("pair_rho_stiffen", "pair_rho_soften"):
        with pytest.raises(InputError, match=f"solver.{key}: must be > 1"):
            solver_options({"algorithm": "admm_pairwise", key: 1.0})
    community = random_batch(1, 2)
    with pytest.raises(InputError, match="solver.rho_balance: admm_pairwise balances"):
        run(community, PairwiseADMM(rho_balance=3.0))
