"""Exogenous network charges (SPEC section 7, B19): a policy and a unit fee u give every
trade its charge gamma_nm, and the cleared trades give the grid's outcome columns.

Policies, each side of a trade paying half (SPEC section 1 signs: ``+u w_nm / 2`` on the
seller side, ``-u w_nm / 2`` on the buyer side, so ``gamma_nm p_nm >= 0``):

=====================  ==============================================================
``none``               ``w = 0`` (free market; the fee is ignored)
``unique``             ``w = 1``
``distance_ptd``       ``w`` = power-transfer distance of the agents' buses
``distance_thevenin``  ``w`` = Thevenin (shortest-path) distance of the agents' buses
``zonal``              ``w`` = zones crossed on the Thevenin shortest path (1 inside a zone)
=====================  ==============================================================

The endogenous policies (``ENDOGENOUS``, SPEC 7.1) charge no fee: the system operator
prices congestion in the negotiation instead (``jaxmarket.algorithms.endogenous``).

u is in €/MWh per unit of ``w``. A policy's charge adds to the charges a case already has
(a case file's explicit ``charges`` list: the trade charges of the market itself), so
``none`` keeps them as they are and ``gamma_nm = gamma_case_nm + gamma_policy_nm``
otherwise; both follow the SPEC section 1 signs, and so does their sum. The seller side of a pair is decided as in the generator
(``generator.seller_side``: producer before prosumer before consumer, then the lower
``b``): on New England's producer-consumer graph the producer sells.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.case import CaseFile, load_case
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.agents import CONSUMER, PRODUCER, PROSUMER, seller_side
from jaxmarket.network import (Network, line_flows, load_network, loadings,
                               power_transfer_distance, thevenin_paths, zones_crossed)

POLICIES = ("none", "unique", "distance_ptd", "distance_thevenin", "zonal")
# Endogenous charges (SPEC 7.1): the system operator joins the negotiation; each name is
# also the registered algorithm that runs it (``jaxmarket.algorithms.endogenous``).
ENDOGENOUS = ("endogenous_dc", "endogenous_dc_decentralized")
NETWORK_POLICIES = POLICIES + ENDOGENOUS


@dataclass(frozen=True)
class Grid:
    """A network with the per-agent-pair weights of every policy (computed once)."""

    network: Network
    weight: dict  # policy -> (N, N) agent-pair weight w_nm
    inter_zone: np.ndarray  # (N, N) bool: the agents' buses lie in different zones


@dataclass(frozen=True)
class GridCase:
    """A case file with a grid: the market case and its network weights."""

    case: CaseFile
    grid: Grid


def load_grid_case(path) -> GridCase:
    """Read a case file that has a grid (``buses`` and ``branches``)."""
    case = load_case(path)
    if "branches" not in case.meta:
        raise InputError(str(path), "has no grid: network charges need buses and branches")
    return GridCase(case, make_grid(load_network(case.meta, case.meta["agent_bus"])))


def make_grid(network: Network) -> Grid:
    distance, predecessors = thevenin_paths(network)
    n_agents = len(network.agent_bus)
    weight = {
        "none": np.zeros((n_agents, n_agents)),
        "unique": np.ones((n_agents, n_agents)),
        "distance_ptd": network.agents(power_transfer_distance(network)),
        "distance_thevenin": network.agents(distance),
        "zonal": network.agents(zones_crossed(network, predecessors)).astype(float),
    }
    zone = network.zone[network.agent_bus]
    return Grid(network, weight, zone[:, None] != zone[None, :])


def roles(community: Community):
    """Role codes of the generator (producer, prosumer, consumer) from the bounds."""
    return jnp.where(community.p_min >= 0, PRODUCER, jnp.where(community.p_max <= 0, CONSUMER, PROSUMER))


def charge_matrix(community: Community, weight, fee):
    """(B, N, N) gamma_nm = +-fee * w_nm / 2 on the graph; ``fee`` is a scalar or (B,)."""
    half = jnp.where(seller_side(roles(community), community.b), 0.5, -0.5)
    fee = jnp.reshape(jnp.asarray(fee, community.dtype), (-1, 1, 1))
    gamma = fee * half * jnp.asarray(weight, community.dtype)
    return jnp.where(community.edges, gamma, 0.0).astype(community.dtype)


def apply_policy(community: Community, grid: Grid, policy: str, fee) -> Community:
    """The community with the policy's network charge added to its own trade charges."""
    return _add_charges(community, grid.weight[policy], fee)


@jax.jit  # one program per batch shape (eagerly, one per operation)
def _add_charges(community: Community, weight, fee) -> Community:
    network = charge_matrix(community, weight, fee)
    return community._replace(charge=(community.charge + network).astype(community.dtype))


def grid_outcome(grid: Grid, trades, injections=None) -> dict[str, np.ndarray]:
    """Grid columns of every case: DC line loadings of the agents' net injections
    ``(B, N)`` (mean and max over lines, overloaded lines, flow of the most loaded line;
    ``injections`` default to the trades' sums ``sum_m p_nm``, the injections of a P2P
    market; a pool dispatch has no trades and gives its own), and the volume traded
    between zones (``sum |p_nm| / 2`` over inter-zone pairs of the trades ``(B, N, N)``,
    MW; 0 for a pool dispatch, which clears without bilateral trades)."""
    trades = jnp.asarray(trades, jnp.float64)
    injections = trades.sum(-1) if injections is None else jnp.asarray(injections, jnp.float64)
    loading = loadings(grid.network, line_flows(grid.network, injections))
    inter = jnp.where(grid.inter_zone, jnp.abs(trades), 0.0).sum((-1, -2)) / 2
    names = np.array(grid.network.line_names())
    most = np.asarray(loading.argmax(-1))
    return {
        "mean_loading": np.asarray(loading.mean(-1)),
        "max_loading": np.asarray(loading.max(-1)),
        "most_loaded_line": names[most],
        "overloaded_lines": np.asarray((loading > 1).sum(-1)),
        "inter_zone_traded": np.asarray(inter),
    }
