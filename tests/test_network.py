"""Network charges: the DC network against direct computations on hand-made grids, the
New England figures of B19, the policies' gamma signs, charged markets against Clarabel,
bad network data, and studies over a case file."""

import copy
import json
from itertools import permutations
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import DATA
from oracle import clarabel_p2p, clarabel_pool
from jaxmarket import algorithms, markets
from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.case import parse_case, perturbed_costs
from jaxmarket.charges import POLICIES, apply_policy, grid_outcome, load_grid_case
from jaxmarket.cli import app
from jaxmarket.network import (load_network, make_ybus, power_transfer_distance, thevenin_paths,
                               thevenin_weights, zones_crossed)
from jaxmarket.report.network import threshold, width_key
from jaxmarket.study.config import load_study

NEW_ENGLAND = DATA / "new_england.json"

# A 4-bus ring with a chord, one transformer and one switched-off branch; zones 1, 1, 2, 3.
RING = {
    "name": "ring",
    "base_mva": 100.0,
    "reference_bus": 1,
    "agents": [
        {"id": 1, "bus": 1, "a": 0.1, "b": 20.0, "p_min": 0.0, "p_max": 100.0, "kind": "producer"},
        {"id": 2, "bus": 2, "a": 0.1, "b": 30.0, "p_min": 0.0, "p_max": 80.0, "kind": "producer"},
        {"id": 3, "bus": 3, "a": 0.2, "b": 70.0, "p_min": -90.0, "p_max": 0.0, "kind": "consumer"},
        {"id": 4, "bus": 4, "a": 0.2, "b": 60.0, "p_min": -60.0, "p_max": 0.0, "kind": "consumer"},
    ],
    "graph": "bipartite",
    "buses": [{"id": 1, "zone": 1}, {"id": 2, "zone": 1}, {"id": 3, "zone": 2},
              {"id": 4, "zone": 3, "bs": 50.0}],
    "branches": [
        {"from_bus": 1, "to_bus": 2, "r": 0.01, "x": 0.1, "b": 0.02, "rate_a": 100.0, "ratio": 0.0},
        {"from_bus": 2, "to_bus": 3, "r": 0.02, "x": 0.2, "b": 0.0, "rate_a": 50.0, "ratio": 1.05},
        {"from_bus": 3, "to_bus": 4, "r": 0.01, "x": 0.1, "b": 0.04, "rate_a": 100.0, "ratio": 0.0},
        {"from_bus": 4, "to_bus": 1, "r": 0.03, "x": 0.3, "b": 0.0, "rate_a": 0.0, "ratio": 0.0},
        {"from_bus": 1, "to_bus": 3, "r": 0.05, "x": 0.5, "b": 0.0, "rate_a": 100.0, "ratio": 0.0},
        {"from_bus": 2, "to_bus": 4, "r": 0.01, "x": 0.1, "b": 0.0, "rate_a": 100.0, "status": 0},
    ],
}


def ring(**changes):
    doc = copy.deepcopy(RING)
    doc.update(changes)
    return doc


def network_of(doc):
    case = parse_case(doc, "x")
    return load_network(case.meta, case.meta["agent_bus"])


@pytest.fixture(scope="module")
def new_england_grid():
    return load_grid_case(NEW_ENGLAND)


# --- DC network on a hand-made grid --------------------------------------------------


def direct_dc_flows(doc, injection_mw):
    """Flows (MW) of the in-service branches from a DC power flow solved with the
    pseudo-inverse of the full susceptance matrix (no slack elimination)."""
    lines = [b for b in doc["branches"] if b.get("status", 1)]
    ids = [bus["id"] for bus in doc["buses"]]
    susceptance = np.zeros((len(ids), len(ids)))
    for line in lines:
        i, j = ids.index(line["from_bus"]), ids.index(line["to_bus"])
        s = 1.0 / (line["x"] * (line["ratio"] or 1.0))
        susceptance[[i, j], [i, j]] += s
        susceptance[i, j] -= s
        susceptance[j, i] -= s
    angle = np.linalg.pinv(susceptance) @ np.asarray(injection_mw)
    return np.array([(angle[ids.index(line["from_bus"])] - angle[ids.index(line["to_bus"])])
                     / (line["x"] * (line["ratio"] or 1.0)) for line in lines])


