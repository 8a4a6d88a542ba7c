"""Independent oracles: one case of a batch solved with cvxpy + Clarabel.

The P2P problem is stated here in its original directed form (one variable per directed
trade, reciprocity as an explicit constraint), not in the reduced form the package's
reference solver uses, so the two share no modelling step beyond the Community arrays.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from jaxmarket.community import Community

TIGHT = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8,
             max_iter=500)


def _case(community: Community, index: int):
    """The active agents of case ``index`` in float64, scaled to powers and marginal
    costs of order one (Clarabel's tolerances are absolute in part), with the two scales."""
    fields = {name: np.asarray(value[index]) for name, value in community._asdict().items()}
    agents = np.flatnonzero(fields["active"])
    one = {k: fields[k][agents].astype(np.float64) for k in ("a", "b", "p_min", "p_max")}
    for k in ("edges", "charge", "trade_min", "trade_max"):
        one[k] = fields[k][np.ix_(agents, agents)].astype(np.float64)
    power = max(np.abs(np.r_[one["p_min"], one["p_max"]]).max(initial=0.0), 1e-300)
    price = max(np.abs(np.r_[one["b"], one["a"] * power, one["charge"].ravel()]).max(), 1e-300)
    for k in ("p_min", "p_max", "trade_min", "trade_max"):
        one[k] = one[k] / power
    one["a"] = one["a"] * power / price
    for k in ("b", "charge"):
        one[k] = one[k] / price
    return one, agents, community.a.shape[1], power, price


def _solve(problem: cp.Problem, settings=TIGHT):
    problem.solve(solver=cp.CLARABEL, **settings)
    # Only a solution at the requested tolerances is a reference (every solve of the suite
    # reaches OPTIMAL; an inaccurate one would blur the tolerances the tests assert).
    if problem.status != cp.OPTIMAL:
        raise RuntimeError(f"Clarabel: {problem.status}")


def clarabel_p2p(community: Community, index: int) -> dict:
    """Centralized P2P dispatch (SPEC section 2) of case ``index``: objective, p (N,),
    trades (N, N) with ``trades[n, m] = p_nm``; padding agents get zeros."""
    c, agents, n_max, power, price = _case(community, index)
    n = agents.size
    sender, receiver = np.nonzero(c["edges"])
    position = -np.ones((n, n), int)
    position[sender, receiver] = np.arange(sender.size)
    reverse = position[receiver, sender]

    trade = cp.Variable(sender.size)
    p = cp.Variable(n)
    constraints = [p >= c["p_min"], p <= c["p_max"]]
    if sender.size:
        incidence = np.zeros((n, sender.size))
        incidence[sender, np.arange(sender.size)] = 1.0
        constraints += [
            trade + trade[reverse] == 0,
            p == incidence @ trade,
            trade >= c["trade_min"][sender, receiver],
            trade <= c["trade_max"][sender, receiver],
        ]
        charges = c["charge"][sender, receiver] @ trade
    else:
        constraints.append(p == 0)
        charges = 0.0
    cost = 0.5 * c["a"] @ cp.square(p) + c["b"] @ p + charges
    problem = cp.Problem(cp.Minimize(cost), constraints)
    _solve(problem)

    trades = np.zeros((n_max, n_max))
    if sender.size:
        trades[agents[sender], agents[receiver]] = trade.value * power
    p_full = np.zeros(n_max)
    p_full[agents] = p.value * power
    return dict(objective=float(problem.value) * power * price, p=p_full, trades=trades)


def clarabel_pool(community: Community, index: int) -> dict:
    """Pool dispatch (T2.1) of case ``index``: objective, p (N,) and the price, the dual
    of the balance constraint (one optimal price when several exist)."""
    c, agents, n_max, power, price = _case(community, index)
    p = cp.Variable(agents.size)
    balance = cp.sum(p) == 0
    cost = 0.5 * c["a"] @ cp.square(p) + c["b"] @ p
    problem = cp.Problem(cp.Minimize(cost), [balance, p >= c["p_min"], p <= c["p_max"]])
    _solve(problem)
    p_full = np.zeros(n_max)
    p_full[agents] = p.value * power
    # cvxpy's dual of sum(p) == 0 is -lam for the Lagrangian c(p) - lam * sum(p).
    return dict(objective=float(problem.value) * power * price, p=p_full,
                price=-float(balance.dual_value) * price)


def clarabel_p2p_dc(community: Community, index: int, shift, rate) -> dict:
    """The P2P problem of ``clarabel_p2p`` plus DC line limits ``|shift @ p| <= rate`` on the
    net injections (SPEC 7.1, T4.3), ``shift`` (L, N) and ``rate`` (L,) in MW. Also returns
    the perceived prices (duals of p = sum of trades), the line prices zeta (> 0 at the
    upper rating) and the congestion prices ``-shift^T zeta``."""
    c, agents, n_max, power, price = _case(community, index)
    n = agents.size
    shift = np.asarray(shift, np.float64)[:, agents]
    rate = np.asarray(rate, np.float64) / power
    sender, receiver = np.nonzero(c["edges"])
    position = -np.ones((n, n), int)
    position[sender, receiver] = np.arange(sender.size)
    incidence = np.zeros((n, sender.size))
    incidence[sender, np.arange(sender.size)] = 1.0

    trade = cp.Variable(sender.size)
    p = cp.Variable(n)
    balance = p == incidence @ trade
    upper, lower = shift @ p <= rate, shift @ p >= -rate
    constraints = [p >= c["p_min"], p <= c["p_max"], balance, upper, lower,
                   trade + trade[position[receiver, sender]] == 0,
                   trade >= c["trade_min"][sender, receiver],
                   trade <= c["trade_max"][sender, receiver]]
    cost = 0.5 * c["a"] @ cp.square(p) + c["b"] @ p + c["charge"][sender, receiver] @ trade
    problem = cp.Problem(cp.Minimize(cost), constraints)
    _solve(problem)

    trades = np.zeros((n_max, n_max))
    trades[agents[sender], agents[receiver]] = trade.value * power
    p_full, perceived, congestion = np.zeros(n_max), np.zeros(n_max), np.zeros(n_max)
    p_full[agents] = p.value * power
    # cvxpy's Lagrangian adds y * (lhs - rhs): the perceived price is -y.
    perceived[agents] = -balance.dual_value * price
    line_price = (upper.dual_value - lower.dual_value) * price
    congestion[agents] = -shift.T @ line_price
    return dict(objective=float(problem.value) * power * price, p=p_full, trades=trades,
                price=perceived, line_price=line_price, congestion=congestion)


# The projection's objective, a squared distance, is flat near its minimum: a gap of 1e-10
# left q off by 5e-3 of a scale of 700 on a degenerate case (a line at its rating with a
# zero multiplier); at 1e-14 Clarabel reaches 2e-8 there, still "optimal".
PROJECTION = {**TIGHT, "tol_gap_abs": 1e-14, "tol_gap_rel": 1e-14, "tol_feas": 1e-14}


def clarabel_projection(target, shift, rate) -> np.ndarray:
    """Euclidean projection of ``target`` (N,) on ``{q: sum q = 0, |shift @ q| <= rate}``."""
    scale = max(np.abs(target).max(), np.abs(rate).max())
    q = cp.Variable(target.size)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(q - target / scale)),
                         [cp.sum(q) == 0, cp.abs(shift @ q) <= rate / scale])
    _solve(problem, PROJECTION)
    return q.value * scale
