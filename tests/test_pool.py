"""Exact pool dispatch: optimality conditions, Clarabel, the New England case, edge cases."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cases import random_case
from oracle import clarabel_pool

from jaxmarket.community import concatenate, make_community, pad_agents
from jaxmarket.pool import pool_dispatch


def supply(price, a, b, p_min, p_max, side):
    """Aggregate best response at a uniform price, in NumPy. Step agents (a = 0) exactly
    at their b give their whole range: ``side`` -1 takes its low end, +1 its high end."""
    linear = a > 0
    ramp = np.clip((price - b) / np.where(linear, a, 1.0), p_min, p_max)
    step = np.where(price > b, p_max, np.where(price < b, p_min, p_min if side < 0 else p_max))
    return np.where(linear, ramp, step).sum()


def one_case(a, b, p_min, p_max, n_max=None):
    """A batch of one case without trades, padded to ``n_max`` agents."""
    n = len(a)
    n_max = n_max or n
    a, b, p_min, p_max = (np.pad(np.asarray(v, float), (0, n_max - n))[None]
                          for v in (a, b, p_min, p_max))
    return make_community(a, b, p_min, p_max, np.zeros((1, n_max, n_max), bool),
                          active=(np.arange(n_max) < n)[None])


@pytest.fixture(scope="module")
def batch():
    # Sizes 3-40 from a short list: building each new size compiles its own array ops.
    rng = np.random.default_rng(5)
    community = concatenate([random_case(rng, (3, 6, 10, 15, 22, 30, 40)[k % 7],
                                         prosumers=k % 3 == 0) for k in range(60)])
    return community, pool_dispatch(community)


def test_optimality_conditions(batch):
    community, pool = batch
    a, b, p_min, p_max, active = (np.asarray(v) for v in (
        community.a, community.b, community.p_min, community.p_max, community.active))
    price, p = np.asarray(pool.price), np.asarray(pool.p)
    scale = np.abs(p_max - p_min).max(-1)
    assert np.all(np.abs(p.sum(-1)) <= 1e-12 * scale)
    assert np.all((p >= p_min) & (p <= p_max))
    assert np.all(p[~active] == 0)
    lam = price[:, None]
    marginal = a * p + b
    interior = active & (p > p_min) & (p < p_max) & (a > 0)
    np.testing.assert_allclose(marginal[interior], np.broadcast_to(lam, p.shape)[interior],
                               rtol=1e-12, atol=1e-11)
    tol = 1e-9 * np.abs(lam)
    at_max = active & (p == p_max) & (p_max > p_min)
    at_min = active & (p == p_min) & (p_max > p_min)
    assert np.all((a * p_max + b <= lam + tol)[at_max])
    assert np.all((a * p_min + b >= lam - tol)[at_min])
    objective = np.where(active, 0.5 * a * p**2 + b * p, 0.0).sum(-1)
    np.testing.assert_allclose(np.asarray(pool.objective), objective, rtol=1e-14)


def test_matches_clarabel(batch):
    community, pool = batch
    for i in range(community.n_cases):
        exact = clarabel_pool(community, i)
        ours = float(pool.objective[i])
        # Clarabel stops at a relative gap of 1e-10: never better than the exact dispatch.
        assert ours <= exact["objective"] + 1e-12 * abs(exact["objective"])
        assert ours == pytest.approx(exact["objective"], rel=1e-9)
        assert float(pool.price[i]) == pytest.approx(exact["price"], rel=1e-6)
        # Clarabel's dispatch is looser near bounds (the exact one is checked by KKT above).
        np.testing.assert_allclose(np.asarray(pool.p[i]), exact["p"], atol=1e-3)


def test_padding_does_not_change_a_case(batch):
    community, pool = batch
    padded = pool_dispatch(pad_agents(community, community.n_max + 7))
    np.testing.assert_allclose(np.asarray(padded.price), np.asarray(pool.price), rtol=1e-14)
    np.testing.assert_allclose(np.asarray(padded.p[:, :community.n_max]), np.asarray(pool.p),
                               rtol=1e-12, atol=1e-12)
    assert np.all(np.asarray(padded.p[:, community.n_max:]) == 0)


def test_new_england(new_england):
    pool = pool_dispatch(new_england)
    assert float(pool.price[0]) == pytest.approx(57.23, abs=0.01)
    assert float(pool.objective[0]) == pytest.approx(-92547.9, abs=1.0)
    p = np.asarray(pool.p[0])
    assert p[p > 0].sum() == pytest.approx(3893.3, abs=0.5)


def test_step_agents_at_the_margin_share_the_residual():
    # Two grid agents at 40 between a supply of 30 and a demand of 50 at that price: they
    # sell the missing 20, in proportion to their ranges (-10 + 20 * 3/4, -30 + 60 * 3/4).
    pool = pool_dispatch(one_case([0.0, 0.0, 1.0, 1.0], [40, 40, 10, 90],
                                  [-10, -30, 0, -100], [10, 30, 100, 0]))
    assert float(pool.price[0]) == 40.0
    np.testing.assert_allclose(np.asarray(pool.p[0]), [5, 15, 30, -50], atol=1e-12)


def test_flat_supply_gives_the_midpoint_of_the_optimal_prices():
    # No profitable trade: every price between the highest consumer b (35) and the lowest
    # producer b (50) clears the market at zero.
    pool = pool_dispatch(one_case([1, 2, 1, 3], [50, 60, 30, 35], [0, 0, -10, -10],
                                  [10, 10, 0, 0]))
    assert float(pool.price[0]) == pytest.approx(42.5, abs=1e-12)
    assert np.all(np.asarray(pool.p[0]) == 0)


def test_degenerate_cases():
    cases = [
        one_case([1, 2], [50, 60], [-10, -20], [0, 0]),  # consumers only: price = max b
        one_case([1, 1], [10, 60], [5, -10], [8, 0]),  # must run: 8 sold at 52 (= 60 - 8)
        one_case([1, 1], [10, 60], [5, -3], [8, 0]),  # infeasible: sum p_min > 0
        make_community(np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)),
                       np.zeros((1, 2)), np.zeros((1, 2, 2), bool),
                       active=np.zeros((1, 2), bool)),  # padding only: no price
    ]
    pool = pool_dispatch(concatenate(cases))
    price, p = np.asarray(pool.price), np.asarray(pool.p)
    assert price[0] == 60.0 and np.all(p[0] == 0)
    assert price[1] == pytest.approx(52.0, abs=1e-12)
    np.testing.assert_allclose(p[1], [8, -8], atol=1e-12)
    assert np.isnan(price[2]) and np.all(np.isnan(p[2]))
    assert np.isnan(price[3]) and np.all(p[3] == 0) and pool.objective[3] == 0


agent = st.tuples(
    st.sampled_from([0.0, 0.0, 0.05, 0.3, 1.0, 4.0]),  # a, often a step agent
    st.integers(0, 100).map(float),  # integer b: ties between agents are frequent
    st.floats(-100, 100, allow_subnormal=False), st.floats(0, 100, allow_subnormal=False))


@settings(max_examples=150, deadline=None)
@given(st.lists(agent, min_size=1, max_size=12))
# A ramp so narrow that its two breakpoints round to one price is a jump there.
@example([(0.0, 2.0, 0.0, 1.3062059345312088e-24), (0.05, 1.0, 0.0, 1.3062059345312088e-24)])
def test_price_brackets_the_root_of_the_supply(agents):
    a, b, low, width = (np.array(v) for v in zip(*agents))
    p_min, p_max = low, low + width
    # Shift the bounds so that the market is feasible (sum p_min <= 0 <= sum p_max).
    shift = np.clip(0.0, p_min.sum(), p_max.sum()) / len(agents)
    p_min, p_max = p_min - shift, p_max - shift
    pool = pool_dispatch(one_case(a, b, p_min, p_max, n_max=12))
    price = float(pool.price[0])
    p = np.asarray(pool.p[0, :len(agents)])
    scale = np.abs(p_min).sum() + np.abs(p_max).sum()
    if np.isnan(price):
        # No agent can move (every price is optimal), or the shift above left the bounds
        # infeasible by a rounding error of the original magnitudes.
        assert np.all(p_min == p_max) or math.fsum(p_min) > 0 or math.fsum(p_max) < 0
        return
    eps = 1e-9 * max(1.0, abs(price))
    assert supply(price - eps, a, b, p_min, p_max, +1) <= 1e-9 * scale
    assert supply(price + eps, a, b, p_min, p_max, -1) >= -1e-9 * scale
    assert abs(p.sum()) <= 1e-9 * max(1.0, scale)
    assert np.all((p >= p_min) & (p <= p_max))
    best = np.clip((price - b) / np.where(a > 0, a, 1.0), p_min, p_max)
    np.testing.assert_allclose(p[a > 0], best[a > 0], atol=1e-9 * max(1.0, scale))
