"""Market layouts of SPEC section 4 (T3.5.1): full P2P, bipartite, centralized (one hub),
community-based (K managers), and the per-case connectivity and message columns.

Every layout is solved by ADMM and checked against the pool dispatch (closed form) and
Clarabel; the orientation of the managers' trades is checked against a cvxpy model that
charges both directions of those trades, ``u |x|``.
"""

import itertools
from types import SimpleNamespace

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest
import scipy.sparse.csgraph as csgraph
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import TIGHT, clarabel_p2p
from jaxmarket import markets
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.community import concatenate, intermediaries, make_community
from jaxmarket.errors import InputError
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.layouts import n_slots
from jaxmarket.metrics import market_metrics, n_components, unsupplied_consumers
from jaxmarket.pool import pool_dispatch
from jaxmarket.report import style, write_report
from jaxmarket.report import sparsity as sparsity_report
from jaxmarket.report.layouts import table as layouts_table
from jaxmarket.report.sparsity import tradeoff
from jaxmarket.study.config import resolve
from test_sweep import run_study, tiny_study

N, K = 9, 3
CASES = range(6)
LAYOUTS = ("full", "bipartite", "centralized", "community")
TIGHT_ADMM = ConsensusADMM(eps_primal=1e-7, eps_dual=1e-7, max_iter=50_000)


def layouts(seed, params, between_only=False, n_communities=K):
    """The same communities under every layout, padded into one batch (layout-major)."""
    return concatenate([generate(seed, CASES, N, params, layout, 0.0, n_communities,
                                 between_only) for layout in LAYOUTS])


def rows_of(rows, layout):
    k = LAYOUTS.index(layout)
    return {key: value[k * len(CASES):(k + 1) * len(CASES)] for key, value in rows.items()}


def membership(community, case):
    """Community of each real agent, read off its trade with a manager (sparsity 0)."""
    edges = np.asarray(community.edges[case])
    return edges[:N, N:].argmax(-1)


@pytest.fixture(scope="module")
def free_market():
    community = layouts(11, GeneratorParams())
    return community, markets.solve(community, TIGHT_ADMM)


@pytest.fixture(scope="module")
def charged_market():
    community = layouts(12, GeneratorParams(charge_per_distance=2.0), between_only=True)
    return community, markets.solve(community, TIGHT_ADMM)


# --- the graphs ----------------------------------------------------------------------------

def test_hub_layouts_append_managers_to_the_same_agents():
    full = generate(3, CASES, N, GeneratorParams(), "full")
    for layout, extra in (("centralized", 1), ("community", K)):
        c = generate(3, CASES, N, GeneratorParams(), layout, 0.0, K)
        assert c.n_max == n_slots(N, layout, K) == N + extra
        for field in ("a", "b", "p_min", "p_max", "x", "y"):
            np.testing.assert_array_equal(np.asarray(getattr(c, field))[:, :N],
                                          np.asarray(getattr(full, field)))
        manager = np.asarray(intermediaries(c.p_min, c.p_max))
        assert not manager[:, :N].any() and manager[:, N:].all()
        assert (np.asarray(c.a)[:, N:] == 0).all() and (np.asarray(c.b)[:, N:] == 0).all()
        edges = np.asarray(c.edges)
        assert not edges[:, :N, :N].any()  # agents trade only through managers
        assert (edges[:, :N, N:].sum(-1) == 1).all()  # each with exactly one manager
        assert edges[:, N:, N:].sum((-1, -2)).tolist() == [extra * (extra - 1)] * len(CASES)
        for case in CASES:
            label = membership(c, case)
            assert sorted(set(label)) == list(range(extra))  # no empty community
            x, y = np.asarray(c.x[case]), np.asarray(c.y[case])
            for k in range(extra):  # a manager sits at its members' centroid
                np.testing.assert_allclose([x[N + k], y[N + k]],
                                           [x[:N][label == k].mean(), y[:N][label == k].mean()])


def test_communities_are_nearest_seed_regions():
    # Some choice of one seed agent per community makes every agent's nearest seed the one
    # of its own community (brute force over the choices).
    c = generate(4, CASES, N, GeneratorParams(), "community", 0.0, K)
    for case in CASES:
        label = membership(c, case)
        x, y = np.asarray(c.x[case])[:N], np.asarray(c.y[case])[:N]
        members = [np.flatnonzero(label == k) for k in range(K)]
        assert any(
            (np.argmin(np.hypot(x[:, None] - x[list(seeds)], y[:, None] - y[list(seeds)]),
                       axis=1) == label).all()
            for seeds in itertools.product(*members))


