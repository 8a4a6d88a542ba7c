"""Exact local update of every agent in the P2P consensus ADMM (SPEC 3.1).

Agent n chooses its trades ``t_m`` and net injection ``p`` to minimise
``c_n(p) - sum_m l_m t_m + rho/2 sum_m (t_m - y_m)^2`` subject to ``p = sum_m t_m``, the
bounds ``p_min <= p <= p_max`` and the trade boxes ``lo_m <= t_m <= hi_m``. The penalty is
the agent's rho or one ``rho_m`` per trade (``admm_pairwise``). With the perceived price mu
(the multiplier of ``p = sum t``) the optimality conditions read

    t_m(mu) = clip(target_m - mu / rho_m, lo_m, hi_m),     target_m = y_m + l_m / rho_m
    p(mu)   = clip((mu - b) / a, p_min, p_max)             (a step at mu = b when a = 0)

and mu is the root of the non-increasing piecewise-linear function
``h(mu) = sum_m t_m(mu) - p(mu)``, whose kinks ("breakpoints") are where a trade or the
injection reaches a bound.

The root is found exactly, without an inner tolerance:

1. A certified Newton method, warm-started at the previous perceived price. Every pass
   evaluates h at one point and the *status* of every variable there (below its box, free,
   at or above it); the statuses change monotonically with mu. A Newton point is the root
   of the affine piece the statuses of its starting point describe, and it is certified
   when the next pass finds the same statuses there: h is then affine between the two
   points, so the Newton point is its root. Statuses are compared through two counts (at
   or above, below), enough because they move one way only. A pass costs one sum of the
   clipped trades and one integer count, far less than searching the next breakpoint:
   that search runs only where h is flat (no free variable). Newton points outside the
   bracket of the root give way to the bracket's midpoint, and a linear agent's step at
   b is visited when a Newton step would cross it. A Newton step that rounds to its start
   settles the agent (its root is known to the resolution of floats), unless the injection
   is free on a piece that ends within a float or two (a tiny curvature a): then the
   agent moves one or two floats on, and is done where h changes sign between adjacent
   floats. ADMM's warm starts make two passes (a Newton step and its certificate) the
   rule.
2. Agents still unresolved after ``max_newton`` passes (rare) fall back to a sort of all
   breakpoints, a binary search for the segment holding the root and the closed-form
   solve on that segment.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp


class AgentDecision(NamedTuple):
    trades: jax.Array  # (..., M) t_m
    power: jax.Array  # (...) p = sum_m t_m
    perceived_price: jax.Array  # (...) mu
    newton_steps: jax.Array  # () passes of the Newton method run: those of the slowest agent


class _LocalProblem(NamedTuple):
    target: jax.Array  # (..., M)
    lo: jax.Array  # (..., M)
    hi: jax.Array  # (..., M)
    a: jax.Array  # (...)
    b: jax.Array
    p_min: jax.Array
    p_max: jax.Array
    rho: jax.Array  # (...), or (..., M): one penalty per trade
    inverse_rho: jax.Array | None  # (..., M) 1 / rho_m with one penalty per trade, else None
    # The injection is free between its two breakpoints.
    injection_lo: jax.Array  # (...)
    injection_hi: jax.Array  # (...)

    @classmethod
    def build(cls, target, lo, hi, a, b, p_min, p_max, rho):
        # Per trade, the slope of every Newton step sums the free 1 / rho_m: divided once.
        inverse = 1.0 / rho if rho.ndim == target.ndim else None
        return cls(target, lo, hi, a, b, p_min, p_max, rho, inverse, b + a * p_min, b + a * p_max)

    @property
    def per_trade(self) -> bool:
        return self.rho.ndim == self.target.ndim

    # The trades' breakpoints, computed where used (the sorted search, flat pieces): trade m
    # is free for kink_lo < mu < kink_hi (at hi below, at lo above).
    @property
    def _rho_trades(self):
        return self.rho if self.per_trade else self.rho[..., None]

    @property
    def kink_lo(self):
        return self._rho_trades * (self.target - self.hi)

    @property
    def kink_hi(self):
        return self._rho_trades * (self.target - self.lo)

    def unclipped(self, mu):
        """target_m - mu / rho_m: the trades before their boxes."""
        if self.per_trade:
            return self.target - mu[..., None] / self.rho
        # One division per agent, not per trade: the same values.
        return self.target - (mu / self.rho)[..., None]

    def trades(self, mu):
        return jnp.clip(self.unclipped(mu), self.lo, self.hi)

    def injection(self, mu, right: bool):
        """p(mu); for a linear agent (a = 0) the right or left limit of its step at b."""
        safe_a = jnp.where(self.a > 0, self.a, 1.0)
        interior = jnp.clip((mu - self.b) / safe_a, self.p_min, self.p_max)
        at_or_above = (mu >= self.b) if right else (mu > self.b)
        return jnp.where(self.a > 0, interior, jnp.where(at_or_above, self.p_max, self.p_min))

    def piece_root(self, mu, right):
        """Root of the affine extension of h on the piece next to ``mu`` (to its right
        where ``right``, else to its left), from the counts of free variables there."""
        m, r = mu[..., None], right[..., None]
        kink_lo, kink_hi = self.kink_lo, self.kink_hi
        free = jnp.where(r, (kink_lo <= m) & (m < kink_hi), (kink_lo < m) & (m <= kink_hi))
        fixed = jnp.where(m <= kink_lo, self.hi, self.lo)
        total = jnp.where(free, self.target, fixed).sum(-1)  # sum t = total - slope mu
        i_lo, i_hi = self.injection_lo, self.injection_hi
        injection_free = (self.a > 0) & jnp.where(right, (i_lo <= mu) & (mu < i_hi),
                                                   (i_lo < mu) & (mu <= i_hi))
        bound = jnp.where(jnp.where(right, mu < i_lo, mu <= i_lo), self.p_min, self.p_max)
        # Free injection: total - slope mu = (mu - b)/a, multiplied through by a.
        if self.per_trade:
            slope = jnp.where(free, self.inverse_rho, 0.0).sum(-1)  # sum of the free 1 / rho_m
            has_slope = slope > 0  # every 1 / rho_m is positive: some trade is free
            mu_free = (self.a * total + self.b) / (1.0 + self.a * slope)
            mu_fixed = (total - bound) / jnp.where(has_slope, slope, 1.0)
        else:  # slope = n_free / rho
            n_free = free.sum(-1).astype(mu.dtype)
            has_slope = n_free > 0
            mu_free = (self.a * total + self.b) / (1.0 + self.a * n_free / self.rho)
            mu_fixed = self.rho * (total - bound) / jnp.where(has_slope, n_free, 1.0)
        infinite = jnp.where(right, jnp.inf, -jnp.inf)
        return jnp.where(injection_free, mu_free, jnp.where(has_slope, mu_fixed, infinite))

    def next_kink(self, mu, right):
        """Nearest breakpoint of a variable that can move, strictly beyond ``mu`` in the
        given direction (+-inf if none)."""
        m, r = mu[..., None], right[..., None]
        kink_lo, kink_hi = self.kink_lo, self.kink_hi
        # A trade's first breakpoint ahead (kink_lo <= kink_hi), negated to the left, so that
        # one minimum over the trades finds the nearest.
        to_right = jnp.where(m < kink_lo, kink_lo, jnp.where(m < kink_hi, kink_hi, jnp.inf))
        to_left = jnp.where(m > kink_hi, -kink_hi, jnp.where(m > kink_lo, -kink_lo, jnp.inf))
        trades = jnp.where(self.lo < self.hi, jnp.where(r, to_right, to_left), jnp.inf).min(-1)
        sign = jnp.where(right, 1.0, -1.0).astype(mu.dtype)
        injection = jnp.stack([sign * self.injection_lo, sign * self.injection_hi], -1)
        nearest_injection = jnp.where(injection > (sign * mu)[..., None], injection,
                                      jnp.inf).min(-1)
        return sign * jnp.minimum(trades, nearest_injection)


# Status counts of a pass, in one integer per agent: the trades at or above their box in the
# low bits, those below it from this bit on (at most 65 535 trades per agent).
_BELOW = 1 << 16
# Injection statuses: free, at or above its range, below it, a linear agent exactly at its
# step b (a fixed injection, p_min = p_max, is always "at or above").
_FREE, _ABOVE, _BELOW_BOX, _AT_STEP = 0, 1, 2, 3


class _NewtonState(NamedTuple):
    mu: jax.Array  # the point the next pass evaluates
    counts: jax.Array  # int32 status counts of the trades at the last pass's point
    injection: jax.Array  # int32 injection status there
    newton: jax.Array  # mu is a Newton point from the last pass's point (certifiable)
    low: jax.Array  # the root is >= low
    high: jax.Array  # the root is <= high
    done: jax.Array
    steps: jax.Array  # passes run
    # The last pass's trades and their sum: those of every agent done (its mu no longer moves).
    trades: jax.Array
    power: jax.Array

    @classmethod
    def start(cls, problem: _LocalProblem, guess):
        """Before the first pass: at the warm start, no bracket, nothing to certify."""
        inf = jnp.full(guess.shape, jnp.inf, guess.dtype)
        zeros, no = jnp.zeros(guess.shape, jnp.int32), jnp.zeros(guess.shape, bool)
        return cls(guess, zeros, zeros, no, -inf, inf, no, jnp.int32(0), problem.target, guess)


def _newton_step(problem: _LocalProblem, s: _NewtonState) -> _NewtonState:
    """One pass of the certified Newton method for every agent not done (module doc, 1)."""
    mu, lo, hi = s.mu, problem.lo, problem.hi
    shifted = problem.unclipped(mu)
    trades = jnp.clip(shifted, lo, hi)
    total = trades.sum(-1)
    above, below = shifted >= hi, shifted < lo
    # A closed slot (lo = hi) counts as at its bound whatever mu: it has no breakpoint.
    counts = jnp.where(lo < hi, jnp.where(above, 1, jnp.where(below, _BELOW, 0)), 1).sum(
        -1, dtype=jnp.int32)
    if problem.per_trade:
        slope = jnp.where(above | below, 0.0, problem.inverse_rho).sum(-1)
    else:
        n_fixed = counts % _BELOW + counts // _BELOW
        slope = (problem.target.shape[-1] - n_fixed).astype(mu.dtype) / problem.rho

    a, b, p_min, p_max = problem.a, problem.b, problem.p_min, problem.p_max
    linear, stepped = a > 0, p_min < p_max
    safe_a = jnp.where(linear, a, 1.0)
    v = (mu - b) / safe_a
    on_linear = jnp.where(v >= p_max, _ABOVE, jnp.where(v < p_min, _BELOW_BOX, _FREE))
    on_step = jnp.where(mu > b, _ABOVE, jnp.where(mu < b, _BELOW_BOX, _AT_STEP))
    injection = jnp.where(stepped, jnp.where(linear, on_linear, on_step), _ABOVE).astype(jnp.int32)
    excess_right = total - problem.injection(mu, right=True)
    excess_left = total - problem.injection(mu, right=False)
    at_root = (excess_right <= 0) & (excess_left >= 0)
    # Same statuses as at the point this Newton point came from: h is affine in between.
    certified = (s.newton & (counts == s.counts) & (injection == s.injection)
                 & (injection != _AT_STEP))
    right = excess_right > 0
    excess = jnp.where(right, excess_right, excess_left)
    slope = slope + jnp.where(linear & (injection == _FREE), 1.0 / safe_a, 0.0)
    flat = slope <= 0
    candidate = mu + excess / jnp.where(flat, 1.0, slope)
    # No free variable: the next breakpoint ahead (searched only when some agent needs it).
    candidate = jnp.where(flat, jax.lax.cond(jnp.any(flat & ~s.done),
                                             lambda: problem.next_kink(mu, right),
                                             lambda: candidate), candidate)
    crosses_step = ~linear & stepped & (((mu < b) & (candidate >= b))
                                        | ((mu > b) & (candidate <= b)))
    candidate = jnp.where(crosses_step, b, candidate)
    # A Newton step that rounds to mu: mu is the root to the resolution of floats, unless
    # the injection is free on a piece that ends within a float or two (a steep injection:
    # a = 1e-18 rose by 1e3 MW per float); then one or two floats on in the direction of h
    # decide. (A trade's piece is as narrow only where no float places the trade closer.)
    rounded = candidate == mu
    nudge = jnp.maximum(jnp.abs(mu) * jnp.finfo(mu.dtype).eps, jnp.finfo(mu.dtype).tiny)
    room = jnp.where(right, problem.injection_hi - nudge > mu, problem.injection_lo + nudge < mu)
    settles = rounded & (~linear | (injection != _FREE) | room)
    candidate = jnp.where(rounded, mu + jnp.where(right, nudge, -nudge), candidate)
    # The root is not left of a point with h > 0 nor right of one with h < 0.
    low = jnp.where(right, jnp.maximum(s.low, mu), s.low)
    high = jnp.where(right, s.high, jnp.minimum(s.high, mu))
    inside = (candidate > low) & (candidate < high)
    bracketed = jnp.isfinite(low) & jnp.isfinite(high)
    middle = 0.5 * (low + high)
    # h changes sign between two adjacent floats (no float strictly between them, where
    # their midpoint would round): the root to the resolution of floats. Outside an open
    # bracket: no breakpoint ahead and no slope, h keeps its sign (only if infeasible).
    adjacent = bracketed & ((middle == low) | (middle == high))
    settled = settles | adjacent | (~inside & ~bracketed)
    done = s.done | at_root | certified | settled
    mu = jnp.where(done, mu, jnp.where(inside, candidate, middle))
    newton = ~flat & ~crosses_step & ~rounded & inside
    return _NewtonState(mu, counts, injection, newton, low, high, done, s.steps + 1, trades,
                        total)


def _newton(problem: _LocalProblem, guess, max_steps: int):
    """The passes of every agent from its warm start ``guess`` until all are done or
    ``max_steps`` passes have run."""

    def keep_going(s: _NewtonState):
        return (s.steps < max_steps) & ~jnp.all(s.done)

    return jax.lax.while_loop(keep_going, partial(_newton_step, problem),
                              _NewtonState.start(problem, guess))


def _fallback(problem: _LocalProblem, s: _NewtonState) -> _NewtonState:
    """The agents the Newton passes left unresolved (all of them with ``max_newton = 0``)
    moved to the sorted search's roots, and every agent's trades there (an agent done
    keeps its mu and so the trades of its last pass). A loop of at most one iteration, not
    a ``cond``: a ``cond`` copied the block's trades on every solve."""

    def unresolved(s: _NewtonState):
        return ~jnp.all(s.done)

    def search(s: _NewtonState):
        # Tied to the loop's state: XLA would otherwise hoist the search out of the loop
        # and run it on every solve.
        tied, _ = jax.lax.optimization_barrier((problem, s.mu))
        mu = jnp.where(s.done, s.mu, _sorted_search(tied))
        trades = problem.trades(mu)
        return s._replace(mu=mu, done=jnp.ones_like(s.done), trades=trades, power=trades.sum(-1))

    return jax.lax.while_loop(unresolved, search, s)


