"""Local stopping rules of consensus ADMM (per agent T3.15, per trade T3.16, relative
thresholds T3.17) against Clarabel: a row flagged converged is right (objective and prices),
a case whose agents all stopped on a wrong answer is not converged (docs/stopping.md); the
bound the rules give on the global residual, and the rows they produce."""

import jax
import numpy as np
import pytest

from cases import random_batch
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.errors import InputError
from jaxmarket.markets import p2p
from jaxmarket.study.config import solver_options
from jaxmarket.metrics import p2p_objective
from oracle import clarabel_p2p

EPS = 1e-5
jax.config.update("jax_enable_x64", True)  # importing jaxmarket no longer switches it on


@pytest.fixture(scope="module")
def community():
    return random_batch(3, 6, sizes=(4, 10), charges=False)


def clarabel_gaps(community, trades):
    """(B,) relative objective gap of each case's trades against Clarabel."""
    ours = np.asarray(p2p_objective(community, trades))
    reference = np.array([clarabel_p2p(community, i)["objective"]
                          for i in range(community.n_cases)])
    return np.abs(ours - reference) / np.maximum(1.0, np.abs(reference))


def price_errors(community, index, trades, prices, reference, at_bound=1e-3):
    """(largest distance in EUR/MWh of a trade price lambda_nm from the optimal prices of its
    pair, as the oracle pins them) for case ``index``. At the optimum both ends of a pair
    hold one price nu with nu - gamma_nm = mu_n on a trade inside the pair's box (<= at its
    lower bound, >= at its upper one), for every agent n whose perceived price mu_n = a_n
    p*_n + b_n the oracle's dispatch p* fixes (a_n > 0, p*_n inside its bounds); the bound
    status is read from the given trades. A pair that the boxes pin at 0 has no price."""
    a, b = np.asarray(community.a[index]), np.asarray(community.b[index])
    p_min, p_max = np.asarray(community.p_min[index]), np.asarray(community.p_max[index])
    gamma = np.asarray(community.charge[index])
    low, high = np.asarray(community.trade_min[index]), np.asarray(community.trade_max[index])
    low, high = np.maximum(low, -high.T), np.minimum(high, -low.T)  # the pair's box
    edges = np.asarray(community.edges[index]) & (low < high)
    trades, prices = np.asarray(trades[index]), np.asarray(prices[index])
    p = reference["p"]
    scale = np.maximum(np.abs(p_min), np.abs(p_max))
    known = (a > 0) & (p > p_min + 1e-6 * scale) & (p < p_max - 1e-6 * scale)
    mu = a * p + b
    # Bounds on nu from n's side (row n) and from m's side (transposed), inf where none.
    upper_n = np.where(known[:, None] & (trades < high - at_bound), mu[:, None] + gamma, np.inf)
    lower_n = np.where(known[:, None] & (trades > low + at_bound), mu[:, None] + gamma, -np.inf)
    upper, lower = np.minimum(upper_n, upper_n.T), np.maximum(lower_n, lower_n.T)
    error = np.maximum(np.maximum(lower - prices, prices - upper), 0.0)
    return np.where(edges, error, 0.0).max(initial=0.0)


def oracle_errors(community, result):
    """(B,) gaps against Clarabel and (B,) price errors (``price_errors``)."""
    references = [clarabel_p2p(community, i) for i in range(community.n_cases)]
    ours = np.asarray(p2p_objective(community, result.state.trades))
    objective = np.array([r["objective"] for r in references])
    gaps = np.abs(ours - objective) / np.maximum(1.0, np.abs(objective))
    prices = np.array([price_errors(community, i, result.state.trades, result.state.prices, r)
                       for i, r in enumerate(references)])
    return gaps, prices


def solve(community, **options):
    algorithm = ConsensusADMM(max_iter=4000, **options)
    result = p2p.run(community, algorithm)
    return result, p2p.tabulate(community, algorithm, result)


@pytest.fixture(scope="module")
def per_agent(community):
    return solve(community, stopping="per_agent", frozen_price="partner", eps_local_primal=EPS,
                 eps_local_dual=EPS)


