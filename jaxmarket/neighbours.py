"""Neighbour lists: the trades of a batch as (B, N, D) slots instead of the dense (B, N, N).

Slot ``(n, d)`` holds agent n's d-th partner in increasing agent order; D (``width``) is at
least the largest degree of the batch and the slots beyond an agent's degree are padding
(no edge, trade box [0, 0], charge 0), so the exact local update (``jaxmarket.local``)
runs unchanged on the last axis and ADMM does O(N D) work per iteration instead of
O(N^2): what a sparse trade graph needs (a hub layout, whose hub trades with every agent,
keeps D = N - 1). The reverse trade ``p_mn`` of a
slot, the transpose of the dense layout, is a gather through ``mirror``, the flat slot
index ``m D + e`` of the same trade in m's list (a padding slot points at itself, and
its trade stays 0).

Every agent's trades are summed in a different order than on the dense layout, so
results agree with the dense kernel to rounding (tested to 1e-12), not bit for bit.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.community import Community


class NeighbourLists(NamedTuple):
    community: Community  # edges, charge, trade_min, trade_max as (B, N, D) slots
    partner: jax.Array  # (B, N, D) int32: the partner m of slot (n, d); n on padding
    mirror: jax.Array  # (B, N, D) int32: flat slot m D + e of p_mn; its own on padding


def degrees(community: Community) -> np.ndarray:
    """(B,) the largest degree of each case."""
    return np.asarray(community.edges.sum(-1).max(-1))


@partial(jax.jit, static_argnames="width")
def neighbour_lists(community: Community, width: int) -> NeighbourLists:
    """The batch on ``width`` slots per agent, ``max(degrees(community)) <= width <= N``."""
    edges = community.edges
    n = edges.shape[-1]
    if width > n:
        raise ValueError(f"{width} slots for {n} agents")
    # Partners first, in increasing order (a stable sort of "no edge" keeps the order).
    order = jnp.argsort(~edges, axis=-1, stable=True)[..., :width]
    on_edge = jnp.take_along_axis(edges, order, -1)
    agent = jnp.arange(n, dtype=jnp.int32)[:, None]
    partner = jnp.where(on_edge, order, agent).astype(jnp.int32)
    # Slot of n in m's list: the number of m's partners before n.
    rank = jnp.cumsum(edges, -1, dtype=jnp.int32) - 1  # rank[b, m, k]: slot of k in m's list
    back = jnp.take_along_axis(jnp.swapaxes(rank, -1, -2), partner, -1)  # rank[b, m, n]
    own = agent * width + jnp.arange(width, dtype=jnp.int32)
    mirror = jnp.where(on_edge, partner * width + back, own)

    def slots(v):
        return jnp.where(on_edge, jnp.take_along_axis(v, order, -1), 0)

    lists = community._replace(edges=on_edge, charge=slots(community.charge),
                               trade_min=slots(community.trade_min),
                               trade_max=slots(community.trade_max))
    return NeighbourLists(lists, partner, mirror)


def reverse(mirror, values):
    """(B, N, D) values of the reverse trades: slot (n, d) gets the value of p_mn."""
    flat = values.reshape(values.shape[0], -1)
    return jnp.take_along_axis(flat, mirror.reshape(flat.shape), -1).reshape(values.shape)


@jax.jit
def to_dense(partner, values):
    """(B, N, D) slot values as the (B, N, N) dense layout (0 off the graph)."""
    cases, n, _ = values.shape
    case = jnp.arange(cases)[:, None, None]
    agent = jnp.arange(n)[None, :, None]
    # Padding slots hold 0 and point at the diagonal, which holds 0 on the dense layout.
    return jnp.zeros((cases, n, n), values.dtype).at[case, agent, partner].add(values)