def _sorted_search(problem: _LocalProblem):
    """Exact root by sorting all breakpoints and a binary search (the robust fallback)."""
    kinks = jnp.concatenate([problem.kink_lo, problem.kink_hi, problem.injection_lo[..., None],
                             problem.injection_hi[..., None]], -1)
    kinks = jnp.sort(kinks, -1)
    n = kinks.shape[-1]

    def kink(index):
        return jnp.take_along_axis(kinks, jnp.clip(index, 0, n - 1)[..., None], -1)[..., 0]

    def excess(mu):
        return problem.trades(mu).sum(-1) - problem.injection(mu, right=True)

    # Smallest k with h(kink_k) <= 0, with h(kink_-1) > 0 and h(kink_n) <= 0 by convention.
    def bisect(_, bracket):
        left, right = bracket
        mid = (left + right) // 2
        below = excess(kink(mid)) <= 0
        return jnp.where(below, left, mid), jnp.where(below, mid, right)

    shape = kinks.shape[:-1]
    bracket = (jnp.full(shape, -1, jnp.int32), jnp.full(shape, n, jnp.int32))
    _, k = jax.lax.fori_loop(0, int(n).bit_length(), bisect, bracket)
    lower, upper = kink(k - 1), kink(k)
    # The root is in (lower, upper] and h > 0 just right of ``lower``: solve the affine
    # piece left of ``upper``; a constant piece means h steps down to <= 0 at ``upper``.
    root = problem.piece_root(upper, jnp.zeros(shape, bool))
    mu = jnp.where(jnp.isfinite(root), jnp.clip(root, lower, upper), upper)
    return jnp.where(k == 0, upper, mu)


def solve_agents(target, lo, hi, a, b, p_min, p_max, rho, guess, max_newton: int = 16):
    """Exact local decisions of all agents at once.

    ``target, lo, hi`` have shape (..., M) (the trades of each agent along the last axis; a
    non-edge has ``lo = hi = 0``); the agent data and the warm start ``guess`` of the
    perceived price broadcast against (...); ``rho`` too, or it has shape (..., M), one
    positive penalty per trade (non-edges included).
    """
    shape = target.shape[:-1]
    rho = rho if jnp.ndim(rho) == target.ndim else jnp.broadcast_to(rho, shape)
    problem = _LocalProblem.build(target, lo, hi, *(jnp.broadcast_to(v, shape).astype(target.dtype)
                                                    for v in (a, b, p_min, p_max)),
                                  jnp.asarray(rho, target.dtype))
    newton = _newton(problem, jnp.broadcast_to(guess, shape).astype(target.dtype), max_newton)
    decided = _fallback(problem, newton)
    return AgentDecision(decided.trades, decided.power, decided.mu, decided.steps)
