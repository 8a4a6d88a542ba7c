"""Iterations-to-gap columns: a hand-computed trace, then real runs of every algorithm."""

import numpy as np
import pytest

from cases import random_batch
from jaxmarket import algorithms, markets
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.markets.rows import GAP_THRESHOLDS, iterations_to_gap

NAN = np.nan


def test_iterations_to_gap_by_hand():
    every = 10
    gaps = np.array([
        [0.5, 5e-3, 2e-2, 5e-4, 8e-4, NAN],  # touches 1e-2 at 20, back above at 30: settles at 40
        [5e-3, 1e-3, 1e-5, NAN, NAN, NAN],  # below 1e-2 from the first record on, 1e-3 (equal) from the second
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.05],  # never below: stopped at max_iter
        [0.5, 0.4, NAN, NAN, NAN, NAN],  # stopped at 27 below every threshold, after its last record
        [NAN] * 6,  # stopped before its first record
    ])
    final = np.array([8e-4, 2e-5, 0.05, 1e-6, 2e-3])
    iterations = np.array([50, 30, 60, 27, 4])
    expected = {
        1e-2: [40, 10, NAN, 27, 4],
        1e-3: [40, 20, NAN, 27, NAN],
        1e-4: [NAN, 30, NAN, 27, NAN],
    }
    for threshold, want in expected.items():
        got = iterations_to_gap(gaps, every, final, iterations, threshold)
        np.testing.assert_array_equal(got, want, err_msg=str(threshold))


def test_threshold_equal_to_the_gap_counts_as_reached():
    got = iterations_to_gap(np.array([[1e-2, 1e-2]]), 5, np.array([1e-2]), np.array([10]), 1e-2)
    np.testing.assert_array_equal(got, [5])


@pytest.fixture(scope="module")
def community():
    """Without charges, where ADMM converges quickly (README)."""
    return random_batch(3, 6, sizes=(4, 10), charges=False)


# Endogenous network charges need a grid: tests/test_endogenous.py.
ITERATIVE = sorted(name for name in algorithms.names() if not algorithms.get(name).steps
                   and "endogenous" not in algorithms.get(name).markets)


def test_a_direct_solver_has_no_trace(community):
    result = markets.solve(community, algorithms.build(dict(algorithm="exact", trace_every=20)))
    assert result.trace is None and np.all(result.rows["iterations"] == 1)
    assert np.all(np.isnan(result.rows["iterations_to_gap_e4"]))


@pytest.mark.parametrize("algorithm", ITERATIVE)
def test_columns_follow_the_gap_trace(community, algorithm):
    """The long trace's gap is |objective - reference| / max(1, |reference|) of the row's
    reference, and each column is the first traced iteration of the final run of gaps
    below its threshold (recomputed here case by case from the long trace)."""
    options = algorithms.build(dict(algorithm=algorithm, rho=1e-3 if algorithm == "ced" else 1.0,
                                    max_iter=3000, trace_every=20, check_every=20 if "rci" in algorithm
                                    or algorithm == "pcmbed" else 1))
    result = markets.solve(community, options)
    rows, trace = result.rows, result.trace
    for case in range(community.n_cases):
        mine = trace["case"] == case
        reference = rows["reference_objective"][case]
        gap = np.abs(trace["objective"][mine] - reference) / max(1.0, abs(reference))
        np.testing.assert_allclose(trace["optimality_gap"][mine], gap, rtol=1e-12, atol=0)
        iteration = trace["iteration"][mine]
        for suffix, threshold in GAP_THRESHOLDS.items():
            got = rows[f"iterations_to_gap_{suffix}"][case]
            if rows["optimality_gap"][case] > threshold:
                assert np.isnan(got)
                continue
            above = np.flatnonzero(gap > threshold)
            if above.size == 0:
                want = iteration[0] if iteration.size else rows["iterations"][case]
            elif above[-1] + 1 < iteration.size:
                want = iteration[above[-1] + 1]
            else:
                want = rows["iterations"][case]
            assert got == want, (case, suffix)
    # The cheap algorithms settle in these runs: the columns are not all NaN.
    if algorithm in ("admm", "ced", "ced_mean"):
        assert np.isfinite(rows["iterations_to_gap_e4"]).all()


def test_no_trace_no_measure(community):
    rows = markets.solve(community, ConsensusADMM(max_iter=2000)).rows
    assert rows["converged"].all()
    for suffix in GAP_THRESHOLDS:
        assert np.isnan(rows[f"iterations_to_gap_{suffix}"]).all()
