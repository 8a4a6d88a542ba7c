"""The grid under a P2P market (SPEC section 7, B19): DC power flow, electrical distances,
zones, and the line loadings of cleared trades.

Built once per case file from its ``buses``, ``branches``, ``base_mva`` and
``reference_bus`` (MATPOWER conventions, checked by ``jaxmarket.case``); branches with
``status`` 0 are left out. Decisions:

* **DC model.** Line susceptance ``1 / (x * ratio)`` (ratio 0 means 1), resistance, line
  charging and shunts ignored; PTDF from the reduced bus susceptance matrix with the
  reference bus as slack: ``PTDF_l(k)`` is the flow on line l per MW injected at bus k and
  withdrawn at the slack. Flows are in MW, positive from ``from_bus`` to ``to_bus``.
* **Power-transfer distance** between buses i and j: ``sum_l |PTDF_l(i) - PTDF_l(j)|``,
  the total flow (per MW) that a transaction i -> j puts on all lines; independent of the
  slack.
* **Thevenin distance** (B19 eq. 12): shortest path over the lines weighted by
  ``|Z_ii + Z_jj - Z_ij - Z_ji|`` with ``Z_il = 1 / Y_il`` the reciprocals of the entries of
  the bus admittance matrix Y built as MATPOWER's ``makeYbus`` (series admittance, line
  charging, tap ratios, bus shunts ``(gs + j bs) / base_mva``). Shortest paths come from
  ``scipy.sparse.csgraph`` (Dijkstra), with predecessors for the zones on the path.
* **Zones crossed** between buses i and j: the number of distinct zones on the Thevenin
  shortest path, both ends included (1 inside a zone). Buses without a zone are zone 0.
* **Loadings** ``|flow| / rate_a``; a line with ``rate_a`` 0 is unlimited (MATPOWER), its
  loading is 0. A line is overloaded above 1.
* The market's net injections are the agents' ``p_n`` summed per bus; on a case whose
  agents cover every load and generator (as New England) the cleared market is the
  whole dispatch. It is balanced, so the slack injects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import shortest_path


@dataclass(frozen=True)
class Network:
    bus_ids: np.ndarray  # (K,) bus numbers of the file; bus k of every array is bus_ids[k]
    zone: np.ndarray  # (K,) zone of every bus
    line_from: np.ndarray  # (L,) bus index of each in-service branch's from end
    line_to: np.ndarray  # (L,)
    rate: np.ndarray  # (L,) rate_a in MW (0: unlimited)
    ptdf: np.ndarray  # (L, K) MW on line l per MW injected at bus k, withdrawn at the slack
    ybus: np.ndarray  # (K, K) complex bus admittance matrix (p.u.)
    agent_bus: np.ndarray  # (N,) bus index of every agent of the case

    @property
    def n_lines(self) -> int:
        return len(self.rate)

    def line_names(self) -> list[str]:
        return [f"{self.bus_ids[f]}-{self.bus_ids[t]}" for f, t in zip(self.line_from, self.line_to)]

    def agents(self, bus_matrix: np.ndarray) -> np.ndarray:
        """A (K, K) bus-pair quantity as (N, N) agent pairs."""
        return bus_matrix[np.ix_(self.agent_bus, self.agent_bus)]


def _branches(meta: dict, index: dict[int, int]) -> dict[str, np.ndarray]:
    branches = [b for b in meta["branches"] if b.get("status", 1)]
    column = {key: np.array([b.get(key, 0.0) for b in branches], float)
              for key in ("r", "x", "b", "rate_a", "ratio")}
    column["from"] = np.array([index[b["from_bus"]] for b in branches], int)
    column["to"] = np.array([index[b["to_bus"]] for b in branches], int)
    column["tap"] = np.where(column["ratio"] == 0, 1.0, column["ratio"])
    return column


def incidence(line_from, line_to, n_buses: int) -> np.ndarray:
    """(L, K) branch-bus incidence: +1 at the from end, -1 at the to end."""
    lines = np.arange(len(line_from))
    matrix = np.zeros((len(line_from), n_buses))
    matrix[lines, line_from] = 1.0
    matrix[lines, line_to] = -1.0
    return matrix


def dc_ptdf(line_from, line_to, susceptance, n_buses: int, slack: int) -> np.ndarray:
    """PTDF of a DC network from the reduced susceptance matrix (zero column at the slack)."""
    a = incidence(line_from, line_to, n_buses)
    branch = susceptance[:, None] * a  # line flow per unit of bus angle
    keep = np.arange(n_buses) != slack
    reduced = (a.T @ branch)[np.ix_(keep, keep)]
    ptdf = np.zeros((len(line_from), n_buses))
    ptdf[:, keep] = np.linalg.solve(reduced, branch[:, keep].T).T  # B_red symmetric
    return ptdf


def make_ybus(line_from, line_to, r, x, charging, tap, shunt, n_buses: int) -> np.ndarray:
    """Bus admittance matrix as MATPOWER's makeYbus (no phase shifters)."""
    series = 1.0 / (r + 1j * x)
    ytt = series + 0.5j * charging
    yff = ytt / tap**2
    yft = -series / tap
    ybus = np.diag(shunt.astype(complex))
    np.add.at(ybus, (line_from, line_from), yff)
    np.add.at(ybus, (line_to, line_to), ytt)
    np.add.at(ybus, (line_from, line_to), yft)
    np.add.at(ybus, (line_to, line_from), yft)
    return ybus


