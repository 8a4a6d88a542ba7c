"""ADMM variants that solve the agents' problems against a centre other than the half-
difference of the last trades (over-relaxed, fast, Anderson-accelerated ADMM), and what
makes their stop exact.

ADMM's own rule (T3.12) certifies the optimum only when the agents solved against their
last trades. A variant that solves against a centre ``z_hat`` must also have its trades
at that centre: a case stops when ADMM's rule holds *and* ``||p^{k+1} - z_hat^k|| <=
eps_dual`` (``CertifiedResiduals.centre``). Trades equal to the centre they were solved
against, and reciprocal, satisfy every agent's KKT conditions of T3.9 at the (symmetric)
prices: the optimum.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState, ConsensusADMM, residual_norms
from jaxmarket.errors import InputError


class CertifiedResiduals(NamedTuple):
    primal: jax.Array  # (B,) T3.13, as ADMM
    dual: jax.Array  # (B,) T3.13, as ADMM
    objective: jax.Array  # (B,)
    centre: jax.Array  # (B,) ||p^{k+1} - centre^k||: distance of the trades to their centre


class Centre(NamedTuple):
    """What an accelerated variant adds to ADMM's state: the centre of the next local solve
    and the distance of the last trades to the centre they were solved against."""

    consensus: jax.Array  # z_hat: skew-symmetric consensus trades of the next solve
    prices: jax.Array  # lambda_hat: symmetric trade prices of the next solve
    distance: jax.Array  # (B,) ||p^{k+1} - z_hat^k||


def batch_norm(x):
    return jnp.sqrt((x ** 2).sum(tuple(range(1, x.ndim))))


def per_case(v, like):
    """(B,) values broadcast against the (B, ...) array ``like``."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


class CertifiedADMM(ConsensusADMM):
    """ADMM variants that solve against a centre other than the last trades: ADMM's
    residuals plus the distance of the trades to their centre, which must fall below
    ``eps_dual`` too (module doc). ``state.local.centre`` is a ``Centre``."""

    def init(self, problem, params) -> ADMMState:
        if self.local_rule:
            raise InputError("solver.stopping", "local stopping rules are built for admm only")
        return super().init(problem, params)

    def residuals(self, problem, params, previous, current) -> CertifiedResiduals:
        res = super().residuals(problem, params, previous, current)
        return CertifiedResiduals(*res, self.centre_distance(current))

    def advance(self, problem, params, state: ADMMState):
        """The step and the residuals of the stopping test, without the objective: the
        driver's ``report`` adds it where residuals are recorded (ADMM's own ``report``)."""
        new = self.step(problem, params, state)
        _, reverse = self.local.layout(problem)
        primal, dual = residual_norms(state.trades, new.trades, reverse, self.local.primal_weight)
        return new, CertifiedResiduals(primal, dual, None, self.centre_distance(new))

    def centre_distance(self, state: ADMMState) -> jax.Array:
        """(B,) ||p^{k+1} - centre^k||, kept in the variant's state."""
        return state.local.centre.distance

    def converged(self, params, res: CertifiedResiduals) -> jax.Array:
        return super().converged(params, res) & (res.centre <= params.eps_dual)
