"""Random communities and random sparsity (SPEC section 4, T3.2.2, T3.5.2).

``generate(seed, case_indices, n_agents)`` draws one community per case index, batched
along the leading case axis: agents (``jaxmarket.agents``), then the trade layout and
sparsity (``jaxmarket.layouts``), then the charges. Decisions:

Reproducibility
    Case ``i`` is a function of ``key_i = fold_in(PRNGKey(seed), i)`` alone, so it does not
    depend on the batch size, on the other indices in the batch or on the device count
    (the cases are a ``vmap`` over their keys). The agents (roles, capacities, costs,
    positions) and the edge scores come from separate sub-streams ``fold_in(key_i, tag)``:
    the same ``(seed, i)`` gives the same agents under every layout and sparsity, so
    paired comparisons use common random numbers. Cases are bit-identical across batches:
    per-case sums and maxima are folded from elementwise ops (``agents.fold``), because XLA's
    CPU backend picks reduction kernels by batch shape. Every draw is made in float64 and
    the result is cast to ``dtype`` at the end, so float32 cases round the float64 ones.

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

Cost
    One compilation per (N, layout, charge family, dtype), about 2 s on a CPU; batch sizes
    (cases are drawn in blocks of ``GENERATE_CASES``), seeds, parameter values and
    sparsity levels, 0 included, reuse it. At 1000 cases x 300 agents
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

from jaxmarket.agents import draw_agents, seller_side, side_minimum
from jaxmarket.community import Community, array_module, astype, role_trade_bounds
from jaxmarket.errors import InputError
from jaxmarket.layouts import (HUB_LAYOUTS, LAYOUTS, append_managers, community_members,
                               delete_edges, edge_scores, layout_edges, orient_between_managers)
from jaxmarket.schema import number

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
    their hub or managers after them (``layouts.n_slots``). Compiled once per (``n_agents``,
    ``layout``, ``params.charge``, ``dtype``, ``n_communities`` where it is used); batch
    sizes and other parameter values reuse the compiled function.
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
                      n_agents - 2 * side_minimum(n_agents))
    # Traced, so that new parameter values reuse the compiled function.
    traced = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float64), params,
                                    is_leaf=lambda v: isinstance(v, tuple))
    # The centralized market is one community around its hub; the P2P layouts draw the
    # communities only where the charges need them.
    members = {"centralized": 1, "community": int(n_communities)}.get(
        layout, int(n_communities) if charges_between_communities_only else 0)
    draw = partial(_generate, key, params=traced, n_prosumers=n_prosumers,
                   sparsity=jnp.float64(sparsity), n_agents=n_agents, layout=layout,
                   n_communities=members, between_only=bool(charges_between_communities_only),
                   dtype=jnp.dtype(dtype))
    # Blocks of one shape, the last one padded with copies of its last index: one
    # compiled program serves every batch size. Assembled on the host (no program per
    # number of blocks; jax.numpy only when traced, as by the study's checks) and placed
    # on the device once.
    padded = np.pad(indices, (0, -len(indices) % GENERATE_CASES), "edge")
    blocks = [draw(padded[first:first + GENERATE_CASES])
              for first in range(0, len(indices), GENERATE_CASES)]
    xp = array_module(*blocks[0])
    return jax.tree_util.tree_map(
        lambda *v: jax.device_put(xp.concatenate(v)[:len(indices)]), *blocks)

def _case_keys(seed, case_indices):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise InputError("community.seed", f"must be an integer in [0, 2**63), got {seed!r}")
    indices = np.asarray(case_indices)
    if (indices.ndim != 1 or indices.size == 0 or not np.issubdtype(indices.dtype, np.integer)
            or indices.min() < 0 or indices.max() >= 2**32):
        raise InputError("community.case_indices",
                         "must be a non-empty 1-D sequence of integers in [0, 2**32)")
    return jax.random.PRNGKey(int(seed)), indices.astype(np.uint32)

def _check_n_agents(n_agents, params):
    if isinstance(n_agents, bool) or not isinstance(n_agents, (int, np.integer)) or n_agents < 2:
        raise InputError("community.n_agents", f"must be an integer >= 2, got {n_agents!r}")
    smallest_side = side_minimum(n_agents)
    if params.max_share * smallest_side < 1:
        raise InputError("community.max_share",
                         f"{params.max_share} x {smallest_side} agents on the smallest side "
                         f"is below 1 for n_agents={n_agents}: the shares cannot sum to 1")
    return int(n_agents)

# Cases drawn per call of the compiled generator (``generate`` pads the last block).
GENERATE_CASES = 32


@partial(jax.jit, static_argnames=("n_agents", "layout", "n_communities", "between_only", "dtype"))
def _generate(key, indices, *, params, n_prosumers, sparsity, n_agents, layout, n_communities,
              between_only, dtype):
    hub = layout in HUB_LAYOUTS

    def one_case(index):
        case_key = jax.random.fold_in(key, index)
        role, agents = draw_agents(case_key, params, n_prosumers, n_agents)
        label = None
        if n_communities:
            label, centre_x, centre_y = community_members(case_key, agents["x"], agents["y"],
                                                          n_communities)
        if hub:
            role, agents, label = append_managers(role, agents, label, centre_x, centre_y)
        edges = layout_edges(layout, agents["p_min"], agents["p_max"], label)
        return role, agents, edges, label

    role, agents, edges, label = jax.vmap(one_case)(indices)

    def thin(edges):
        scores = jax.vmap(lambda index: edge_scores(jax.random.fold_in(key, index),
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
        charge, trade_min, trade_max = orient_between_managers(
            agents, edges, label, charge, charged, weight, fee, trade_min, trade_max, n_agents)
    community = Community(active=jnp.ones(role.shape, bool), edges=edges, charge=charge,
                          trade_min=trade_min, trade_max=trade_max, **agents)
    return astype(community, dtype)