def test_ptdf_matches_a_direct_dc_power_flow():
    network = network_of(RING)
    assert network.n_lines == 5  # the switched-off branch is left out
    injection = np.array([70.0, 40.0, -90.0, -20.0])  # balanced
    np.testing.assert_allclose(network.ptdf @ injection, direct_dc_flows(RING, injection), atol=1e-10)
    # Moving the slack changes PTDF columns but neither balanced flows nor distances.
    moved = network_of(ring(reference_bus=3))
    np.testing.assert_allclose(moved.ptdf @ injection, network.ptdf @ injection, atol=1e-10)
    np.testing.assert_allclose(power_transfer_distance(moved), power_transfer_distance(network), atol=1e-12)
    # A transaction i -> j: flows of +1 MW at i and -1 MW at j.
    transfer = np.array([0.0, 1.0, 0.0, -1.0])
    assert power_transfer_distance(network)[1, 3] == pytest.approx(
        np.abs(direct_dc_flows(RING, transfer)).sum(), abs=1e-12)


def test_ybus_of_a_two_bus_transformer_by_hand():
    # Branch 1 -> 2: r = 0, x = 0.1 (series -10j), charging 0.2, tap 2; shunt 0.5 MVAr at bus 2.
    ybus = make_ybus(np.array([0]), np.array([1]), np.array([0.0]), np.array([0.1]), np.array([0.2]),
                     np.array([2.0]), np.array([0.0, 0.005j]), 2)
    expected = np.array([[-2.475j, 5j], [5j, -9.9j + 0.005j]])  # (-10j + 0.1j) / 4, 10j / 2
    np.testing.assert_allclose(ybus, expected, atol=1e-14)


def test_ybus_rows_of_the_ring_without_charging_sum_to_the_shunts():
    doc = ring(branches=[dict(b, b=0.0, ratio=0.0) for b in RING["branches"]])
    ybus = network_of(doc).ybus
    np.testing.assert_allclose(ybus.sum(1), [0, 0, 0, 0.5j], atol=1e-12)


def floyd_warshall(weights):
    distance = np.where(weights > 0, weights, np.inf)
    np.fill_diagonal(distance, 0.0)
    for k in range(len(weights)):
        distance = np.minimum(distance, distance[:, k:k + 1] + distance[k:k + 1, :])
    return distance


def test_thevenin_distance_is_the_shortest_path_over_reciprocal_admittances():
    network = network_of(RING)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = 1.0 / network.ybus  # elementwise reciprocals (infinite off the lines)
    weights = thevenin_weights(network)
    for i, j in permutations(range(4), 2):
        on_line = any({i, j} == {f, t} for f, t in zip(network.line_from, network.line_to))
        expected = abs(z[i, i] + z[j, j] - z[i, j] - z[j, i]) if on_line else 0.0
        assert weights[i, j] == pytest.approx(expected, rel=1e-12)
    distance, _ = thevenin_paths(network)
    np.testing.assert_allclose(distance, floyd_warshall(weights), rtol=1e-12)


def test_zones_crossed_on_the_ring():
    network = network_of(RING)
    _, predecessors = thevenin_paths(network)
    crossed = zones_crossed(network, predecessors)
    assert np.all(np.diag(crossed) == 1) and crossed[0, 1] == 1  # both buses in zone 1
    assert np.array_equal(crossed, crossed.T)
    distance, _ = thevenin_paths(network)
    # Bus 2 -> 4 (zones 1, 3): direct line out of service, so through bus 1 or bus 3.
    via_3 = distance[1, 2] + distance[2, 3]
    assert crossed[1, 3] == (3 if via_3 < distance[1, 0] + distance[0, 3] else 2)


# --- New England (B19) --------------------------------------------------------------


def agent_at(case, bus, kind):
    return next(n for n, (b, k) in enumerate(zip(case.meta["agent_bus"], case.meta["agent_kind"]))
                if b == bus and k == kind)


def test_power_transfer_distance_16_to_39_is_7_43(new_england_grid):
    case, grid = new_england_grid.case, new_england_grid.grid
    n, m = agent_at(case, 39, "producer"), agent_at(case, 16, "consumer")
    assert round(grid.weight["distance_ptd"][n, m], 2) == 7.43
    assert grid.weight["distance_ptd"][n, m] == grid.weight["distance_ptd"][m, n]


