"""Local stopping rules of consensus ADMM (T3.4.2, eqs. 3.15-3.17; SPEC 3.4).

Under the global rule (T3.12) every agent broadcasts its residuals r_n, s_n to all others
each iteration and all stop together. Under a local rule there is no broadcast: each
agent decides from what it already has, its own trades and the ones its partners send.

* ``per_agent`` (T3.15): agent n freezes all its trades at the first iteration where
  ``r_n = sum_m (p_nm + p_mn)^2 <= eps_p,n^2`` and ``s_n = sum_m (p_nm^k+1 - p_nm^k)^2 <=
  eps_d,n^2``.
* ``per_trade`` (T3.16): n freezes its trade p_nm at the first iteration where
  ``(p_nm + p_mn)^2 <= eps_p,n^2`` and ``(p_nm^k+1 - p_nm^k)^2 <= eps_d,n^2``; the other
  trades of n keep negotiating. Each end decides for its own directed trade.
* Thresholds are absolute (MW) or relative to the agent's size (T3.17), ``eps_n = a_rel
  max(|p_min_n|, |p_max_n|)``; a trade uses its owner's. An agent of size 0 (a hub or
  community manager) takes the largest size of its partners.

What partners see (decided here; SPEC 3.4). A frozen trade is sent one last time, with a
flag, in the iteration that freezes it; after that its owner sends nothing for it (its
partner keeps the last value it received, which is the frozen value) and the owner no
longer solves for it: its local problem keeps the frozen trades fixed (their boxes are
pinned to the frozen values) and optimises the others. Prices, ``frozen_price``:

* ``fixed`` (the default, SPEC 3.4): the price of trade nm stops updating at both ends as
  soon as either end has frozen its side, so lambda_nm = lambda_mn holds throughout. The
  partner still negotiating then faces a fixed trade price and a fixed counter-trade: its
  own trade settles where ``p_mn + p_nm = 2 (lambda - gamma_mn - mu_m) / rho``, a mismatch
  its local rule may never accept (the case then runs to max_iter, not converged).
* ``partner``: the end still negotiating keeps updating its own copy lambda_mn from the
  mismatch with the frozen value, which drives its trade to ``-p_nm`` (integral action);
  the two ends' prices then differ by what lambda_mn moved after p_nm froze.

The case stops when every agent has frozen every trade (an agent without trades stops at
its first iteration) or at max_iter; ``all_agents_stopped`` says the former. The global
residual is bounded at the stop: the mismatch of a trade pair is final once its second end
froze, and at that moment it was within that end's threshold, so ``sum_nm (p_nm + p_mn)^2
<= 2 sum_n eps_p,n^2`` (per agent) and ``<= 2 sum_{n<m} max(eps_p,n, eps_p,m)^2`` (per
trade) (tested).

That every agent stopped does not make the answer right: a trade frozen where its mismatch
and change happened to be small (a trade still at 0, or the ends of a pair under ``partner``
prices that disagree on its price) leaves a dispatch or prices far from the optimum.
``converged`` is therefore the global rule's certificate taken at the stop (``certify``):
every agent stopped, the stopped trades are reciprocal within ``eps_primal`` (the primal
residual of T3.13), and one unfrozen ADMM iteration from them, every agent re-solving all
its trades at the symmetrised prices ``(lambda_nm + lambda_mn) / 2`` within the boxes of the
pair (``p_nm`` within n's bounds and ``-p_mn`` within m's, as in the centralized problem),
moves them by at most ``eps_dual`` (``trial_dual_residual``, which also counts the two ends'
disagreement on a price, ``(lambda_nm - lambda_mn) / (2 rho)`` per directed trade that the
pair's boxes do not pin: the move a price off by that much causes). Trades that are,
within the tolerances, reciprocal and every agent's own optimal trades at one price per
pair satisfy the optimality conditions of T3.9: what the global rule certifies, with its
tolerances.

Messages: one per directed trade whose owner is still negotiating it, per iteration; no
residual broadcast.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

RULES = ("global", "per_agent", "per_trade")


class LocalStop(NamedTuple):
    frozen: jax.Array  # (B, N, N) directed trades frozen (non-edges are, from the start)
    stopped_at: jax.Array  # (B, N) iteration at which the agent froze its last trade, 0 before
    sent: jax.Array  # (B, N) messages sent by each agent
    # (B,) change of the trades in the trial iteration of ``certify`` (None while iterating)
    trial: Any = None


class LocalResiduals(NamedTuple):
    primal: jax.Array  # (B,) global residuals, for the rows and traces (not for stopping)
    dual: jax.Array
    objective: jax.Array
    running: jax.Array  # (B,) agents still negotiating (float: traces are NaN-padded)


def init(community) -> LocalStop:
    edges = community.edges
    zeros = jnp.zeros(community.a.shape, jnp.int32)
    return LocalStop(~edges, zeros, zeros.astype(jnp.int64))


def thresholds(community, eps, relative: bool):
    """(B, N) agent thresholds from the (B,) tolerance: absolute, or relative to the size."""
    eps = eps[:, None]
    if not relative:
        return jnp.broadcast_to(eps, community.a.shape)
    size = jnp.maximum(jnp.abs(community.p_min), jnp.abs(community.p_max))
    partners = jnp.where(community.edges, size[:, None, :], 0.0).max(-1)
    size = jnp.where(size > 0, size, partners)
    return jnp.where(size > 0, eps * size, 0.0)  # eps may be inf (compiling runs)


def pinned(community, stop: LocalStop, trades):
    """The community whose frozen trades have their boxes pinned to the frozen values."""
    return community._replace(trade_min=jnp.where(stop.frozen, trades, community.trade_min),
                              trade_max=jnp.where(stop.frozen, trades, community.trade_max))


def live_prices(stop: LocalStop, frozen_price: str):
    """(B, N, N) prices lambda_nm that still update: while neither end has frozen the trade
    (``fixed``), or while n has not frozen its side (``partner``)."""
    if frozen_price == "partner":
        return ~stop.frozen
    return ~stop.frozen & ~jnp.swapaxes(stop.frozen, -1, -2)


def advance(rule: str, community, eps_primal, eps_dual, relative: bool, stop: LocalStop,
            previous, trades, count) -> LocalStop:
    """Count this iteration's messages, then freeze what the rule lets freeze."""
    sent = stop.sent + (~stop.frozen).sum(-1)
    mismatch = (trades + jnp.swapaxes(trades, -1, -2)) ** 2
    change = (trades - previous) ** 2
    eps_p = thresholds(community, eps_primal, relative)
    eps_d = thresholds(community, eps_dual, relative)
    if rule == "per_agent":
        open_ = ~stop.frozen
        settled = ((jnp.where(open_, mismatch, 0.0).sum(-1) <= eps_p**2)
                   & (jnp.where(open_, change, 0.0).sum(-1) <= eps_d**2))
        freeze = settled[..., None]
    else:
        freeze = (mismatch <= eps_p[..., None] ** 2) & (change <= eps_d[..., None] ** 2)
    frozen = stop.frozen | freeze
    done = frozen.all(-1)
    stopped_at = jnp.where((stop.stopped_at == 0) & done, count[:, None], stop.stopped_at)
    return LocalStop(frozen, stopped_at, sent)


