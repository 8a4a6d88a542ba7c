"""Trade layouts, communities and random sparsity (SPEC section 4, T3.5).

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
    community with the lower autarky price (``orient_between_managers`` says why).

"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.agents import COMMUNITY_STREAM, EDGE_STREAM, PROSUMER, fold, uniform_rows
from jaxmarket.community import bipartite_graph, full_graph, intermediaries
from jaxmarket.pool import _dispatch_case  # one exact pool kernel, reused per community

LAYOUTS = ("full", "bipartite", "centralized", "community")
HUB_LAYOUTS = ("centralized", "community")  # layouts whose trades pass through managers


def n_slots(n_agents: int, layout: str, n_communities: int = 3) -> int:
    """Agents per case including the hub (centralized) or the managers (community)."""
    return n_agents + {"centralized": 1, "community": n_communities}.get(layout, 0)


def community_members(case_key, x, y, n_communities):
    """One case's community of each agent ``(N,)`` and each community's centroid ``(K,)``.

    K distinct agents drawn at random seed the communities and every agent joins the
    nearest seed (one assignment step of k-means), so no community is empty and the
    communities are compact regions of the map."""
    n_agents = x.shape[-1]
    order = uniform_rows(jax.random.fold_in(case_key, COMMUNITY_STREAM), 1, n_agents)[0]
    seeds = jnp.argsort(order)[:n_communities]
    label = jnp.argmin(jnp.hypot(x[:, None] - x[seeds], y[:, None] - y[seeds]), axis=-1)
    member = label == jnp.arange(n_communities)[:, None]  # (K, N)
    count = fold(jnp.add, member.astype(x.dtype))
    return (label, fold(jnp.add, jnp.where(member, x, 0.0)) / count,
            fold(jnp.add, jnp.where(member, y, 0.0)) / count)


def append_managers(role, agents, label, centre_x, centre_y):
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


def layout_edges(layout, p_min, p_max, label):
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


def orient_between_managers(agents, edges, label, charge, charged, weight, fee,
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
    shift = fold(jnp.add, jnp.where(own, charge - jnp.swapaxes(charge, -1, -2), 0.0))
    n_communities = label.shape[-1] - n_agents
    member = ((label[..., None, :n_agents] == jnp.arange(n_communities)[:, None])
              & fold(jnp.logical_or, own)[..., None, :n_agents])

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
    capacity = fold(jnp.add, jnp.maximum(agents["p_max"], 0.0))[..., None, None]
    trade_min = jnp.where(between, jnp.where(seller, 0.0, -capacity), trade_min)
    trade_max = jnp.where(between, jnp.where(seller, capacity, 0.0), trade_max)
    return charge, trade_min, trade_max


def edge_scores(case_key, n_agents):
    """One strictly ordered score per unordered pair (upper triangle, row-major): 32 random
    bits above the pair index, which breaks ties."""
    n_pairs = n_agents * (n_agents - 1) // 2
    key = jax.random.fold_in(case_key, EDGE_STREAM)
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
