"""Asynchronous negotiation: the synchronous limit is the synchronous algorithm, bit for
bit; with spread compute times and delays ADMM still reaches the exact optimum
(Clarabel); a case's draws depend on (seed, case_index) alone."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_batch
from oracle import clarabel_p2p
from jaxmarket import asynchrony
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.algorithms.ced import CED
from jaxmarket.algorithms.rci import RCI, PCMBED
from jaxmarket.community import take
from jaxmarket.driver import DriverOptions, iterate

NEVER = dict(eps_primal=0.0, eps_dual=0.0)  # tolerances no iterate meets: exactly k iterations


def settings(n_cases, spread=0.0, delay=0.0, weight=0.5):
    return asynchrony.Settings(*(jnp.full(n_cases, v) for v in (spread, delay, weight)))


def simulate(algorithm, community, events, strategy, spread=0.0, delay=0.0, reference=None,
             horizon=0.0, synchronous=True, indices=None, weight=0.5):
    n = community.n_cases
    indices = np.arange(n) if indices is None else indices
    reference = jnp.zeros(n) if reference is None else jnp.asarray(reference)
    return asynchrony.simulate(
        dataclasses.replace(algorithm, trace_every=0).static(), community, algorithm.params(n, community.dtype),
        settings(n, spread, delay, weight), asynchrony.case_keys(7, indices), reference,
        jnp.full(n, horizon), 10**6, events, strategy=strategy, synchronous=synchronous)


@pytest.fixture(scope="module")
def batch():
    return random_batch(5, 4, sizes=(3, 6), charges=True)


@pytest.fixture(scope="module")
def reference(batch):
    """Clarabel's optimal objective of every case."""
    return np.array([clarabel_p2p(batch, i)["objective"] for i in range(batch.n_cases)])


# One compiled simulation per (algorithm, strategy); ADMM's is shared with the asynchronous
# tests below. Together they cover every algorithm form and every strategy.
IDENTITY = [(ConsensusADMM(**NEVER), "weighted"), (RCI(**NEVER), "latest"),
            (PCMBED(**NEVER), "latest"), (CED(rho=1e-3, **NEVER), "mean")]
K = 40  # iterations compared


@pytest.mark.parametrize("algorithm, strategy", IDENTITY,
                         ids=[f"{a.name}-{s}" for a, s in IDENTITY])
def test_no_spread_no_delay_is_the_synchronous_run(batch, algorithm, strategy):
    """eps = d = 0: after the events at 0, tau_C, ..., K tau_C the released state is the
    synchronous iterate K of the driver, bit for bit (ADMM's prices are moved at the start
    of the next update, so its released prices are those of the iterate before). One K:
    each iterate is computed from the one before, so a difference at an earlier
    iteration would not vanish by iteration K."""
    params = algorithm.params(batch.n_cases, batch.dtype)
    lag = isinstance(algorithm, ConsensusADMM)
    sync = iterate(algorithm.static(), batch, params, DriverOptions(K)).state
    released = simulate(algorithm, batch, K + 1, strategy).released
    later = simulate(algorithm, batch, K + 2, strategy).released if lag else released
    for field in sync._fields:
        if field in ("count", "rho"):
            continue
        ours = getattr(later if field == "prices" else released, field)
        for a, b in zip(jax.tree_util.tree_leaves(ours),
                        jax.tree_util.tree_leaves(getattr(sync, field))):
            np.testing.assert_array_equal(a, b, err_msg=f"{field} at iteration {K}")


def test_synchronous_time_is_the_iterations_to_gap(batch, reference):
    """The synchronous run stops where the driver stops, and its time to gap is tau_C times
    the driver's first iteration from which the gap stays below 1e-4 (trace every iteration)."""
    algorithm = ConsensusADMM(eps_primal=1e-6, eps_dual=1e-6, trace_every=1)
    n = batch.n_cases
    result = iterate(algorithm.static(), batch, algorithm.params(n, batch.dtype),
                     DriverOptions(5000, trace_every=1))
    gaps = np.abs(np.asarray(result.trace.objective) - reference[:, None]) / np.maximum(
        1, np.abs(reference))[:, None]
    outcome = simulate(algorithm, batch, 10**6, "weighted", reference=reference)
    np.testing.assert_array_equal(outcome.converged, result.converged)
    for i in range(n):
        recorded = gaps[i, :int(result.iterations[i])]
        above = np.flatnonzero(recorded > asynchrony.GAP)
        first = (above[-1] + 2) if len(above) else 1
        assert outcome.iterations[i] == first
        assert outcome.time[i] == pytest.approx(first * asynchrony.TAU_C, rel=1e-12)


def test_asynchronous_admm_reaches_the_optimum(batch, reference):
    """ADMM with compute times spread over 8 ms and 5 ms mean delays (weighted strategy),
    run to 3 times the synchronous time to gap: it still ends within the gap of Clarabel's
    optimum, later than the synchronous run, and no message was refused."""
    algorithm = ConsensusADMM()
    sync = simulate(algorithm, batch, 10**6, "weighted", reference=reference)
    outcome = simulate(algorithm, batch, 10**7, "weighted", spread=0.008, delay=0.005,
                       reference=reference, horizon=asynchrony.HORIZON * np.asarray(sync.time),
                       synchronous=False)
    assert np.all(outcome.reached) and np.all(outcome.gap <= asynchrony.GAP)
    assert np.all(outcome.overflows == 0)
    assert np.all(outcome.time > sync.time)


def test_draws_depend_on_the_case_alone(batch):
    """The batch in reverse order, each case keeping its index: after the same number of
    events every case has drawn the same compute times and delays, so its released trades
    and prices are the same bit for bit; under other indices they differ."""
    order = np.arange(batch.n_cases)[::-1]

    def released(community, indices):  # 200 events: some 20 updates per agent
        return simulate(ConsensusADMM(), community, 200, "weighted", spread=0.008, delay=0.005,
                        horizon=np.inf, synchronous=False, indices=indices).released

    forward = released(batch, np.arange(batch.n_cases))
    backward = released(take(batch, order), order)
    other = released(take(batch, order), order + 10)
    for field in ("trades", "prices"):
        ours = np.asarray(getattr(forward, field))[order]
        np.testing.assert_array_equal(getattr(backward, field), ours)
        differs = np.asarray(getattr(other, field)) != ours
        assert differs.reshape(batch.n_cases, -1).any(1).all()