def test_per_agent_rule_reaches_clarabel_within_its_bound(community, per_agent):
    """Every agent stops by its rule (``all_agents_stopped``; until the flag was made honest
    ``converged`` meant this, and this test asserted it: case 5 stops 2.7 times eps_dual away
    from the global certificate, so it is no longer flagged converged); the global residual
    obeys the bound of docs/stopping.md, sum_nm (p_nm + p_mn)^2 <= 2 sum_n eps_n^2; the
    objective is that of Clarabel's optimum."""
    result, batch = per_agent
    assert batch.rows["all_agents_stopped"].all()
    assert np.asarray(result.converged)[:5].all()  # measured: cases 0-4 certified
    n_agents = np.asarray(community.active).sum(-1)
    assert np.all(batch.rows["primal_residual"] <= np.sqrt(2 * n_agents) * EPS)
    assert clarabel_gaps(community, result.state.trades).max() <= 1e-6
    stopped = np.asarray(result.state.stopping.stopped_at)
    assert np.all(batch.rows["last_agent_stop"] == np.where(np.asarray(community.active),
                                                            stopped, 0).max(-1))
    assert np.all(batch.rows["last_agent_stop"] == batch.rows["iterations"])


# Largest Clarabel gap allowed to a case whose agents all stopped: measured 3.7e-5 (relative
# thresholds, about 1e-5 of 20-200 MW) and 1.2e-6 on these cases. Not a guarantee: every
# agent stopping does not certify the answer (test_converged_rows_are_right_*).
@pytest.mark.parametrize("rule, price, scale, gap", [("per_agent", "partner", "relative", 4e-4),
                                                     ("per_trade", "fixed", "absolute", 1e-5)],
                         ids=["per_agent-partner-relative", "per_trade-fixed-absolute"])
def test_bound_and_imbalance_whenever_every_agent_stops(community, rule, price, scale, gap):
    """A case whose agents all stopped (``all_agents_stopped``: until the flag was made
    honest, ``converged`` meant this) satisfies the documented bound on the global primal
    residual (thresholds absolute, or eps_n = a_rel max(|p_min|, |p_max|)), is near Clarabel's
    optimum on these cases (a measurement, see above), and the imbalance column is
    sum_n |sum_m (p_nm + p_mn)| of the final trades."""
    result, batch = solve(community, stopping=rule, frozen_price=price, eps_local_primal=EPS,
                          eps_local_dual=EPS, eps_local_scale=scale)
    converged = np.asarray(batch.rows["all_agents_stopped"])
    assert converged.any()  # measured: 2 (per agent) and 3 (per trade) of 6
    gaps = clarabel_gaps(community, result.state.trades)
    assert gaps[converged].max() <= gap, gaps
    size = np.maximum(np.abs(np.asarray(community.p_min)), np.abs(np.asarray(community.p_max)))
    eps = np.where(np.asarray(community.active), EPS * (size if scale == "relative" else 1), 0)
    edges = np.asarray(community.edges)
    if rule == "per_agent":
        bound = 2 * (eps**2).sum(-1)
    else:  # 2 sum over pairs of the larger end's threshold = sum over directed trades
        bound = np.where(edges, np.maximum(eps[:, :, None], eps[:, None, :]) ** 2, 0).sum((-1, -2))
    primal = np.asarray(batch.rows["primal_residual"])
    assert np.all(primal[converged] ** 2 <= bound[converged] * (1 + 1e-9))
    trades = np.where(edges, np.asarray(result.state.trades), 0.0)
    imbalance = np.abs((trades + np.swapaxes(trades, 1, 2)).sum(-1)).sum(-1)
    np.testing.assert_allclose(batch.rows["imbalance"], imbalance, rtol=1e-12, atol=1e-15)


# Tolerances of a converged row against Clarabel: the global rule (eps 1e-4, rho = 1) is
# measured within 2.7e-6 of the objective and 1.9e-4 EUR/MWh of the prices on these cases.
GAP, PRICE = 1e-5, 1e-3


@pytest.fixture(scope="module")
def small():
    """16 communities of 3 to 8 agents without charges (local rules stop on most of them)."""
    return random_batch(7, 16, sizes=(3, 8), charges=False)


@pytest.fixture(scope="module")
def small_solved(small):
    """``(rule, frozen_price) -> (result, batch)`` on ``small``, each solved once."""
    solved = {}

    def get(rule, price):
        if (rule, price) not in solved:
            solved[rule, price] = solve(small, stopping=rule, frozen_price=price,
                                        eps_local_primal=EPS, eps_local_dual=EPS)
        return solved[rule, price]

    return get


@pytest.mark.parametrize("rule, price", [("per_agent", "partner"), ("per_trade", "partner"),
                                         ("per_trade", "fixed")])
