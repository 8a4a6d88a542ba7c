"""The community: a batch of P2P market cases as one pytree with a leading case axis.

Agent n has the cost ``c_n(p) = a_n p^2 / 2 + b_n p`` on ``p_min_n <= p <= p_max_n``
(p > 0 sells, p < 0 buys). Trades live on a dense ``N x N`` layout: ``edges[n, m]`` says
that n may trade with m, ``charge[n, m]`` is the per-unit charge gamma_nm that n pays on
``p_nm``, and ``trade_min/trade_max`` box each directed trade (sign constraints by role,
SPEC section 1). Communities of different sizes share a batch by padding with inactive
agents: bounds 0, no edges, mask ``active`` False.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np


class Community(NamedTuple):
    a: jax.Array  # (B, N) quadratic cost coefficient, >= 0
    b: jax.Array  # (B, N) linear cost coefficient
    p_min: jax.Array  # (B, N) lower bound of the net injection
    p_max: jax.Array  # (B, N) upper bound of the net injection
    active: jax.Array  # (B, N) bool: real agent, False for padding
    x: jax.Array  # (B, N) map position (plots, distance-based charges)
    y: jax.Array  # (B, N)
    edges: jax.Array  # (B, N, N) bool, symmetric trade graph, empty diagonal
    charge: jax.Array  # (B, N, N) gamma_nm, zero off the graph
    trade_min: jax.Array  # (B, N, N) lower bound of p_nm, zero off the graph
    trade_max: jax.Array  # (B, N, N) upper bound of p_nm, zero off the graph

    @property
    def n_cases(self) -> int:
        return self.a.shape[0]

    @property
    def n_max(self) -> int:
        return self.a.shape[1]

    @property
    def dtype(self):
        return self.a.dtype


def intermediaries(p_min, p_max):
    """Agents with zero bounds (p_min = p_max = 0): a market operator or community manager
    (SPEC section 2, T3.5.1). They neither produce nor consume; they only pass trades on."""
    return (p_min == 0) & (p_max == 0)


def role_trade_bounds(p_min, p_max, edges):
    """Per-trade boxes from the roles (T3.3e-f): producers only sell, consumers only buy,
    prosumers trade within their own bounds. An intermediary (zero bounds) buys from a
    partner that may sell and sells to a partner that may buy, up to the case's total
    production capacity: its side of a trade never binds, so the trade's price is its own
    perceived price (a box mirroring the partner's bound would duplicate that bound and
    leave the price of a saturated partner's trade undetermined). Between two
    intermediaries both directions are open. Works for numpy and jax arrays."""
    xp = jnp if isinstance(p_min, jax.Array) else np
    own_lo = xp.where(p_min >= 0, 0.0, p_min)
    own_hi = xp.where(p_max <= 0, 0.0, p_max)
    relay = intermediaries(p_min, p_max)
    capacity = xp.maximum(p_max, 0.0).sum(-1)[..., None, None]
    sells = ((own_hi > 0) | relay)[..., None, :]  # the partner m
    buys = ((own_lo < 0) | relay)[..., None, :]
    lo = xp.where(relay[..., :, None], xp.where(sells, -capacity, 0.0), own_lo[..., :, None])
    hi = xp.where(relay[..., :, None], xp.where(buys, capacity, 0.0), own_hi[..., :, None])
    zero = xp.zeros_like(edges, dtype=lo.dtype)
    return xp.where(edges, lo, zero), xp.where(edges, hi, zero)


def array_module(*arrays):
    """NumPy for concrete inputs, jax.numpy under tracing: a batch assembled eagerly with
    jax.numpy compiles one small program per operation and per new shape (tens of seconds
    for a few dozen cases of mixed sizes); NumPy compiles nothing, and neither does
    ``jax.device_put`` (``jnp.asarray`` of a NumPy array compiles a copy per shape)."""
    return jnp if any(isinstance(v, jax.core.Tracer) for v in arrays) else np


def make_community(a, b, p_min, p_max, edges, charge=None, x=None, y=None, active=None,
                   trade_min=None, trade_max=None, dtype=jnp.float64) -> Community:
    """Build a batch from arrays with a leading case axis (numpy or jax)."""
    xp = array_module(a, b, p_min, p_max, edges, charge, x, y, active, trade_min, trade_max)
    a = xp.asarray(a, dtype)
    shape = a.shape
    zeros = xp.zeros(shape, dtype)
    edges = xp.asarray(edges, bool)
    edges = edges & ~xp.eye(shape[-1], dtype=bool)
    p_min = xp.asarray(p_min, dtype)
    p_max = xp.asarray(p_max, dtype)
    if trade_min is None or trade_max is None:
        trade_min, trade_max = role_trade_bounds(p_min, p_max, edges)
    charge = xp.zeros(edges.shape, dtype) if charge is None else xp.asarray(charge, dtype)
    community = Community(
        a=a,
        b=xp.asarray(b, dtype),
        p_min=p_min,
        p_max=p_max,
        active=xp.ones(shape, bool) if active is None else xp.asarray(active, bool),
        x=zeros if x is None else xp.asarray(x, dtype),
        y=zeros if y is None else xp.asarray(y, dtype),
        edges=edges,
        charge=xp.where(edges, charge, xp.zeros((), dtype)),
        trade_min=xp.asarray(trade_min, dtype),
        trade_max=xp.asarray(trade_max, dtype),
    )
    return jax.tree_util.tree_map(jax.device_put, community)


# How far past the price spread over a_n an agent's power may reach before its bound
# stops being its scale (``reach``): a margin, so that ordinary cases keep their bounds.
REACH_MARGIN = 10.0


def agent_reach(c: Community):
    """(..., N) the largest power each agent can move within its case's prices (MW; 0 for an
    agent without bounds). An optimal injection makes the agent's marginal cost a_n p_n +
    b_n a market price, and market prices lie within the spread of the agents' b plus twice
    the largest charge: ``REACH_MARGIN`` times that spread over a_n bounds |p_n|, and so
    does the agent's bound. Reductions run over the trailing agent axes only (one case, or
    a batch); maxima are exact, so the value never depends on the batch.
    """
    trade = c.edges & c.active[..., :, None] & c.active[..., None, :]
    bound = jnp.where(c.active, jnp.maximum(jnp.abs(c.p_min), jnp.abs(c.p_max)), 0.0)
    b_max = jnp.max(jnp.where(c.active, c.b, -jnp.inf), axis=-1)
    b_min = jnp.min(jnp.where(c.active, c.b, jnp.inf), axis=-1)
    charge = jnp.max(jnp.abs(jnp.where(trade, c.charge, 0.0)), axis=(-2, -1))
    spread = jnp.where(jnp.isfinite(b_max - b_min), b_max - b_min, 0.0) + 2 * charge
    curved = c.active & (c.a > 0)
    move = REACH_MARGIN * spread[..., None] / jnp.where(curved, c.a, 1.0)
    return jnp.where(curved, jnp.minimum(bound, move), bound)


def reach(c: Community):
    """The largest ``agent_reach`` of every case (MW; 0 where no agent has a bound)."""
    return jnp.max(agent_reach(c), axis=-1)


def marginal_cost_scale(c: Community, power):
    """(...) the largest a_n p of an agent, p the power scale or the agent's reach where that
    is smaller (EUR/MWh): a steep agent (a = 1e12 EUR/MW^2h) does not make the case's prices
    1e14, since the market's prices keep its power within its reach."""
    moved = jnp.minimum(power[..., None], agent_reach(c))
    return jnp.where(c.active, c.a * moved, 0.0).max(-1)