def test_free_dispatch_overloads_only_line_16_19(new_england_grid):
    """The B19 finding, with the dispatch from Clarabel and flows from a direct DC solve."""
    case, grid = new_england_grid.case, new_england_grid.grid
    dispatch = clarabel_p2p(case.community, 0)["p"]
    doc = json.loads(NEW_ENGLAND.read_text())
    ids = [bus["id"] for bus in doc["buses"]]
    injection = np.zeros(len(ids))
    np.add.at(injection, [ids.index(b) for b in case.meta["agent_bus"]], dispatch)
    flows = direct_dc_flows(doc, injection)
    loading = np.abs(flows) / np.array([b["rate_a"] for b in doc["branches"]])
    names = [f"{b['from_bus']}-{b['to_bus']}" for b in doc["branches"]]
    assert [names[k] for k in np.flatnonzero(loading > 1)] == ["16-19"]
    assert loading[names.index("16-19")] == pytest.approx(1.30, abs=0.01)
    # The package's columns from the same trades.
    columns = grid_outcome(grid, clarabel_p2p(case.community, 0)["trades"][None])
    assert columns["overloaded_lines"][0] == 1 and columns["most_loaded_line"][0] == "16-19"
    assert columns["max_loading"][0] == pytest.approx(loading.max(), rel=1e-6)
    assert columns["mean_loading"][0] == pytest.approx(loading.mean(), rel=1e-6)


@pytest.mark.parametrize("algorithm", ["ced_mean"])  # the thesis form (ced) oscillates here
def test_pool_dispatch_loads_the_grid_with_its_injections(new_england_grid, algorithm):
    """A pool dispatch has no trades (its trades table is all zeros): its line loadings come
    from its injections. Once 0 % while the dispatch overloads line 16-19 at 130.5 %."""
    case, grid = new_england_grid.case, new_england_grid.grid
    doc = json.loads(NEW_ENGLAND.read_text())
    ids = [bus["id"] for bus in doc["buses"]]
    injection = np.zeros(len(ids))
    np.add.at(injection, [ids.index(b) for b in case.meta["agent_bus"]],
              clarabel_pool(case.community, 0)["p"])
    loading = np.abs(direct_dc_flows(doc, injection)) / np.array(
        [b["rate_a"] for b in doc["branches"]])
    result = markets.solve(case.community, algorithms.get(algorithm)())
    assert np.asarray(result.rows["converged"]).all()
    columns = grid_outcome(grid, result.trades, result.injections)
    assert columns["most_loaded_line"][0] == "16-19" and columns["overloaded_lines"][0] == 1
    assert columns["max_loading"][0] == pytest.approx(loading.max(), rel=1e-4)
    assert columns["mean_loading"][0] == pytest.approx(loading.mean(), rel=1e-4)
    assert columns["inter_zone_traded"][0] == 0  # no bilateral trades


@pytest.mark.parametrize("policy", POLICIES)
def test_gamma_signs_and_reciprocity(new_england_grid, policy):
    case, grid = new_england_grid.case, new_england_grid.grid
    community = apply_policy(case.community, grid, policy, 10.0)
    gamma = np.asarray(community.charge[0])
    edges = np.asarray(community.edges[0])
    producer = np.asarray(community.p_min[0]) >= 0
    np.testing.assert_array_equal(gamma, -gamma.T)  # both ends pay half
    assert np.all(gamma[~edges] == 0)
    seller = edges & producer[:, None]
    np.testing.assert_allclose(gamma[seller], 10.0 * grid.weight[policy][seller] / 2)
    # Seller side >= 0, buyer side <= 0; zero only where the weight is (same bus: distance 0).
    assert np.all(gamma[seller] >= 0) and np.all(gamma[edges & ~producer[:, None]] <= 0)
    assert np.array_equal(gamma[seller] > 0, 10.0 * grid.weight[policy][seller] > 0)


