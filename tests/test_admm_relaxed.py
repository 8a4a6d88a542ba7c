"""Over-relaxed consensus ADMM (``admm_relaxed``) against Clarabel and against plain ADMM."""

import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_batch
from jaxmarket import algorithms
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.algorithms.admm_relaxed import RelaxedADMM
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.errors import InputError
from jaxmarket.neighbours import NeighbourLists
from jaxmarket.study.config import solver_options
from test_admm import assert_feasible, clarabel_gaps

EPS = 1e-6


def run(problem, algorithm, max_iter=20_000):
    """``problem``: a community or its neighbour lists."""
    community = problem.community if isinstance(problem, NeighbourLists) else problem
    params = algorithm.params(community.n_cases, jnp.float64)
    return iterate(algorithm.static(), problem, params, DriverOptions(max_iter, 1))


def assert_relaxed_optimum(community, result):
    """Every case of an over-relaxed variant converged to the Clarabel optimum, at the
    consensus trades it solved against."""
    assert np.asarray(result.converged).all()
    local, consensus, distance = result.state.local
    assert np.all(np.asarray(distance) <= EPS)  # stopped at the centre it solved against
    assert_feasible(community, result._replace(state=result.state._replace(local=local)), EPS)
    # At the fixed point the consensus trades are the trades.
    np.testing.assert_allclose(np.asarray(consensus), np.asarray(result.state.trades), atol=1e-5)
    assert clarabel_gaps(community, result.state.trades).max() <= 1e-6


@pytest.mark.parametrize("charges", [False, True], ids=["no-charges", "charges"])
def test_relaxed_admm_matches_clarabel(charges):
    """With residual balancing (with charges fixed rho stalls, as for plain ADMM) every case
    converges to the Clarabel optimum."""
    community = random_batch(31 + charges, 24, charges=charges)
    algorithm = RelaxedADMM(eps_primal=EPS, eps_dual=EPS, rho_balance=3.0 if charges else 0.0)
    assert_relaxed_optimum(community, run(community, algorithm))


def test_relaxation_one_is_plain_admm():
    """Same iterates for 300 iterations (tolerances no case meets)."""
    community = random_batch(5, 12, charges=True)
    tiny = dict(eps_primal=1e-300, eps_dual=1e-300)
    plain = run(community, ConsensusADMM(**tiny), max_iter=300)
    relaxed = run(community, RelaxedADMM(relaxation=1.0, **tiny), max_iter=300)
    np.testing.assert_array_equal(np.asarray(relaxed.iterations), 300)
    np.testing.assert_allclose(np.asarray(relaxed.state.trades), np.asarray(plain.state.trades),
                               atol=1e-10, rtol=0)


def test_registered_and_configured_from_its_field():
    assert algorithms.get("admm_relaxed") is RelaxedADMM
    assert algorithms.solver_schema()["relaxation"].default == 1.6
    assert solver_options({"algorithm": "admm_relaxed", "relaxation": 1.8}) == RelaxedADMM(relaxation=1.8)
    with pytest.raises(InputError, match="solver.relaxation: must be < 2"):
        solver_options({"algorithm": "admm_relaxed", "relaxation": 2.0})
