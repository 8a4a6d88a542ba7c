"""The driver's continuous batching against the plain loop: the very same per-case results
(bit for bit: state, residuals, iterations, flags and traces), on one device and spread
over four host devices, and exact lane-iteration counts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cases import random_batch
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.algorithms.ced import CED
from jaxmarket.algorithms.rci import RCI
from jaxmarket.driver import DriverOptions, iterate

ROOT = Path(__file__).resolve().parents[1]
N_CASES = 20
ADMM = ConsensusADMM().static()


@pytest.fixture(scope="module")
def batch():
    return random_batch(3, N_CASES, sizes=(3, 8))


def admm_params(n, eps=1e-6):
    # A different penalty per case spreads the iteration counts (some cases hit max_iter).
    rho = jnp.linspace(0.3, 3.0, n)
    return ADMMParams(rho, jnp.full(n, eps), jnp.full(n, eps))


def assert_same_results(expected, result):
    expected, result = expected._replace(lane_iterations=0), result._replace(lane_iterations=0)
    # The same leaves first: a leaf missing on one side (e.g. a None trace) would be skipped.
    assert jax.tree_util.tree_structure(result) == jax.tree_util.tree_structure(expected)
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected),
                                 jax.tree_util.tree_leaves(result)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=str(path))


@pytest.mark.parametrize("check_every, trace_every, refill_every", [(1, 0, 1), (1, 10, 16), (3, 6, 10)])
def test_continuous_admm_matches_the_plain_loop(batch, check_every, trace_every, refill_every):
    params = admm_params(N_CASES)
    plain = DriverOptions(400, check_every, trace_every)
    expected = iterate(ADMM, batch, params, plain)
    iterations = np.asarray(expected.iterations)
    assert expected.converged.any() and not expected.converged.all()  # a spread of stops
    assert len(set(iterations.tolist())) > 5
    for options in (plain._replace(lanes=8, refill_every=refill_every),
                    plain._replace(lanes=11, refill_every=refill_every),
                    plain._replace(block_size=8)):
        result = iterate(ADMM, batch, params, options)
        assert_same_results(expected, result)
        spent = int(result.lane_iterations)
        assert iterations.sum() <= spent
    # The plain loop iterates every case until the slowest one has stopped.
    assert int(expected.lane_iterations) == N_CASES * iterations.max()


def test_only_the_queued_cases_run(batch):
    """With ``queued = k`` the first k cases give the rows of the whole batch's run and the
    others never run, in every driver."""
    params = admm_params(N_CASES)
    plain = DriverOptions(400, trace_every=10)
    expected = iterate(ADMM, batch, params, plain)
    k = 13
    for options in (plain, plain._replace(block_size=8), plain._replace(lanes=8)):
        result = iterate(ADMM, batch, params, options, jnp.int32(k))
        def head(r):
            return jax.tree_util.tree_map(lambda v: v[:k], r._replace(lane_iterations=None))

        assert_same_results(head(expected), head(result))
        assert not np.asarray(result.iterations)[k:].any()
        assert not (np.asarray(result.converged)[k:] | np.asarray(result.diverged)[k:]).any()
        assert np.isnan(np.asarray(result.trace.primal)[k:]).all()


def test_continuous_uses_its_lanes(batch):
    params = admm_params(N_CASES)
    plain = DriverOptions(400)
    blocked = iterate(ADMM, batch, params, plain._replace(block_size=8))
    lanes = iterate(ADMM, batch, params, plain._replace(lanes=8, refill_every=4))
    useful = int(np.asarray(lanes.iterations).sum())
    assert useful / int(lanes.lane_iterations) > useful / int(blocked.lane_iterations)


def test_lane_iterations_are_counted_exactly(batch):
    """Infinite tolerances stop every case at its first check: 16 cases on 8 lanes take
    two rounds of ``refill_every`` iterations (the third finds the queue empty)."""
    n = 16
    params = ADMMParams(jnp.ones(n), jnp.full(n, jnp.inf), jnp.full(n, jnp.inf))
    community = jax.tree_util.tree_map(lambda v: v[:n], batch)
    result = iterate(ADMM, community, params, DriverOptions(50, lanes=8, refill_every=4))
    assert np.all(np.asarray(result.iterations) == 1) and result.converged.all()
    assert int(result.lane_iterations) == 2 * 4 * 8


def test_continuous_rci_and_ced_match_the_plain_loop(batch):
    options = DriverOptions(300, check_every=7, trace_every=14)
    cases = [(RCI().static(), RCI(eps_price=1e-3, eps_power=1e-3, eps_primal=jnp.inf,
                                  eps_dual=jnp.inf).params(N_CASES, jnp.float64)),
             (CED().static(), CED(rho=1.0, eps_primal=1e-6, eps_dual=1e-6).params(N_CASES, jnp.float64))]
    for algorithm, params in cases:
        expected = iterate(algorithm, batch, params, options)
        result = iterate(algorithm, batch, params, options._replace(lanes=8, refill_every=20))
        assert_same_results(expected, result)


DEVICES_SCRIPT = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, "tests")
from cases import random_batch
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.driver import DriverOptions, iterate
batch = random_batch(3, 21, sizes=(3, 8))
params = ADMMParams(jnp.linspace(0.3, 3.0, 21), jnp.full(21, 1e-6), jnp.full(21, 1e-6))
options = DriverOptions(400, trace_every=10, lanes=8, refill_every=16)
runs = {d: iterate(ConsensusADMM().static(), batch, params, options._replace(devices=d)) for d in (1, 2, 4)}
leaves = {d: [np.asarray(v) for v in jax.tree_util.tree_leaves(r._replace(lane_iterations=0))]
          for d, r in runs.items()}
same = {d: all(np.array_equal(a, b, equal_nan=True) for a, b in zip(leaves[1], leaves[d]))
        for d in (2, 4)}
print(json.dumps({"devices": jax.local_device_count(), "same": same,
                  "useful": int(np.asarray(runs[4].iterations).sum()),
                  "spent": {d: int(r.lane_iterations) for d, r in runs.items()}}))
"""


def test_rows_do_not_depend_on_the_device_count():
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
                   "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", DEVICES_SCRIPT], cwd=ROOT, env=environment,
                          capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["devices"] == 4
    assert report["same"] == {"2": True, "4": True}
    assert all(report["useful"] <= spent for spent in report["spent"].values())
