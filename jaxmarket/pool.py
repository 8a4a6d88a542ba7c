"""Pool (centralized) dispatch, solved exactly (T2.1).

    min  sum_n c_n(p_n)   s.t.  sum_n p_n = 0,  p_min_n <= p_n <= p_max_n

At a uniform price lam, agent n supplies ``s_n(lam) = clip((lam - b_n) / a_n, p_min_n,
p_max_n)``; for ``a_n = 0`` this is a step at ``lam = b_n`` where any value of the box is a
best response. The aggregate supply ``S = sum_n s_n`` is nondecreasing and piecewise
linear with breakpoints ``b_n + a_n p_min_n`` and ``b_n + a_n p_max_n``; the pool price is
a root of S. We sort the 2N breakpoints, find the segment or step where S crosses zero by
binary search over them (S evaluated directly, O(N), at each of the log2(2N) probes, so
no rounding accumulates), and solve the affine equation S = 0 on that segment from S and
its slope at the segment's midpoint: O(N log N) per case, exact up to rounding.

The set of optimal prices is an interval. It is a single point when the marginal agent
has ``a_n > 0`` or is a step agent taking the residual. It is a proper interval when every
agent sits at a bound over a range of prices (e.g. no profitable trade at all: every
producer's ``b`` above every consumer's); the price returned is then the midpoint of
that interval, or its finite end when the interval is unbounded (a community of
consumers only). When no price is defined (no agent can move, e.g. an all-padding case)
or the problem is infeasible (``sum p_min > 0`` or ``sum p_max < 0``), the price is NaN;
infeasible cases also get NaN dispatch and objective.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket.community import Community


class PoolSolution(NamedTuple):
    price: jax.Array  # (B,) uniform pool price lam*
    p: jax.Array  # (B, N) dispatch, 0 for padding agents
    objective: jax.Array  # (B,) sum_n c_n(p_n)


def _supply(lam, a, b, p_min, p_max, movable, fixed, right):
    """Aggregate supply at lam and its slope. An agent exactly at a jump of its supply (a
    step agent, a = 0, at lam = b) gives p_max for the right limit S(lam+) and p_min for
    the left limit S(lam-)."""
    linear = movable & (a > 0)
    a_safe = jnp.where(linear, a, 1.0)
    # At and beyond its breakpoints (computed as everywhere else) a ramp sits exactly on its
    # bound: (lam - b) / a would carry the rounding of lam - b magnified by 1 / a. A ramp
    # whose breakpoints round to one point is a jump there, like a step agent's.
    low, high = b + a * p_min, b + a * p_max
    jumped = (lam > high) | ((lam == high) & (right | (low < high)))
    value = jnp.where(jumped, p_max,
                      jnp.where(lam <= low, p_min, jnp.clip((lam - b) / a_safe, p_min, p_max)))
    supply = jnp.where(movable, value, 0.0).sum() + fixed
    rising = linear & (low < lam) & (lam < high)
    return supply, jnp.where(rising, 1.0 / a_safe, 0.0).sum()


def _price_floor(a, b, p_min, p_max, movable, fixed, tol):
    """inf{lam : S(lam+) >= -tol}: -inf when already true at -inf, NaN when never true.

    Binary search over the sorted breakpoints with S evaluated directly at each probe
    (O(N) each, O(N log N) in all), then the exact root on the segment found."""
    low, high = b + a * p_min, b + a * p_max
    # Breakpoints of agents that cannot move are no events; park them on a real one.
    park = jnp.min(jnp.where(movable, low, jnp.inf))
    park = jnp.where(jnp.isfinite(park), park, 0.0)
    t = jnp.sort(jnp.concatenate([jnp.where(movable, low, park), jnp.where(movable, high, park)]))
    count = t.shape[0]

    def right_supply(k):
        return _supply(t[jnp.minimum(k, count - 1)], a, b, p_min, p_max, movable, fixed, True)[0]

    def bisect(_, bracket):
        # Invariant: S(t_k+) < -tol for k < first, >= -tol for k >= last (last = count: none).
        first, last = bracket
        middle = (first + last) // 2
        reached = right_supply(middle) >= -tol
        open_ = first < last
        return (jnp.where(open_ & ~reached, middle + 1, first),
                jnp.where(open_ & reached, middle, last))

    steps = int(np.ceil(np.log2(count + 1)))
    k, _ = jax.lax.fori_loop(0, steps, bisect,
                             (jnp.zeros((), jnp.int32), jnp.asarray(count, jnp.int32)))
    k_safe = jnp.minimum(k, count - 1)
    left_value = _supply(t[k_safe], a, b, p_min, p_max, movable, fixed, False)[0]
    # Below t_k: the crossing is inside the rising segment (t_{k-1}, t_k), solved exactly
    # from the affine supply at its midpoint. Otherwise it is a step agent's jump at t_k.
    mid = 0.5 * (t[jnp.maximum(k_safe - 1, 0)] + t[k_safe])
    value, rate = _supply(mid, a, b, p_min, p_max, movable, fixed, True)
    root = mid - value / jnp.where(rate > 0, rate, 1.0)
    lam = jnp.where(left_value >= -tol, root, t[k_safe])
    lam = jnp.where(k == count, jnp.nan, lam)
    base = jnp.where(movable, p_min, 0.0).sum() + fixed  # S below every breakpoint
    return jnp.where(base >= -tol, -jnp.inf, lam)


def _dispatch_case(a, b, p_min, p_max, active):
    movable = active & (p_max > p_min)
    fixed = jnp.where(active & ~movable, p_min, 0.0).sum()  # supply of agents that cannot move
    total_min = jnp.where(active, p_min, 0.0).sum()
    total_max = jnp.where(active, p_max, 0.0).sum()
    # Rounding level of a supply sum: a supply this close to 0 counts as 0 (flat segments).
    scale = jnp.where(active, jnp.abs(p_min) + jnp.abs(p_max), 0.0).sum()
    tol = 8 * active.sum() * jnp.finfo(a.dtype).eps * scale
    feasible = (total_min <= tol) & (total_max >= -tol)

    floor = _price_floor(a, b, p_min, p_max, movable, fixed, tol)
    # sup{lam : S(lam-) <= tol} is the floor of the mirrored market lam -> -lam.
    ceiling = -_price_floor(a, -b, -p_max, -p_min, movable, -fixed, tol)
    both = jnp.isfinite(floor) & jnp.isfinite(ceiling)
    price = jnp.where(both, 0.5 * (floor + ceiling),
                      jnp.where(jnp.isfinite(floor), floor, ceiling))
    price = jnp.where(jnp.isinf(price), jnp.nan, price)

    linear = movable & (a > 0)
    p = jnp.where(linear, jnp.clip((price - b) / jnp.where(linear, a, 1.0), p_min, p_max),
                  jnp.where(price > b, p_max, p_min))
    p = jnp.where(movable, p, jnp.where(active, p_min, 0.0))
    # Step agents priced exactly at their b share the residual in proportion to their range.
    marginal = movable & ~linear & (b == price)
    width = jnp.where(marginal, p_max - p_min, 0.0)
    residual = -jnp.where(marginal, 0.0, p).sum() - jnp.where(marginal, p_min, 0.0).sum()
    share = jnp.clip(residual / jnp.where(width.sum() > 0, width.sum(), 1.0), 0.0, 1.0)
    # (clipped: p_min + 1 * (p_max - p_min) may round past p_max)
    p = jnp.where(marginal, jnp.clip(p_min + share * width, p_min, p_max), p)

    p = jnp.where(feasible, p, jnp.nan)
    price = jnp.where(feasible, price, jnp.nan)
    objective = jnp.where(active, 0.5 * a * p**2 + b * p, 0.0).sum()
    return price, p, objective


@jax.jit
def pool_dispatch(community: Community) -> PoolSolution:
    """Exact pool dispatch of every case of the batch (padding agents ignored)."""
    price, p, objective = jax.vmap(_dispatch_case)(
        community.a, community.b, community.p_min, community.p_max, community.active)
    return PoolSolution(price=price, p=p, objective=objective)
