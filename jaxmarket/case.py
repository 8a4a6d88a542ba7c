"""Case files: one P2P market case in JSON, as the packaged ``new_england`` case.

```
{"name": "...", "graph": "full" | "bipartite",          # or "edges": [[id_i, id_j], ...]
 "agents": [{"id": 1, "a": 0.067, "b": 64.0, "p_min": -146.4, "p_max": 0.0,
             "kind": "consumer", "x": 0.185, "y": 0.579, "bus": 1}, ...],
 "charges": [[id_i, id_j, gamma_ij], ...],               # optional, per directed trade
 "description", "source", "graph_note", "base_mva", "reference_bus", "buses", "branches"}
```

``graph`` defaults to ``"full"``; ``"bipartite"`` lets producers trade with consumers only
(prosumers with everyone). An explicit ``edges`` list (undirected pairs) replaces
``graph``. A charge ``gamma_ij`` is what agent i pays per unit of ``p_ij`` and follows the
SPEC section 1 sign convention: a seller's charge is >= 0, a buyer's <= 0; a network
policy's charge adds to these (``jaxmarket.charges``). Network data
(buses, branches, agent buses) are checked and kept in ``CaseFile.meta`` for
``jaxmarket.network``: every bus reference must be a known bus, and a case with branches
needs a reference bus, a bus for every agent, non-zero reactances and a connected grid.
Any key outside this schema is an error, so a typo never goes unnoticed, and every number is
0 or of magnitude 1e-12 to 1e12 in its unit (``jaxmarket.schema.quantity``): beyond that
float64 cannot hold the market's arithmetic.

Energy and reserve market (optional, ``jaxmarket.markets.reserve.case_market``;
``jaxmarket solve`` clears it for a case with reserve data): an agent may carry
``"uncertain": true`` with a ``"forecast": {"mean", "sd", "distribution"
("gaussian" | "beta"), "low", "high"}`` (required when uncertain; sd >= 0; a beta forecast
needs its support), reserve limits ``r_up_max``, ``r_down_max`` (default 0) and reserve
costs ``reserve_a_up/down`` (default the agent's ``a``), ``reserve_b_up/down`` (default 0);
a top-level ``"reserve": {"delta": 0.95, "allocation": "rel_1"}`` gives the global
confidence level in (0, 1) and its allocation. These are kept in ``CaseFile.meta``.

``perturbed_costs`` turns one case into a Monte Carlo batch: case k multiplies every
agent's ``a`` and ``b`` by independent factors ``1 + r * U(-1, 1)`` drawn from
``(seed, k)`` alone (independent of batching); case 0 is the file's case itself, so every
batch over a case file contains the published case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from jaxmarket.community import (Community, bipartite_graph, consumers, full_graph, make_community,
                                 producers)
from jaxmarket.cases import locate
from jaxmarket.errors import InputError
from jaxmarket.schema import array, child, integer, quantity, record, show, text

LAYOUTS = ("full", "bipartite")

# kind -> (test on (p_min, p_max), what the bounds must satisfy); roles of SPEC section 1.
KINDS = {
    "producer": (lambda lo, hi: lo >= 0, "p_min >= 0"),
    "consumer": (lambda lo, hi: hi <= 0, "p_max <= 0"),
    "prosumer": (lambda lo, hi: lo < 0 < hi, "p_min < 0 < p_max"),
    "manager": (lambda lo, hi: lo == hi == 0, "p_min = p_max = 0"),
}

# Energy and reserve market (jaxmarket.reserve): an uncertain agent's forecast of its
# injection (mean, sd >= 0; a "beta" forecast is a scaled Beta on [low, high]).
FORECAST = {"mean": quantity, "sd": partial(quantity, ge=0),
            "distribution": partial(text, choices=("gaussian", "beta")),
            "low": quantity, "high": quantity}


def _forecast(value, field):
    return record(value, field, FORECAST, ("mean", "sd"))


def _flag(value, field):
    if not isinstance(value, bool):
        raise InputError(field, f"expected true or false, got {show(value)}")
    return value


AGENT = {
    "id": integer, "a": partial(quantity, ge=0), "b": quantity, "p_min": quantity,
    "p_max": quantity, "x": quantity, "y": quantity, "bus": integer,
    "kind": partial(text, choices=tuple(KINDS)), "uncertain": _flag, "forecast": _forecast,
    "r_up_max": partial(quantity, ge=0), "r_down_max": partial(quantity, ge=0),
    "reserve_a_up": partial(quantity, ge=0), "reserve_b_up": quantity,
    "reserve_a_down": partial(quantity, ge=0), "reserve_b_down": quantity,
}
# Global confidence level of the reserve market and its allocation (Table 5.1).
RESERVE = {"delta": partial(quantity, gt=0, lt=1),
           "allocation": partial(text, choices=("rel_mu", "rel_sigma", "rel_1", "abs_sigma"))}
BUS = {
    "id": integer, "type": integer, "zone": integer, "base_kv": quantity, "qd": quantity,
    "gs": quantity, "bs": quantity,
}
BRANCH = {
    "from_bus": integer, "to_bus": integer, "r": quantity, "x": quantity, "b": quantity,
    "rate_a": partial(quantity, ge=0), "ratio": quantity, "status": integer,
}


def _records(schema, required):
    def check(value, field):
        return [record(v, child(field, i), schema, required) for i, v in enumerate(array(value, field))]
    return check


CASE = {
    "name": text, "description": text, "source": text, "graph_note": text,
    "base_mva": partial(quantity, gt=0),
    "reference_bus": integer, "graph": partial(text, choices=LAYOUTS),
    "agents": _records(AGENT, ("id", "a", "b", "p_min", "p_max")),
    "buses": _records(BUS, ("id",)), "branches": _records(BRANCH, ("from_bus", "to_bus")),
    "edges": array, "charges": array,
    "reserve": lambda value, field: record(value, field, RESERVE, ("delta",)),
}


@dataclass(frozen=True)
class CaseFile:
    community: Community  # a batch of 1 case, float64
    agent_ids: list[int]  # agent n of the community is agent_ids[n] of the file
    name: str
    meta: dict  # the file's other keys, plus per-agent "agent_bus" and "agent_kind"


def _check_agents(agents: list[dict]) -> dict[int, int]:
    """Bounds and kinds of every agent; returns id -> position."""
    position: dict[int, int] = {}
    for n, agent in enumerate(agents):
        field = f"agents[{n}]"
        if agent["id"] in position:
            raise InputError(f"{field}.id", f"duplicate id {agent['id']} (also agents[{position[agent['id']]}])")
        position[agent["id"]] = n
        lo, hi = agent["p_min"], agent["p_max"]
        if lo > hi:
            raise InputError(field, f"p_min ({lo}) > p_max ({hi})")
        if agent.get("uncertain") and "forecast" not in agent:
            raise InputError(f"{field}.forecast", "an uncertain agent needs a forecast (mean, sd)")
        forecast = agent.get("forecast")
        if forecast and forecast.get("distribution") == "beta":
            low, high = forecast.get("low"), forecast.get("high")
            if low is None or high is None or not (
                    forecast["sd"] ** 2 < (forecast["mean"] - low) * (high - forecast["mean"])):
                raise InputError(f"{field}.forecast", "a beta forecast needs low < mean < high "
                                                      "and sd^2 < (mean - low)(high - mean)")
        if "kind" in agent:
            holds, rule = KINDS[agent["kind"]]
            if not holds(lo, hi):
                raise InputError(field, f"kind {show(agent['kind'])} needs {rule}, got p_min {lo}, p_max {hi}")
    return position


def _check_buses(doc: dict) -> None:
    """Bus references of agents, branches and the reference bus point to known buses."""
    if "buses" not in doc:
        if "branches" in doc:
            raise InputError("buses", "missing: branches need the bus list")
        return
    buses: dict[int, int] = {}
    for k, bus in enumerate(doc["buses"]):
        if bus["id"] in buses:
            raise InputError(f"buses[{k}].id", f"duplicate bus {bus['id']} (also buses[{buses[bus['id']]}])")
        buses[bus["id"]] = k
    refs = [(f"agents[{n}].bus", a.get("bus")) for n, a in enumerate(doc["agents"])]
    for k, branch in enumerate(doc.get("branches", [])):
        refs += [(f"branches[{k}].from_bus", branch["from_bus"]), (f"branches[{k}].to_bus", branch["to_bus"])]
    refs.append(("reference_bus", doc.get("reference_bus")))
    for field, bus in refs:
        if bus is not None and bus not in buses:
            raise InputError(field, f"unknown bus {bus}")
    if "branches" in doc:
        _check_grid(doc, buses)


def _check_grid(doc: dict, buses: dict[int, int]) -> None:
    """What the DC network (``jaxmarket.network``) needs: a reference bus, a bus for every
    agent, non-zero reactances and one connected grid of in-service branches."""
    if "reference_bus" not in doc:
        raise InputError("reference_bus", "missing: a case with branches needs the slack bus")
    for n, agent in enumerate(doc["agents"]):
        if "bus" not in agent:
            raise InputError(f"agents[{n}].bus", "missing: a case with branches needs every agent's bus")
    in_service = [(k, b) for k, b in enumerate(doc["branches"]) if b.get("status", 1)]
    for k, branch in in_service:
        if branch.get("x", 0.0) == 0:
            raise InputError(f"branches[{k}].x", f"zero reactance on branch {branch['from_bus']}-"
                                                 f"{branch['to_bus']}; the DC power flow needs x != 0")
    ends = np.array([(buses[b["from_bus"]], buses[b["to_bus"]]) for _, b in in_service], int).reshape(-1, 2)
    graph = coo_array((np.ones(len(ends)), (ends[:, 0], ends[:, 1])), shape=(len(buses),) * 2)
    count, label = connected_components(graph, directed=False)
    if count > 1:
        ids = list(buses)
        away = [ids[k] for k in np.flatnonzero(label != label[buses[doc["reference_bus"]]])]
        raise InputError("branches", f"the grid is disconnected: bus(es) {', '.join(map(str, away[:5]))}"
                                     f"{' ...' if len(away) > 5 else ''} cannot reach the reference bus "
                                     f"{doc['reference_bus']} through in-service branches")


def _agent_pair(item, field: str, position: dict[int, int], size: int) -> tuple:
    """An ``[id_i, id_j, ...]`` entry of ``edges``/``charges`` as positions (n, m) + rest."""
    if not isinstance(item, list) or len(item) != size:
        shape = "[id_i, id_j]" if size == 2 else "[id_i, id_j, gamma_ij]"
        raise InputError(field, f"expected {shape}, got {show(item)}")
    ids = [integer(v, child(field, k)) for k, v in enumerate(item[:2])]
    for i in ids:
        if i not in position:
            raise InputError(field, f"unknown agent id {i}")
    if ids[0] == ids[1]:
        raise InputError(field, f"self-loop on agent {ids[0]}")
    return (position[ids[0]], position[ids[1]], *item[2:])


def _explicit_edges(items: list, position: dict[int, int]) -> np.ndarray:
    edges = np.zeros((len(position),) * 2, bool)
    seen: dict[tuple[int, int], int] = {}
    for k, item in enumerate(items):
        n, m = _agent_pair(item, f"edges[{k}]", position, 2)
        pair = (min(n, m), max(n, m))
        if pair in seen:
            raise InputError(f"edges[{k}]", f"duplicate of edges[{seen[pair]}] (edges are undirected)")
        seen[pair] = k
        edges[n, m] = edges[m, n] = True
    return edges


def _charges(items: list, position: dict[int, int], community: Community, ids: list[int]) -> np.ndarray:
    edges = np.asarray(community.edges[0])
    sells_only, buys_only = np.asarray(producers(community)[0]), np.asarray(consumers(community)[0])
    charge = np.zeros(edges.shape)
    seen: dict[tuple[int, int], int] = {}
    for k, item in enumerate(items):
        field = f"charges[{k}]"
        n, m, gamma = _agent_pair(item, field, position, 3)
        gamma = quantity(gamma, child(field, 2))
        if not edges[n, m]:
            raise InputError(field, f"agents {ids[n]} and {ids[m]} do not trade on this graph")
        if (n, m) in seen:
            raise InputError(field, f"duplicate of charges[{seen[n, m]}]")
        seen[n, m] = k
        # gamma_nm * p_nm >= 0 on the feasible side: p_nm >= 0 for a seller, <= 0 for a buyer.
        if sells_only[n] and gamma < 0 or buys_only[n] and gamma > 0:
            side, rule = ("seller", ">= 0") if sells_only[n] else ("buyer", "<= 0")
            raise InputError(field, f"agent {ids[n]} is a {side}, its charge must be {rule} "
                                    f"(SPEC sign convention), got {gamma}")
        charge[n, m] = gamma
    return charge


def parse_case(doc, default_name: str) -> CaseFile:
    """Validate a decoded case document and build its community (pure, no I/O)."""
    doc = record(doc, "", CASE, required=("agents",))
    agents = doc["agents"]
    if len(agents) < 2:
        raise InputError("agents", f"need at least 2 agents, got {len(agents)}")
    position = _check_agents(agents)
    _check_buses(doc)
    ids = [agent["id"] for agent in agents]
    column = {key: np.array([agent.get(key, 0.0) for agent in agents], float)
              for key in ("a", "b", "p_min", "p_max", "x", "y")}
    active = np.ones(len(agents), bool)
    if "edges" in doc:
        if "graph" in doc:
            raise InputError("edges", 'cannot be combined with "graph"; give one of them')
        edges, graph_field = _explicit_edges(doc["edges"], position), "edges"
    elif doc.get("graph", "full") == "bipartite":
        edges, graph_field = np.asarray(bipartite_graph(column["p_min"], column["p_max"], active)), "graph"
    else:
        edges, graph_field = np.asarray(full_graph(active)), "graph"
    if not edges.any():
        raise InputError(graph_field, "the trade graph has no edges")
    community = make_community(
        column["a"][None], column["b"][None], column["p_min"][None], column["p_max"][None],
        edges[None], x=column["x"][None], y=column["y"][None], dtype=jnp.float64)
    if "charges" in doc:
        charge = _charges(doc["charges"], position, community, ids)
        community = community._replace(charge=jnp.asarray(charge[None], jnp.float64))
    meta = {key: value for key, value in doc.items() if key not in ("name", "agents", "edges", "charges")}
    meta["agent_bus"] = [agent.get("bus") for agent in agents]
    meta["agent_kind"] = [agent.get("kind") for agent in agents]
    meta["agent_reserve"] = [{key: agent[key] for key in AGENT if key in agent and key not in
                              ("id", "a", "b", "p_min", "p_max", "x", "y", "bus", "kind")}
                             for agent in agents]
    return CaseFile(community, ids, doc.get("name", default_name), meta)


_COST_STREAM = 0x636F7374  # "cost": the perturbation's own sub-stream of (seed, k)


def perturbed_costs(case: Community, seed: int, case_indices, relative: float) -> Community:
    """One copy of the single-case community ``case`` per case index, costs perturbed."""
    return _perturbed_costs(case, np.asarray(case_indices), jax.random.PRNGKey(seed), relative)


@jax.jit  # one program per batch shape (eagerly, one per operation)
def _perturbed_costs(case: Community, indices, root, relative) -> Community:
    def factors(index):
        key = jax.random.fold_in(jax.random.fold_in(root, index), _COST_STREAM)
        draw = jax.random.uniform(key, (2, case.n_max), jnp.float64, -1.0, 1.0)
        return jnp.where(index == 0, 1.0, 1.0 + relative * draw)

    scale = jax.vmap(factors)(indices).astype(case.dtype)
    batch = jax.tree_util.tree_map(lambda v: jnp.repeat(v, len(indices), axis=0), case)
    return batch._replace(a=batch.a * scale[:, 0], b=batch.b * scale[:, 1])


def _unique_keys(pairs: list) -> dict:
    """JSON objects whose later duplicate keys would silently win are an error."""
    result = dict(pairs)
    if len(result) < len(pairs):
        key = next(key for k, (key, _) in enumerate(pairs) if key in dict(pairs[:k]))
        raise InputError("", f"duplicate key {show(key)} in a JSON object")
    return result


def load_case(path) -> CaseFile:
    """Read and validate a case file, given by its path or as the name of a packaged case
    (``jaxmarket.cases``); every problem is an ``InputError`` naming the file."""
    path = locate(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(str(path), f"cannot read: {getattr(error, 'strerror', None) or error}") from None
    try:
        return parse_case(json.loads(source, object_pairs_hook=_unique_keys), default_name=path.stem)
    except json.JSONDecodeError as error:
        raise InputError(str(path), f"malformed JSON at line {error.lineno} column {error.colno}: "
                                    f"{error.msg}") from None
    except InputError as error:
        field = f"{path}: {error.field}" if error.field else str(path)
        raise InputError(field, error.problem) from None