def load_network(meta: dict, agent_bus) -> Network:
    """The network of a case file (``CaseFile.meta`` and its ``agent_bus``); the data have
    been checked by ``jaxmarket.case`` (known buses, x != 0, connected grid)."""
    bus_ids = np.array([bus["id"] for bus in meta["buses"]], int)
    index = {int(b): k for k, b in enumerate(bus_ids)}
    line = _branches(meta, index)
    n_buses = len(bus_ids)
    shunt = np.array([bus.get("gs", 0.0) + 1j * bus.get("bs", 0.0) for bus in meta["buses"]])
    ptdf = dc_ptdf(line["from"], line["to"], 1.0 / (line["x"] * line["tap"]), n_buses,
                   index[meta["reference_bus"]])
    ybus = make_ybus(line["from"], line["to"], line["r"], line["x"], line["b"], line["tap"],
                     shunt / meta.get("base_mva", 100.0), n_buses)
    return Network(bus_ids=bus_ids, zone=np.array([bus.get("zone", 0) for bus in meta["buses"]], int),
                   line_from=line["from"], line_to=line["to"], rate=line["rate_a"], ptdf=ptdf,
                   ybus=ybus, agent_bus=np.array([index[b] for b in agent_bus], int))


def power_transfer_distance(network: Network) -> np.ndarray:
    """(K, K) ``sum_l |PTDF_l(i) - PTDF_l(j)|``."""
    ptdf = network.ptdf
    return np.abs(ptdf[:, :, None] - ptdf[:, None, :]).sum(0)


def thevenin_weights(network: Network) -> np.ndarray:
    """(K, K) ``|Z_ii + Z_jj - Z_ij - Z_ji|`` on the lines, ``Z = 1 / Y`` elementwise."""
    ybus = network.ybus
    z_self = 1.0 / np.diag(ybus)
    weights = np.zeros(ybus.shape)
    for i, j in zip(network.line_from, network.line_to):
        weights[i, j] = weights[j, i] = abs(z_self[i] + z_self[j] - 1.0 / ybus[i, j] - 1.0 / ybus[j, i])
    return weights


def thevenin_paths(network: Network) -> tuple[np.ndarray, np.ndarray]:
    """(K, K) Thevenin distances and the shortest-path predecessors (scipy's convention).
    The distances are made exactly symmetric: i -> j and j -> i sum the same lines in
    another order, and a charge must be the same at both ends of a trade."""
    distance, predecessors = shortest_path(csr_array(thevenin_weights(network)), method="D",
                                           directed=False, return_predecessors=True)
    return np.minimum(distance, distance.T), predecessors


def zones_crossed(network: Network, predecessors: np.ndarray) -> np.ndarray:
    """(K, K) number of distinct zones on the shortest path from i to j, ends included
    (the path found from the lower bus index, so that the count is symmetric)."""
    n_buses = len(network.bus_ids)
    crossed = np.ones((n_buses, n_buses), int)
    for i in range(n_buses):
        for j in range(i + 1, n_buses):
            zones, k = {network.zone[j]}, j
            while k != i:
                k = predecessors[i, k]
                zones.add(network.zone[k])
            crossed[i, j] = crossed[j, i] = len(zones)
    return crossed


def line_flows(network: Network, injections):
    """(B, L) DC flows in MW of the agents' net injections ``(B, N)``: PTDF times the
    injections summed per bus."""
    to_bus = np.zeros((len(network.agent_bus), len(network.bus_ids)))
    to_bus[np.arange(len(network.agent_bus)), network.agent_bus] = 1.0
    injection = jnp.asarray(injections) @ to_bus
    return injection @ network.ptdf.T


def loadings(network: Network, flows):
    """``|flow| / rate_a``; unlimited lines (rate 0) load 0."""
    rate = network.rate
    return jnp.where(rate > 0, jnp.abs(flows) / np.where(rate > 0, rate, 1.0), 0.0)