def test_charges_between_communities_only():
    params = GeneratorParams(charge_per_distance=1.5)
    grouped = generate(5, CASES, N, params, "community", 0.0, K, True)
    full = generate(5, CASES, N, params, "full", 0.0, K, True)
    central = generate(5, CASES, N, params, "centralized", 0.0, K, True)
    assert (np.asarray(central.charge) == 0).all()  # one community around the hub
    charge = np.asarray(grouped.charge)
    assert (charge[:, :N, :] == 0).all() and (charge[:, :, :N] == 0).all()
    for case in CASES:
        label = membership(grouped, case)
        between = label[:, None] != label[None, :]
        np.testing.assert_array_equal(np.asarray(full.charge[case]) != 0, between)
        managers = charge[case, N:, N:]
        off = ~np.eye(K, dtype=bool)
        assert (managers[off] != 0).all()
    # Without the flag every trade pays, hub trades included (a lone member sits on its
    # manager: distance 0).
    every = generate(5, CASES, N, params, "community", 0.0, K)
    x, y = np.asarray(every.x), np.asarray(every.y)
    apart = np.hypot(x[:, :, None] - x[:, None], y[:, :, None] - y[:, None]) > 0
    np.testing.assert_array_equal(np.asarray(every.charge) != 0, np.asarray(every.edges) & apart)


def test_manager_trades_run_one_way_from_the_seller_side():
    c = generate(6, CASES, N, GeneratorParams(charge_per_distance=1.0), "community", 0.0, K)
    lo = np.asarray(c.trade_min)[:, N:, N:]
    hi = np.asarray(c.trade_max)[:, N:, N:]
    charge = np.asarray(c.charge)[:, N:, N:]
    off = ~np.eye(K, dtype=bool)
    seller = (lo == 0) & (hi > 0)
    buyer = (lo < 0) & (hi == 0)
    assert (seller | buyer)[:, off].all()
    np.testing.assert_array_equal(seller, np.swapaxes(buyer, 1, 2))
    assert (charge[seller] > 0).all() and (charge[buyer] < 0).all()


# --- acceptance: without charges every layout is the pool ------------------------------------

def test_without_charges_every_layout_reaches_the_pool(free_market):
    community, result = free_market
    rows = result.rows
    pool = pool_dispatch(community)
    welfare = -np.asarray(pool.objective)
    assert rows["converged"].all()
    np.testing.assert_allclose(rows["social_welfare"], welfare, rtol=1e-9)
    np.testing.assert_allclose(rows["reference_objective"], -welfare, rtol=1e-9)
    # A uniform price, the pool price, on every traded trade (hub trades included).
    np.testing.assert_allclose(rows["price_min"], np.asarray(pool.price), atol=1e-5)
    np.testing.assert_allclose(rows["price_max"], np.asarray(pool.price), atol=1e-5)
    # Every unit passes the hub twice: the total exchanged doubles (thesis Table 3.4a);
    # community managers also pass on what crosses communities.
    full = rows_of(rows, "full")["total_traded"]
    np.testing.assert_allclose(rows_of(rows, "bipartite")["total_traded"], full, rtol=1e-7)
    np.testing.assert_allclose(rows_of(rows, "centralized")["total_traded"], 2 * full, rtol=1e-7)
    assert (rows_of(rows, "community")["total_traded"] >= 2 * full * (1 - 1e-7)).all()
    np.testing.assert_allclose(rows["consumption"], rows_of(rows, "full")["consumption"].tolist()
                               * len(LAYOUTS), rtol=1e-7)


def test_every_layout_matches_clarabel(free_market, charged_market):
    # Measured: relative gaps up to 1.7e-9 over the 48 cases (Clarabel: 1 s in all).
    for community, result in (free_market, charged_market):
        for i in range(community.n_cases):  # every layout, layout-major
            expected = clarabel_p2p(community, i)["objective"]
            assert abs(result.rows["objective"][i] - expected) <= 1e-7 * max(1, abs(expected))


# --- acceptance: with charges between communities (thesis Table 3.4b) ------------------------

def test_charges_lower_p2p_welfare_below_the_centralized_market(charged_market):
    community, result = charged_market
    rows = result.rows
    assert rows["converged"].all()
    central = rows_of(rows, "centralized")["social_welfare"]
    np.testing.assert_allclose(central, -np.asarray(pool_dispatch(community).objective)[
        2 * len(CASES):3 * len(CASES)], rtol=1e-9)
    assert (rows_of(rows, "full")["social_welfare"] < central).all()
    assert (rows_of(rows, "community")["social_welfare"] < central).all()
    assert (rows_of(rows, "full")["charges_collected"] > 0).all()


