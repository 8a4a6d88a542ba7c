"""The exact local solve of ADMM against a general QP solver (Clarabel through cvxpy)."""

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmarket.local import solve_agents

M_MAX = 12
solve = jax.jit(solve_agents, static_argnames="max_newton")


def _random_local_problem(seed, m, linear, tight):
    """Trade boxes by role (some closed: lo = hi = 0), a feasible injection range."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(["sell", "buy", "both", "closed"], size=m)
    cap = rng.uniform(1, 100, m)
    lo = np.where(kind == "sell", 0.0, -cap)
    hi = np.where(kind == "buy", 0.0, cap)
    lo[kind == "closed"] = hi[kind == "closed"] = 0.0
    target = rng.normal(0, 60, m)
    a = 0.0 if linear else rng.uniform(0.001, 1.0)
    b = rng.normal(0, 50)
    p_min, p_max = np.sort(rng.normal(0, 150, 2))
    if tight:
        p_min = p_max = rng.uniform(lo.sum(), hi.sum())
    # Make the local problem feasible: [sum lo, sum hi] must meet [p_min, p_max].
    if p_max < lo.sum():
        p_max = lo.sum() + 1.0
    if p_min > hi.sum():
        p_min = hi.sum() - 1.0
    p_min = min(p_min, p_max)
    rho = rng.uniform(0.1, 10)
    return target, lo, hi, a, b, p_min, p_max, rho, rng.normal(0, 80)


def _clarabel(target, lo, hi, a, b, p_min, p_max, rho):
    t = cp.Variable(len(target))
    p = cp.sum(t)
    objective = 0.5 * a * cp.square(p) + b * p + rho / 2 * cp.sum_squares(t - target)
    problem = cp.Problem(cp.Minimize(objective), [t >= lo, t <= hi, p >= p_min, p <= p_max])
    problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return t.value, problem.value


def _local_objective(t, target, a, b, rho):
    p = t.sum()
    return 0.5 * a * p**2 + b * p + rho / 2 * ((t - target) ** 2).sum()


@pytest.mark.parametrize("max_newton", [16, 0], ids=["newton", "sorted-search"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 12), linear=st.booleans(),
       tight=st.booleans())
def test_local_solve_matches_qp_solver(max_newton, seed, m, linear, tight):
    target, lo, hi, a, b, p_min, p_max, rho, guess = _random_local_problem(seed, m, linear, tight)
    # Closed trades (lo = hi = 0) pad every problem to one compiled shape.
    pad = (0, M_MAX - m)
    decision = solve(*(jnp.asarray(np.pad(v, pad)) for v in (target, lo, hi)), a, b, p_min, p_max,
                     rho, guess, max_newton=max_newton)
    t = np.asarray(decision.trades)[:m]
    scale = 1.0 + np.abs(target).max() + np.abs(hi).max() + np.abs(lo).max()
    # Feasibility (exact up to rounding).
    assert np.all(t >= lo - 1e-12 * scale) and np.all(t <= hi + 1e-12 * scale)
    assert p_min - 1e-9 * scale <= float(decision.power) <= p_max + 1e-9 * scale
    assert float(decision.power) == pytest.approx(t.sum(), abs=1e-12 * scale)
    # Optimality: the QP solver's objective is never beaten by more than its own tolerance
    # and our trades (unique: the objective is strongly convex in t) agree with its.
    t_ref, _ = _clarabel(target, lo, hi, a, b, p_min, p_max, rho)
    ours = _local_objective(t, target, a, b, rho)
    theirs = _local_objective(np.clip(t_ref, lo, hi), target, a, b, rho)
    assert ours <= theirs + 1e-9 * max(1.0, abs(theirs))
    np.testing.assert_allclose(t, t_ref, atol=1e-6 * scale)


def test_linear_agent_takes_the_residual_at_its_price():
    """a = 0: the perceived price is b whenever the trades can absorb any p in bounds."""
    target = jnp.array([[5.0, -3.0, 8.0]])
    lo, hi = jnp.full((1, 3), -100.0), jnp.full((1, 3), 100.0)
    d = solve(target, lo, hi, jnp.zeros(1), jnp.array([2.0]), jnp.array([-50.0]),
                     jnp.array([50.0]), jnp.ones(1), jnp.zeros(1))
    assert float(d.perceived_price[0]) == pytest.approx(2.0, abs=1e-12)
    np.testing.assert_allclose(d.trades[0], target[0] - 2.0, atol=1e-12)


def test_batched_agents_are_independent():
    """Solving agents together equals solving them one at a time."""
    problems = [_random_local_problem(s, 7, s % 3 == 0, False) for s in range(20)]
    stacked = [jnp.asarray(np.array(v)) for v in zip(*problems)]
    together = solve(*stacked)
    for i, prob in enumerate(problems):
        alone = solve(*(jnp.asarray(v) for v in prob))
        np.testing.assert_allclose(together.trades[i], alone.trades, rtol=0, atol=1e-12)
