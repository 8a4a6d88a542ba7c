"""Fast ADMM with restart (``admm_fast``) and Anderson-accelerated ADMM (``admm_anderson``)
against Clarabel, against plain ADMM where they reduce to it, and through the registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_batch
from jaxmarket import algorithms
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.algorithms.admm_anderson import AndersonADMM
from jaxmarket.algorithms.admm_fast import FastADMM
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.errors import InputError
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.study.config import solver_options
from test_admm import assert_feasible, clarabel_gaps

jax.config.update("jax_enable_x64", True)  # the tolerances below need float64

EPS = 1e-6


def run(community, algorithm, max_iter=20_000):
    params = algorithm.params(community.n_cases, jnp.float64)
    return iterate(algorithm.static(), community, params, DriverOptions(max_iter, 1))


def assert_optimal(community, result):
    """Every case converged, feasible (its agents' power the sum of its trades), reciprocal
    within EPS, at the Clarabel optimum, with symmetric prices."""
    assert np.asarray(result.converged).all()
    state = result.state
    assert_feasible(community, result._replace(state=state._replace(local=state.local.agents)), EPS)
    assert clarabel_gaps(community, state.trades).max() <= 1e-6
    # Prices stay symmetric: both ends of a trade agree on its price.
    prices = np.asarray(state.prices)
    np.testing.assert_allclose(prices, np.swapaxes(prices, -1, -2), atol=1e-9, rtol=0)


CASES = {"no-charges": (False, 0.0), "charges": (True, 3.0)}  # rho_balance per setting


@pytest.mark.parametrize("setting", CASES)
@pytest.mark.parametrize("cls", [FastADMM, AndersonADMM], ids=["fast", "anderson"])
def test_accelerated_admm_matches_clarabel(cls, setting):
    """Without charges at fixed rho, with charges under residual balancing (fixed rho stalls
    there, as for plain ADMM): every case reaches the Clarabel optimum."""
    charges, balance = CASES[setting]
    community = random_batch(41 + charges, 12, sizes=(3, 25), charges=charges)
    result = run(community, cls(eps_primal=EPS, eps_dual=EPS, rho_balance=balance))
    assert_optimal(community, result)


@pytest.mark.parametrize("setting, every", [("no-charges", 3), ("charges", 5)])
def test_anderson_with_fast_balancing_matches_clarabel(setting, every):
    """The fastest measured settings of Anderson (docs/acceleration.md, "Faster balancing"):
    rho changed by a factor 4 every 3 or 5 iterations still reaches the Clarabel optimum
    on every case, with and without charges."""
    charges = CASES[setting][0]
    community = random_batch(43 + charges, 12, sizes=(3, 25), charges=charges)
    result = run(community, AndersonADMM(eps_primal=EPS, eps_dual=EPS, rho_balance=3.0,
                                         rho_balance_factor=4.0, rho_balance_every=every))
    assert_optimal(community, result)


def test_fast_admm_without_momentum_is_plain_admm():
    """A restart factor no combined residual can meet turns momentum off: ADMM's iterates."""
    community = random_batch(5, 6, sizes=(3, 20), charges=True)
    never = dict(eps_primal=1e-300, eps_dual=1e-300)
    plain = run(community, ConsensusADMM(**never), max_iter=200)
    fast = run(community, FastADMM(restart=1e-300, **never), max_iter=200)
    np.testing.assert_allclose(np.asarray(fast.state.trades), np.asarray(plain.state.trades),
                               atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.asarray(fast.state.prices), np.asarray(plain.state.prices),
                               atol=1e-9, rtol=0)


def test_fast_admm_momentum_acts():
    """At the default restart factor momentum is used: the iterates leave ADMM's, and on
    these cases without charges the total iteration count falls (18 063 to 15 537 when
    written), every case at the optimum."""
    community = random_batch(7, 6, sizes=(3, 20))
    fast = run(community, FastADMM(eps_primal=EPS, eps_dual=EPS))
    assert_optimal(community, fast)
    plain = run(community, ConsensusADMM(eps_primal=EPS, eps_dual=EPS))
    fast_iterations, plain_iterations = np.asarray(fast.iterations), np.asarray(plain.iterations)
    assert not np.array_equal(fast_iterations, plain_iterations)
    assert fast_iterations.sum() < plain_iterations.sum()


def test_anderson_steps_are_safeguarded():
    """Anderson's memory is used (extrapolated centres accepted) and ADMM's iterates differ;
    with a safeguard factor or a summable bound no residual can meet, every extrapolation
    is discarded and the accepted points are ADMM's: the same optimum, reached."""
    community = random_batch(7, 6, sizes=(3, 20))
    accelerated = run(community, AndersonADMM(eps_primal=EPS, eps_dual=EPS))
    assert_optimal(community, accelerated)
    refused = run(community, AndersonADMM(anderson_safeguard=1e-300, eps_primal=EPS,
                                          eps_dual=EPS))
    assert_optimal(community, refused)
    assert (np.asarray(refused.state.local.extrapolations) == 0).all()
    plain = run(community, ConsensusADMM(eps_primal=EPS, eps_dual=EPS))
    # At fixed rho the memory is never cleared: the count covers the whole run.
    assert (np.asarray(accelerated.state.local.extrapolations) > 0).all()
    assert not np.array_equal(np.asarray(accelerated.iterations), np.asarray(plain.iterations))
    # A refused extrapolation costs one iteration: about twice ADMM's count.
    assert np.all(np.asarray(refused.iterations) >= np.asarray(plain.iterations))
    # A summable bound no residual can meet refuses them all as well, the same way.
    bounded = run(community, AndersonADMM(anderson_bound=1e-300, eps_primal=EPS, eps_dual=EPS))
    assert np.array_equal(np.asarray(bounded.iterations), np.asarray(refused.iterations))
    assert np.array_equal(np.asarray(bounded.state.trades), np.asarray(refused.state.trades))


@pytest.mark.parametrize("charge, cases", [(0.0, [16, 47]), (1.0, [6, 68])],
                         ids=["no-charges", "charges"])
def test_anderson_balancing_ignores_discarded_extrapolations(charge, cases):
    """Communities of the held-out set (docs/acceleration.md, sweeps/sparsity_distance.toml
    at sparsity 0) on which balancing read the residuals of discarded extrapolations, drove
    rho to its floor and stalled until max_iter: they converge, in well under 2 000
    iterations, to the Clarabel optimum."""
    community = generate(0, cases, 25, GeneratorParams(charge_per_distance=charge))
    result = run(community, AndersonADMM(eps_primal=1e-4, eps_dual=1e-4, rho_balance=3.0),
                 max_iter=10_000)
    assert np.asarray(result.converged).all()
    assert np.asarray(result.iterations).max() < 2_000
    assert clarabel_gaps(community, result.state.trades).max() <= 1e-6


def test_registered_and_configured_from_their_fields():
    assert algorithms.get("admm_fast") is FastADMM
    assert algorithms.get("admm_anderson") is AndersonADMM
    schema = algorithms.solver_schema()
    assert schema["restart"].default == 0.999 and schema["anderson_memory"].default == 5
    assert solver_options({"algorithm": "admm_anderson", "anderson_memory": 3}) == \
        AndersonADMM(anderson_memory=3)
    with pytest.raises(InputError, match="solver.restart: must be < 1"):
        solver_options({"algorithm": "admm_fast", "restart": 1.0})
    with pytest.raises(InputError, match="solver.anderson_memory"):
        solver_options({"algorithm": "admm_anderson", "anderson_memory": 0})
    community = random_batch(3, 2, sizes=(3, 6))
    for cls in (FastADMM, AndersonADMM):
        algorithm = cls(stopping="per_agent")
        with pytest.raises(InputError, match="solver.stopping"):
            algorithm.init(community, algorithm.params(2, jnp.float64))
