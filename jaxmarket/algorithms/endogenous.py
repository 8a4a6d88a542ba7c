"""Endogenous network charges, DC (SPEC 7.1; T4.4.1, eqs. 4.23-4.29 without reactive power
and losses): the system operator (SO) joins the P2P consensus ADMM.

The SO keeps a copy ``q`` of the agents' net injections, and the consensus ``p_n = q_n``
has the price ``eta_n``, the agent's endogenous charge: agent n is paid ``eta_n`` per MW
injected, the SO pays it per MW of its copy. One iteration of the **distributed form**
(4.24, ``endogenous_dc``):

1. every agent solves its exact local problem of SPEC 3.1 with the extra term
   ``-eta_n p_n + rho/2 (p_n - q_n)^2``: the same solve (``TradeUpdate``) with ``a_n + rho``
   and ``b_n - eta_n - rho q_n``;
2. the SO projects ``p - eta / rho`` on the DC-feasible set ``{sum q = 0, |H q| <= rate}``
   (``jaxmarket.congestion.project``, one small QP per case, exact, warm-started from the
   lines at a rating in its last step);
3. ``lambda_nm <- lambda_nm - rho (p_nm + p_mn) / 2`` and ``eta_n <- eta_n + rho (q_n - p_n)``.

The **decentralized form** (4.29, ``endogenous_dc_decentralized``) updates agents and SO at
the same time from the iteration-k values, both pulled towards ``z = (p^k + q^k) / 2``
(the agents with ``b_n - eta_n - rho z_n``, the SO projecting ``z - eta / rho``), and
``eta_n <- eta_n + rho (q_n - p_n) / 2``: the consensus ADMM of the trades, applied to the
pair (agent, SO).

Residuals (4.27 without q): ``r_n = (q_n - p_n)^2 + 1/4 sum_m (p_nm + p_mn)^2``,
``s_n = (p_n^{k+1} - p_n^k)^2 + sum_m (p_nm^{k+1} - p_nm^k)^2``; stop (4.26) when
``sqrt(sum r_n) <= eps_primal`` and ``sqrt(sum s_n) <= eps_dual``. A case whose SO step
did not converge gets an infinite residual: the driver flags it diverged, never converged.

The charges eta are unique only up to a constant shared with the trade prices
(``jaxmarket.congestion``); the rows report ``eta_n - rho theta``, with theta the multiplier of
the SO's balance row in its last projection: at a fixed point ``eta = rho (theta - H^T zeta)``
(zeta the projection's line multipliers), so this is ``-rho (H^T zeta)_n``, the congestion
price relative to the reference bus, comparable with the exact reference's; the trade
prices are reported with the opposite shift, ``lambda_nm + rho theta``.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState, ConsensusADMM, Residuals, _swap
from jaxmarket.community import Community
from jaxmarket.congestion import LineLimits, project
from jaxmarket.errors import InputError
from jaxmarket.metrics import p2p_objective


class GridProblem(NamedTuple):
    """A batch of P2P cases with the limited lines of their grid."""
    community: Community
    limits: LineLimits


class EndogenousState(NamedTuple):
    admm: ADMMState  # trades, trade prices, the agents' injections and perceived prices
    so_power: jax.Array  # (B, N) q, the SO's copy of the injections
    charge: jax.Array  # (B, N) eta, the endogenous charges (raw ADMM duals)
    balance_price: jax.Array  # (B,) rho theta, theta the multiplier of sum q = 0 at the last SO step
    so_bound: jax.Array  # (B, L) lines at a rating in the last SO step (its warm start)
    so_converged: jax.Array  # (B,) every SO step so far converged


@dataclasses.dataclass(frozen=True)
class EndogenousADMM(ConsensusADMM):
    """Distributed endogenous ADMM (4.24): the SO steps after the agents (module doc)."""

    name: ClassVar[str] = "endogenous_dc"
    label: ClassVar[str] = "ADMM, endogenous DC charges"
    markets: ClassVar[frozenset[str]] = frozenset({"endogenous"})
    neighbour_lists: ClassVar[bool] = False
    simultaneous: ClassVar[bool] = False  # the SO steps after the agents (4.24)

    def on_neighbour_lists(self) -> bool:
        return False

    def init(self, problem: GridProblem, params) -> EndogenousState:
        if self.local_rule:
            raise InputError("solver.stopping", f"{self.name} stops on the global rule only")
        zeros = jnp.zeros_like(problem.community.a)
        admm = super().init(problem.community, params)
        bound = jnp.zeros(problem.limits.rate.shape, jnp.int8)
        return EndogenousState(admm, zeros, zeros, zeros[:, 0], bound, jnp.ones(zeros.shape[0], bool))

    def step(self, problem: GridProblem, params, state: EndogenousState) -> EndogenousState:
        community, admm = problem.community, state.admm
        rho = admm.rho[:, None]
        # The agents' pull towards the SO: its last copy (4.24) or the mean of both (4.29).
        anchor = 0.5 * (state.so_power + admm.local.power) if self.simultaneous else state.so_power
        agents = community._replace(a=community.a + rho, b=community.b - state.charge - rho * anchor)
        trades, local = self.local.solve(agents, self.consensus(admm.trades, _swap(admm.trades)),
                                         admm.prices, admm.rho, admm.local)
        prices = admm.prices - 0.5 * rho[..., None] * (trades + _swap(trades))
        power = local.power
        so = project((anchor if self.simultaneous else power) - state.charge / rho,
                     community.active, problem.limits, state.so_bound)
        step = 0.5 if self.simultaneous else 1.0
        charge = jnp.where(community.active, state.charge + step * rho * (so.q - power), 0.0)
        admm = ADMMState(trades, jnp.where(community.edges, prices, 0.0), local, admm.rho,
                         admm.count + 1)
        return EndogenousState(admm, so.q, charge, admm.rho * so.balance_price, so.bound,
                               state.so_converged & so.converged)

    def residuals(self, problem: GridProblem, params, previous: EndogenousState,
                  current: EndogenousState) -> Residuals:
        trades, old = current.admm.trades, previous.admm.trades
        power, old_power = trades.sum(-1), old.sum(-1)
        primal = (((current.so_power - power) ** 2).sum(-1)
                  + 0.25 * ((trades + _swap(trades)) ** 2).sum((-1, -2)))
        dual = ((power - old_power) ** 2).sum(-1) + ((trades - old) ** 2).sum((-1, -2))
        primal = jnp.where(current.so_converged, jnp.sqrt(primal), jnp.inf)
        return Residuals(primal, jnp.sqrt(dual), p2p_objective(problem.community, trades))


@dataclasses.dataclass(frozen=True)
class DecentralizedEndogenousADMM(EndogenousADMM):
    """Decentralized endogenous ADMM (4.29): agents and SO step together (module doc)."""

    name: ClassVar[str] = "endogenous_dc_decentralized"
    label: ClassVar[str] = "ADMM, endogenous DC charges, decentralized"
    simultaneous: ClassVar[bool] = True


def congestion_charge(state: EndogenousState):
    """(B, N) the endogenous charges relative to the reference bus (module doc)."""
    return state.charge - state.balance_price[:, None]


def trade_prices(problem: GridProblem, state: EndogenousState):
    """(B, N, N) the trade prices with the same constant as ``congestion_charge`` (the raw
    ones carry the part of the nodal price that the raw charges lack)."""
    return jnp.where(problem.community.edges,
                     state.admm.prices + state.balance_price[:, None, None], 0.0)