@jax.jit
def scales(c: Community):
    """Power (MW) and price (EUR/MWh) scales of every case: what the stopping tolerances
    and the optimality gap measure "small" against (docs/stopping.md, "Scale").

    Power: the largest bound of an agent or trade, but no more than ``reach``, so that
    bounds far beyond the power the prices can move (1e6 times the traded power) do not
    set it. Price: the largest |b|, a_n times the power scale or the agent's reach where
    that is smaller (``marginal_cost_scale``), or |charge|. Either is 1 where it would be
    0. The exact reference scales its cases the same way.
    """
    trade = c.edges & c.active[..., :, None] & c.active[..., None, :]
    bound = jnp.where(c.active, jnp.maximum(jnp.abs(c.p_min), jnp.abs(c.p_max)), 0.0)
    trade_bound = jnp.where(trade, jnp.maximum(jnp.abs(c.trade_min), jnp.abs(c.trade_max)), 0.0)
    power = jnp.maximum(bound.max(-1), trade_bound.max((-2, -1)))
    power = within_reach(power, reach(c))
    price = jnp.maximum(jnp.abs(jnp.where(c.active, c.b, 0.0)).max(-1),
                        marginal_cost_scale(c, power))
    price = jnp.maximum(price, jnp.abs(jnp.where(trade, c.charge, 0.0)).max((-2, -1)))
    return power, jnp.where(price > 0, price, 1.0)