def interior_prices(community, result, case):
    """Per community: net export (what its members sell minus what they buy) and the
    interior price, the volume-weighted price of its members' trades with their manager."""
    trades = np.asarray(result.trades[case])[:N, N:]
    prices = np.asarray(result.prices[case])[:N, N:]
    label = membership(community, case)
    export, price = np.zeros(K), np.zeros(K)
    for k in range(K):
        volume = np.abs(trades[label == k, k])
        export[k] = trades[label == k, k].sum()
        price[k] = (volume * prices[label == k, k]).sum() / volume.sum()
    return export, price


def test_net_exporting_communities_see_a_lower_interior_price(charged_market):
    community, result = charged_market
    first = 3 * len(CASES)  # the community layout
    patterns = 0
    for case in range(first, community.n_cases):
        export, price = interior_prices(community, result, case)
        exporters, importers = export > 1e-3, export < -1e-3
        for k in np.flatnonzero(exporters):
            for j in np.flatnonzero(importers):
                assert price[k] < price[j]
                patterns += 1
        # Along every traded manager link the buyer's interior price is the seller's plus
        # the full charge (both halves): T3.19 at both managers.
        flows = np.asarray(result.trades[case])[N:N + K, N:N + K]
        charge = np.asarray(community.charge[case])[N:N + K, N:N + K]
        for k, j in zip(*np.nonzero(flows > 1e-3)):
            np.testing.assert_allclose(price[j] - price[k], charge[k, j] - charge[j, k], atol=1e-5)
    assert patterns > 0


def test_oriented_manager_trades_lose_nothing():
    # The community layout's oriented manager trades give the optimum of the market that
    # charges both directions, u |x| (SPEC section 1: both ends pay u/2 per unit).
    params = GeneratorParams(charge_per_distance=3.0)
    for between_only in (True, False):
        c = generate(13, CASES, N, params, "community", 0.0, K, between_only)
        for case in CASES:
            expected = _two_way_objective(c, case, params.charge_per_distance)
            got = clarabel_p2p(c, case)["objective"]
            assert abs(got - expected) <= 1e-7 * max(1, abs(expected))


def _two_way_objective(c, case, per_distance):
    a, b, p_min, p_max = (np.asarray(getattr(c, f)[case]) for f in ("a", "b", "p_min", "p_max"))
    x, y = np.asarray(c.x[case]), np.asarray(c.y[case])
    charge, edges = np.asarray(c.charge[case]), np.asarray(c.edges[case])
    rows, cols = np.nonzero(np.triu(edges, 1))
    flow = cp.Variable(rows.size)  # from rows to cols
    incidence = np.zeros((a.size, rows.size))
    incidence[rows, np.arange(rows.size)] = 1.0
    incidence[cols, np.arange(rows.size)] = -1.0
    p = incidence @ flow
    between = (rows >= N) & (cols >= N)
    cost = (0.5 * a @ cp.square(p) + b @ p
            + (charge[rows, cols] - charge[cols, rows])[~between] @ flow[~between])
    if between.any():
        u = per_distance * np.hypot(x[rows] - x[cols], y[rows] - y[cols])[between]
        cost += u @ cp.abs(flow[between])
    member = ~between  # members only sell (producers) or only buy (consumers)
    sign = np.where(p_max[rows[member]] > 0, 1.0, -1.0)
    problem = cp.Problem(cp.Minimize(cost), [p >= p_min, p <= p_max,
                                             cp.multiply(sign, flow[member]) >= 0])
    problem.solve(solver=cp.CLARABEL, **TIGHT)
    return problem.value


# --- connectivity and messages -----------------------------------------------------------------

def _random_graph_case(rng, n, density):
    role = rng.choice(["p", "c", "x", "m"], size=n, p=[0.35, 0.35, 0.15, 0.15])
    p_min = np.where(np.isin(role, ["c", "x"]), -10.0, 0.0)
    p_max = np.where(np.isin(role, ["p", "x"]), 10.0, 0.0)
    upper = np.triu(rng.uniform(size=(n, n)) < density, 1)
    return make_community(np.ones((1, n)), np.zeros((1, n)), p_min[None], p_max[None],
                          (upper | upper.T)[None])


