"""Random communities and random sparsity (SPEC section 4, T3.2.2, T3.5.2).

``generate(seed, case_indices, n_agents)`` draws one community per case index, batched
along the leading case axis. Decisions, in the order a case is drawn:

Reproducibility
    Case ``i`` is a function of ``key_i = fold_in(PRNGKey(seed), i)`` alone, so it does not
    depend on the batch size, on the other indices in the batch or on the device count
    (the cases are a ``vmap`` over their keys). The agents (roles, capacities, costs,
    positions) and the edge scores come from separate sub-streams ``fold_in(key_i, tag)``:
    the same ``(seed, i)`` gives the same agents under every layout and sparsity, so
    paired comparisons use common random numbers. Cases are bit-identical across batches:
    per-case sums and maxima are folded from elementwise ops (``_fold``), because XLA's
    CPU backend picks reduction kernels by batch shape. Every draw is made in float64 and
    the result is cast to ``dtype`` at the end, so float32 cases round the float64 ones.

Roles
    ``ceil(N/3)`` producers, ``ceil(N/3)`` consumers, then ``round(prosumer_fraction * N)``
    prosumers (half up, capped by the agents left), the rest a fair coin between producer
    and consumer; the agent order is shuffled per case.

Capacity
    The production side (producers and prosumers) shares ``capacity_per_agent * N`` of
    production capacity, the consumption side (consumers and prosumers) as much
    consumption capacity. A prosumer thus holds one share on each side, drawn
    independently: ``p_max = share_prod * total``, ``p_min = -share_cons * total``.
    Shares are Dirichlet(alpha) over the side's members, then capped at ``max_share``
    with the excess handed to the uncapped members in proportion to their shares
    (water-filling; the result is ``min(max_share, lam * w)`` with ``sum = 1``).

Costs
    ``b ~ U(role's range)``; ``a = spread / (p_max - p_min)`` with
    ``spread ~ U(marginal_spread)``: the marginal price moves by ``spread`` across the
    agent's whole capacity, so ``a > 0`` and no utility is flat.

Positions and charges
    ``x, y ~ U(0, 1)``. Two charge families (SPEC section 4), both split half and half:
    ``charge = "distance"``: ``gamma_nm = +c * dist(n, m) / 2`` when n is the seller side
    of the pair, ``-c * dist(n, m) / 2`` when m is (SPEC section 1, ``gamma_mn =
    -gamma_nm``; T3.2.2, the algorithm comparison); ``charge = "uniform"``: ``gamma_nm =
    +-u / 2`` on every trade (T3.5.2, "a unitary trade-based transaction cost", the
    sparsity study). The family is static (one compilation each); the fees are traced.
    The seller side is the agent that comes first in the order (role: producer <
    prosumer < consumer, then lower ``b``, then lower index): a producer sells to anyone
    but a producer, a consumer's partner sells to it, and between two agents of the same
    role the cheaper one sells.

Layout and sparsity
    ``"full"`` or ``"bipartite"`` (``community.full_graph`` / ``bipartite_graph``), or a hub
    layout: ``"centralized"`` appends one hub, ``"community"`` K managers after the N
    agents (zero cost, zero bounds, trade boxes from ``community.role_trade_bounds``);
    each agent trades with its manager only, managers with each other. Each unordered
    pair gets a random score (32 random bits, ties broken by pair index, so
    the order is strict), and sparsity ``s`` deletes the ``floor(s * E + 1/2)`` layout
    edges with the lowest scores, E being the layout's undirected edge count in that
    case. Deleted sets are uniformly random and nested: a higher ``s`` deletes a
    superset. Isolated agents are allowed: producers have ``p_min = 0`` and consumers
    ``p_max = 0``, so they stay feasible at zero.

Communities
    Drawn from their own sub-stream, only where used (hub layouts, or charges restricted
    to trades between communities): K distinct agents seed the communities and every
    agent joins the nearest seed; a manager (the hub: K = 1) sits at its members'
    centroid and takes the prosumers' place in the seller order. With
    ``charges_between_communities_only`` only trades between two communities pay
    (``centralized``: none). A trade between two managers runs one way, from the
    community with the lower autarky price (``_orient_between_managers`` says why).

Cost
    One compilation per (batch size, N, layout, charge family, dtype), about 2 s on a CPU; seeds,
    parameter values and sparsity levels, 0 included, reuse it. At 1000 cases x 300 agents
    the time goes to writing the three (B, N, N) float fields and, when ``sparsity > 0``,
    to one sort of the N(N-1)/2 edge scores per case.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.community import (Community, astype, bipartite_graph, full_graph,
                                 intermediaries, role_trade_bounds)
from jaxmarket.errors import InputError
from jaxmarket.pool import _dispatch_case  # one exact pool kernel, reused per community
from jaxmarket.schema import number

# Role codes, in the seller order of a pair.
PRODUCER, PROSUMER, CONSUMER = 0, 1, 2

LAYOUTS = ("full", "bipartite", "centralized", "community")
HUB_LAYOUTS = ("centralized", "community")  # layouts whose trades pass through managers

# Independent sub-streams of a case key (fold_in tags; cheaper to compile than split). The
# agents never read the edge stream, so layout and sparsity leave them unchanged.
_AGENT_STREAM, _GAMMA_STREAM, _EDGE_STREAM, _COMMUNITY_STREAM = 0, 1, 2, 3

# Smaller concentrations can underflow float64 shares to zero: an agent with no capacity
# (and a = spread / 0).
MIN_DIRICHLET_ALPHA = 0.1


CHARGES = ("distance", "uniform")  # charge families (SPEC section 4)


def _key(default, unit: str, description: str, **metadata):
    """A generator field, declared once: it is a study key of ``[community]`` too.
    ``static=True``: part of the compiled program (a pytree meta field), not traced."""
    return field(default=default, metadata={"unit": unit, "description": description, **metadata})


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class GeneratorParams:
    """Distribution of a random community (SPEC section 4); power in MW, prices in €/MWh.

    ``generate`` validates it; ranges are ``(low, high)`` with ``low <= high``.
    """

    capacity_per_agent: float = _key(100.0, "MW", "each side's total capacity is this times N")
    max_share: float = _key(0.5, "1", "no agent above this share of its side's capacity")
    dirichlet_alpha: float = _key(1.0, "1", "concentration of the capacity shares")
    producer_b: tuple[float, float] = _key((15.0, 40.0), "EUR/MWh",
                                           "range of a producer's marginal cost at zero output")
    consumer_b: tuple[float, float] = _key((60.0, 85.0), "EUR/MWh", "range of a consumer's "
                                           "marginal willingness to pay at zero consumption")
    prosumer_b: tuple[float, float] = _key((35.0, 65.0), "EUR/MWh",
                                           "range of a prosumer's marginal cost at zero")
    marginal_spread: tuple[float, float] = _key((20.0, 50.0), "EUR/MWh", "range of the marginal "
                                                "price change over an agent's capacity")
    prosumer_fraction: float = _key(0.0, "1", "prosumers, taken from the agents beyond the "
                                    "2 ceil(N/3)")
    charge_per_distance: float = _key(0.0, "EUR/MWh", "c in gamma_nm = +-c dist(n, m) / 2 "
                                      "(positions in the unit square; charge = distance)")
    # Added after the first studies: optional study keys (jaxmarket.study.config).
    charge: str = _key("distance", "n/a", "charge family: distance (gamma_nm = +-c dist / 2) "
                       "or uniform (gamma_nm = +-u / 2 on every trade)", static=True)
    charge_per_trade: float = _key(1.0, "EUR/MWh", "u in gamma_nm = +-u / 2 on every trade "
                                   "(charge = uniform)")

    def validate(self) -> None:
        """Raise ``InputError('community.<field>', ...)`` on the first bad value."""
        for name in ("capacity_per_agent", "max_share", "dirichlet_alpha",
                     "prosumer_fraction", "charge_per_distance", "charge_per_trade"):
            _check_finite(name, getattr(self, name))
        for name in ("producer_b", "consumer_b", "prosumer_b", "marginal_spread"):
            _check_range(name, getattr(self, name))
        if self.capacity_per_agent <= 0:
            raise InputError("community.capacity_per_agent", "must be positive")
        if not 0 < self.max_share <= 1:
            raise InputError("community.max_share", "must be in (0, 1]")
        if self.dirichlet_alpha < MIN_DIRICHLET_ALPHA:
            raise InputError("community.dirichlet_alpha",
                             f"must be at least {MIN_DIRICHLET_ALPHA} (smaller values "
                             "underflow the shares to zero capacity)")
        if not 0 <= self.prosumer_fraction <= 1 / 3:
            raise InputError("community.prosumer_fraction", "must be in [0, 1/3]")
        if self.charge_per_distance < 0:
            raise InputError("community.charge_per_distance",
                             "must be >= 0 (the sign comes from the seller side)")
        if self.charge_per_trade < 0:
            raise InputError("community.charge_per_trade",
                             "must be >= 0 (the sign comes from the seller side)")
        if self.charge not in CHARGES:
            raise InputError("community.charge",
                             f"must be one of {', '.join(CHARGES)}, got {self.charge!r}")
        if self.marginal_spread[0] <= 0:
            raise InputError("community.marginal_spread",
                             "must be positive (a = 0 is a flat utility)")


# The thesis' scale (T3.2.2, Table 3.3: a community consuming 1.44 MW at 15.22 c$/kWh): the
# same distribution with power read in kW (100 kW per agent: 25 agents clear about 1.4 MW)
# and prices in c$/kWh, the price ranges scaled by 0.3 so that the pool price is near 15
# c$/kWh. Powers in kW, prices in c$/kWh: a is then in c$/kWh per kW (about 0.3 times the
# MW/EUR generator's numbers). RCI's steps are not scale-invariant (docs/studies/algorithms.md).
THESIS_SCALE = GeneratorParams(producer_b=(4.5, 12.0), consumer_b=(18.0, 25.5),
                               prosumer_b=(10.5, 19.5), marginal_spread=(6.0, 15.0))


def _check_finite(name, value):
    number(value, f"community.{name}")


def _check_range(name, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise InputError(f"community.{name}", f"must be a (low, high) pair, got {value!r}")
    for bound in value:
        _check_finite(name, bound)
    if value[0] > value[1]:
        raise InputError(f"community.{name}", f"low {value[0]} exceeds high {value[1]}")


def generate(seed: int, case_indices: Sequence[int], n_agents: int,
             params: GeneratorParams = GeneratorParams(), layout: str = "full",
             sparsity: float = 0.0, n_communities: int = 3,
             charges_between_communities_only: bool = False, dtype=jnp.float64) -> Community:
    """Random communities, one per entry of ``case_indices`` (see the module docstring).

    ``n_agents`` counts the producers, consumers and prosumers; the hub layouts append
    their hub or managers after them (``n_slots``). Compiled once per (batch size,
    ``n_agents``, ``layout``, ``params.charge``, ``dtype``, ``n_communities`` where it is
    used); other parameter values reuse the compiled function.
    """
    params.validate()
    key, indices = _case_keys(seed, case_indices)
    n_agents = _check_n_agents(n_agents, params)
    if layout not in LAYOUTS:
        raise InputError("graph.layout", f"must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    is_number = isinstance(sparsity, numbers.Real) and not isinstance(sparsity, bool)
    if not is_number or not 0 <= sparsity < 1:  # also rejects NaN
        raise InputError("graph.sparsity", f"must be a number in [0, 1), got {sparsity!r}")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise InputError("community.dtype", f"must be a floating dtype, got {dtype!r}")
    if (isinstance(n_communities, bool) or not isinstance(n_communities, (int, np.integer))
            or not 1 <= n_communities <= n_agents):
        raise InputError("graph.n_communities",
                         f"must be an integer in [1, n_agents = {n_agents}], got {n_communities!r}")
    if not isinstance(charges_between_communities_only, (bool, np.bool_)):
        raise InputError("graph.charges_between_communities_only",
                         f"must be true or false, got {charges_between_communities_only!r}")
    n_prosumers = min(math.floor(params.prosumer_fraction * n_agents + 0.5),
                      n_agents - 2 * _side_minimum(n_agents))
    # Traced, so that new parameter values reuse the compiled function.
    traced = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params,
                                    is_leaf=lambda v: isinstance(v, tuple))
    # The centralized market is one community around its hub; the P2P layouts draw the
    # communities only where the charges need them.
    members = {"centralized": 1, "community": int(n_communities)}.get(
        layout, int(n_communities) if charges_between_communities_only else 0)
    return _generate(key, indices, traced, n_prosumers, jnp.float64(sparsity),
                     n_agents=n_agents, layout=layout, n_communities=members,
                     between_only=bool(charges_between_communities_only), dtype=jnp.dtype(dtype))


def n_slots(n_agents: int, layout: str, n_communities: int = 3) -> int:
    """Agents per case including the hub (centralized) or the managers (community)."""
    return n_agents + {"centralized": 1, "community": n_communities}.get(layout, 0)


def _case_keys(seed, case_indices):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError("community.seed", f"must be an integer in [0, 2**63), got {seed!r}")
    indices = np.asarray(case_indices)
    if (indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer)
            or indices.min() < 0 or indices.max() >= 2**32):
        raise InputError("community.case_indices",
                         "must be a non-empty 1-D sequence of integers in [0, 2**32)")
    return jax.random.PRNGKey(int(seed)), jnp.asarray(indices, jnp.uint32)


def _side_minimum(n_agents):
    return -(-n_agents // 3)


def _check_n_agents(n_agents, params):
    if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)) or n_agents < 2:
        raise InputError("community.n_agents", f"must be an integer >= 2, got {n_agents!r}")
    smallest_side = _side_minimum(n_agents)
    if params.max_share * smallest_side < 1:
        raise InputError("community.max_share",
                         f"{params.max_share} x {smallest_side} agents on the smallest side "
                         f"is below 1 for n_agents={n_agents}: the shares cannot sum to 1")
    return int(n_agents)


@partial(jax.jit, static_argnames=("n_agents", "layout", "n_communities", "between_only", "dtype"))
def _generate(key, indices, params, n_prosumers, sparsity, *, n_agents, layout, n_communities,
              between_only, dtype):
    hub = layout in HUB_LAYOUTS

    def one_case(index):
        case_key = jax.random.fold_in(key, index)
        role, agents = _draw_agents(case_key, params, n_prosumers, n_agents)
        label = None
        if n_communities:
            label, centre_x, centre_y = community_members(case_key, agents["x"], agents["y"],
                                                          n_communities)
        if hub:
            role, agents, label = _append_managers(role, agents, label, centre_x, centre_y)
        edges = _layout_edges(layout, agents["p_min"], agents["p_max"], label)
        return role, agents, edges, label

    role, agents, edges, label = jax.vmap(one_case)(indices)

    def thin(edges):
        scores = jax.vmap(lambda index: _edge_scores(jax.random.fold_in(key, index),
                                                     edges.shape[-1]))(indices)
        return delete_edges(edges, scores, sparsity)

    # One program for every sparsity; a full graph skips the sort of the edge scores.
    edges = jax.lax.cond(sparsity > 0, thin, lambda edges: edges, edges)
    # The (B, N, N) fields are built here in one pass each, not through make_community,
    # which would mask and copy them again: at 1000 x 300 agents they are most of the cost.
    distance = jnp.hypot(agents["x"][..., :, None] - agents["x"][..., None, :],
                         agents["y"][..., :, None] - agents["y"][..., None, :])
    charged = edges
    if between_only:
        charged = edges & (label[..., :, None] != label[..., None, :])
    seller = seller_side(role, agents["b"])
    # gamma_nm = +-fee * weight / 2: the same product for both families, so the distance
    # charges are the very operations (and bits) they were before the uniform family.
    if params.charge == "uniform":
        fee, weight = params.charge_per_trade, jnp.ones_like(distance)
    else:
        fee, weight = params.charge_per_distance, distance
    half = jnp.where(seller, 0.5, -0.5) * fee
    charge = jnp.where(charged, half * weight, 0.0)
    trade_min, trade_max = role_trade_bounds(agents["p_min"], agents["p_max"], edges)
    if layout == "community" and n_communities > 1:
        charge, trade_min, trade_max = _orient_between_managers(
            agents, edges, label, charge, charged, weight, fee, trade_min, trade_max, n_agents)
    community = Community(active=jnp.ones(role.shape, bool), edges=edges, charge=charge,
                          trade_min=trade_min, trade_max=trade_max, **agents)
    return astype(community, dtype)


def community_members(case_key, x, y, n_communities):
    """One case's community of each agent ``(N,)`` and each community's centroid ``(K,)``.

    K distinct agents drawn at random seed the communities and every agent joins the
    nearest seed (one assignment step of k-means), so no community is empty and the
    communities are compact regions of the map."""
    n_agents = x.shape[-1]
    order = _uniform_rows(jax.random.fold_in(case_key, _COMMUNITY_STREAM), 1, n_agents)[0]
    seeds = jnp.argsort(order)[:n_communities]
    label = jnp.argmin(jnp.hypot(x[:, None] - x[seeds], y[:, None] - y[seeds]), axis=-1)
    member = label == jnp.arange(n_communities)[:, None]  # (K, N)
    count = _fold(jnp.add, member.astype(x.dtype))
    return (label, _fold(jnp.add, jnp.where(member, x, 0.0)) / count,
            _fold(jnp.add, jnp.where(member, y, 0.0)) / count)


def _append_managers(role, agents, label, centre_x, centre_y):
    """The hub or managers as extra agents after the N real ones: zero cost, zero bounds,
    placed at their community's centroid; manager k belongs to community k."""
    n_managers = centre_x.shape[-1]
    zeros = jnp.zeros(n_managers, jnp.float64)
    extra = dict(a=zeros, b=zeros, p_min=zeros, p_max=zeros, x=centre_x, y=centre_y)
    agents = {name: jnp.concatenate([agents[name], extra[name]]) for name in agents}
    # A manager buys from producers and sells to consumers: it sits between them in the
    # seller order, where the prosumers are.
    role = jnp.concatenate([role, jnp.full(n_managers, PROSUMER, role.dtype)])
    return role, agents, jnp.concatenate([label, jnp.arange(n_managers, dtype=label.dtype)])


