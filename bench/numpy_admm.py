"""P2P consensus ADMM (SPEC 3.1) in plain NumPy, one case at a time.

The baseline a researcher would write without JAX: a Python loop over iterations, NumPy
vectorised over the case's agents and trades on a dense ``N x N`` layout, the same exact
local solve and the same global stopping rule (T3.12) checked every iteration. It is an
independent implementation: it shares no code with ``jaxmarket`` beyond reading a
``Community``, so it doubles as a cross-check of the JAX kernel.

Local solve. Agent n's trades are ``t_m(mu) = clip(target_m - mu / rho, lo_m, hi_m)`` and
its injection ``p(mu) = clip((mu - b) / a, p_min, p_max)`` (a step from p_min to p_max at
``mu = b`` when ``a = 0``); the perceived price mu is the root of the non-increasing
piecewise-linear ``h(mu) = sum_m t_m(mu) - p(mu)``. Sorting the breakpoints of every agent,
a binary search finds the first breakpoint with ``h <= 0``; ``h`` is affine between it
and the previous one, so the root follows in closed form. A non-edge has
``target = lo = hi = 0``: its trade stays 0 and its breakpoints at 0 are harmless.
"""

from __future__ import annotations

import numpy as np


def _trade_kinks(target, lo, hi, rho):
    """Trade m is free for mu strictly between these, at hi below and at lo above."""
    return rho * (target - hi), rho * (target - lo)


def _injection(mu, a, b, p_min, p_max):
    """p(mu), taking the right limit p_max at the step mu = b of a linear agent."""
    linear = a == 0
    interior = np.clip((mu - b) / np.where(linear, 1.0, a), p_min, p_max)
    return np.where(linear, np.where(mu >= b, p_max, p_min), interior)


def _excess(mu, target, lo, hi, a, b, p_min, p_max, rho):
    """h(mu) for every agent, mu of shape (N,)."""
    trades = np.clip(target - mu[:, None] / rho, lo, hi)
    return trades.sum(1) - _injection(mu, a, b, p_min, p_max)


def local_prices(target, lo, hi, a, b, p_min, p_max, rho):
    """Exact perceived price of every agent: the root of h by sorted breakpoints."""
    k_lo, k_hi = _trade_kinks(target, lo, hi, rho)
    kinks = np.sort(np.concatenate(
        [k_lo, k_hi, (b + a * p_min)[:, None], (b + a * p_max)[:, None]], 1), 1)
    n_agents, n_kinks = kinks.shape
    rows = np.arange(n_agents)

    # Smallest k with h(kink_k) <= 0. h at the last kink is sum(lo) - p_max <= 0 for a
    # feasible agent, so k exists. Invariant: h(kink_left) > 0, left = -1 meaning -inf.
    left = np.full(n_agents, -1)
    right = np.full(n_agents, n_kinks - 1)
    while np.any(right - left > 1):
        mid = (left + right) // 2
        below = _excess(kinks[rows, mid], target, lo, hi, a, b, p_min, p_max, rho) <= 0
        searching = right - left > 1
        right = np.where(searching & below, mid, right)
        left = np.where(searching & ~below, mid, left)

    upper = kinks[rows, right]
    lower = kinks[rows, np.maximum(left, 0)]
    # Classify every variable at a point inside (lower, upper), where h is affine.
    inside = 0.5 * (lower + upper)
    free = (k_lo < inside[:, None]) & (inside[:, None] < k_hi)
    fixed = np.where(inside[:, None] <= k_lo, hi, lo)
    total = np.where(free, target, fixed).sum(1)  # sum_m t_m = total - n_free mu / rho
    n_free = free.sum(1)
    injection_free = (a > 0) & (b + a * p_min < inside) & (inside < b + a * p_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Free injection: total - n_free mu / rho = (mu - b) / a, multiplied through by a.
        root_free = (a * total + b) / (1.0 + a * n_free / rho)
        bound = np.where(inside < b + a * p_min, p_min, p_max)
        root_fixed = rho * (total - bound) / n_free
    root = np.where(injection_free, root_free, root_fixed)
    # A constant piece (no free variable) means h steps down to <= 0 at ``upper``; below
    # the first breakpoint every trade sits at hi, so that breakpoint is a root as good as any.
    mu = np.where(np.isfinite(root), np.clip(root, lower, upper), upper)
    return np.where(left < 0, upper, mu)


def local_trades(target, lo, hi, a, b, p_min, p_max, rho):
    mu = local_prices(target, lo, hi, a, b, p_min, p_max, rho)
    return np.clip(target - mu[:, None] / rho, lo, hi)


def solve_case(a, b, p_min, p_max, edges, charge, trade_min, trade_max,
               rho=1.0, eps=1e-4, max_iter=10_000):
    """ADMM on one case from p = lambda = 0 until sqrt(sum_n r_n) <= eps and
    sqrt(sum_n s_n) <= eps, or ``max_iter`` iterations.

    Agent arrays have shape (N,), trade arrays (N, N). Returns ``(trades, prices,
    iterations)``; ``iterations`` counts the iterations run (``max_iter`` if not converged).
    """
    edges = np.asarray(edges, bool)
    trades = np.zeros_like(charge)
    prices = np.zeros_like(charge)
    for iteration in range(1, max_iter + 1):
        half_difference = 0.5 * (trades - trades.T)
        target = np.where(edges, half_difference + (prices - charge) / rho, 0.0)
        new_trades = local_trades(target, trade_min, trade_max, a, b, p_min, p_max, rho)
        mismatch = new_trades + new_trades.T
        prices = np.where(edges, prices - 0.5 * rho * mismatch, 0.0)
        primal = np.sqrt(np.sum(mismatch**2))
        dual = np.sqrt(np.sum((new_trades - trades) ** 2))
        trades = new_trades
        if primal <= eps and dual <= eps:
            return trades, prices, iteration
    return trades, prices, max_iter


def case_arrays(community, i: int) -> dict:
    """The arrays ``solve_case`` needs for case i of a batched ``Community``."""
    fields = ("a", "b", "p_min", "p_max", "edges", "charge", "trade_min", "trade_max")
    return {name: np.asarray(getattr(community, name)[i]) for name in fields}


def solve_community_case(community, i: int, rho=1.0, eps=1e-4, max_iter=10_000):
    return solve_case(**case_arrays(community, i), rho=rho, eps=eps, max_iter=max_iter)
