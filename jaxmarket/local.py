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

1. A safeguarded semismooth Newton method (Cominetti, Mascarenhas & Silva, Math. Prog.
   2014) warm-started at the previous perceived price. On the linear piece next to mu in
   the direction of the root, h is affine; if its root lies inside that piece it is the
   exact answer. Otherwise the whole piece is excluded from a bracket and the next point
   is the Newton point if it stays inside the bracket, else the bracket midpoint (or the
   piece's end while the bracket is open). Every miss excludes a piece, so the method
   terminates; ADMM's warm starts make one or two steps the rule.
2. Cases still unresolved after ``max_newton`` steps (rare; counted by the caller through
   ``exact``) fall back to a sort of all breakpoints, a binary search for the segment
   holding the root and the same closed-form solve on that segment.
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
    newton_steps: jax.Array  # () Newton steps run: those of the slowest agent


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
    # Breakpoints, computed once per solve: trade m is free for kink_lo < mu < kink_hi
    # (at hi below, at lo above); the injection is free between its two kinks.
    kink_lo: jax.Array  # (..., M)
    kink_hi: jax.Array  # (..., M)
    injection_lo: jax.Array  # (...)
    injection_hi: jax.Array  # (...)

    @classmethod
    def build(cls, target, lo, hi, a, b, p_min, p_max, rho):
        rho_t = rho if rho.ndim == target.ndim else rho[..., None]
        # Per trade, the slope of every Newton step sums the free 1 / rho_m: divided once.
        inverse = 1.0 / rho if rho.ndim == target.ndim else None
        return cls(target, lo, hi, a, b, p_min, p_max, rho, inverse, rho_t * (target - hi),
                   rho_t * (target - lo), b + a * p_min, b + a * p_max)

    @property
    def per_trade(self) -> bool:
        return self.rho.ndim == self.target.ndim

    def trades(self, mu):
        rho = self.rho if self.per_trade else self.rho[..., None]
        return jnp.clip(self.target - mu[..., None] / rho, self.lo, self.hi)

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
        free = jnp.where(r, (self.kink_lo <= m) & (m < self.kink_hi),
                         (self.kink_lo < m) & (m <= self.kink_hi))
        fixed = jnp.where(m <= self.kink_lo, self.hi, self.lo)
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
        """Nearest breakpoint strictly beyond ``mu`` in the given direction (+-inf if none)."""
        sign = jnp.where(right, 1.0, -1.0).astype(mu.dtype)
        ahead = sign * mu  # in the direction of travel: the smallest sign * kink > ahead

        def nearest(kinks):
            directed = sign[..., None] * kinks
            return jnp.where(directed > ahead[..., None], directed, jnp.inf).min(-1)

        injection = jnp.stack([sign * self.injection_lo, sign * self.injection_hi], -1)
        nearest_injection = jnp.where(injection > ahead[..., None], injection, jnp.inf).min(-1)
        closest = jnp.minimum(jnp.minimum(nearest(self.kink_lo), nearest(self.kink_hi)),
                              nearest_injection)
        return sign * closest


class _NewtonState(NamedTuple):
    mu: jax.Array
    low: jax.Array  # the root is >= low
    high: jax.Array  # the root is <= high
    done: jax.Array
    steps: jax.Array


def _newton_step(problem: _LocalProblem, s: _NewtonState) -> _NewtonState:
    """One safeguarded Newton step of every agent not done (module doc, 1)."""
    sum_trades = problem.trades(s.mu).sum(-1)
    excess_right = sum_trades - problem.injection(s.mu, right=True)
    excess_left = sum_trades - problem.injection(s.mu, right=False)
    at_root = (excess_right <= 0) & (excess_left >= 0)
    right = excess_right > 0
    candidate = problem.piece_root(s.mu, right)
    kink = problem.next_kink(s.mu, right)
    inside = jnp.where(right, candidate <= kink, candidate >= kink)
    # The root is not left of a point with h > 0, and a missed piece holds no root.
    low = jnp.where(right, jnp.maximum(s.low, jnp.where(inside, s.mu, kink)), s.low)
    high = jnp.where(right, s.high, jnp.minimum(s.high, jnp.where(inside, s.mu, kink)))
    bracketed = jnp.isfinite(low) & jnp.isfinite(high)
    newton_ok = (candidate > low) & (candidate < high)
    fallback = jnp.where(bracketed, 0.5 * (low + high), jnp.where(right, low, high))
    # No kink ahead and no slope: h keeps its sign for ever (only if infeasible).
    stuck = ~inside & ~jnp.isfinite(kink)
    done = s.done | at_root | inside | stuck
    mu = jnp.where(at_root | stuck, s.mu,
                   jnp.where(inside | newton_ok, candidate, fallback))
    mu = jnp.where(s.done, s.mu, mu)
    return _NewtonState(mu, low, high, done, s.steps + 1)


def _newton(problem: _LocalProblem, guess, max_steps: int):
    def keep_going(s: _NewtonState):
        return (s.steps < max_steps) & ~jnp.all(s.done)

    inf = jnp.full_like(guess, jnp.inf)
    start = _NewtonState(guess, -inf, inf, jnp.zeros(guess.shape, bool), jnp.int32(0))
    return jax.lax.while_loop(keep_going, partial(_newton_step, problem), start)


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
    mu, done = newton.mu, newton.done
    mu = jax.lax.cond(jnp.all(done), lambda: mu,
                      lambda: jnp.where(done, mu, _sorted_search(problem)))
    trades = problem.trades(mu)
    return AgentDecision(trades, trades.sum(-1), mu, newton.steps)