def _layout_edges(layout, p_min, p_max, label):
    active = jnp.ones(p_min.shape, bool)
    if layout == "full":
        return full_graph(active)
    if layout == "bipartite":
        return bipartite_graph(p_min, p_max, active)
    # Hub layouts: each agent trades with its own manager, managers with each other.
    manager = intermediaries(p_min, p_max)
    same = label[:, None] == label[None, :]
    return ((same & (manager[:, None] != manager[None, :]))
            | (manager[:, None] & manager[None, :])) & full_graph(active)


def _orient_between_managers(agents, edges, label, charge, charged, weight, fee,
                             trade_min, trade_max, n_agents):
    """Give each trade between two managers one direction: from the community with the
    lower autarky price to the other, the seller side of the pair.

    A linear charge ``gamma_nm p_nm`` only costs money in the direction it is signed for;
    a trade both ways would be paid to run backwards, and cycles of managers would earn
    money. With distance or uniform charges (both obey the triangle inequality: u <= 2u)
    and every manager pair linked, an optimal flow never passes through a third community, so every traded unit leaves a
    net exporter for a net importer, whose prices obey
    ``autarky_k <= mu_k < mu_j <= autarky_j``: the orientation keeps every optimal flow.
    The autarky price of community k is the pool price of its members still linked to
    their manager, each member's ``b`` shifted by the charge on its trade with the manager.
    """
    is_manager = jnp.arange(label.shape[-1]) >= n_agents
    own = edges & ~is_manager[..., :, None] & is_manager[..., None, :]  # member -> manager
    shift = _fold(jnp.add, jnp.where(own, charge - jnp.swapaxes(charge, -1, -2), 0.0))
    n_communities = label.shape[-1] - n_agents
    member = ((label[..., None, :n_agents] == jnp.arange(n_communities)[:, None])
              & _fold(jnp.logical_or, own)[..., None, :n_agents])

    real = {k: agents[k][..., :n_agents] for k in ("a", "b", "p_min", "p_max")}
    per_community = jax.vmap(_dispatch_case, (None, None, None, None, 0))
    price = jax.vmap(per_community)(real["a"], real["b"] + shift[..., :n_agents],
                                    real["p_min"], real["p_max"], member)[0]
    index = jnp.arange(n_communities)
    cheaper = ((price[..., :, None] < price[..., None, :])
               | ((price[..., :, None] == price[..., None, :]) & (index[:, None] < index[None, :])))
    seller = jnp.zeros(edges.shape, bool).at[..., n_agents:, n_agents:].set(cheaper)
    between = edges & is_manager[..., :, None] & is_manager[..., None, :]
    half = jnp.where(seller, 0.5, -0.5) * fee * weight
    charge = jnp.where(between & charged, half, charge)
    capacity = _fold(jnp.add, jnp.maximum(agents["p_max"], 0.0))[..., None, None]
    trade_min = jnp.where(between, jnp.where(seller, 0.0, -capacity), trade_min)
    trade_max = jnp.where(between, jnp.where(seller, capacity, 0.0), trade_max)
    return charge, trade_min, trade_max


