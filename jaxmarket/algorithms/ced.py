"""Community ADMM, the community-based economic dispatch CED (T3.2, SPEC 3.2): exchange
ADMM in which a community manager holds the imbalance and the price.

It solves the pool problem ``min sum_n c_n(p_n)`` s.t. ``sum_n p_n = 0`` and the bounds
(T2.1, T3.1): there are no bilateral trades, so the trade graph and the charges play no
part and every active agent takes part, isolated or not. Iteration k, with the market
price ``lambda`` (the thesis' manager variable is ``y = -lambda``, the multiplier of the
balance in ``c(p) + y sum p``; its printed ``y^k Delta^k`` reads ``y^k p``):

    p_n    <- argmin_p c_n(p) - lambda p + rho/2 (p - p_n + s Delta)^2    on [p_min_n, p_max_n]
            = clip((lambda - b_n + rho (p_n - s Delta)) / (a_n + rho), p_min_n, p_max_n)
    Delta  <- sum_n p_n
    lambda <- lambda - rho s Delta

The share ``s`` of the imbalance that every agent absorbs is 1 in the thesis (the manager
broadcasts the whole imbalance) and ``1/N`` in the textbook exchange ADMM (Boyd et al.
2011, section 7.3.2, with ``N`` the number of active agents), the variant known to
converge for every ``rho > 0``. With ``s = 1`` every agent corrects the whole imbalance,
an N-fold over-correction: the thesis form behaves like the textbook one with penalty
about ``N rho`` and converges only for ``rho`` below about ``a / N`` (measured: with
``rho = 1`` it oscillates, finite, on every random case of 10 to 50 agents; with
``rho = 1e-3`` it converges on all of them). ``a + rho > 0``, so linear agents need no
special case.

Residuals, on the measures of P2P ADMM: primal ``|Delta|``, the power balance error;
dual ``||p^{k+1} - p^k||_2``; ``objective`` the pool objective ``sum_n c_n(p_n)``.
``converged``: ``primal <= eps_primal`` and ``dual <= eps_dual``.

Rows (``jaxmarket.markets.pool``) keep the columns of the P2P algorithms: the dispatch is read as
trades through the manager, so ``total_traded`` is the total production ``sum_n p_n^+``,
every price column is the uniform price (spread 0; NaN when nothing is traded, as for P2P
rows), ``charges_collected`` is 0, ``imbalance`` and ``power_balance_error`` are
``|sum_n p_n|``, and ``messages`` counts ``2 N`` per iteration (each agent sends ``p_n``
to the manager and receives the price and the imbalance). The case columns (``n_trades``,
``isolated_agents``) still describe the trade graph of the case.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.base import Algorithm, penalty
from jaxmarket.community import Community
from jaxmarket.metrics import agent_costs


class CEDParams(NamedTuple):
    rho: jax.Array  # (B,) penalty
    eps_primal: jax.Array  # (B,) tolerance on |Delta|
    eps_dual: jax.Array  # (B,) tolerance on ||p^{k+1} - p^k||_2
    mean_imbalance: jax.Array  # (B,) bool: share 1/N (textbook) instead of 1 (thesis)


class CEDState(NamedTuple):
    power: jax.Array  # (B, N) p_n
    price: jax.Array  # (B,) uniform market price lambda = -y
    imbalance: jax.Array  # (B,) Delta = sum_n p_n


class Residuals(NamedTuple):
    primal: jax.Array  # (B,) |Delta|
    dual: jax.Array  # (B,) ||p^{k+1} - p^k||_2
    objective: jax.Array  # (B,) sum_n c_n(p_n)


def _share(community: Community, params: CEDParams):
    n_active = jnp.maximum(community.active.sum(-1), 1).astype(community.dtype)
    return jnp.where(params.mean_imbalance, 1.0 / n_active, 1.0)


@dataclasses.dataclass(frozen=True)
class CED(Algorithm):
    """Community ADMM in the thesis form: every agent absorbs the whole imbalance."""

    name: ClassVar[str] = "ced"
    label: ClassVar[str] = "CED"
    markets: ClassVar[frozenset[str]] = frozenset({"pool"})
    mean_imbalance: ClassVar[bool] = False

    penalised: ClassVar[tuple[str, ...]] = ("eps_dual",)

    rho: float = penalty("ADMM penalty rho of the community manager's exchange")

    def params(self, n_cases: int, dtype) -> CEDParams:
        return CEDParams(*(jnp.full(n_cases, v, dtype)
                           for v in (self.rho, self.eps_primal, self.eps_dual)),
                         jnp.full(n_cases, self.mean_imbalance, bool))

    def init(self, community: Community, params: CEDParams) -> CEDState:
        zeros = jnp.zeros(community.n_cases, community.dtype)
        return CEDState(community.a * 0, zeros, zeros)

    def step(self, community: Community, params: CEDParams, state: CEDState) -> CEDState:
        power = self.dispatch(community, params, state.power, state.price[:, None],
                              state.imbalance[:, None])
        return CEDState(power, *self.clear(community, params, state.price, power))

    @staticmethod
    def dispatch(community: Community, params: CEDParams, power, price, imbalance):
        """The agents' update from the price and imbalance they know, (B, 1) when broadcast
        by the manager at once, (B, N) when each agent has its own view (asynchrony)."""
        rho = params.rho[:, None]
        anchor = power - _share(community, params)[:, None] * imbalance
        proposal = (price - community.b + rho * anchor) / (community.a + rho)
        return jnp.clip(proposal, community.p_min, community.p_max)  # padding: bounds 0

    @staticmethod
    def clear(community: Community, params: CEDParams, price, power):
        """The manager's update from the powers it knows: the new price and imbalance."""
        imbalance = power.sum(-1)
        return price - params.rho * _share(community, params) * imbalance, imbalance

    def residuals(self, community: Community, params: CEDParams, previous: CEDState,
                  current: CEDState) -> Residuals:
        change = jnp.sqrt(((current.power - previous.power) ** 2).sum(-1))
        return Residuals(jnp.abs(current.imbalance), change,
                         agent_costs(community, current.power).sum(-1))

    def converged(self, params: CEDParams, res: Residuals) -> jax.Array:
        return (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)


@dataclasses.dataclass(frozen=True)
class CEDMean(CED):
    """Community ADMM in the textbook form: every agent absorbs the mean imbalance."""

    name: ClassVar[str] = "ced_mean"
    label: ClassVar[str] = "CED (mean)"
    mean_imbalance: ClassVar[bool] = True
