"""P2P consensus ADMM (T Algorithm 2, T3.10-3.13, B19-6), for every market with trades.

Every agent n solves its local problem exactly against the half-difference
``y_nm = (p_nm - p_mn) / 2`` of the last trades (the consensus trade) and the trade prices
``lambda_nm``; the prices then move with the reciprocity mismatch,
``lambda_nm <- lambda_nm - rho (p_nm + p_mn) / 2``. Prices start at 0 and receive the same
update on both ends of a trade, so ``lambda_nm = lambda_mn`` throughout.

The local update is a component (``local``): the exact trade-and-injection solve of the
P2P market (``TradeUpdate``, ``jaxmarket.local``), or the small QP of the energy + reserve
market (``jaxmarket.reserve.ReserveUpdate``), whose trades carry a block axis. The trades
live on the dense (B, N, N) layout or, for the P2P market, on neighbour lists
(``jaxmarket.neighbours``); the same methods serve both.

The penalty is the thesis' fixed rho by default. With ``rho_balance > 0`` it follows residual
balancing (Boyd et al. 2011, section 3.4.1): every ``rho_balance_every`` iterations rho is
multiplied by ``rho_balance_factor`` where the primal residual exceeds ``rho_balance`` times
the dual one, and divided by it where the dual residual exceeds ``rho_balance`` times the
primal one, within a factor ``eps^(-1/3)`` of the initial rho (203 in float32, 1.6e5 in
float64): in float32 an unbounded rho fell so low that the price updates
``rho (p_nm + p_mn) / 2`` vanished below the rounding of the prices and the iteration
locked, while float64 cases do use a rho below 1e-3 of the initial one to speed up. Both
residuals are the global ones of the stopping rule (T3.13), which every agent already
receives, so the update costs no message; the prices are unscaled, so they need no
rescaling when rho changes. Distance-based charges make the optimal trades a vertex of a
transportation-like polytope that fixed-rho ADMM approaches only at the speed
``(lambda - gamma - mu) / rho`` of tiny reduced costs; a smaller rho speeds that drift up,
and balancing finds it per case.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket import neighbours
from jaxmarket.algorithms import local_stopping
from jaxmarket.algorithms.base import Algorithm, all_finite, hyperparameter, penalty, positive
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.local import solve_agents
from jaxmarket.metrics import p2p_objective
from jaxmarket.neighbours import NeighbourLists
from jaxmarket.schema import integer, number, text


class ADMMParams(NamedTuple):
    rho: jax.Array  # (B,) penalty (the initial one under residual balancing)
    eps_primal: jax.Array  # (B,) tolerance on sqrt(sum_n r_n)
    eps_dual: jax.Array  # (B,) tolerance on sqrt(sum_n s_n)
    # Local stopping rules only (None under the global rule: its program is unchanged).
    eps_local_primal: Any = None  # (B,) per-agent or per-trade tolerance, MW or relative
    eps_local_dual: Any = None


class ADMMState(NamedTuple):
    trades: jax.Array  # (B, N, N) p_nm; (B, N, D) on neighbour lists; (B, 3, N, N) reserve
    prices: jax.Array  # lambda_nm, same layout
    local: Any  # what the local update keeps (P2P: power p_n and perceived price mu_n)
    rho: jax.Array  # (B,) penalty of the next iteration; admm_pairwise: one per trade
    count: jax.Array  # (B,) iterations done
    stopping: Any = None  # local stopping rules: local_stopping.LocalStop (None: global)


class Residuals(NamedTuple):
    primal: jax.Array  # (B,) sqrt(sum_n r_n), r_n = sum_m (p_nm + p_mn)^2   (T3.13)
    dual: jax.Array  # (B,) sqrt(sum_n s_n), s_n = sum_m (p_nm^{k+1} - p_nm^k)^2
    objective: jax.Array  # (B,) objective of the current trades (for gap traces)


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def residual_norms(previous_trades, trades, reverse, primal_weight: float = 1.0):
    """(B,) primal and dual residuals (T3.13; T5.9 weighs the mismatch by 1/4)."""
    axes = tuple(range(1, trades.ndim))
    mismatch = (trades + reverse(trades)) ** 2
    primal = mismatch.sum(axes)
    if primal_weight != 1.0:
        primal = primal_weight * primal
    return jnp.sqrt(primal), jnp.sqrt(((trades - previous_trades) ** 2).sum(axes))


class AgentState(NamedTuple):
    power: jax.Array  # (B, N) p_n = sum_m p_nm
    perceived_price: jax.Array  # (B, N) mu_n, the warm start of the next solve


@dataclasses.dataclass(frozen=True)
class TradeUpdate:
    """The P2P market's local update: every agent's exact trades and injection
    (``jaxmarket.local``), on the dense layout or on neighbour lists."""

    primal_weight: ClassVar[float] = 1.0

    @staticmethod
    def layout(problem: Community | NeighbourLists):
        """The edge mask and the map to the reverse trades p_mn: a transpose on the dense
        layout, a gather on neighbour lists."""
        if isinstance(problem, NeighbourLists):
            return problem.community.edges, partial(neighbours.reverse, problem.mirror)
        return problem.edges, _swap

    @staticmethod
    def init(problem: Community | NeighbourLists):
        community = problem.community if isinstance(problem, NeighbourLists) else problem
        zeros = jnp.zeros_like(community.charge)
        return zeros, AgentState(community.a * 0, community.a * 0)

    @staticmethod
    def solve(problem, consensus, prices, rho, local: AgentState):
        """``rho``: (B,) one penalty per case, or one per trade (the layout of the trades)."""
        community = problem.community if isinstance(problem, NeighbourLists) else problem
        per_trade = rho.ndim == consensus.ndim
        rho = rho if per_trade else rho[:, None]
        target = consensus + (prices - community.charge) / (rho if per_trade else rho[..., None])
        target = jnp.where(community.edges, target, 0.0)
        decision = solve_agents(target, community.trade_min, community.trade_max, community.a,
                                community.b, community.p_min, community.p_max, rho,
                                guess=local.perceived_price)
        return decision.trades, AgentState(decision.power, decision.perceived_price)

    @staticmethod
    def objective(problem, state: ADMMState):
        community = problem.community if isinstance(problem, NeighbourLists) else problem
        return p2p_objective(community, state.trades)


def _balance_ratio(value, field):
    """0 (fixed rho) or a residual ratio above 1."""
    ratio = number(value, field, ge=0)
    if 0 < ratio <= 1:
        raise InputError(field, f"must be 0 (fixed rho) or a ratio above 1, got {ratio}")
    return ratio


@dataclasses.dataclass(frozen=True)
class ConsensusADMM(Algorithm):
    """P2P consensus ADMM with the exact local update (module doc)."""

    name: ClassVar[str] = "admm"
    label: ClassVar[str] = "ADMM"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p", "reserve"})
    neighbour_lists: ClassVar[bool] = True

    rho: float = penalty()
    rho_balance: float = hyperparameter(
        0.0, "1", "residual balancing of rho: 0 keeps rho fixed (the thesis), else the residual "
        "ratio above which rho changes", _balance_ratio, optional=True)
    rho_balance_factor: float = hyperparameter(
        2.0, "1", "residual balancing: factor by which rho changes", partial(number, gt=1),
        optional=True)
    rho_balance_every: int = hyperparameter(
        10, "iterations", "residual balancing: iterations between two changes of rho",
        partial(integer, gt=0), optional=True)
    stopping: str = hyperparameter(
        "global", "n/a", "stopping rule: global (T3.12, residual broadcasts), per_agent "
        "(T3.15) or per_trade (T3.16) (docs/stopping.md)",
        partial(text, choices=local_stopping.RULES), optional=True)
    eps_local_primal: float = hyperparameter(
        1e-4, "MW", "local rules: tolerance on an agent's sqrt(r_n) (per_agent) or on a "
        "trade's |p_nm + p_mn| (per_trade); a fraction of the agent's size under "
        "eps_local_scale = relative", positive, traced=True, tolerance=True, optional=True)
    eps_local_dual: float = hyperparameter(
        1e-4, "MW", "local rules: tolerance on an agent's sqrt(s_n) (per_agent) or on a "
        "trade's change |p_nm^k+1 - p_nm^k| (per_trade); a fraction of the agent's size "
        "under eps_local_scale = relative", positive, traced=True, tolerance=True,
        optional=True)
    eps_local_scale: str = hyperparameter(
        "absolute", "n/a", "local rules: thresholds in MW (absolute) or relative to the "
        "agent's size max(|p_min|, |p_max|) (relative, T3.17)",
        partial(text, choices=("absolute", "relative")), optional=True)
    frozen_price: str = hyperparameter(
        "fixed", "n/a", "local rules: the price of a trade one end has frozen stops at both "
        "ends (fixed) or keeps updating at the end still negotiating (partner)",
        partial(text, choices=("fixed", "partner")), optional=True)
    # The local update of the market solved (not a study key: the market sets it).
    local: Any = dataclasses.field(default=TradeUpdate(), metadata={"component": True})

    penalised: ClassVar[tuple[str, ...]] = ("eps_dual", "eps_local_dual")

    def relative_tolerances(self) -> tuple[str, ...]:
        return ("eps_local_primal", "eps_local_dual") if self.eps_local_scale == "relative" else ()

    @property
    def local_rule(self) -> bool:
        return self.stopping != "global"

    def on_neighbour_lists(self) -> bool:
        # A local rule keeps a per-trade frozen mask, built on the dense layout only.
        return not self.local_rule

    def params(self, n_cases: int, dtype) -> ADMMParams:
        values = (self.rho, self.eps_primal, self.eps_dual)
        if self.local_rule:
            values += (self.eps_local_primal, self.eps_local_dual)
        return ADMMParams(*(jnp.full(n_cases, v, dtype) for v in values))

    def init(self, problem, params: ADMMParams) -> ADMMState:
        zeros, local = self.local.init(problem)
        stopping = None
        if self.local_rule:
            if not isinstance(problem, Community) or not isinstance(self.local, TradeUpdate):
                raise InputError("solver.stopping", "local stopping rules are built for the P2P "
                                                    "market on the dense trade layout only")
            stopping = local_stopping.init(problem)
        return ADMMState(zeros, zeros, local, params.rho, jnp.zeros(params.rho.shape, jnp.int32),
                         stopping)

    @staticmethod
    def consensus(trades, partner_trades):
        """The consensus trades the agents are pulled towards: y_nm = (p_nm - p_mn) / 2, with
        ``partner_trades`` the p_mn agent n knows (the reverse trades when synchronous)."""
        return 0.5 * (trades - partner_trades)

    @staticmethod
    def moved_prices(prices, rho, trades, partner_trades, edges):
        """The price update on the trades, lambda_nm - rho (p_nm + p_mn) / 2 (T3.11)."""
        rho = rho.reshape((-1,) + (1,) * (trades.ndim - 1))
        return jnp.where(edges, prices - 0.5 * rho * (trades + partner_trades), 0.0)

    def step(self, problem, params: ADMMParams, state: ADMMState) -> ADMMState:
        if self.local_rule:
            return self.local_step(problem, params, state)
        return self.iteration(problem, params, state)[0]

    def iteration(self, problem, params: ADMMParams, state: ADMMState):
        """One iteration under the global rule and its residuals (T3.13), computed once for
        residual balancing and the stopping test: ``(state, Residuals without the objective)``."""
        edges, reverse = self.local.layout(problem)
        trades, local = self.local.solve(problem, self.consensus(state.trades, reverse(state.trades)),
                                         state.prices, state.rho, state.local)
        prices = self.moved_prices(state.prices, state.rho, trades, reverse(trades), edges)
        primal, dual = residual_norms(state.trades, trades, reverse, self.local.primal_weight)
        count = state.count + 1
        rho = self.balance(params, state.rho, primal, dual, count)
        return ADMMState(trades, prices, local, rho, count), Residuals(primal, dual, None)

    def fused(self) -> bool:
        """Whether the driver may take the step and its residuals from ``iteration``: the
        global rule, with this class's own step and residuals (a variant that overrides
        either goes through them)."""
        cls = type(self)
        return (not self.local_rule and cls.step is ConsensusADMM.step
                and cls.residuals is ConsensusADMM.residuals)

    def advance(self, problem, params: ADMMParams, state: ADMMState):
        if not self.fused():
            return super().advance(problem, params, state)
        return self.iteration(problem, params, state)

    def report(self, problem, params, state: ADMMState, res):
        if res.objective is not None:
            return res
        return res._replace(objective=self.local.objective(problem, state))

    def finite(self, state: ADMMState, res) -> jax.Array:
        """The trades are finite where both residuals are (the dual one sums the squared
        changes of finite trades); the prices, the local states and rho are tested."""
        if not self.fused():
            return super().finite(state, res)
        return (jnp.isfinite(res.primal) & jnp.isfinite(res.dual)
                & all_finite((state.prices, state.local, state.rho)))

    def local_step(self, problem: Community, params: ADMMParams, state: ADMMState) -> ADMMState:
        """One iteration under a local rule (``local_stopping``): frozen trades stay fixed in
        their owner's solve, their prices stop, then the rule freezes what has settled."""
        stop = state.stopping
        pinned = local_stopping.pinned(problem, stop, state.trades)
        trades, local = self.local.solve(pinned, self.consensus(state.trades, _swap(state.trades)), state.prices,
                                         state.rho, state.local)
        trades = jnp.where(stop.frozen, state.trades, trades)
        # An agent with every trade frozen has nothing to solve (its solve is degenerate).
        done = stop.frozen.all(-1)
        local = jax.tree_util.tree_map(lambda old, new: jnp.where(done, old, new), state.local,
                                       local)
        rho = state.rho[:, None, None]
        prices = jnp.where(local_stopping.live_prices(stop, self.frozen_price),
                           state.prices - 0.5 * rho * (trades + _swap(trades)), state.prices)
        count = state.count + 1
        stop = local_stopping.advance(self.stopping, problem, params.eps_local_primal,
                                      params.eps_local_dual, self.eps_local_scale == "relative",
                                      stop, state.trades, trades, count)
        return ADMMState(trades, jnp.where(problem.edges, prices, 0.0), local, state.rho, count,
                         stop)

    def balanced_rho(self, params: ADMMParams, state: ADMMState, trades, count, reverse):
        """The penalty of the next iteration: fixed, or residual balancing (module doc)."""
        if not self.rho_balance:
            return state.rho
        primal, dual = residual_norms(state.trades, trades, reverse, self.local.primal_weight)
        return self.balance(params, state.rho, primal, dual, count)

    def balance(self, params: ADMMParams, rho, primal, dual, count):
        """``balanced_rho`` from the residuals of the iteration that led from ``rho``."""
        if not self.rho_balance:
            return rho
        due = count % self.rho_balance_every == 0
        factor = self.rho_balance_factor
        rho = jnp.where(due & (primal > self.rho_balance * dual), rho * factor,
                        jnp.where(due & (dual > self.rho_balance * primal), rho / factor, rho))
        return self.bounded(params, rho)

    @staticmethod
    def bounded(params: ADMMParams, rho):
        """An adapted penalty within a factor eps^(-1/3) of the initial one (module doc);
        ``rho``: (B,) or one per trade."""
        limit = float(jnp.finfo(rho.dtype).eps) ** (-1 / 3)
        initial = params.rho.reshape((-1,) + (1,) * (rho.ndim - 1))
        return jnp.clip(rho, initial / limit, initial * limit)

    def residuals(self, problem, params, previous: ADMMState, current: ADMMState) -> Residuals:
        _, reverse = self.local.layout(problem)
        res = Residuals(*residual_norms(previous.trades, current.trades, reverse,
                                        self.local.primal_weight),
                        self.local.objective(problem, current))
        if not self.local_rule:
            return res
        return local_stopping.LocalResiduals(*res, local_stopping.running(problem, current.stopping))

    def converged(self, params, res: Residuals) -> jax.Array:
        """Global stop (T3.12): sum_n r_n <= eps_p^2 and sum_n s_n <= eps_d^2; under a local
        rule the case stops when every agent has frozen all its trades, and ``markets.p2p``
        then keeps it converged only where the global rule's certificate holds at the stop
        (``local_stopping.certify``, docs/stopping.md)."""
        if self.local_rule:
            return res.running == 0
        return (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)
