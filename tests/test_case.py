"""Case files: the New England case, explicit graphs and charges, and one-line errors."""

import copy
import json

import numpy as np
import pytest

from jaxmarket.cases import locate
from jaxmarket.case import load_case, parse_case
from jaxmarket.errors import InputError

DATA = locate("new_england").parent  # the packaged cases

SMALL = {
    "name": "small",
    "agents": [
        {"id": 10, "a": 0.1, "b": 20.0, "p_min": 0.0, "p_max": 50.0, "kind": "producer"},
        {"id": 20, "a": 0.2, "b": 70.0, "p_min": -40.0, "p_max": 0.0, "kind": "consumer"},
        {"id": 30, "a": 0.0, "b": 45.0, "p_min": -10.0, "p_max": 10.0, "kind": "prosumer"},
    ],
}


def small(**changes):
    doc = copy.deepcopy(SMALL)
    doc.update(changes)
    return doc


def test_new_england_case():
    case = load_case(DATA / "new_england.json")
    community = case.community
    assert case.name == "new_england_31"
    assert case.agent_ids == list(range(1, 32))
    assert community.a.shape == (1, 31) and community.dtype == np.float64
    edges = np.asarray(community.edges[0])
    producer = np.asarray(community.p_min[0]) >= 0
    assert producer.sum() == 10
    # Bipartite: every producer-consumer pair and nothing else.
    assert np.array_equal(edges, producer[:, None] != producer[None, :])
    assert not np.asarray(community.charge).any()
    assert len(case.meta["buses"]) == 39 and len(case.meta["branches"]) == 46
    assert case.meta["reference_bus"] == 31 and case.meta["agent_bus"][0] == 1
    assert case.meta["agent_kind"].count("producer") == 10


