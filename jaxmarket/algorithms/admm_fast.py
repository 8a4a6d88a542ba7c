"""Fast consensus ADMM with restart (Goldstein, O'Donoghue, Setzer & Baraniuk 2014,
Algorithm 8, for weakly convex problems).

Consensus ADMM is ADMM on ``min sum_n c_n(p_n) + g(z)  s.t.  p = z`` with ``g`` the
indicator of skew-symmetric consensus trades ``z`` (``z_mn = -z_nm``). Fast ADMM solves the
agents' local problems against an extrapolated centre ``(z_hat, lambda_hat)`` instead of
the last ``(z, lambda)``:

    p^{k+1}      = local solve against (z_hat^k, lambda_hat^k)
    z^{k+1}      = (p^{k+1} - p^{k+1}^T) / 2
    lambda^{k+1} = lambda_hat^k - rho (p^{k+1} + p^{k+1}^T) / 2
    c^{k+1}      = rho ||(p^{k+1} + p^{k+1}^T) / 2||^2 + rho ||z^{k+1} - z_hat^k||^2

and, when the combined residual ``c`` fell by the factor ``restart`` (eta), Nesterov's
momentum ``theta = (a_k - 1) / a_{k+1}``, ``a_{k+1} = (1 + sqrt(1 + 4 a_k^2)) / 2``:

    z_hat^{k+1} = z^{k+1} + theta (z^{k+1} - z^k),  lambda_hat likewise;

otherwise a restart: ``a = 1``, the next centre is the new point ``(z^{k+1}, lambda^{k+1})``
(a plain ADMM step) and ``c^{k+1} = c^k / eta``. The paper's line 11 steps back to the
previous point ``(z^k, lambda^k)`` instead; after a plain step (``theta = 0``) that is the
centre just solved against, so the iteration repeats itself, and near a stall, where
ADMM's combined residual creeps up, every second iteration was seen to be such a repeat.
Restarting from the new point is the adaptive restart of O'Donoghue & Candes (2015). Extrapolation is linear, so
``lambda_hat`` stays symmetric and ``z_hat`` skew, and both ends of a trade compute the
same centre from what they already exchange. Residual balancing composes: an iteration
that changes rho restarts the momentum (the map it accelerates changed).

Exact at convergence: on top of ADMM's stopping rule (T3.12) a case must satisfy
``||p^{k+1} - z_hat^k|| <= eps_dual`` (``CertifiedResiduals.centre``): trades that equal the
centre they were solved against, with reciprocity, are the optimum of the P2P problem with
the symmetric prices ``lambda_hat`` (each agent's local optimality condition is then its
KKT condition of T3.9).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState, ConsensusADMM
from jaxmarket.algorithms.base import hyperparameter
from jaxmarket.errors import InputError
from jaxmarket.schema import number


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


class FastState(NamedTuple):
    agents: object  # the local update's state (power, perceived price)
    centre: Centre
    consensus: jax.Array  # z^k
    momentum: jax.Array  # (B,) a_k
    combined: jax.Array  # (B,) c^k, the combined residual of the restart test


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
        return CertifiedResiduals(*res, current.local.centre.distance)

    def converged(self, params, res: CertifiedResiduals) -> jax.Array:
        return super().converged(params, res) & (res.centre <= params.eps_dual)


@dataclasses.dataclass(frozen=True)
class FastADMM(CertifiedADMM):
    """Fast consensus ADMM with restart (module doc)."""

    name: ClassVar[str] = "admm_fast"
    label: ClassVar[str] = "ADMM, fast with restart"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})

    restart: float = hyperparameter(
        0.999, "1", "fast ADMM: momentum restarts unless the combined residual falls by this "
        "factor eta, in (0, 1)", lambda value, field: number(value, field, gt=0, lt=1),
        optional=True)

    def init(self, problem, params) -> ADMMState:
        state = super().init(problem, params)
        zeros = state.trades
        n_cases = params.rho.shape
        centre = Centre(zeros, zeros, jnp.full(n_cases, jnp.inf, zeros.dtype))
        return state._replace(local=FastState(state.local, centre, zeros,
                                              jnp.ones(n_cases, zeros.dtype),
                                              jnp.full(n_cases, jnp.inf, zeros.dtype)))

    def step(self, problem, params, state: ADMMState) -> ADMMState:
        edges, reverse = self.local.layout(problem)
        fast: FastState = state.local
        centre = fast.centre
        trades, agents = self.local.solve(problem, centre.consensus, centre.prices, state.rho,
                                          fast.agents)
        rho = per_case(state.rho, trades)
        mismatch = 0.5 * (trades + reverse(trades))
        consensus = 0.5 * (trades - reverse(trades))
        prices = jnp.where(edges, centre.prices - rho * mismatch, 0.0)
        combined = state.rho * (batch_norm(mismatch) ** 2
                                + batch_norm(consensus - centre.consensus) ** 2)
        count = state.count + 1
        next_rho = self.balanced_rho(params, state, trades, count, reverse)
        # Momentum while the combined residual falls by the factor eta and rho holds still.
        accelerate = (combined < self.restart * fast.combined) & (next_rho == state.rho)
        momentum = jnp.where(accelerate, 0.5 * (1 + jnp.sqrt(1 + 4 * fast.momentum ** 2)), 1.0)
        # A restart (theta = 0) continues from the new point with a plain ADMM step.
        theta = per_case(jnp.where(accelerate, (fast.momentum - 1) / momentum, 0.0), trades)
        next_centre = Centre(consensus + theta * (consensus - fast.consensus),
                             prices + theta * (prices - state.prices),
                             batch_norm(trades - centre.consensus))
        combined = jnp.where(accelerate | (next_rho != state.rho), combined,
                             fast.combined / self.restart)
        return ADMMState(trades, prices, FastState(agents, next_centre, consensus, momentum,
                                                   combined), next_rho, count)

