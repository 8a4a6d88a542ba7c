"""Per-case market outcomes (SPEC section 5), computed from final trades and prices.

Conventions decided here:

* ``objective`` is the P2P objective of T3.9 including the charges,
  ``sum_n c_n(p_n) + sum_{n,m} gamma_nm p_nm``; ``social_welfare = -sum_n c_n(p_n)``;
  ``charges_collected = sum_{n,m} gamma_nm p_nm`` (both ends' halves).
* Trade prices are summarised over *traded* directed trades only, those with
  ``|p_nm| > traded_floor`` (the primal tolerance of the run): an edge that carries no
  power has no meaningful price. ``mean_price`` is volume weighted; ``price_spread`` is
  ``price_max - price_min``; all are NaN when nothing is traded.
* ``messages`` counts one message per directed trade per iteration plus the residual
  broadcasts of the global stopping rule, ``N (N - 1)`` per iteration (SPEC section 5),
  N counting every agent that negotiates, hub and managers included. ``trade_messages``
  is the first part alone. Agent n sends ``deg_n + N - 1`` messages per iteration;
  ``messages_per_agent_mean`` and ``messages_per_agent_max`` are the mean and the
  largest such total (the busiest agent: a hub in a centralized market).
* ``n_agents`` counts the agents that produce or consume; ``n_managers`` the hub or
  community managers (zero bounds, ``community.intermediaries``), which only pass trades on.
* ``consumption`` is the energy consumed, ``sum_n max(-p_n, 0)``.
* Connectivity, so that a sparse case's lost welfare can be traced to its graph:
  ``n_components`` counts the connected components of the trade graph (an isolated
  agent is one); ``unsupplied_consumers`` is the share of consumers that no seller can
  reach through trades that can carry power (a chain of trades each of which its seller
  may sell and its buyer may buy, so through prosumers and managers but never through a
  consumer), NaN without consumers. A consumer whose only partners are consumers is
  unsupplied even though its component contains producers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmarket.community import Community, consumers, intermediaries, scales


def agent_costs(community: Community, power):
    """c_n(p_n) of every agent (zero for padding)."""
    cost = 0.5 * community.a * power**2 + community.b * power
    return jnp.where(community.active, cost, 0.0)


def p2p_objective(community: Community, trades):
    """sum_n c_n(sum_m p_nm) + sum_nm gamma_nm p_nm of every case (T3.9)."""
    trades = jnp.where(community.edges, trades, 0.0)
    charges = (community.charge * trades).sum((-1, -2))
    return agent_costs(community, trades.sum(-1)).sum(-1) + charges


@jax.jit
def market_metrics(community: Community, trades, prices, iterations, traded_floor):
    """Outcome columns of every case, as a dict of (B,) arrays."""
    edges = community.edges
    trades = jnp.where(edges, trades, 0.0)
    power = trades.sum(-1)
    costs = agent_costs(community, power).sum(-1)
    charges = (community.charge * trades).sum((-1, -2))
    volume = jnp.abs(trades)
    traded = edges & (volume > traded_floor[:, None, None])
    any_traded = traded.any((-1, -2))
    nan = jnp.nan
    price_min = jnp.where(any_traded, jnp.where(traded, prices, jnp.inf).min((-1, -2)), nan)
    price_max = jnp.where(any_traded, jnp.where(traded, prices, -jnp.inf).max((-1, -2)), nan)
    total_volume = volume.sum((-1, -2))
    mean_price = jnp.where(total_volume > 0,
                           (volume * prices).sum((-1, -2)) / jnp.where(total_volume > 0, total_volume, 1),
                           nan)
    n_slots = community.active.sum(-1)
    managers = community.active & intermediaries(community.p_min, community.p_max)
    n_trades = edges.sum((-1, -2))
    degree = edges.sum(-1)
    reciprocity = trades + jnp.swapaxes(trades, -1, -2)
    rounds = iterations.astype(jnp.int64)
    broadcasts = n_slots * (n_slots - 1)
    busiest = jnp.where(community.active, degree, 0).max(-1) + n_slots - 1
    messages = rounds * (n_trades + broadcasts)
    return {
        "objective": costs + charges,
        "social_welfare": -costs,
        "charges_collected": charges,
        "mean_price": mean_price,
        "price_min": price_min,
        "price_max": price_max,
        "price_spread": price_max - price_min,
        "total_traded": 0.5 * total_volume,
        "consumption": jnp.maximum(-power, 0.0).sum(-1),
        "power_balance_error": jnp.abs(power.sum(-1)),
        "imbalance": jnp.abs(reciprocity.sum(-1)).sum(-1),
        "messages": messages,
        "trade_messages": rounds * n_trades,
        "messages_per_agent_mean": messages / jnp.maximum(n_slots, 1),
        "messages_per_agent_max": rounds * jnp.where(n_slots > 0, busiest, 0),
        "n_agents": n_slots - managers.sum(-1),
        "n_managers": managers.sum(-1),
        "n_trades": n_trades,
        "isolated_agents": (community.active & (degree == 0)).sum(-1),
        "n_components": n_components(community),
        "unsupplied_consumers": unsupplied_consumers(community),
    }


def n_components(community: Community):
    """Connected components of every case's trade graph over its active agents: each agent
    takes the smallest index among its neighbours' labels until nothing changes (at most
    the graph's diameter rounds)."""
    n = community.n_max
    start = jnp.where(community.active, jnp.arange(n), n)

    def spread(state):
        label, _ = state
        nearest = jnp.where(community.edges, label[..., None, :], n).min(-1)
        new = jnp.minimum(label, nearest)
        return new, jnp.any(new != label)

    label, _ = jax.lax.while_loop(lambda state: state[1], spread, (start, jnp.array(True)))
    return (community.active & (label == jnp.arange(n))).sum(-1)


def unsupplied_consumers(community: Community):
    """Share of consumers that no seller reaches by trades able to carry power (see the
    module docstring); NaN when a case has no consumer."""
    # carries[n, m]: n may sell to m and m may buy from n.
    carries = (community.edges & (community.trade_max > 0)
               & (jnp.swapaxes(community.trade_min, -1, -2) < 0))
    start = community.active & (community.p_max > 0)

    def spread(state):
        reached, _ = state
        new = reached | (carries & reached[..., :, None]).any(-2)
        return new, jnp.any(new != reached)

    reached, _ = jax.lax.while_loop(lambda state: state[1], spread, (start, jnp.array(True)))
    buyers = consumers(community)
    count = buyers.sum(-1)
    return jnp.where(count > 0, (buyers & ~reached).sum(-1) / jnp.maximum(count, 1), jnp.nan)


# The gap's floor as a share of the case's cost scale (power scale x price scale).
GAP_FLOOR_SHARE = 1e-3


@jax.jit
def gap_floor(community: Community):
    """(B,) the floor of the optimality gap's denominator: 1 EUR/h (SPEC section 5), or
    ``GAP_FLOOR_SHARE`` of the case's cost scale (its power scale times its price scale,
    ``community.scales``) where that is smaller, so that a case whose costs are all tiny
    is not measured in EUR/h. Generated cases have cost scales above 1e3 EUR/h: their
    floor stays 1."""
    power, price = scales(community)
    return jnp.minimum(1.0, GAP_FLOOR_SHARE * power * price)


def optimality_gap(value, reference, floor):
    """|obj - obj*| / max(floor, |obj*|) (SPEC section 5: floor 1; ``gap_floor``). NaN where
    the reference is not finite (its ``reference_converged`` is then False)."""
    return jnp.abs(value - reference) / jnp.maximum(floor, jnp.abs(reference))

