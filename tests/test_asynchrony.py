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
    return random_batch(5, 4, sizes=(4, 9), charges=True)


IDENTITY = [(ConsensusADMM(**NEVER), strategy) for strategy in asynchrony.STRATEGIES] + [
    (RCI(**NEVER), "weighted"), (PCMBED(**NEVER), "latest"), (CED(rho=1e-3, **NEVER), "mean")]


@pytest.mark.parametrize("algorithm, strategy", IDENTITY,
                         ids=[f"{a.name}-{s}" for a, s in IDENTITY])
def test_no_spread_no_delay_is_the_synchronous_run(batch, algorithm, strategy):
    """eps = d = 0: after the events at 0, tau_C, ..., k tau_C the released state is the
    synchronous iterate k, bit for bit (ADMM's prices are moved at the start of the next
    update, so its released prices are those of the iterate before)."""
    params = algorithm.params(batch.n_cases, batch.dtype)
    lag = isinstance(algorithm, ConsensusADMM)
    for k in (1, 2, 9, 40):
        sync = iterate(algorithm.static(), batch, params, DriverOptions(k)).state
        released = simulate(algorithm, batch, k + 1, strategy).released
        later = simulate(algorithm, batch, k + 2, strategy).released if lag else released
        for field in sync._fields:
            if field in ("count", "rho"):
                continue
            ours = getattr(later if field == "prices" else released, field)
            for a, b in zip(jax.tree_util.tree_leaves(ours),
                            jax.tree_util.tree_leaves(getattr(sync, field))):
                np.testing.assert_array_equal(a, b, err_msg=f"{field} at iteration {k}")


def test_synchronous_time_is_the_iterations_to_gap(batch):
    """The synchronous run stops where the driver stops, and its time to gap is tau_C times
    the driver's first iteration from which the gap stays below 1e-4 (trace every iteration)."""
    algorithm = ConsensusADMM(eps_primal=1e-6, eps_dual=1e-6, trace_every=1)
    n = batch.n_cases
    reference = np.array([clarabel_p2p(batch, i)["objective"] for i in range(n)])
    result = iterate(algorithm.static(), batch, algorithm.params(n, batch.dtype),
                     DriverOptions(5000, trace_every=1))
    gaps = np.abs(np.asarray(result.trace.objective) - reference[:, None]) / np.maximum(
        1, np.abs(reference))[:, None]
    outcome = simulate(algorithm, batch, 10**6, "latest", reference=reference)
    np.testing.assert_array_equal(outcome.converged, result.converged)
    for i in range(n):
        recorded = gaps[i, :int(result.iterations[i])]
        above = np.flatnonzero(recorded > asynchrony.GAP)
        first = (above[-1] + 2) if len(above) else 1
        assert outcome.iterations[i] == first
        assert outcome.time[i] == pytest.approx(first * asynchrony.TAU_C, rel=1e-12)


@pytest.fixture(scope="module")
def asynchronous_admm(batch):
    """ADMM with compute times spread over 8 ms and 5 ms mean delays (weighted strategy),
    run to 3 times the synchronous time to gap: Clarabel's objectives, the horizons, the
    synchronous and the asynchronous outcomes."""
    algorithm = ConsensusADMM()
    reference = np.array([clarabel_p2p(batch, i)["objective"] for i in range(batch.n_cases)])
    sync = simulate(algorithm, batch, 10**6, "weighted", reference=reference)
    horizon = asynchrony.HORIZON * np.asarray(sync.time)
    outcome = simulate(algorithm, batch, 10**7, "weighted", spread=0.008, delay=0.005,
                       reference=reference, horizon=horizon, synchronous=False)
    return reference, horizon, sync, outcome


def test_asynchronous_admm_reaches_the_optimum(asynchronous_admm):
    """Spread compute times and delays: ADMM still ends within the gap of Clarabel's optimum,
    later than the synchronous run, and no message was refused."""
    _, _, sync, outcome = asynchronous_admm
    assert np.all(outcome.reached) and np.all(outcome.gap <= asynchrony.GAP)
    assert np.all(outcome.overflows == 0)
    assert np.all(outcome.time > sync.time)


def test_draws_depend_on_the_case_alone(batch, asynchronous_admm):
    """The batch in reverse order (each case keeping its index): every case draws the same
    compute times and delays and reaches the gap at the same time; under other indices the
    times change."""
    reference, horizon, _, forward = asynchronous_admm
    order = np.arange(batch.n_cases)[::-1]
    kwargs = dict(spread=0.008, delay=0.005, reference=reference[order],
                  horizon=horizon[order], synchronous=False)
    backward = simulate(ConsensusADMM(), take(batch, order), 10**7, "weighted", indices=order,
                        **kwargs)
    np.testing.assert_array_equal(backward.time, forward.time[order])
    np.testing.assert_array_equal(backward.iterations, forward.iterations[order])
    other = simulate(ConsensusADMM(), take(batch, order), 10**7, "weighted", indices=order + 10,
                     **kwargs)
    assert np.all(other.time != forward.time[order])