def test_explicit_edges_and_charges():
    doc = small(edges=[[10, 20], [30, 20]], charges=[[10, 20, 0.5], [20, 10, -0.5], [30, 20, 0.25]])
    case = parse_case(doc, "x")
    edges = np.asarray(case.community.edges[0])
    assert np.array_equal(edges, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    charge = np.asarray(case.community.charge[0])
    assert np.array_equal(charge, [[0, 0.5, 0], [-0.5, 0, 0], [0, 0.25, 0]])
    assert case.meta["agent_kind"] == ["producer", "consumer", "prosumer"]


def test_full_graph_by_default():
    edges = np.asarray(parse_case(small(), "x").community.edges[0])
    assert np.array_equal(edges, ~np.eye(3, dtype=bool))


def _agent(n, **changes):
    agents = copy.deepcopy(SMALL["agents"])
    agents[n].update(changes)
    return {"agents": agents}


@pytest.mark.parametrize("changes, message", [
    (_agent(1, a=-1.0), "agents[1].a: must be >= 0, got -1.0"),
    (_agent(0, p_min=10.0, p_max=2.0), "agents[0]: p_min (10.0) > p_max (2.0)"),
    (_agent(0, a=True), "agents[0].a: expected a non-negative number, got true"),
    (_agent(0, b="x"), 'agents[0].b: expected a number, got "x"'),
    (_agent(0, b=float("inf")), "agents[0].b: must be finite, got inf"),
    (_agent(0, id=1.5), "agents[0].id: expected an integer, got 1.5"),
    (_agent(2, id=10), "agents[2].id: duplicate id 10 (also agents[0])"),
    (_agent(2, colour="red"), "agents[2].colour: unknown key"),
    (_agent(1, kind="producer"), 'agents[1]: kind "producer" needs p_min >= 0'),
    (_agent(0, kind="manager"), 'agents[0]: kind "manager" needs p_min = p_max = 0'),
    (_agent(0, kind="boss"), 'agents[0].kind: expected one of "producer", "consumer"'),
    ({"agents": [{"id": 1, "a": 1.0, "b": 1.0, "p_min": 0.0}]}, "agents[0].p_max: missing"),
    ({"agents": SMALL["agents"][:1]}, "agents: need at least 2 agents, got 1"),
    ({"colour": "red"}, "colour: unknown key"),
    ({"graph": "ring"}, 'graph: expected one of "full", "bipartite", got "ring"'),
    ({"graph": "full", "edges": [[10, 20]]}, 'edges: cannot be combined with "graph"'),
    ({"edges": [[10, 99]]}, "edges[0]: unknown agent id 99"),
    ({"edges": [[10, 10]]}, "edges[0]: self-loop on agent 10"),
    ({"edges": [[10, 20], [20, 10]]}, "edges[1]: duplicate of edges[0]"),
    ({"edges": [[10]]}, "edges[0]: expected [id_i, id_j], got [10]"),
    ({"edges": []}, "edges: the trade graph has no edges"),
    ({"charges": [[10, 20]]}, "charges[0]: expected [id_i, id_j, gamma_ij], got [10, 20]"),
    ({"edges": [[10, 20]], "charges": [[10, 30, 0.5]]}, "charges[0]: agents 10 and 30 do not trade"),
    ({"charges": [[10, 20, 0.5], [10, 20, 0.5]]}, "charges[1]: duplicate of charges[0]"),
    ({"charges": [[10, 20, -0.5]]}, "charges[0]: agent 10 is a seller, its charge must be >= 0"),
    ({"charges": [[20, 10, 0.5]]}, "charges[0]: agent 20 is a buyer, its charge must be <= 0"),
    ({"charges": [[10, 20, None]]}, "charges[0][2]: expected a number, got null"),
    ({"buses": [{"id": 1}], "agents": [dict(a, bus=2) for a in SMALL["agents"]]},
     "agents[0].bus: unknown bus 2"),
    ({"base_mva": 0}, "base_mva: must be > 0, got 0.0"),
    ({"buses": [{"id": 1}, {"id": 2}], "agents": [dict(a, bus=1 + i % 2) for i, a in enumerate(SMALL["agents"])],
      "branches": [{"from_bus": 1, "to_bus": 2, "x": 0.1, "rate_a": -600}]},
     "branches[0].rate_a: must be >= 0, got -600.0"),  # 0 is unlimited; below is no rating
])
def test_bad_case_documents(changes, message):
    with pytest.raises(InputError) as error:
        parse_case(small(**changes), "x")
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


MAGNITUDE = "must be 0 or of magnitude 1e-12 to 1e12 (a market quantity in its unit), got "


@pytest.mark.parametrize("changes, message", [
    (_agent(0, a=1e300), "agents[0].a: " + MAGNITUDE + "1e+300"),
    # A tiny curvature once stopped ADMM "converged" 10 % from the optimum.
    (_agent(0, a=1e-18), "agents[0].a: " + MAGNITUDE + "1e-18"),
    (_agent(1, b=-1e300), "agents[1].b: " + MAGNITUDE + "-1e+300"),
    (_agent(0, p_max=1e300), "agents[0].p_max: " + MAGNITUDE + "1e+300"),
    (_agent(1, p_min=-1e13), "agents[1].p_min: " + MAGNITUDE + "-10000000000000.0"),
    ({"charges": [[10, 20, 1e300]]}, "charges[0][2]: " + MAGNITUDE + "1e+300"),
    ({"base_mva": 1e-300}, "base_mva: " + MAGNITUDE + "1e-300"),
    (_agent(0, uncertain=True, forecast={"mean": 10.0, "sd": 1e300}),
     "agents[0].forecast.sd: " + MAGNITUDE + "1e+300"),
])
def test_extreme_magnitudes_are_refused(changes, message):
    """Values float64 cannot combine with a market's other quantities are one-line errors,
    not NaN or wrong rows (schema.quantity); 0 and the bounds themselves pass."""
    with pytest.raises(InputError) as error:
        parse_case(small(**changes), "x")
    assert str(error.value) == message


def test_magnitudes_at_the_bounds_pass():
    case = parse_case(small(**_agent(0, a=1e-12, p_max=1e12)), "x")
    assert float(case.community.a[0, 0]) == 1e-12 and float(case.community.p_max[0, 0]) == 1e12
    parse_case(small(**_agent(0, a=0.0, b=0.0)), "x")


def test_bipartite_without_producers_has_no_edges():
    consumers = [dict(a, p_min=-5.0, p_max=0.0, kind="consumer") for a in SMALL["agents"]]
    with pytest.raises(InputError, match="^graph: the trade graph has no edges$"):
        parse_case(small(graph="bipartite", agents=consumers), "x")


def test_file_errors_name_the_file(tmp_path):
    path = tmp_path / "case.json"
    path.write_text(json.dumps(small(charges=[[20, 10, 1.0]])))
    with pytest.raises(InputError, match=f"^{path}: charges\\[0\\]: agent 20 is a buyer"):
        load_case(path)
    path.write_text('{"agents": [\n  {"id": 1,}\n]}')
    with pytest.raises(InputError, match=f"^{path}: malformed JSON at line 2 column 12: "):
        load_case(path)
    path.write_text('{"name": "a", "name": "b", "agents": []}')
    with pytest.raises(InputError, match=f'^{path}: duplicate key "name" in a JSON object$'):
        load_case(path)
    with pytest.raises(InputError, match="no such file"):
        load_case(tmp_path / "missing.json")
