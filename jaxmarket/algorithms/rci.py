"""Relaxed consensus + innovation, RCI (T3.4, T3.5, S19), and its virtual-central-node
variant PCMBED (T3.6), as ``init/step/residuals/converged`` on the shared driver.

Iteration k (thesis index k = count + 1) of RCI, for every agent n and partner m:

    lambda_nm <- lambda_nm - beta_k (lambda_nm - lambda_mn) - alpha_k (p_nm + p_mn)
    mu_up_n   <- |mu_up_n + eta_k (P_n - p_max_n)|+,   mu_lo_n <- |mu_lo_n + eta_k (p_min_n - P_n)|+
    g_nm       = (|p_nm| + delta_k) / sum_{l in omega_n} (|p_nl| + delta_k)
    p_nm      <- proj_nm( p_nm + g_nm (c_n'^-1(lambda_nm - gamma_nm - mu_up_n + mu_lo_n) - P_n) )

with ``P_n = sum_m p_nm`` and every right-hand side taken at iteration k except the new
prices and bound duals in the trade update. PCMBED replaces the agent's own trades by
the reciprocal trades of a virtual central node, ``z_nm = (p_nm - p_mn) / 2``: the
innovation acts on ``p_nm - z_nm``, and the bound duals, the weights and the trade update
start from z and ``Z_n = sum_m z_nm``. The state keeps the agents' trades p; their
residuals and objective are reported, like RCI's.

Decisions (the sources leave them open):

* ``proj_nm`` is the projection on the interval of p_nm that both ends of the trade
  accept, ``[max(lo_nm, -hi_mn), min(hi_nm, -lo_mn)]`` with the trade boxes of SPEC 2.
  Between a producer and a consumer that is ``|.|+`` on the producer's side and ``|.|-``
  on the consumer's, as printed, with a cap at the smaller capacity that no fixed point
  touches. Prosumers (box ``[p_min, p_max]``, either sign) get the same update; the
  intersection makes a prosumer only buy from a producer and only sell to a consumer,
  and closes trades between two producers or two consumers. Projecting on the agent's
  own box alone leaves trades that the partner refuses free to oscillate: their price
  integrates the mismatch and the trade integrates the price, an undamped loop
  (measured: 4 of 16 small random cases with prosumers and charges did not stop within
  200 000 iterations; all stop with the intersection).
* ``c'^-1(v) = (v - b) / a`` does not exist for a linear agent (a = 0). There the best
  response becomes a proximal step, ``p_nm + g_nm (v - b) / a_bar`` with the stand-in
  curvature ``a_bar``, the mean ``a`` of the case's quadratic agents, taken at the
  extrapolated value ``2 v^{k+1} - v^k`` (as in primal-dual hybrid gradient methods):
  without the extrapolation the price (or a bound dual) and the trade integrate each
  other and oscillate for ever when the partners sit at bounds. Fixed points are the
  KKT points of the problem (``v = b`` on interior trades), as for quadratic agents.
* Prices start at 0 and move by the same amount on both ends of a trade, so they stay
  symmetric and the consensus term (beta) only acts on asymmetric starts.
* ``converged`` is the thesis stopping rule (Pinson's slides) ``sum |lambda^{k+1} -
  lambda^k| <= eps_price`` and ``sum |p^{k+1} - p^k| <= eps_power`` (over directed trades)
  *and* the ADMM rule of SPEC 3.1 on the same residuals as ADMM, ``primal <= eps_primal``
  and ``dual <= eps_dual``. An infinite tolerance switches a test off: infinite
  ``eps_primal, eps_dual`` give the thesis rule alone, infinite ``eps_price, eps_power``
  stop on exactly the measure ADMM stops on.

Why it is slow (reviewed against SPEC 3.3: signs, the consumers' negative part through the
reciprocal box, the shares g_nm, the innovation term, the bound duals and k = count + 1
all match; the iteration is the printed one). An agent's total ``P_n`` follows its
prices within an iteration (the shares sum to 1), but how it is split among partners is
only corrected through the prices: the price of a trade integrates its reciprocity
mismatch (gain alpha) and the trade integrates the deviation of its price from the
agent's other prices (gain ``g_nm / a_n``). Price first, then trade: a symplectic Euler
step of an undamped oscillator, whose eigenvalues sit on the unit circle; the only
damping comes from the ``- P_n`` coupling between an agent's trades, which shrinks with
the number of partners. With prices symmetric the consensus term (beta) never acts.
Measured by linearising the step (``jax.jacfwd``) near the optimum of random cases
without charges: the slowest oscillatory modes have ``1 - |z|`` = 2e-4 per iteration for
N = 8 (period ~140 iterations) and 5e-6 for N = 25, i.e. one e-fold of the error every
4 500 and 200 000 iterations: hence ~1e5 to 1e6 iterations to 1e-4 where ADMM needs a few
hundred (README, "ADMM vs RCI").
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import residual_norms
from jaxmarket.algorithms.base import Algorithm, hyperparameter
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.metrics import p2p_objective
from jaxmarket.schedules import TUNINGS, Sequences, power_laws
from jaxmarket.schema import child, number, show, text


class RCIParams(NamedTuple):
    eps_price: jax.Array  # (B,) tolerance on sum |lambda^{k+1} - lambda^k|
    eps_power: jax.Array  # (B,) tolerance on sum |p^{k+1} - p^k|
    eps_primal: jax.Array  # (B,) tolerance on the ADMM primal residual (inf: off)
    eps_dual: jax.Array  # (B,) tolerance on the ADMM dual residual (inf: off)


class RCIState(NamedTuple):
    trades: jax.Array  # (B, N, N) p_nm
    prices: jax.Array  # (B, N, N) lambda_nm
    upper_dual: jax.Array  # (B, N) mu_up_n, dual of p_n <= p_max_n
    lower_dual: jax.Array  # (B, N) mu_lo_n, dual of p_n >= p_min_n
    count: jax.Array  # (B,) iterations done, the schedules' step count


class Residuals(NamedTuple):
    primal: jax.Array  # (B,) sqrt(sum_nm (p_nm + p_mn)^2), as ADMM
    dual: jax.Array  # (B,) sqrt(sum_nm (p_nm^{k+1} - p_nm^k)^2), as ADMM
    objective: jax.Array  # (B,) P2P objective of the current trades
    price_change: jax.Array  # (B,) sum_nm |lambda_nm^{k+1} - lambda_nm^k|
    power_change: jax.Array  # (B,) sum_nm |p_nm^{k+1} - p_nm^k|


def _swap(m):
    return jnp.swapaxes(m, -1, -2)


def _per_case(schedule, count, dtype):
    """A schedule's value as a (B, 1) column, whether it returns a scalar or (B,); per
    agent, (B, N), for per-agent counts."""
    value = jnp.broadcast_to(schedule(count), count.shape).astype(dtype)
    return value[:, None] if count.ndim == 1 else value


def _stand_in_curvature(community: Community):
    """(B, 1) mean a of the quadratic agents of each case (1 when there is none)."""
    quadratic = community.active & (community.a > 0)
    count = quadratic.sum(-1)
    mean = jnp.where(quadratic, community.a, 0.0).sum(-1) / jnp.maximum(count, 1)
    return jnp.where(count > 0, mean, 1.0)[:, None]


def _desired_change(community: Community, value, previous_value, power):
    """``c_n'^-1(v_nm) - P_n`` of every trade; for a linear agent the extrapolated
    proximal step ``(2 v_nm^{k+1} - v_nm^k - b) / a_bar`` (module doc)."""
    a, b = community.a[..., None], community.b[..., None]
    quadratic = (value - b) / jnp.where(a > 0, a, 1.0) - power[..., None]
    linear = (2 * value - previous_value - b) / _stand_in_curvature(community)[..., None]
    return jnp.where(a > 0, quadratic, linear)


def _reciprocal_box(community: Community):
    """Bounds of p_nm that both ends accept: ``[max(lo_nm, -hi_mn), min(hi_nm, -lo_mn)]``."""
    return (jnp.maximum(community.trade_min, -community.trade_max.mT),
            jnp.minimum(community.trade_max, -community.trade_min.mT))


def _sequence(value, field):
    """A persistent sequence ``c / k^p`` as ``[c, p]`` with c > 0 and p >= 0."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise InputError(field, f"expected [c, p] for c / k^p, got {show(value)}")
    return number(value[0], child(field, 0), gt=0), number(value[1], child(field, 1), ge=0)


