"""Random agents of a community (SPEC section 4, T3.2.2): roles, capacities, costs and
positions, drawn per case from the agent sub-streams of its key (``jaxmarket.generator``).

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

"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Role codes, in the seller order of a pair.
PRODUCER, PROSUMER, CONSUMER = 0, 1, 2

# Independent sub-streams of a case key (fold_in tags; cheaper to compile than split). The
# agents never read the edge stream, so layout and sparsity leave them unchanged.
AGENT_STREAM, GAMMA_STREAM, EDGE_STREAM, COMMUNITY_STREAM = 0, 1, 2, 3


def side_minimum(n_agents):
    return -(-n_agents // 3)


def draw_agents(case_key, params, n_prosumers, n_agents):
    """One case's role codes and per-agent fields."""
    coin, order, boost_production, boost_consumption, b_unit, spread_unit, x, y = (
        uniform_rows(jax.random.fold_in(case_key, AGENT_STREAM), 8, n_agents))
    role = _roles(coin, order, n_prosumers)
    p_min, p_max = _capacities(jax.random.fold_in(case_key, GAMMA_STREAM), role,
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
    weight = jnp.exp(log_weight - fold(jnp.maximum, log_weight)[:, None])
    weight = jnp.where(members, weight, 0.0)
    shares = jax.vmap(cap_shares, (0, None))(weight / fold(jnp.add, weight)[:, None],
                                             params.max_share)
    total = params.capacity_per_agent * role.shape[-1]
    return jnp.where(members[1], -total * shares[1], 0.0), total * shares[0]  # no -0.0


def uniform_rows(key, n_rows, n):
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
    side = side_minimum(n_agents)
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
        normal_unit, u = uniform_rows(jax.random.fold_in(key, n_round), 2, boost_unit.size)
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
        excess = fold(jnp.add, jnp.where(capped, shares - max_share, 0.0))
        free = jnp.where(capped, 0.0, shares)
        room = fold(jnp.add, free)  # 0 once all are capped: the rounding excess is dropped
        return jnp.where(capped, max_share, free * (1 + excess / jnp.where(room > 0, room, 1.0)))

    return jax.lax.while_loop(lambda shares: jnp.any(shares > max_share), water_fill, shares)


def fold(op, x):
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
