"""Honest convergence at any scale (docs/stopping.md, "Scale"): a case whose costs or power
bounds are scaled far from the generator's is either solved or flagged not converged, by
the distributed algorithms (flagged at rho = 1, solved at rho scaled as the costs) and by
the exact reference alike; non-finite references are flagged. The oracle is the pool
dispatch of the case found by bisection in NumPy: without charges, on the full graph, it
is also the optimum of the P2P problem."""

import numpy as np
import pytest

import jaxmarket as jm
from jaxmarket.reference import solve_reference

PRICES = dict(producer_b=(15.0, 40.0), consumer_b=(60.0, 85.0), prosumer_b=(35.0, 65.0),
              marginal_spread=(20.0, 50.0))


def generated(cost=1.0, **settings):
    prices = {k: (lo * cost, hi * cost) for k, (lo, hi) in PRICES.items()}
    return jm.generate(n_agents=6, cases=range(3), seed=0, **prices, **settings)


def with_bounds_scaled(community, factor):
    c = community
    return c._replace(p_min=c.p_min * factor, p_max=c.p_max * factor,
                      trade_min=c.trade_min * factor, trade_max=c.trade_max * factor)


def pool_optimum(community):
    """(B,) optimal objective of every case: the price that balances the clipped supply
    curves p_n = clip((lambda - b_n) / a_n, p_min_n, p_max_n), by bisection (every a_n > 0)."""
    a, b, lo, hi = (np.asarray(v, np.float64) for v in (community.a, community.b,
                                                        community.p_min, community.p_max))
    objectives = []
    for case in range(a.shape[0]):
        def power(price):
            return np.clip((price - b[case]) / a[case], lo[case], hi[case])
        low, high = (b[case] + a[case] * lo[case]).min(), (b[case] + a[case] * hi[case]).max()
        for _ in range(400):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if power(middle).sum() < 0 else (low, middle)
        p = power(0.5 * (low + high))
        objectives.append((0.5 * a[case] * p**2 + b[case] * p).sum())
    return np.array(objectives)


def assert_honest(rows, optimum, tol):
    """Every row flagged converged is right (relative objective error <= tol), and its
    optimality gap says how wrong the others are."""
    error = np.abs(rows.objective.to_numpy() - optimum) / np.abs(optimum)
    assert not np.any(rows.converged.to_numpy() & (error > tol)), (rows.converged, error)
    np.testing.assert_allclose(rows.optimality_gap, error, rtol=1e-6, atol=1e-9)


def assert_solved_with_scaled_rho(name, community, cost, optimum):
    """With rho scaled as the costs (docs/stopping.md: rho of the order of the cases' a) the
    scaled case is the generator's one: every case converges, to the optimum. Measured:
    gaps up to 9.2e-8 (admm) and 2.7e-8 (ced_mean), as at cost 1 and rho 1."""
    rows = jm.solve(community, jm.algorithm(name, max_iter=300, rho=cost)).frame()
    assert rows.converged.all(), rows.converged
    assert_honest(rows, optimum, 1e-6)


@pytest.mark.parametrize("cost", [1e-9, 1e6])
def test_admm_on_scaled_costs_is_solved_or_flagged(cost):
    """At rho = 1 no case converges in 300 iterations (measured gaps 0.03-2.6) and none is
    flagged converged while wrong; at rho scaled as the costs every case is solved (the same
    compiled program: rho is a parameter)."""
    # Costs x 1e-9 once stopped after one iteration with 2e-7 MW traded and a gap of 5e-6.
    community = generated(cost)
    optimum = pool_optimum(community)
    rows = jm.solve(community, jm.algorithm("admm", max_iter=300)).frame()
    assert_honest(rows, optimum, 1e-5)
    assert rows.reference_converged.all()
    np.testing.assert_allclose(rows.reference_objective, optimum, rtol=1e-9)
    assert_solved_with_scaled_rho("admm", community, cost, optimum)


def test_ced_on_tiny_costs_is_solved_or_flagged():
    """As for ADMM: flagged at rho = 1 (no case converges), solved at rho = 1e-9."""
    community = generated(1e-9)
    optimum = pool_optimum(community)
    rows = jm.solve(community, jm.algorithm("ced_mean", max_iter=300)).frame()
    assert_honest(rows, optimum, 1e-5)
    assert_solved_with_scaled_rho("ced_mean", community, 1e-9, optimum)


@pytest.mark.parametrize("factor", [1e3, 1e6, 1e9])
def test_reference_on_huge_bounds_is_right_or_flagged(factor):
    # Bounds x 1e6 (a and b unchanged) once gave a wrong reference flagged converged; the
    # optimum is that of the unscaled case wherever its bounds do not bind.
    community = with_bounds_scaled(generated(), factor)
    reference = solve_reference(community)
    error = np.abs(np.asarray(reference.objective) - pool_optimum(community))
    error = error / np.abs(pool_optimum(community))
    assert not np.any(np.asarray(reference.converged) & (error > 1e-9)), error
    assert np.asarray(reference.converged).all()  # measured: solved, not only flagged


def test_exact_algorithm_on_huge_bounds_is_right_or_flagged():
    community = with_bounds_scaled(generated(), 1e6)
    rows = jm.solve(community, "exact").frame()
    assert_honest(rows, pool_optimum(community), 1e-9)


def test_non_finite_reference_is_flagged():
    # capacity_per_agent = 1e300: the optimal costs overflow.
    # max_iter as in the cost tests: the same compiled program.
    rows = jm.solve(generated(capacity_per_agent=1e300),
                    jm.algorithm("admm", max_iter=300)).frame()
    assert not np.isfinite(rows.reference_objective).any()
    assert not rows.reference_converged.any() and not rows.converged.any()


def test_ordinary_cases_keep_their_tolerances_and_scaling():
    """At the generator's scales every factor is 1: the tolerances are those given, bit for
    bit, and the power scale is the largest bound (as before the scale rule)."""
    from jaxmarket.community import scales

    for settings in ({}, dict(charge_per_distance=1.0), dict(prosumer_fraction=0.3)):
        community = jm.generate(n_agents=12, cases=range(8), seed=3, **settings)
        power, price = scales(community)
        bound = np.maximum(np.abs(community.p_min), np.abs(community.p_max)).max(-1)
        np.testing.assert_array_equal(power, bound)
        assert (np.asarray(power) >= 1).all() and (np.asarray(price) >= 1).all()
        for name in ("admm", "ced", "rci"):
            algorithm = jm.algorithm(name)
            params = algorithm.params(community.n_cases, community.dtype)
            scaled = algorithm.case_params(params, community)
            for field in params._fields:
                if field.startswith("eps_"):
                    np.testing.assert_array_equal(getattr(scaled, field), getattr(params, field))