@settings(max_examples=30, deadline=None)
@given(fee=st.floats(0, 50), policy=st.sampled_from(POLICIES[1:]), seed=st.integers(0, 2**16))
def test_gamma_is_nonnegative_on_the_feasible_side(new_england_grid, fee, policy, seed):
    """gamma_nm p_nm >= 0 for every trade inside the boxes (SPEC section 1), and a trade
    of q MW between n and m costs the pair fee * w_nm * q in total."""
    case, grid = new_england_grid.case, new_england_grid.grid
    community = apply_policy(case.community, grid, policy, fee)
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(community.trade_min[0]), np.asarray(community.trade_max[0])
    sells = np.asarray(community.edges[0]) & (np.asarray(community.p_min[0])[:, None] >= 0)
    trades = rng.uniform(lo, hi)
    trades = np.where(sells, trades, -trades.T)  # reciprocal
    gamma = np.asarray(community.charge[0])
    assert np.all(gamma * trades >= 0)
    paid = (gamma * trades)[sells] + (gamma * trades).T[sells]
    np.testing.assert_allclose(paid, fee * grid.weight[policy][sells] * np.abs(trades[sells]),
                               rtol=1e-12, atol=1e-9)


@pytest.fixture(scope="module")
def charged_markets(new_england_grid):
    """New England with unique and zonal fees of 10 €/MWh, and the free market (zonal, u = 0)."""
    case, grid = new_england_grid.case, new_england_grid.grid
    batch = perturbed_costs(case.community, 0, [0, 0, 0], 0.0)
    community = apply_policy(batch, grid, "unique", jnp.array([10.0, 0.0, 0.0]))
    zonal = apply_policy(batch, grid, "zonal", jnp.array([0.0, 10.0, 0.0]))
    community = community._replace(charge=community.charge + zonal.charge)
    # Tolerances 1e-6: 161-502 iterations, against 146-346 at 1e-4.
    options = ConsensusADMM(eps_primal=1e-6, eps_dual=1e-6, max_iter=20_000)
    return community, markets.solve(community, options)


def test_unique_and_zonal_fees_clear_and_match_clarabel(charged_markets, new_england_grid):
    community, result = charged_markets
    assert np.all(result.rows["converged"])
    for i in range(community.n_cases):
        oracle = clarabel_p2p(community, i)
        # Measured: objective within 5e-10 relative, powers within 2e-5 MW. Only the powers
        # are unique (every a_n > 0); the trades are not (Clarabel's differ by up to 51 MW
        # at the same objective), so they are not compared.
        assert result.rows["objective"][i] == pytest.approx(oracle["objective"], rel=1e-8)
        power = np.asarray(result.trades[i]).sum(-1)
        np.testing.assert_allclose(power, oracle["p"], rtol=0, atol=2e-4)
    # Charges collected: the fee on every MW traded (unique), at least that (zonal).
    traded = result.rows["total_traded"]
    assert result.rows["charges_collected"][0] == pytest.approx(10.0 * traded[0], rel=1e-6)
    assert result.rows["charges_collected"][1] >= 10.0 * traded[1] * (1 - 1e-6)


def test_zonal_fee_removes_inter_zone_trades(charged_markets, new_england_grid):
    community, result = charged_markets
    inter = grid_outcome(new_england_grid.grid, result.trades)["inter_zone_traded"]
    assert inter[2] > 1000.0  # the free market trades across zones
    assert inter[1] < 1e-3


def _with_charges(doc, seed):
    """New England with a random explicit charge on every other directed trade (SPEC
    signs: a producer's >= 0, a consumer's <= 0); returns the charge matrix too."""
    rng = np.random.default_rng(seed)
    ids = [agent["id"] for agent in doc["agents"]]
    producer = np.array([agent["p_min"] >= 0 for agent in doc["agents"]])
    gamma = np.zeros((len(ids), len(ids)))
    items = []
    for n, m in zip(*np.nonzero(producer[:, None] != producer[None, :])):  # bipartite graph
        if rng.uniform() < 0.5:
            gamma[n, m] = rng.uniform(0.0, 8.0) * (1 if producer[n] else -1)
            items.append([ids[n], ids[m], gamma[n, m]])
    return {**doc, "charges": items}, gamma


