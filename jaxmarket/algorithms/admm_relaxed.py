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
optimum is that of consensus ADMM. Residuals and stopping rule are ADMM's.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState, ConsensusADMM
from jaxmarket.algorithms.base import hyperparameter
from jaxmarket.errors import InputError
from jaxmarket.schema import number


@dataclasses.dataclass(frozen=True)
class RelaxedADMM(ConsensusADMM):
    """Consensus ADMM with over-relaxation (module doc); state.local holds (the local
    update's state, z)."""

    name: ClassVar[str] = "admm_relaxed"
    label: ClassVar[str] = "ADMM, over-relaxed"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})

    relaxation: float = hyperparameter(
        1.6, "1", "over-relaxation alpha of the consensus step, in (0, 2) (1: plain ADMM)",
        lambda value, field: number(value, field, gt=0, lt=2), optional=True)

    def init(self, problem, params) -> ADMMState:
        if self.local_rule:
            raise InputError("solver.stopping", "local stopping rules are built for admm only")
        state = super().init(problem, params)
        return state._replace(local=(state.local, jnp.zeros_like(state.trades)))

    def step(self, problem, params, state: ADMMState) -> ADMMState:
        edges, reverse = self.local.layout(problem)
        local, consensus = state.local
        trades, local = self.local.solve(problem, consensus, state.prices, state.rho, local)
        alpha = self.relaxation
        consensus = alpha * 0.5 * (trades - reverse(trades)) + (1 - alpha) * consensus
        rho = state.rho.reshape((-1,) + (1,) * (trades.ndim - 1))
        prices = state.prices - 0.5 * alpha * rho * (trades + reverse(trades))
        count = state.count + 1
        return ADMMState(trades, jnp.where(edges, prices, 0.0), (local, consensus),
                         self.balanced_rho(params, state, trades, count, reverse), count)
