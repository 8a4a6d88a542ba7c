"""Over-relaxed consensus ADMM (Boyd et al. 2011, section 3.4.3).

The consensus step uses ``alpha p^{k+1} + (1 - alpha) z^k`` in place of the new trades,
with ``z`` the consensus trades (skew-symmetric, ``z_mn = -z_nm``) and ``alpha`` the
relaxation in (0, 2): ``alpha = 1`` is plain consensus ADMM, ``alpha`` in [1.5, 1.8]
the range Boyd et al. report as faster. Projected on reciprocal trades this reads

    z_nm      <- alpha (p_nm - p_mn) / 2 + (1 - alpha) z_nm
    lambda_nm <- lambda_nm - alpha rho (p_nm + p_mn) / 2

and the agents solve their local problems against ``z`` instead of the half-difference of
the last trades. Every agent updates ``z`` of its own trades from the trades it already
receives, so it costs no message. At a fixed point ``p_nm + p_mn = 0`` and ``z = p``: the
optimum is that of consensus ADMM. Since ``z`` lags the trades (by the factor ``1 - alpha``
per iteration), ADMM's rule alone does not certify that point: a case also needs its
trades within ``eps_dual`` of the ``z`` they were solved against (``centred``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState
from jaxmarket.algorithms.base import all_finite, hyperparameter
from jaxmarket.algorithms.centred import CertifiedADMM, batch_norm, per_case
from jaxmarket.schema import number


class RelaxedLocal(NamedTuple):
    agents: Any  # the local update's state
    consensus: jax.Array  # z^k, the consensus trades of the next solve
    distance: jax.Array  # (B,) ||p^{k+1} - z^k||


@dataclasses.dataclass(frozen=True)
class RelaxedADMM(CertifiedADMM):
    """Consensus ADMM with over-relaxation (module doc); ``state.local`` is a
    ``RelaxedLocal``."""

    name: ClassVar[str] = "admm_relaxed"
    label: ClassVar[str] = "ADMM, over-relaxed"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})

    relaxation: float = hyperparameter(
        1.6, "1", "over-relaxation alpha of the consensus step, in (0, 2) (1: plain ADMM)",
        lambda value, field: number(value, field, gt=0, lt=2), optional=True)

    def init(self, problem, params) -> ADMMState:
        state = super().init(problem, params)
        return state._replace(local=RelaxedLocal(state.local, jnp.zeros_like(state.trades),
                                                 jnp.full(params.rho.shape, jnp.inf, state.trades.dtype)))

    def centre_distance(self, state: ADMMState) -> jax.Array:
        return state.local.distance

    def step(self, problem, params, state: ADMMState) -> ADMMState:
        edges, reverse = self.local.layout(problem)
        local, centre, _ = state.local
        trades, local = self.local.solve(problem, centre, state.prices, state.rho, local)
        alpha = self.relaxation
        consensus = alpha * 0.5 * (trades - reverse(trades)) + (1 - alpha) * centre
        rho = state.rho if state.rho.ndim == trades.ndim else per_case(state.rho, trades)
        prices = state.prices - 0.5 * alpha * rho * (trades + reverse(trades))
        count = state.count + 1
        return ADMMState(trades, jnp.where(edges, prices, 0.0),
                         RelaxedLocal(local, consensus, batch_norm(trades - centre)),
                         self.balanced_rho(params, state, trades, count, reverse), count)

    def finite(self, state: ADMMState, res) -> jax.Array:
        """As ADMM's fused test, without reading the (B, N, N) arrays twice: the trades are
        finite where both residuals are, the consensus they were solved against where the
        centre distance is (the next one combines the two), and rho (one per trade in
        ``admm_pairwise``) stays within its bounds; the prices and the agents' states are
        tested."""
        return (jnp.isfinite(res.primal) & jnp.isfinite(res.dual) & jnp.isfinite(res.centre)
                & all_finite((state.prices, state.local.agents)))