@pytest.mark.parametrize("policy, fee", [("none", 0.0), ("unique", 6.0)])
def test_explicit_case_charges_are_kept_and_a_policy_adds_to_them(tmp_path, policy, fee):
    """Once dropped on a case with a grid: ``solve`` cleared the free market. The rule
    (docs/model.md): gamma = the case's charges + the policy's (+-u w / 2, w = 1 for
    unique; on New England the producer sells)."""
    free = json.loads(NEW_ENGLAND.read_text())
    doc, explicit = _with_charges(free, seed=11)
    path, out = tmp_path / "charged.json", tmp_path / "row.parquet"
    path.write_text(json.dumps(doc))
    # --tol 1e-6: about 20 000 iterations, 10 % more than at 1e-5, powers 10 times closer.
    result = CliRunner().invoke(app, ["solve", str(path), "--policy", policy, "--fee", str(fee),
                                      "--tol", "1e-6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = pd.read_parquet(out).iloc[0]
    trades = pd.read_parquet(out.with_name("row.trades.parquet"))

    community = parse_case(free, "free").community  # no charges: the oracle's are built here
    producer = np.asarray(community.p_min[0]) >= 0
    edges = np.asarray(community.edges[0])
    network = np.where(edges, np.where(producer[:, None], fee / 2, -fee / 2), 0.0)
    charged = community._replace(charge=jnp.asarray((explicit + network)[None]))
    oracle, free_market = clarabel_p2p(charged, 0), clarabel_p2p(community, 0)
    # The charges matter: by 1e-3 of the objective, far more than the tolerances below.
    assert abs(oracle["objective"] - free_market["objective"]) > 10 * 1e-4 * abs(oracle["objective"])

    assert row.converged and row.reference_converged
    assert row.reference_objective == pytest.approx(oracle["objective"], rel=1e-9)
    # Measured: objective within 1.5e-11 relative, powers within 3.5e-5 MW; only the powers
    # are unique (every a_n > 0), not the trades.
    assert row.objective == pytest.approx(oracle["objective"], rel=1e-9)
    ids = [agent["id"] for agent in free["agents"]]
    power = trades.groupby("i").p_ij.sum().reindex(ids).to_numpy()
    np.testing.assert_allclose(power, oracle["p"], rtol=0, atol=5e-4)
    gamma = explicit + network
    paid = sum(gamma[ids.index(i), ids.index(j)] * q for i, j, q in trades[["i", "j", "p_ij"]].itertuples(index=False))
    assert row.charges_collected == pytest.approx(paid, rel=1e-9)


# --- Bad network data ---------------------------------------------------------------


def ne_with(tmp_path, change):
    doc = json.loads(NEW_ENGLAND.read_text())
    change(doc)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(doc))
    return path


def _disconnect(doc):
    # Bus 39's two lines (1-39, 9-39) switched off: bus 39 is an island.
    for branch in doc["branches"]:
        if 39 in (branch["from_bus"], branch["to_bus"]):
            branch["status"] = 0


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc["branches"][4].update(to_bus=99), "branches[4].to_bus: unknown bus 99"),
    (lambda doc: doc["branches"][7].update(x=0.0), "branches[7].x: zero reactance on branch 4-5"),
    (_disconnect, "branches: the grid is disconnected: bus(es) 39 cannot reach the reference bus 31"),
    (lambda doc: doc["agents"][2].update(bus=40), "agents[2].bus: unknown bus 40"),
    (lambda doc: doc["agents"][2].pop("bus"), "agents[2].bus: missing"),
    (lambda doc: doc.pop("reference_bus"), "reference_bus: missing"),
], ids=["unknown-bus", "zero-reactance", "disconnected", "agent-on-missing-bus", "agent-without-bus",
        "no-slack"])