def pair_boxes(community):
    """The community whose trade boxes are those of the pair: p_nm within n's box and -p_mn
    within m's (the centralized problem's bounds on p_nm once p_mn = -p_nm)."""
    low, high = community.trade_min, community.trade_max
    return community._replace(trade_min=jnp.maximum(low, -jnp.swapaxes(high, -1, -2)),
                              trade_max=jnp.minimum(high, -jnp.swapaxes(low, -1, -2)))


@partial(jax.jit, static_argnames="algorithm")
def certify(algorithm, community, params, result):
    """The driver's result of a local rule with its honest flag (module doc): ``converged``
    where every agent stopped (the driver's flag), the primal residual at the stop is within
    ``eps_primal`` and the trial iteration moves the trades by at most ``eps_dual``; the
    trial's change kept in ``state.stopping.trial``."""
    state = result.state
    trades, edges = state.trades, community.edges
    reverse = jnp.swapaxes(trades, -1, -2)
    partner_prices = jnp.swapaxes(state.prices, -1, -2)
    prices = jnp.where(edges, 0.5 * (state.prices + partner_prices), 0.0)
    pair = pair_boxes(community)
    trial, _ = algorithm.local.solve(pair, algorithm.consensus(trades, reverse), prices,
                                     state.rho, state.local)
    # An end's own price off the common one by d moves its trade by d / rho, unless the
    # pair's boxes pin the trade (two consumers: any price supports it).
    free = edges & (pair.trade_min < pair.trade_max)
    disagreement = jnp.where(free, (state.prices - prices) / state.rho[:, None, None], 0.0)
    change = jnp.sqrt((jnp.where(edges, trial - trades, 0.0) ** 2
                       + disagreement ** 2).sum((-1, -2)))
    converged = (result.converged & (result.residuals.primal <= params.eps_primal)
                 & (change <= params.eps_dual))
    return result._replace(converged=converged,
                           state=state._replace(stopping=state.stopping._replace(trial=change)))


def running(community, stop: LocalStop):
    return (community.active & ~stop.frozen.all(-1)).sum(-1).astype(community.a.dtype)


def columns(community, stop: LocalStop, iterations) -> dict[str, jax.Array]:
    """Rows of a local rule: messages (no broadcasts), when the agents stopped, whether all
    did and the change of the trial iteration of ``certify``."""
    active = community.active
    n_slots = active.sum(-1)
    sent = jnp.where(active, stop.sent, 0)
    messages = sent.sum(-1)
    stopped = active & (stop.stopped_at > 0)
    at = jnp.where(stopped, stop.stopped_at, iterations[:, None]).astype(jnp.float64)
    every = (stopped | ~active).all(-1)
    return {
        "all_agents_stopped": every, "trial_dual_residual": stop.trial,
        "messages": messages, "trade_messages": messages,
        "messages_per_agent_mean": messages / jnp.maximum(n_slots, 1),
        "messages_per_agent_max": sent.max(-1),
        "last_agent_stop": jnp.where(every, jnp.where(active, at, 0.0).max(-1), jnp.nan),
        "mean_agent_stop": jnp.where(active, at, 0.0).sum(-1) / jnp.maximum(n_slots, 1),
    }