def _draw_agents(case_key, params, n_prosumers, n_agents):
    """One case's role codes and per-agent fields."""
    coin, order, boost_production, boost_consumption, b_unit, spread_unit, x, y = (
        _uniform_rows(jax.random.fold_in(case_key, _AGENT_STREAM), 8, n_agents))
    role = _roles(coin, order, n_prosumers)
    p_min, p_max = _capacities(jax.random.fold_in(case_key, _GAMMA_STREAM), role,
                               jnp.stack([boost_production, boost_consumption]), params)
    b_range = jnp.stack([params.producer_b, params.prosumer_b, params.consumer_b])[role]
    spread = _scale(spread_unit, params.marginal_spread[0], params.marginal_spread[1])
    return role, dict(a=spread / (p_max - p_min), b=_scale(b_unit, b_range[:, 0], b_range[:, 1]),
                      p_min=p_min, p_max=p_max, x=x, y=y)


def _capacities(key, role, boost_unit, params):
    """``(p_min, p_max)``: each side's ``capacity_per_agent * N`` split among its members by
    capped Dirichlet shares (rows of ``boost_unit``: production, consumption)."""
    members = jnp.stack([role != CONSUMER, role != PRODUCER])
    log_weight = _log_gamma(key, params.dirichlet_alpha, boost_unit)
    weight = jnp.exp(log_weight - _fold(jnp.maximum, log_weight)[:, None])
    weight = jnp.where(members, weight, 0.0)
    shares = jax.vmap(cap_shares, (0, None))(weight / _fold(jnp.add, weight)[:, None],
                                             params.max_share)
    total = params.capacity_per_agent * role.shape[-1]
    return jnp.where(members[1], -total * shares[1], 0.0), total * shares[0]  # no -0.0


