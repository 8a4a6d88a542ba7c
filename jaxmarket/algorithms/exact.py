"""The outcome engine: the centralized P2P problem solved exactly, for studies that need
market outcomes only (welfare, prices, loadings against sparsity or fees).

One step of the driver solves every case with the batched interior point of
``jaxmarket.reference`` (the same code that gives every row its optimality gap): the case
is then finished, with ``iterations = 1`` and ``converged`` where the interior point met
its tolerance (``steps = 1``: the markets run one step whatever ``max_iter``,
``check_every`` and ``trace_every`` say). Nothing distributed is simulated: messages count that one round, and
iteration counts, traces and residual balancing mean nothing here.

Trade prices. The centralized problem gives every agent its perceived price mu_n (the
dual of its balance). A trade's price lambda_nm must support both ends' decisions: for an
end strictly inside its own trade box it is ``gamma_nm + mu_n``; an end at its upper
(lower) bound accepts any price above (below) that value. The price is the midpoint of
the two ends' values ``gamma_nm + mu_n`` and ``gamma_mn + mu_m``, clipped to the interval
both ends accept; where the trade is interior for both ends the two values agree at the
optimum and the price is the one ADMM converges to (``lambda_nm = lambda_mn``).

Residuals, in the units of ADMM's: the primal residual is T3.13's reciprocity norm of the
trades (0: the reduced problem has one variable per pair); the dual residual, which for
an iteration measures the change of the trades, is here the norm of what the interior
point leaves of the agents' balances, ``sqrt(sum_n (p_n - sum_m p_nm)^2)``. A case has
converged when the interior point converged and both residuals are within the
tolerances.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMParams
from jaxmarket.algorithms.base import Algorithm, hyperparameter
from jaxmarket.community import Community, astype
from jaxmarket.metrics import p2p_objective
from jaxmarket.reference import solve_reference
from jaxmarket.schema import integer, number

# An end of a trade is at a bound of its own box within this share of the case's largest
# power bound (the interior point stops ~1e-12 relative away from an active bound).
AT_BOUND = 1e-9


class ExactState(NamedTuple):
    trades: jax.Array  # (B, N, N) p_nm
    prices: jax.Array  # (B, N, N) lambda_nm (module doc)
    power: jax.Array  # (B, N) p_n of the interior point
    perceived_price: jax.Array  # (B, N) mu_n
    solved: jax.Array  # (B,) bool: the interior point met its tolerance
    balance: jax.Array  # (B,) sqrt(sum_n (p_n - sum_m p_nm)^2), taken in float64


class ExactResiduals(NamedTuple):
    primal: jax.Array  # (B,) reciprocity norm of the trades (T3.13)
    dual: jax.Array  # (B,) sqrt(sum_n (p_n - sum_m p_nm)^2)
    objective: jax.Array  # (B,)
    solved: jax.Array  # (B,) bool


def trade_prices(community: Community, trades, perceived_price):
    """lambda_nm supporting both ends of every trade (module doc)."""
    value = community.charge + perceived_price[..., :, None]  # gamma_nm + mu_n
    scale = jnp.maximum(jnp.abs(community.p_min), jnp.abs(community.p_max)).max(-1)
    slack = AT_BOUND * jnp.maximum(scale, 1.0)[:, None, None]

    def accepted(own, lo, hi, v):
        """The price interval one end accepts: the point v inside its box, from v up at its
        upper bound, up to v at its lower bound, any price in a box of zero width."""
        at_hi, at_lo = own >= hi - slack, own <= lo + slack
        return jnp.where(at_lo, -jnp.inf, v), jnp.where(at_hi, jnp.inf, v)

    def swap(m):
        return jnp.swapaxes(m, -1, -2)

    low_n, high_n = accepted(trades, community.trade_min, community.trade_max, value)
    low_m, high_m = accepted(swap(trades), swap(community.trade_min), swap(community.trade_max),
                             swap(value))
    # Where both ends accept every price (a trade fixed at 0 for both) the clip is void.
    price = jnp.clip(0.5 * (value + swap(value)), jnp.maximum(low_n, low_m),
                     jnp.minimum(high_n, high_m))
    return jnp.where(community.edges, price, 0.0)


@dataclasses.dataclass(frozen=True)
class Exact(Algorithm):
    """The centralized P2P problem by the batched interior point (module doc)."""

    name: ClassVar[str] = "exact"
    label: ClassVar[str] = "exact (centralized)"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})
    steps: ClassVar[int] = 1  # one step solves the case; a second would repeat the solve

    ipm_tolerance: float = hyperparameter(
        1e-12, "1", "exact engine: tolerance of the interior point on its relative gap and "
        "scaled residuals", partial(number, gt=0, lt=1), optional=True)
    # 200: one of 20 random N = 100 cases with unit charges needed 153 iterations.
    ipm_max_iter: int = hyperparameter(
        200, "iterations", "exact engine: interior-point iteration limit",
        partial(integer, gt=0), optional=True)

    def params(self, n_cases: int, dtype) -> ADMMParams:
        # rho plays no part; kept so that every P2P algorithm's params share one layout.
        return ADMMParams(*(jnp.full(n_cases, v, dtype)
                            for v in (1.0, self.eps_primal, self.eps_dual)))

    def init(self, problem: Community, params) -> ExactState:
        zeros = jnp.zeros_like(problem.charge)
        nothing = jnp.zeros(problem.n_cases, problem.dtype)
        return ExactState(zeros, zeros, problem.a * 0, problem.a * 0,
                          jnp.zeros(problem.n_cases, bool), nothing)

    def step(self, problem: Community, params, state: ExactState) -> ExactState:
        solution = solve_reference(problem, self.ipm_tolerance, self.ipm_max_iter)
        dtype = problem.dtype
        trades = jnp.where(problem.edges, solution.trades, 0.0)
        # In float64: in a float32 study the rounding of p and of the trades is no residual.
        balance = jnp.sqrt(((solution.p - trades.sum(-1)) ** 2).sum(-1))
        prices = trade_prices(astype(problem, jnp.float64), trades, solution.price)
        return ExactState(trades.astype(dtype), prices.astype(dtype), solution.p.astype(dtype),
                          solution.price.astype(dtype), solution.converged, balance.astype(dtype))

    def residuals(self, problem, params, previous, current: ExactState) -> ExactResiduals:
        reciprocity = ((current.trades + jnp.swapaxes(current.trades, -1, -2)) ** 2).sum((-1, -2))
        return ExactResiduals(jnp.sqrt(reciprocity), current.balance,
                              p2p_objective(problem, current.trades), current.solved)

    def converged(self, params, res: ExactResiduals) -> jax.Array:
        return res.solved & (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)