def _sequence_field(unit: str, description: str):
    return hyperparameter(None, unit, f"{description}, as [c, p] in c / k^p (unset: the "
                          "tuning's)", _sequence, suffixes=("_c", "_p"))


SEQUENCES = ("alpha", "beta", "eta", "delta")
# Named tunings: [c, p] of each sequence c / k^p, in the roles of SPEC 3.3 (alpha: innovation
# gain of the prices, beta: consensus gain, eta: step of the bound duals, delta: offset of
# the trade weights).
DEFAULT_TUNING = "thesis"


def tuned(values: dict, prefix: str = "") -> dict:
    """``values`` with the sequences left unset (None) taken from its tuning (key
    ``prefix + "tuning"``, the default one when absent); unchanged when the tuning is a
    sweep list, whose cells are filled one by one."""
    tuning = values.get(prefix + "tuning", DEFAULT_TUNING)
    if isinstance(tuning, list):
        return values
    return {**values, **{prefix + name: value for name, value in TUNINGS[tuning].items()
                         if values.get(prefix + name) is None}}


@dataclasses.dataclass(frozen=True)
class RCI(Algorithm):
    """Relaxed consensus + innovation (module doc). Stops when the thesis rule and the
    ADMM rule both hold; an infinite tolerance switches a test off."""

    name: ClassVar[str] = "rci"
    label: ClassVar[str] = "RCI"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})
    central_node: ClassVar[bool] = False

    eps_price: float = hyperparameter(
        1e-4, "EUR/MWh", "thesis rule: tolerance on sum |lambda^{k+1} - lambda^k|",
        lambda value, field: number(value, field, gt=0), traced=True, tolerance=True)
    eps_power: float = hyperparameter(
        1e-4, "MW", "thesis rule: tolerance on sum |p^{k+1} - p^k|",
        lambda value, field: number(value, field, gt=0), traced=True, tolerance=True)
    # The sequences a field leaves unset (None) come from the tuning; given ones override it.
    tuning: str = hyperparameter(
        DEFAULT_TUNING, "n/a", "named sequences: thesis (T3.5: alpha 0.01/k^0.01, beta "
        "0.1/k^0.1, eta 0.005, delta 1) or reference_2018 (alpha = beta = 0.01, eta "
        "0.005/k^0.01, delta 1/k^0.01)", lambda value, field: text(value, field, choices=tuple(TUNINGS)),
        optional=True)
    alpha: tuple[float, float] | None = _sequence_field("EUR/MWh per MW", "innovation gain alpha_k")
    beta: tuple[float, float] | None = _sequence_field("1", "consensus gain beta_k")
    eta: tuple[float, float] | None = _sequence_field("EUR/MWh per MW",
                                                      "step eta_k of the bound duals")
    delta: tuple[float, float] | None = _sequence_field("MW", "offset delta_k of the trade weights")
    # Any four optax schedules in place of the power laws above (not a study key).
    schedules: Sequences | None = dataclasses.field(default=None, metadata={"component": True})

    def __post_init__(self):
        """Resolve the tuning: the fields then hold the sequences that run (labels, rows)."""
        if self.tuning not in TUNINGS:
            raise InputError("solver.tuning", f"must be one of {', '.join(TUNINGS)}, got "
                                              f"{self.tuning!r}")
        values = tuned({"tuning": self.tuning, **{name: getattr(self, name) for name in SEQUENCES}})
        for name in SEQUENCES:
            object.__setattr__(self, name, values[name])

    @property
    def sequences(self) -> Sequences:
        return self.schedules or power_laws(self.alpha, self.beta, self.eta, self.delta)

    def params(self, n_cases: int, dtype) -> RCIParams:
        values = (self.eps_price, self.eps_power, self.eps_primal, self.eps_dual)
        return RCIParams(*(jnp.full(n_cases, v, dtype) for v in values))

    def init(self, community: Community, params: RCIParams) -> RCIState:
        zeros = jnp.zeros_like(community.charge)
        return RCIState(zeros, zeros, community.a * 0, community.a * 0,
                        jnp.zeros(community.n_cases, jnp.int32))

    def step(self, community: Community, params: RCIParams, state: RCIState) -> RCIState:
        trades, prices, upper, lower = self.update(
            community, state.trades, state.prices, state.trades.mT, state.prices.mT,
            state.upper_dual, state.lower_dual, state.count)
        return RCIState(trades, prices, upper, lower, state.count + 1)

    def update(self, community: Community, trades, prices, partner_trades, partner_prices,
               upper_dual, lower_dual, count):
        """Every agent's iteration (module doc) from what it knows of its partners, p_mn
        and lambda_mn (``partner_*``: the transposes when synchronous); ``count`` is (B,),
        or (B, N) when every agent counts its own updates (asynchronous negotiation)."""
        dtype = community.dtype
        alpha, beta, eta, delta = (_per_case(s, count, dtype) for s in self.sequences)
        edges = community.edges
        if self.central_node:
            base = 0.5 * (trades - partner_trades)  # z_nm, reciprocal by construction
            innovation = 0.5 * (trades + partner_trades)  # p_nm - z_nm, written symmetrically
        else:
            base = trades
            innovation = trades + partner_trades
        new_prices = (prices - beta[..., None] * (prices - partner_prices)
                      - alpha[..., None] * innovation)
        new_prices = jnp.where(edges, new_prices, 0.0)

        power = base.sum(-1)
        upper = jax.nn.relu(upper_dual + eta * (power - community.p_max))
        lower = jax.nn.relu(lower_dual + eta * (community.p_min - power))

        weights = jnp.where(edges, jnp.abs(base) + delta[..., None], 0.0)
        total = weights.sum(-1, keepdims=True)
        gains = weights / jnp.where(total > 0, total, 1.0)  # isolated agents: no trades
        value = new_prices - community.charge - upper[..., None] + lower[..., None]
        previous_value = (prices - community.charge - upper_dual[..., None]
                          + lower_dual[..., None])
        proposal = base + gains * _desired_change(community, value, previous_value, power)
        return jnp.clip(proposal, *_reciprocal_box(community)), new_prices, upper, lower

    def residuals(self, community: Community, params: RCIParams, previous: RCIState,
                  current: RCIState) -> Residuals:
        primal, dual = residual_norms(previous.trades, current.trades, _swap)
        return Residuals(primal, dual, p2p_objective(community, current.trades),
                         jnp.abs(current.prices - previous.prices).sum((-1, -2)),
                         jnp.abs(current.trades - previous.trades).sum((-1, -2)))

    def converged(self, params: RCIParams, res: Residuals) -> jax.Array:
        """Thesis rule and ADMM rule (either switched off by infinite tolerances)."""
        thesis = (res.price_change <= params.eps_price) & (res.power_change <= params.eps_power)
        return thesis & (res.primal <= params.eps_primal) & (res.dual <= params.eps_dual)


@dataclasses.dataclass(frozen=True)
class PCMBED(RCI):
    """RCI with a virtual central node (T3.6, module doc)."""

    name: ClassVar[str] = "pcmbed"
    label: ClassVar[str] = "PCMBED"
    central_node: ClassVar[bool] = True
