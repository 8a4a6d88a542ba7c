"""DC line limits (SPEC 7.1): the exact line-constrained reference and the system
operator's projection against Clarabel, on New England (the thesis' Table 4.2 figures) and
on perturbed cases with tightened ratings (several congested lines)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from oracle import clarabel_p2p_dc, clarabel_projection
from jaxmarket.case import perturbed_costs
from jaxmarket.charges import load_grid_case
from jaxmarket.congestion import (LineLimits, _active_set, limited_line_names, line_limits,
                                  project, solve_dc_reference)
from jaxmarket.reference import solve_reference


@pytest.fixture(scope="module")
def grid_case():
    return load_grid_case(DATA / "new_england.json")


def tightened(limits: LineLimits, factor):
    return limits._replace(rate=limits.rate * jnp.asarray(factor)[:, None])


@pytest.fixture(scope="module")
def perturbed(grid_case):
    """One batch (one compiled reference): New England as published with its ratings, then
    four cases with costs perturbed by up to 30 % and every rating scaled by 1, 0.8, 0.6 or
    0.7; the exact free-market reference of the same cases."""
    community = perturbed_costs(grid_case.case.community, 7, np.arange(5), 0.3)
    limits = tightened(line_limits(grid_case.grid.network, 5), [1.0, 1.0, 0.8, 0.6, 0.7])
    return community, limits, solve_dc_reference(community, limits), solve_reference(community)


# The SO's projection, compiled: run eagerly, its many small operations cost more than
# compiling it. Every call passes a start set (no line at a rating: what None means), so
# that cold and warm starts share one program per shape.
project = jax.jit(project)
_active_set = jax.jit(_active_set)


def inside(target, limits):
    return jnp.zeros(target.shape[:-1] + limits.rate.shape[-1:], jnp.int8)


def pinned_prices(community, index, oracle, margin=1e-3):
    """Agents whose injection or one of whose trades is strictly inside its bounds (MW)."""
    p, trades = oracle["p"], oracle["trades"]
    inside_p = (p > np.asarray(community.p_min[index]) + margin) & (p < np.asarray(community.p_max[index]) - margin)
    edges = np.asarray(community.edges[index])
    inside_t = edges & (trades > np.asarray(community.trade_min[index]) + margin) & (
        trades < np.asarray(community.trade_max[index]) - margin)
    return inside_p | inside_t.any(-1)


def assert_matches_clarabel(community, limits, solution, index):
    oracle = clarabel_p2p_dc(community, index, limits.shift[index], limits.rate[index])
    assert bool(solution.converged[index])
    assert abs(float(solution.objective[index]) - oracle["objective"]) <= 1e-9 * abs(oracle["objective"])
    # Clarabel's injections are accurate to about 1e-7 of the largest bound (the
    # objective is flat to second order around them): compare at 1e-6 of that scale.
    scale = float(np.abs(np.r_[community.p_min[index], community.p_max[index]]).max())
    np.testing.assert_allclose(solution.p[index], oracle["p"], rtol=0, atol=1e-6 * scale)
    # A perceived price is unique only for an agent with an injection or a trade strictly
    # inside its bounds (else any price in an interval is optimal).
    # Prices in EUR/MWh at 1e-5: Clarabel's own prices of agents that must share one price
    # differ by up to 2e-6 on these cases.
    determined = pinned_prices(community, index, oracle)
    np.testing.assert_allclose(solution.price[index][determined], oracle["price"][determined],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(solution.line_price[index], oracle["line_price"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(solution.congestion[index], oracle["congestion"], rtol=0, atol=1e-5)
    return oracle


def test_new_england_congests_line_16_19(grid_case, perturbed):
    """Thesis Table 4.2 (DC endogenous): line 16-19 binds and 3832 MW are traded between
    peers, 98.4 % of the free market's 3894 MW."""
    community, limits, solution, free = perturbed  # case 0: New England as published
    oracle = assert_matches_clarabel(community, limits, solution, 0)
    loading = np.abs(np.asarray(solution.flows[0])) / np.asarray(limits.rate[0])
    names = limited_line_names(grid_case.grid.network)
    assert names[int(np.argmax(loading))] == "16-19"
    assert loading.max() == pytest.approx(1.0, abs=1e-9)
    assert np.sort(loading)[-2] < 0.99  # only one line congested
    traded = np.abs(np.asarray(solution.trades[0])).sum() / 2
    assert traded == pytest.approx(3832, abs=0.5)
    assert traded == pytest.approx(np.abs(oracle["trades"]).sum() / 2, abs=1e-5)
    assert traded / (np.abs(np.asarray(free.trades[0])).sum() / 2) == pytest.approx(0.984, abs=5e-4)
    # The congestion price is the nodal price's departure from the trades' price.
    active = np.asarray(community.a[0]) > 0
    p = np.asarray(solution.p[0])
    interior = active & (p > np.asarray(community.p_min[0]) + 1e-3) & (p < np.asarray(community.p_max[0]) - 1e-3)
    marginal = np.asarray(community.a[0] * solution.p[0] + community.b[0])
    np.testing.assert_allclose(marginal[interior], np.asarray(solution.price[0] + solution.congestion[0])[interior],
                               rtol=0, atol=1e-7)
    assert -float((solution.congestion[0] * solution.p[0]).sum()) > 0  # the SO collects money


@pytest.mark.parametrize("index", range(1, 5))
def test_perturbed_cases_match_clarabel(perturbed, index):
    community, limits, solution, _ = perturbed
    assert_matches_clarabel(community, limits, solution, index)
    flows = np.abs(np.asarray(limits.shift[index] @ solution.p[index]))
    assert np.all(flows <= np.asarray(limits.rate[index]) * (1 + 1e-9))