def test_bad_network_data(tmp_path, change, message):
    path = ne_with(tmp_path, change)
    out = tmp_path / "out" / "result.parquet"
    result = CliRunner().invoke(app, ["solve", str(path), "--policy", "unique", "--fee", "10",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {path}: {message}") and result.stderr.count("\n") == 1
    assert not out.parent.exists()


def test_switched_off_zero_reactance_branch_is_fine():
    doc = ring()
    doc["branches"][5]["x"] = 0.0  # status 0: not part of the DC network
    assert network_of(doc).n_lines == 5


def test_policy_needs_a_grid(tmp_path):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({k: v for k, v in RING.items() if k not in ("buses", "branches")}))
    result = CliRunner().invoke(app, ["solve", str(path), "--policy", "zonal"])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: {path}: has no grid")


# --- Studies over a case file ---------------------------------------------------------


def test_perturbed_costs_are_reproducible_and_bounded(new_england):
    batch = perturbed_costs(new_england, 7, [0, 1, 2, 3, 4, 5], 0.1)
    alone = perturbed_costs(new_england, 7, [4], 0.1)
    np.testing.assert_array_equal(batch.a[4], alone.a[0])
    np.testing.assert_array_equal(batch.b[4], alone.b[0])
    np.testing.assert_array_equal(batch.a[0], new_england.a[0])  # case 0 is the file's case
    for field in ("a", "b"):
        ratio = np.asarray(getattr(batch, field)[1:]) / np.asarray(getattr(new_england, field))
        assert np.all(np.abs(ratio - 1) <= 0.1) and np.abs(ratio - 1).max() > 0.05
    np.testing.assert_array_equal(batch.edges, jnp.repeat(new_england.edges, 6, axis=0))


STUDY = f"""
[run]
name = "fees"
cases_per_cell = 2
[network]
case = "{NEW_ENGLAND}"
policy = ["none", "zonal"]
fee = 10.0
cost_perturbation = 0.1
[solver]
max_iter = 5000
"""


def test_network_study_rows(tmp_path):
    path = tmp_path / "fees.toml"
    path.write_text(STUDY)
    result = CliRunner().invoke(app, ["sweep", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(tmp_path / "out" / "cases").sort_values(["cell", "case_index"])
    assert list(rows.policy) == ["none", "none", "zonal", "zonal"]
    assert rows.converged.all() and (rows.optimality_gap < 1e-6).all()
    free = rows.iloc[0]
    assert free.total_traded == pytest.approx(3893.3, abs=0.5)
    assert free.most_loaded_line == "16-19" and free.overloaded_lines == 1
    # Case 1 is perturbed, and the same perturbation in both cells (paired comparison).
    assert rows.iloc[1].total_traded != pytest.approx(3893.3, abs=0.5)
    assert rows.iloc[3].inter_zone_traded < 1e-3 and rows.iloc[1].inter_zone_traded > 1000

    result = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "out" / "report"
    for stem in ("network_traded", "network_loading", "network_collected", "network_map"):
        assert (report / f"{stem}.png").stat().st_size > 0 and (report / f"{stem}.pdf").exists()
    thresholds = pd.read_csv(report / "network_thresholds.csv").set_index("policy")
    assert thresholds.loc["zonal", "u_no_inter_all"] == 10.0
    assert np.isnan(thresholds.loc["none", "u_no_inter_nominal"])


def test_threshold_is_where_the_condition_holds_from_on():
    table = pd.DataFrame({"fee": [3.0, 0.0, 2.0, 1.0], "ok": [True, False, False, True]})
    assert threshold(table, "ok") == 3.0
    assert threshold(table.assign(ok=True), "ok") == 0.0
    assert np.isnan(threshold(table.assign(ok=[False, True, True, True]), "ok"))


def test_map_width_key_is_round_and_within_the_largest_trade():
    assert width_key(412.3) == [200.0, 400.0]
    assert width_key(987.0) == [450.0, 900.0]
    assert width_key(1.0) == [0.5, 1.0]
    assert width_key(0.034) == pytest.approx([0.015, 0.03])
    assert width_key(0.0) == []


@pytest.mark.parametrize("text, message", [
    ("[network]\npolicy = \"zonal\"\n", "network.policy: needs network.case"),
    (STUDY + "[graph]\nsparsity = 0.5\n", "graph: a study over network.case"),
    (STUDY.replace('"zonal"]', '"zonl"]'), 'network.policy[1]: expected one of "none"'),
    (STUDY.replace("fee = 10.0", "fee = -1.0"), "network.fee: must be >= 0"),
    (STUDY.replace("new_england.json", "nowhere.json"), "no such file"),
])
def test_bad_network_studies(tmp_path, text, message):
    path = tmp_path / "fees.toml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1


def test_generator_studies_leave_out_the_network_section():
    study = load_study(Path(__file__).resolve().parents[1] / "sweeps" / "quickstart.toml")
    assert "network" not in study.config
    assert all(cell.grid_case is None for cell in study.cells)