def _uniform_rows(key, n_rows, n):
    """``(n_rows, n)`` U[0, 1) params, one row per purpose. One call, drawn flat: every call
    inlines a large threefry graph, and XLA compiles 2-D params several times slower."""
    return jax.random.uniform(key, (n_rows * n,), jnp.float64).reshape(n_rows, n)


def _scale(unit, low, high):
    """Map U[0, 1) params to U[low, high), exactly ``low`` when the range is a point."""
    return low + unit * (high - low)


def _roles(coin, order, n_prosumers):
    """Role codes from two rows of uniforms: the guaranteed producers and consumers, the
    prosumers, then fair coins, in an order shuffled by sorting ``order``."""
    n_agents = coin.shape[-1]
    side = _side_minimum(n_agents)
    slot = jnp.arange(n_agents)
    role = jnp.where(slot < side, PRODUCER,
                     jnp.where(slot < 2 * side, CONSUMER,
                               jnp.where(slot < 2 * side + n_prosumers, PROSUMER,
                                         jnp.where(coin < 0.5, PRODUCER, CONSUMER))))
    return role[jnp.argsort(order)]


def _log_gamma(key, alpha, boost_unit):
    """log Gamma(alpha, 1) params shaped like ``boost_unit`` (Marsaglia and Tsang 2000), in
    log space so that small alphas do not underflow.

    For alpha < 1, Gamma(alpha) = Gamma(alpha + 1) * U^(1/alpha) with U = 1 - boost_unit
    in (0, 1]. Each round proposes for every element and keeps its first acceptance
    (probability > 0.95 per round), so the draw is exact. Written out rather than
    ``jax.random.loggamma``, whose per-element loops compile and run several times slower.
    """
    shape = boost_unit.shape
    d = alpha + jnp.where(alpha < 1, 1.0, 0.0) - 1 / 3
    c = 1 / jnp.sqrt(9 * d)

    def propose(state):
        n_round, accepted, log_draw = state
        normal_unit, u = _uniform_rows(jax.random.fold_in(key, n_round), 2, boost_unit.size)
        normal_unit, u = normal_unit.reshape(shape), u.reshape(shape)
        z = jnp.sqrt(2.0) * jax.lax.erf_inv(2 * normal_unit - 1)  # -inf at 0: rejected below
        v = (1 + c * z) ** 3
        log_v = jnp.log(jnp.where(v > 0, v, 1.0))
        accept = (v > 0) & (jnp.log(u) < z**2 / 2 + d - d * v + d * log_v) & ~accepted
        return n_round + 1, accepted | accept, jnp.where(accept, jnp.log(d) + log_v, log_draw)

    state = (0, jnp.zeros(shape, bool), jnp.zeros(shape, jnp.float64))
    log_draw = jax.lax.while_loop(lambda s: ~jnp.all(s[1]), propose, state)[2]
    return log_draw + jnp.where(alpha < 1, jnp.log1p(-boost_unit) / alpha, 0.0)