def test_converged_rows_are_right_against_clarabel(small, small_solved, rule, price):
    """Every row a local rule flags converged has its agents all stopped, an objective within
    GAP of Clarabel's and every trade price within PRICE EUR/MWh of the optimal prices of
    its pair (``price_errors``); some rows are flagged (measured: 14, 13 and 7 of 16).
    Before the flag was certified, per_trade / partner flagged case 1 (the regression
    below) converged with a price 0.34 EUR/MWh off."""
    result, batch = small_solved(rule, price)
    rows = batch.rows
    converged = np.asarray(rows["converged"])
    np.testing.assert_array_equal(converged, np.asarray(result.converged))
    assert converged.any()
    assert np.all(rows["all_agents_stopped"][converged])
    gaps, prices = oracle_errors(small, result)
    assert gaps[converged].max() <= GAP, gaps
    assert prices[converged].max() <= PRICE, prices


def test_regression_stopped_agents_with_a_wrong_price_are_not_converged(small, small_solved):
    """Case 1 of ``small``: 5 agents, full graph, no charges, the linear producer 1 sets
    the price (38.528 EUR/MWh). Under per_trade / partner every agent stops by its rule at
    iteration 262 with the optimal dispatch (gap 3e-8), but producer 3 froze its trade with
    consumer 4 at 0 while 4 kept raising its copy of that trade's price to 38.864: the two
    ends disagree, and 4's price is 0.34 EUR/MWh off the pair's only optimal price. It was
    flagged converged; the certificate at the stop rejects it."""
    case = {"a": [0.11749568581581116, 0.0, 0.15859590470790863, 0.22358739376068115,
                  0.3076363801956177],
            "b": [25.585445404052734, 38.52814483642578, 88.8624267578125, 34.181175231933594,
                  65.93102264404297],
            "p_min": [0.0, 0.0, -153.69813537597656, 0.0, -96.79691314697266],
            "p_max": [113.80990600585938, 181.37728881835938, 0.0, 124.51751708984375, 0.0]}
    for field, values in case.items():  # still the case found (cases.py unchanged)
        np.testing.assert_allclose(np.asarray(getattr(small, field)[1])[:5], values, rtol=1e-7)
    assert np.asarray(small.active[1]).sum() == 5 and np.asarray(small.edges[1])[:5, :5].sum() == 20
    result, batch = small_solved("per_trade", "partner")
    rows = {key: np.asarray(value)[1] for key, value in batch.rows.items()}
    assert rows["all_agents_stopped"] and rows["iterations"] == 262
    assert not rows["converged"] and not np.asarray(result.converged)[1]
    assert rows["trial_dual_residual"] > 1e3 * EPS  # measured 0.28 MW
    gaps, prices = oracle_errors(small, result)
    assert gaps[1] <= GAP and prices[1] > 100 * PRICE  # right dispatch, wrong price (0.34)


def test_messages_count_only_the_trades_still_negotiated(community, per_agent):
    """No residual broadcast under a local rule: messages = trade messages = the directed
    trades each agent still negotiated, summed over iterations (at most the global count
    over as many iterations, without the broadcasts)."""
    result, batch = per_agent
    rows = batch.rows
    np.testing.assert_array_equal(rows["messages"], rows["trade_messages"])
    n_trades = np.asarray(community.edges).sum((-1, -2))
    assert np.all(rows["messages"] <= rows["iterations"] * n_trades)
    # An agent that froze at iteration k sent its degree's messages k times.
    sent = np.asarray(result.state.stopping.sent)
    degree = np.asarray(community.edges).sum(-1)
    stopped = np.asarray(result.state.stopping.stopped_at)
    active = np.asarray(community.active)
    np.testing.assert_array_equal(np.where(active, sent, 0), np.where(active, degree * stopped, 0))


def test_global_rule_is_the_default_and_unchanged(community):
    """stopping = global is ADMM as before: same trades as the algorithm without the key."""
    plain = p2p.run(community, ConsensusADMM(max_iter=300))
    explicit = p2p.run(community, ConsensusADMM(max_iter=300, stopping="global",
                                                eps_local_primal=1.0, frozen_price="partner"))
    np.testing.assert_array_equal(np.asarray(plain.state.trades), np.asarray(explicit.state.trades))
    assert plain.state.stopping is None


def test_options_checked():
    assert solver_options({"stopping": "per_trade"}).stopping == "per_trade"
    with pytest.raises(InputError, match="solver.stopping"):
        solver_options({"stopping": "per_case"})
    with pytest.raises(InputError, match="solver.stopping"):
        solver_options({"algorithm": "rci", "stopping": "per_agent"})
    with pytest.raises(InputError, match="solver.stopping"):
        solver_options({"stopping": "per_agent", "rho_balance": 2.0})