def _supplied_by_search(community):
    """Consumers reachable from a seller, by breadth-first search over scipy's graph."""
    lo, hi = np.asarray(community.trade_min[0]), np.asarray(community.trade_max[0])
    carries = np.asarray(community.edges[0]) & (hi > 0) & (lo.T < 0)
    sellers = np.flatnonzero(np.asarray(community.p_max[0]) > 0)
    reached = np.zeros(carries.shape[0], bool)
    for s in sellers:
        order = csgraph.breadth_first_order(carries.astype(float), s, directed=True,
                                            return_predecessors=False)
        reached[order] = True
    return reached


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 14), density=st.floats(0, 0.6))
def test_connectivity_matches_scipy(seed, n, density):
    c = concatenate([_random_graph_case(np.random.default_rng(seed), n, density)])
    c = concatenate([c, make_community(np.ones((1, 14)), np.zeros((1, 14)), np.zeros((1, 14)),
                                       np.zeros((1, 14)), np.zeros((1, 14, 14), bool))])
    one = type(c)(*(v[:1] for v in c))
    expected, _ = csgraph.connected_components(np.asarray(one.edges[0])[:n, :n], directed=False)
    assert int(n_components(one)[0]) == expected
    buyers = (np.asarray(one.p_max[0]) <= 0) & (np.asarray(one.p_min[0]) < 0)
    share = float(unsupplied_consumers(one)[0])
    if buyers.any():
        assert share == pytest.approx((buyers & ~_supplied_by_search(one)).sum() / buyers.sum())
    else:
        assert np.isnan(share)


def test_a_consumer_behind_a_consumer_is_unsupplied_but_behind_a_manager_is_not():
    # producer 0 - consumer 1 - consumer 2;  producer 3 - manager 4 - consumer 5
    p_min = np.array([[0.0, -5, -5, 0, 0, -5]])
    p_max = np.array([[5.0, 0, 0, 5, 0, 0]])
    edges = np.zeros((1, 6, 6), bool)
    for n, m in ((0, 1), (1, 2), (3, 4), (4, 5)):
        edges[0, n, m] = edges[0, m, n] = True
    c = make_community(np.ones((1, 6)), np.zeros((1, 6)), p_min, p_max, edges)
    assert float(unsupplied_consumers(c)[0]) == pytest.approx(1 / 3)
    assert int(n_components(c)[0]) == 2


def test_messages_per_agent():
    c = generate(7, [0], 5, GeneratorParams(), "centralized")  # 5 agents + hub
    rows = market_metrics(c, np.zeros((1, 6, 6)), np.zeros((1, 6, 6)), np.array([10]),
                          np.array([1e-4]))
    # 10 directed trades and 6 * 5 broadcasts per iteration; the hub sends 5 + 5.
    assert int(rows["messages"][0]) == 10 * (10 + 30)
    assert int(rows["trade_messages"][0]) == 100
    assert float(rows["messages_per_agent_mean"][0]) == pytest.approx(400 / 6)
    assert int(rows["messages_per_agent_max"][0]) == 10 * (5 + 5)
    assert int(rows["n_agents"][0]) == 5 and int(rows["n_managers"][0]) == 1
    assert int(rows["n_components"][0]) == 1 and int(rows["isolated_agents"][0]) == 0


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    (dict(n_communities=0), "graph.n_communities"),
    (dict(n_communities=N + 1), "graph.n_communities"),
    (dict(n_communities=2.0), "graph.n_communities"),
    (dict(charges_between_communities_only=1), "graph.charges_between_communities_only"),
    (dict(layout="ring"), "graph.layout"),
])
def test_bad_layout_arguments_name_the_field(kwargs, field):
    with pytest.raises(InputError) as error:
        generate(0, [0], N, **kwargs)
    assert error.value.field == field


# --- report sections ---------------------------------------------------------------------------

def test_tradeoff_pairs_cases_and_marks_the_nearest_step():
    # Two cases, four steps: welfare loss 0, 10, 20, 80 % (paired), messages 100, 40, 30, 0 %.
    welfare = {0.0: (100.0, 200.0), 0.3: (90.0, 180.0), 0.6: (80.0, 160.0), 0.9: (20.0, 40.0)}
    messages = {0.0: (90, 110), 0.3: (30, 50), 0.6: (20, 40), 0.9: (0, 0)}
    cases = pd.DataFrame([{"sparsity": s, "case_index": k, "social_welfare": welfare[s][k],
                           "messages": messages[s][k]} for s in welfare for k in (0, 1)])
    steps = tradeoff(cases)
    np.testing.assert_allclose(steps["loss"], [0.0, 0.1, 0.2, 0.8])
    np.testing.assert_allclose(steps["messages"], [1.0, 0.4, 0.3, 0.0])
    expected = np.hypot(np.array([0, 0.1, 0.2, 0.8]) / 0.8, [1.0, 0.4, 0.3, 0.0])
    np.testing.assert_allclose(steps["distance"], expected)
    # Best at 30 % (0.40); 60 % is within 0.1 of it (0.42), 0 % and 90 % are not.
    assert steps["good"].tolist() == [False, True, True, False]