def cap_shares(shares, max_share):
    """Water-filling: ``min(max_share, lam * shares)`` with the same sum, for shares of one
    case that sum to 1 over at least ``1 / max_share`` positive entries.

    Each round sets the shares at or above ``max_share`` to it and hands the excess to the
    others in proportion to their shares, which only grow. So a capped share stays capped
    and a round that runs caps at least one more: the loop stops within ``len(shares)``
    rounds, also in floating point (all capped means none above).
    """
    def water_fill(shares):
        capped = shares >= max_share
        excess = _fold(jnp.add, jnp.where(capped, shares - max_share, 0.0))
        free = jnp.where(capped, 0.0, shares)
        room = _fold(jnp.add, free)  # 0 once all are capped: the rounding excess is dropped
        return jnp.where(capped, max_share, free * (1 + excess / jnp.where(room > 0, room, 1.0)))

    return jax.lax.while_loop(lambda shares: jnp.any(shares > max_share), water_fill, shares)


def _fold(op, x):
    """Reduce the last axis by pairing halves with the elementwise ``op`` (add, maximum).

    Not ``jnp.sum``/``jnp.max``: XLA's CPU backend picks the kernel of a reduction, and of
    the elementwise work fused with it, by batch shape, so a case's last bits would depend
    on the batch it is drawn in. Elementwise ops on fixed pairs cannot be reordered.
    """
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        pair = op(x[..., :half], x[..., half:2 * half])
        x = jnp.concatenate([pair, x[..., 2 * half:]], axis=-1)  # an odd last one waits
    return x[..., 0]