def within_reach(power, reach):
    """A power scale no larger than the reach (where there is one), 1 where it is 0."""
    power = jnp.where(reach > 0, jnp.minimum(power, reach), power)
    return jnp.where(power > 0, power, 1.0)


def astype(community: Community, dtype) -> Community:
    """Cast every floating field to ``dtype`` (float32 is an explicit, measured option)."""
    return jax.tree_util.tree_map(
        lambda v: v.astype(dtype) if jnp.issubdtype(v.dtype, jnp.floating) else v, community)


def pad_agents(community: Community, n_max: int) -> Community:
    """Append inactive agents (bounds 0, no edges) up to ``n_max`` agents per case."""
    extra = n_max - community.n_max
    if extra < 0:
        raise ValueError(f"cannot pad {community.n_max} agents down to {n_max}")
    if extra == 0:
        return community
    xp = array_module(*community)

    def pad(v):
        widths = [(0, 0)] + [(0, extra)] * (v.ndim - 1)
        return jax.device_put(xp.pad(xp.asarray(v), widths))

    return jax.tree_util.tree_map(pad, community)


def concatenate(communities: Sequence[Community]) -> Community:
    """One batch from several, padding every case to the largest community."""
    if len(communities) == 1:
        return communities[0]
    n_max = max(c.n_max for c in communities)
    padded = [pad_agents(c, n_max) for c in communities]
    xp = array_module(*(v for c in padded for v in c))
    return jax.tree_util.tree_map(lambda *v: jax.device_put(xp.concatenate(
        [xp.asarray(w) for w in v], axis=0)), *padded)


def take(community: Community, index) -> Community:
    """Select cases along the batch axis (an int keeps the axis with length 1)."""
    return cases_of(community, np.atleast_1d(index))


def cases_of(batch, index):
    """Cases ``index`` (1-D integers) of a pytree of batch-first arrays: NumPy arrays are
    indexed on the host, jax arrays in one compiled program per placement (indexing them
    one by one compiles a program per field, shape and slice); scalars are shared.

    Arrays placed alike are gathered together and keep their placement: an array gathered
    with others placed on several devices would be placed there too, and programs compiled
    for several devices round differently from the single-device ones."""
    index = np.asarray(index)
    leaves, tree = jax.tree_util.tree_flatten(batch)
    placements: dict = {}
    for k, v in enumerate(leaves):
        if isinstance(v, jax.Array) and v.ndim:
            placements.setdefault((v.sharding, v.committed), []).append(k)
    leaves = [v[index] if isinstance(v, np.ndarray) and v.ndim else v for v in leaves]
    for ks in placements.values():
        for k, v in zip(ks, _gather([leaves[k] for k in ks], index)):
            leaves[k] = v
    return jax.tree_util.tree_unflatten(tree, leaves)


@jax.jit
def _gather(arrays, index):
    return [v[index] for v in arrays]


def producers(community: Community):
    return community.active & (community.p_min >= 0) & (community.p_max > 0)


def consumers(community: Community):
    return community.active & (community.p_max <= 0) & (community.p_min < 0)


def full_graph(active):
    """Every active agent may trade with every other one."""
    xp = array_module(active)
    active = xp.asarray(active, bool)
    n = active.shape[-1]
    return active[..., :, None] & active[..., None, :] & ~xp.eye(n, dtype=bool)


def bipartite_graph(p_min, p_max, active):
    """Producers trade with consumers only; prosumers trade with everyone."""
    sells = p_max > 0
    buys = p_min < 0
    pair = (sells[..., :, None] & buys[..., None, :]) | (buys[..., :, None] & sells[..., None, :])
    return pair & full_graph(active)