def test_tradeoff_figure_holds_every_step():
    # A step whose mean messages exceed the full graph's (a case stopped at max_iter there)
    # stays inside the axes instead of being cut off at 100 %.
    welfare = {0.0: (100.0, 200.0), 0.3: (99.0, 198.0), 0.6: (80.0, 160.0)}
    messages = {0.0: (90, 110), 0.3: (200, 60), 0.6: (20, 40)}  # 130 % at 30 %
    cases = pd.DataFrame([{"sparsity": s, "case_index": k, "social_welfare": welfare[s][k],
                           "messages": messages[s][k]} for s in welfare for k in (0, 1)])
    with style():
        fig = sparsity_report._tradeoff_figure(SimpleNamespace(cases=cases, swept=["graph.sparsity"]))
    bottom, top = fig.axes[0].get_ylim()
    assert bottom == 0 and top >= 130


def test_layouts_table_pairs_welfare_with_the_centralized_case():
    cases = pd.DataFrame({
        "layout": ["full", "full", "centralized", "centralized"] * 2,
        "charge_per_distance": [0.0] * 4 + [1.0] * 4, "case_index": [0, 1] * 4,
        "social_welfare": [100.0, 200.0, 100.0, 200.0, 90.0, 190.0, 100.0, 200.0],
        "iterations": 10, "converged": True, "rho": 1.0, "mean_price": 50.0, "consumption": 5.0,
        "total_traded": 5.0, "charges_collected": 0.0})
    dataset = SimpleNamespace(cases=cases, swept=["community.charge_per_distance", "graph.layout"])
    frame = layouts_table(dataset).set_index(["charge_per_distance", "layout"])
    assert frame.loc[(0.0, "full"), "welfare_vs_centralized"] == pytest.approx(0.0)
    assert frame.loc[(1.0, "full"), "welfare_vs_centralized"] == pytest.approx((-0.1 - 0.05) / 2)


def test_report_of_a_sparsity_study(tmp_path):
    study = tiny_study(tmp_path, "run.cases_per_cell=3", "community.n_agents=6",
                       "graph.sparsity=[0.0,0.3,0.6]", "solver.rho=1.0", "solver.max_iter=300")
    run_study(study)
    written = write_report(study.out)
    names = {path.name for path in written}
    for stem in ("welfare", "price", "iterations", "messages", "tradeoff"):
        assert {f"sparsity_{stem}.png", f"sparsity_{stem}.pdf"} <= names
    frame = pd.read_csv(study.out / "report" / "sparsity.csv")
    rows = pd.read_parquet(study.out / "cases")
    assert frame["sparsity"].tolist() == [0.0, 0.3, 0.6]
    for s, line in zip(frame["sparsity"], frame.to_dict("records")):
        cell = rows[rows.sparsity == s]
        assert line["welfare_mean"] == pytest.approx(cell.social_welfare.mean())
        assert line["messages_mean"] == pytest.approx(cell.messages.mean())
        assert line["components"] == pytest.approx(cell.n_components.mean())


def test_study_keys_reach_the_generator():
    raw = {"community": {"n_agents": 5},
           "graph": {"layout": ["full", "community"], "n_communities": 2,
                     "charges_between_communities_only": True}}
    study = resolve(raw, "layouts")
    # Left out unless given: studies written before these keys keep their config hash.
    assert set(resolve({"community": {"n_agents": 5}}, "plain").config["graph"]) == {
        "layout", "sparsity"}
    shapes = [cell.communities(0, [0, 1], "float64").a.shape for cell in study.cells]
    assert shapes == [(2, 5), (2, 7)]
    for key, value, field in (("n_communities", 6, "graph.n_communities"),
                              ("n_communities", 0, "graph.n_communities"),
                              ("charges_between_communities_only", "yes",
                               "graph.charges_between_communities_only")):
        with pytest.raises(InputError) as error:
            resolve({**raw, "graph": {**raw["graph"], key: value}}, "layouts")
        assert error.value.field == field