def seller_side(role, b):
    """``(..., N, N)`` bool: n is the seller side of the pair (n, m), that is n comes before
    m in the order (role code, b, index)."""
    index = jnp.arange(role.shape[-1])

    def before(u, tie):
        return (u[..., :, None] < u[..., None, :]) | ((u[..., :, None] == u[..., None, :]) & tie)

    return before(role, before(b, index[:, None] < index[None, :]))


def _edge_scores(case_key, n_agents):
    """One strictly ordered score per unordered pair (upper triangle, row-major): 32 random
    bits above the pair index, which breaks ties."""
    n_pairs = n_agents * (n_agents - 1) // 2
    key = jax.random.fold_in(case_key, _EDGE_STREAM)
    bits = jax.random.bits(key, (n_pairs,), jnp.uint32).astype(jnp.uint64)
    return (bits << 32) | jnp.arange(n_pairs, dtype=jnp.uint64)


def delete_edges(edges, scores, sparsity):
    """Delete the ``floor(sparsity * E + 1/2)`` edges with the lowest scores.

    ``edges``: (..., N, N) symmetric bool; ``scores``: (..., N(N-1)/2) distinct unsigned
    integers, one per unordered pair in ``np.triu_indices(N, 1)`` order; E counts the
    undirected edges per case. For fixed scores, the deleted set grows with ``sparsity``.
    """
    rows, cols = np.triu_indices(edges.shape[-1], 1)
    present = edges[..., rows, cols]
    last = jnp.array(jnp.iinfo(scores.dtype).max, scores.dtype)  # non-edges sort last
    ranked = jnp.sort(jnp.where(present, scores, last), axis=-1)
    n_delete = jnp.floor(sparsity * jnp.sum(present, axis=-1) + 0.5).astype(jnp.int32)
    cutoff = jnp.take_along_axis(ranked, jnp.maximum(n_delete - 1, 0)[..., None], axis=-1)
    kept = present & ((scores > cutoff) | (n_delete == 0)[..., None])
    upper = jnp.zeros(edges.shape, bool).at[..., rows, cols].set(kept)
    return upper | jnp.swapaxes(upper, -1, -2)
