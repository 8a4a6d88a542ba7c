"""Small random energy + reserve markets for tests, built with NumPy on top of
``tests/cases.py``, and their Clarabel oracles (cvxpy), independent of the package's
solvers: the centralized market in directed form, one agent's local problem."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import jax.numpy as jnp

from jaxmarket.community import make_community
from jaxmarket.reserve import ReserveMarket
from tests.cases import random_case
from tests.oracle import TIGHT

# A tighter duality gap, tried first where Clarabel at TIGHT stops short of a flat optimum.
TIGHTER = {**TIGHT, "tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12}


def solve_first(problem: cp.Problem, attempts, until=(cp.OPTIMAL,)) -> None:
    """Clarabel with each settings of ``attempts`` in turn until its status is in ``until``;
    a solver failure moves on to the next settings, except on the last ones."""
    for settings in attempts:
        try:
            problem.solve(solver=cp.CLARABEL, **settings)
        except cp.error.SolverError:
            if settings is attempts[-1]:
                raise
            continue
        if problem.status in until:
            return


def random_market(rng: np.random.Generator, n: int, sparsity: float = 0.0,
                  charges: bool = False) -> ReserveMarket:
    """One case: producers with a trade partner become uncertain renewables (zero energy
    cost, no upward reserve, free downward reserve) with probability 1/2, at least one.
    (An isolated uncertain agent could not cover its forecast: infeasible.)"""
    case = random_case(rng, n, sparsity=sparsity, charges=charges)
    f = {k: np.asarray(v[0]) for k, v in case._asdict().items()}
    producer = (f["p_min"] >= 0) & f["edges"].any(1)
    uncertain = producer & (rng.uniform(size=n) < 0.5)
    uncertain[np.flatnonzero(producer)[0]] = True
    cap = np.maximum(np.abs(f["p_min"]), np.abs(f["p_max"]))
    a = np.where(uncertain, 0.0, f["a"])
    b = np.where(uncertain, 0.0, f["b"])
    reserve_a = np.where(a > 0, a, rng.uniform(0.05, 0.5, n))
    up_b = rng.uniform(0.0, 5.0, n)
    down_b = rng.uniform(0.0, 5.0, n)
    up_max = np.where(uncertain, 0.0, rng.uniform(0.1, 0.5, n) * cap)
    down_max = np.where(uncertain, cap, rng.uniform(0.1, 0.5, n) * cap)
    mean = rng.uniform(0.3, 0.7, n) * cap
    sd = rng.uniform(0.05, 0.15, n) * cap
    z = rng.uniform(0.5, 2.0)
    community = make_community(a[None], b[None], f["p_min"][None], f["p_max"][None],
                               f["edges"][None], f["charge"][None])
    arr = lambda v: jnp.asarray(v[None], jnp.float64)  # noqa: E731
    return ReserveMarket(community, arr(reserve_a), arr(np.where(uncertain, 0.0, up_b)),
                         arr(np.where(uncertain, 0.0, reserve_a)), arr(np.where(uncertain, 0.0, down_b)),
                         arr(up_max), arr(down_max), jnp.asarray(uncertain[None]),
                         arr(np.where(uncertain, mean - z * sd, 0.0)),
                         arr(np.where(uncertain, mean + z * sd, 0.0)))


def case_fields(market: ReserveMarket, index: int) -> dict:
    """Case ``index`` of the market as NumPy arrays, with the boxes of its reserve trades."""
    fields = {k: np.asarray(v[index], np.float64) for k, v in market._asdict().items()
              if k != "community"}
    fields.update({k: np.asarray(v[index]) for k, v in market.community._asdict().items()})
    # Reserve trades (positive when n buys) are boxed -r_max_n <= r_nm <= r_max_m: no
    # trade sells more reserve than the seller m can hold at all (docs/model.md).
    for block in ("up", "down"):
        r_max = fields[f"{block}_max"]
        fields[f"{block}_lo"] = np.where(fields["edges"], -r_max[:, None], 0.0)
        fields[f"{block}_hi"] = np.where(fields["edges"], r_max[None, :], 0.0)
    return fields


def clarabel_market(market: ReserveMarket, index: int = 0) -> dict:
    """Centralized energy + reserve market of case ``index`` with one variable per
    directed trade and explicit reciprocity: objective, p, up, down (N,) and the trades
    (3, N, N) of the energy, upward and downward blocks; None if it is infeasible."""
    f = case_fields(market, index)
    agents = np.flatnonzero(f["active"])
    n = f["a"].size
    sender, receiver = np.nonzero(f["edges"])
    position = -np.ones((n, n), int)
    position[sender, receiver] = np.arange(sender.size)
    reverse = position[receiver, sender]
    incidence = np.zeros((n, sender.size))
    incidence[sender, np.arange(sender.size)] = 1.0
    blocks = [cp.Variable(sender.size) for _ in range(3)]
    p, up, down = cp.Variable(n), cp.Variable(n), cp.Variable(n)
    bounds = [(f["trade_min"], f["trade_max"]), (f["up_lo"], f["up_hi"]),
              (f["down_lo"], f["down_hi"])]
    cons = [p == incidence @ blocks[0]]
    for x, (lo, hi) in zip(blocks, bounds):
        cons += [x + x[reverse] == 0, x >= lo[sender, receiver], x <= hi[sender, receiver]]
    isolated = ~f["edges"].any(1)
    up_total = up + incidence @ blocks[1]
    down_total = down + incidence @ blocks[2]
    cons += [p + up <= f["p_max"], p - down >= f["p_min"], up >= 0, down >= 0,
             up <= f["up_max"], down <= f["down_max"], up_total >= 0, down_total >= 0]
    u = f["uncertain"].astype(bool) & f["active"]
    if u.any():
        idx = np.flatnonzero(u)
        cons += [up_total[idx] >= p[idx] - f["q_low"][idx],
                 down_total[idx] >= f["q_high"][idx] - p[idx]]
    if isolated.any():
        cons.append(p[np.flatnonzero(isolated)] == 0)
    cost = (0.5 * f["a"] @ cp.square(p) + f["b"] @ p + 0.5 * f["up_a"] @ cp.square(up)
            + f["up_b"] @ up + 0.5 * f["down_a"] @ cp.square(down) + f["down_b"] @ down
            + f["charge"][sender, receiver] @ blocks[0])
    problem = cp.Problem(cp.Minimize(cost), cons)
    # A tighter gap than TIGHT first: at TIGHT a costly r-_n whose requirement is slack
    # (the case file's producer) came out 1e-3 MW off its optimum 0, where both its
    # bound's multiplier and the slack vanish; TIGHT if that does not reach OPTIMAL.
    solve_first(problem, (TIGHTER, TIGHT), until=(cp.OPTIMAL, cp.INFEASIBLE))
    if problem.status != cp.OPTIMAL:
        return None
    trades = np.zeros((3, n, n))
    for k, x in enumerate(blocks):
        trades[k, sender, receiver] = x.value
    return dict(objective=float(problem.value), p=p.value, up=up.value, down=down.value,
                trades=trades, agents=agents)


def clarabel_joint(market: ReserveMarket, sum_low: float, sum_high: float,
                   index: int = 0) -> dict:
    """The centralized joint chance-constrained market (T5.1) of case ``index``, its
    active agents only: pool balance, no trade graph, no charges, and the aggregate
    requirements ``sum r+ >= p_nc - sum_low``, ``sum r- >= sum_high - p_nc`` with
    ``p_nc`` the injection of the uncertain agents and ``sum_low``, ``sum_high`` the
    split-tail quantiles of the sum of their forecasts. Powers and reserves come back
    (N,), zero on padding; ``price`` is the marginal cost of the balance."""
    f = case_fields(market, index)
    on = f["active"].astype(bool)
    g = {k: f[k][on] for k in ("a", "b", "p_min", "p_max", "up_a", "up_b", "down_a",
                               "down_b", "up_max", "down_max")}
    uncertain = f["uncertain"].astype(bool)[on]
    p, up, down = (cp.Variable(int(on.sum())) for _ in range(3))
    balance = cp.sum(p) == 0
    p_nc = cp.sum(p[np.flatnonzero(uncertain)])
    cons = [balance, p + up <= g["p_max"], p - down >= g["p_min"], up >= 0, down >= 0,
            up <= g["up_max"], down <= g["down_max"],
            cp.sum(up) >= p_nc - sum_low, cp.sum(down) >= sum_high - p_nc]
    cost = (0.5 * g["a"] @ cp.square(p) + g["b"] @ p + 0.5 * g["up_a"] @ cp.square(up)
            + g["up_b"] @ up + 0.5 * g["down_a"] @ cp.square(down) + g["down_b"] @ down)
    problem = cp.Problem(cp.Minimize(cost), cons)
    # A tighter gap than TIGHT first: at TIGHT Clarabel's powers and upward reserves were
    # seen 1e-10 and 1e-9 of the largest off, a costly r-_n whose requirement is slack 1e-3
    # MW off its optimum 0; TIGHT if that does not reach OPTIMAL.
    solve_first(problem, (TIGHTER, TIGHT))
    assert problem.status == cp.OPTIMAL, problem.status

    def full(x):
        out = np.zeros(on.size)
        out[on] = x.value
        return out

    # The energy price: minus cvxpy's multiplier of the balance.
    return dict(objective=float(problem.value), p=full(p), up=full(up), down=full(down),
                price=-float(balance.dual_value))


def feasible_market(rng: np.random.Generator, n: int, **options):
    """A random market whose centralized problem is feasible (redrawn until it is: too
    little consumption can leave no room for the renewables' downward reserves), with
    its Clarabel solution."""
    while True:
        market = random_market(rng, n, **options)
        expected = clarabel_market(market)
        if expected is not None:
            return market, expected


def clarabel_local(market: ReserveMarket, rho: float, prices, targets, agent: int,
                   index: int = 0) -> dict:
    """Agent ``agent``'s local problem (T5.7): its three trade rows against the prices
    and proximal centres (both (3, N, N)), stated from the market fields; None if it is
    infeasible (an uncertain agent whose partners have too little reserve cannot cover
    its forecast)."""
    f = case_fields(market, index)
    n = agent
    prices, targets = np.asarray(prices), np.asarray(targets)
    nb = np.flatnonzero(f["edges"][n])
    t, u, d = (cp.Variable(nb.size) for _ in range(3))
    p, up, down = cp.Variable(), cp.Variable(), cp.Variable()
    p_fix = nb.size == 0
    cons = [p == cp.sum(t), t >= f["trade_min"][n, nb], t <= f["trade_max"][n, nb],
            u >= f["up_lo"][n, nb], u <= f["up_hi"][n, nb],
            d >= f["down_lo"][n, nb], d <= f["down_hi"][n, nb],
            p + up <= f["p_max"][n], p - down >= f["p_min"][n], up >= 0, down >= 0,
            up <= f["up_max"][n], down <= f["down_max"][n],
            up + cp.sum(u) >= 0, down + cp.sum(d) >= 0]
    if f["uncertain"][n]:
        cons += [up + cp.sum(u) >= p - f["q_low"][n], down + cp.sum(d) >= f["q_high"][n] - p]
    if p_fix:
        cons.append(p == 0)
    cost = (0.5 * f["a"][n] * cp.square(p) + f["b"][n] * p + 0.5 * f["up_a"][n] * cp.square(up)
            + f["up_b"][n] * up + 0.5 * f["down_a"][n] * cp.square(down) + f["down_b"][n] * down)
    for k, x in enumerate((t, u, d)):
        charge = f["charge"][n, nb] if k == 0 else 0.0
        cost += (charge - prices[k, n, nb]) @ x + rho / 2 * cp.sum_squares(x - targets[k, n, nb])
    problem = cp.Problem(cp.Minimize(cost), cons)
    # The first settings that reach OPTIMAL. A tighter gap than TIGHT first: the proximal
    # terms are nearly flat at the optimum, and at a gap of 1e-10 Clarabel's trades were
    # seen 8e-6 off the optimum (objective 2017). Without equilibration last: it broke down
    # on a renewable whose p and r- have no cost curvature and whose r+max is 0.
    solve_first(problem, (TIGHTER, TIGHT, {**TIGHT, "equilibrate_enable": False}))
    if problem.status == cp.INFEASIBLE:
        return None
    assert problem.status == cp.OPTIMAL, problem.status
    trades = np.zeros((3, f["a"].size))
    for k, x in enumerate((t, u, d)):
        trades[k, nb] = x.value
    return dict(objective=float(problem.value), p=float(p.value), trades=trades)


# A case file's market: three agents, a producer, a Gaussian renewable (its forecast
# 30 +- 10 MW) and a consumer.
TINY_CASE = {
    "name": "tiny", "reserve": {"delta": 0.95, "allocation": "abs_sigma"},
    "agents": [
        {"id": 1, "a": 0.1, "b": 20, "p_min": 0, "p_max": 100, "r_up_max": 30, "r_down_max": 30},
        {"id": 2, "a": 0.0, "b": 0, "p_min": 0, "p_max": 80, "uncertain": True, "r_down_max": 80,
         "reserve_a_down": 0, "forecast": {"mean": 30, "sd": 10}},
        {"id": 3, "a": 0.2, "b": 70, "p_min": -120, "p_max": 0, "r_up_max": 20, "r_down_max": 20},
    ]}