def test_several_lines_congest_under_tight_ratings(perturbed):
    _, limits, solution, _ = perturbed
    binding = (np.abs(np.asarray(solution.flows)) >= np.asarray(limits.rate) * (1 - 1e-7)).sum(-1)
    assert binding[1:].max() >= 2


def test_loose_ratings_give_the_free_market(grid_case, perturbed):
    community, _, _, free = perturbed
    solution = solve_dc_reference(community, tightened(line_limits(grid_case.grid.network, 5), [10.0] * 5))
    np.testing.assert_allclose(solution.objective, free.objective, rtol=1e-10)
    np.testing.assert_allclose(solution.congestion, 0.0, atol=1e-8)


def test_projection_matches_clarabel(grid_case):
    network = grid_case.grid.network
    limits = tightened(line_limits(network, 4), [1.0, 0.5, 0.3, 1.0])
    rng = np.random.default_rng(3)
    target = rng.normal(0.0, 400.0, (4, len(network.agent_bus)))
    active = jnp.ones(target.shape, bool)
    result = project(jnp.asarray(target), active, limits, inside(target, limits))
    assert bool(result.converged.all())
    for k in range(4):
        expected = clarabel_projection(target[k], np.asarray(limits.shift[k]), np.asarray(limits.rate[k]))
        np.testing.assert_allclose(result.q[k], expected, rtol=0, atol=1e-5)
    # Padding agents stay at 0 and do not change the others' projection.
    padded = project(jnp.pad(jnp.asarray(target), ((0, 0), (0, 2)), constant_values=50.0),
                     jnp.pad(active, ((0, 0), (0, 2))),
                     limits._replace(shift=jnp.pad(limits.shift, ((0, 0), (0, 0), (0, 2)), constant_values=1.0)),
                     inside(target, limits))
    np.testing.assert_allclose(padded.q[:, -2:], 0.0)
    np.testing.assert_allclose(padded.q[:, :-2], result.q, rtol=0, atol=1e-8)


def assert_exact_projection(result, target, limits):
    """q is Clarabel's projection, and the multipliers satisfy the optimality conditions:
    q = target + theta - H^T y, y >= 0 (<= 0) on a line at its upper (lower) rating, 0 on a
    line inside, to 1e-9 of the problem's scale (MW)."""
    assert bool(result.converged.all())
    for k in range(target.shape[0]):
        shift, rate = np.asarray(limits.shift[k]), np.asarray(limits.rate[k])
        expected = clarabel_projection(target[k], shift, rate)
        np.testing.assert_allclose(result.q[k], expected, rtol=0, atol=1e-5)
        q, y = np.asarray(result.q[k]), np.asarray(result.line_price[k])
        tol = 1e-9 * max(np.abs(target[k]).max(), rate.max())
        np.testing.assert_allclose(q, target[k] + float(result.balance_price[k]) - shift.T @ y,
                                   rtol=0, atol=tol)
        flows = shift @ q
        at_upper, at_lower = flows >= rate - tol, flows <= -rate + tol
        assert np.all(y[at_upper] >= -tol) and np.all(y[at_lower] <= tol)
        assert np.all(np.abs(y[~at_upper & ~at_lower]) <= tol)
        assert np.all(np.abs(flows) <= rate + tol)
        np.testing.assert_array_equal(np.asarray(result.bound[k]), np.where(at_upper, 1, np.where(at_lower, -1, 0)))


def test_warm_started_projection_is_exact(grid_case):
    """From the last active set the SO's step is one active-set solve; from a wrong set it
    recovers (active-set steps or the interior point); either way the projection is exact."""
    network = grid_case.grid.network
    limits = tightened(line_limits(network, 4), [1.0, 0.5, 0.3, 0.8])
    rng = np.random.default_rng(5)
    target = rng.normal(0.0, 400.0, (4, len(network.agent_bus)))
    active = jnp.ones(target.shape, bool)
    cold = project(jnp.asarray(target), active, limits, inside(target, limits))
    assert_exact_projection(cold, target, limits)
    assert (np.asarray(cold.bound) != 0).sum(-1).min() >= 2
    # A target moved a little, as between two ADMM iterations: the last set is right.
    moved = target + rng.normal(0.0, 1.0, target.shape)
    assert bool(_active_set(jnp.asarray(moved), active, limits, cold.bound).converged.all())
    assert_exact_projection(project(jnp.asarray(moved), active, limits, cold.bound), moved, limits)
    wrong = jnp.ones_like(cold.bound)  # every line at its upper rating
    assert_exact_projection(project(jnp.asarray(target), active, limits, wrong), target, limits)


def test_dependent_active_lines_fall_back_to_the_interior_point(grid_case):
    """Line 16-19 listed twice: both copies bind, their rows are equal, the active-set
    system is singular; the step still returns the exact projection."""
    network = grid_case.grid.network
    limits = line_limits(network, 1)
    line = limited_line_names(network).index("16-19")
    twice = LineLimits(jnp.concatenate([limits.shift, limits.shift[:, line:line + 1]], 1),
                       jnp.concatenate([limits.rate, limits.rate[:, line:line + 1]], 1))
    shift = np.asarray(twice.shift[0])
    target = 2.0 * np.asarray(limits.rate[0, line]) * shift[line] / (shift[line] @ shift[line])
    target = (target - target.mean())[None]
    active = jnp.ones(target.shape, bool)
    bound = np.zeros((1, shift.shape[0]), np.int8)
    bound[0, [line, -1]] = np.sign(shift[line] @ target[0])
    assert not bool(_active_set(jnp.asarray(target), active, twice, jnp.asarray(bound)).converged[0])
    result = project(jnp.asarray(target), active, twice, jnp.asarray(bound))
    assert_exact_projection(result, target, twice)
