"""Asynchronous negotiation (T3.3, SPEC 3.5) simulated on a common clock, batched.

Every case has its own clock and advances *event by event* inside one ``lax.while_loop``;
an event of a case is the next instant ``t = min_n t_n`` at which one of its nodes (the
agents; for community ADMM also the manager) finishes an update:

1. every agent finishing at ``t`` *releases* its update: its trades (or power) become the
   market's and one message per partner leaves, arriving at ``t + Exp(mean d)`` (one
   independent draw per message);
2. the community manager (CED) computes in no time: at ``t`` it reads what has arrived and
   releases its price and imbalance at once (its update is a sum; ``tau_0`` is the period
   of its round, drawn like the agents');
3. every agent finishing at ``t`` starts its next update at once, from what has arrived by
   ``t`` (messages sent at ``t`` with zero delay included), and finishes it at
   ``t + tau_n``.

Agent n's compute time is ``tau_n = tau_C + eps (u_n - 1/2)``, ``u_n ~ U(0, 1)``, fixed per
case (``tau_C = 0.01 s``). What an agent uses of a partner's messages (the *strategy*,
T3.3): ``latest``, the newest arrived value (by send time: a message overtaken by a newer
one is ignored); ``mean``, the mean of the values arrived since its last update;
``weighted``, their exponentially weighted average in arrival order, starting from the
first and ``x <- w x_new + (1 - w) x`` per further arrival. With no arrival since its last
update an agent keeps the view it used last. With ``eps = d = 0`` every node finishes at
the same instants, exactly one message per partner arrives between two updates, all three
strategies see exactly its value and one event is one synchronous iteration: the iterates
are bit-identical to the synchronous algorithm's (tested).

The algorithms in asynchronous form (``forms``):

* consensus ADMM: agent n sends p_nm and its price lambda_nm; at the start of an update
  it moves its price from the mean of both ends' prices with the trades it knows,
  ``lambda_nm <- (lambda_nm + view_lambda_mn) / 2 - rho (p_nm + view_p_mn) / 2`` (the
  synchronous price update of the previous iteration), then solves against
  ``(p_nm - view_p_mn) / 2``. Synchronously both ends hold the same price and the mean is
  exact. Without the mean each end integrates the mismatch as often as it updates, the
  two prices of a trade drift apart and the trades settle where they are not optimal
  (measured on 4 random cases of 4 to 9 agents, eps = 8 ms, d = 0: the prices of a trade
  1 to 29 EUR/MWh apart, final gaps 0.07 to 0.18; docs/asynchrony.md).
* RCI and PCMBED: agent n sends p_nm and lambda_nm and runs the printed iteration with the
  views in place of p_mn and lambda_mn, its own update count in the sequences.
* community ADMM (CED): agent n sends p_n to the manager, the manager sends the price and
  the imbalance to every agent.

Randomness: case k's draws come from ``fold_in(fold_in(PRNGKey(seed), k), ASYNC_STREAM)``
(the community's own draws are untouched): the compute times from its sub-key 0; the
delay of the message node m sends to node r at its i-th release from one Threefry hash of
the counter (i, r) under the node's key ``fold_in(key, 1 + m)`` (a 32-bit uniform, so a
delay is at most about 22 d), so a case's draws depend on (seed, case_index) alone, not on
the batch. The node keys are drawn before the loop, one hash per event in it.

Messages in flight and not yet read wait in a buffer of ``BUFFER`` slots per directed link
(value, arrival and send time). With ``eps, d <= tau_C`` a link carries at most 3 messages
per receiver update and a message is in flight longer than ``3 d`` with probability
``e^-3`` each, far from 10 at once; a message that finds the buffer full is not sent and
is counted (``message_overflows``), never silently lost.

What is measured (the agents decide nothing): the optimality gap of the released trades
(or powers) against the exact reference after every event. The *time to gap* is the first
event time from which the gap stays <= 1e-4 until the run ends, its *iterations* the
updates of the case's slowest node by then (the definition of the rows'
``iterations_to_gap_e4``, on the simulated clock). The synchronous run (``eps = d = 0``,
the same simulator) ends where the algorithm's own stopping rule holds (or at
``max_iter``); the asynchronous run ends at ``HORIZON`` times the synchronous time to gap,
so a case slower than that has not reached the gap.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jax.extend.random import threefry2x32_p

from jaxmarket.algorithms import Algorithm
from jaxmarket.algorithms.admm import ConsensusADMM, TradeUpdate
from jaxmarket.algorithms.ced import CED
from jaxmarket.algorithms.rci import RCI
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.metrics import agent_costs, gap_floor, optimality_gap, p2p_objective
from jaxmarket.schema import number, text

TAU_C = 0.01  # s, the compute time of an update (T3.3)
GAP = 1e-4  # the optimality gap the times are measured to (0.01 %)
HORIZON = 3.0  # the asynchronous run ends at this many times the synchronous time to gap
BUFFER = 10  # message slots per directed link (module doc)
ASYNC_STREAM = 0xA5C0  # fold_in tag of the asynchrony's draws within a case's key
STRATEGIES = ("latest", "mean", "weighted")


def _key(default, unit: str, description: str, check):
    return dataclasses.field(default=default, metadata={"unit": unit, "description": description,
                                                        "check": check})


def _at_most(limit):
    def check(value, field):
        value = number(value, field, gt=0) if limit == 1 else number(value, field, ge=0)
        if value > limit:
            raise InputError(field, f"must be at most {limit}, got {value}")
        return value
    return check


@dataclass(frozen=True)
class AsynchronyParams:
    """The ``[asynchrony]`` section of a study (T3.3)."""

    compute_spread: float = _key(0.0, "s", "spread eps of the compute times tau_n = tau_C + "
                                 "U(-eps/2, eps/2), fixed per case (tau_C = 0.01 s), in [0, tau_C]",
                                 _at_most(TAU_C))
    delay_mean: float = _key(0.0, "s", "mean d of the exponential delay of every message, in "
                             "[0, tau_C]", _at_most(TAU_C))
    strategy: str = _key("latest", "n/a", "what an agent uses of what has arrived: latest, mean "
                         "(since its last update) or weighted (exponentially weighted average)",
                         partial(text, choices=STRATEGIES))
    weight: float = _key(0.5, "1", "weight w of the newest value in the weighted strategy, in "
                         "(0, 1]", _at_most(1))


def check_algorithm(algorithm: Algorithm) -> None:
    """Refuse an algorithm the simulation has no asynchronous form of."""
    if isinstance(algorithm, ConsensusADMM):
        if (type(algorithm) is not ConsensusADMM or algorithm.rho_balance
                or algorithm.local_rule or not isinstance(algorithm.local, TradeUpdate)):
            raise InputError("solver.algorithm", "asynchrony is simulated for plain consensus "
                                                 "ADMM (admm, fixed rho, global stopping), rci, "
                                                 "pcmbed, ced and ced_mean")
    elif not isinstance(algorithm, (RCI, CED)):
        raise InputError("solver.algorithm", f"asynchrony is not simulated for {algorithm.name}; "
                                             f"choose admm, rci, pcmbed, ced or ced_mean")


# --- the algorithms in asynchronous form ------------------------------------------------
# nodes(problem): M; active (B, M); links (B, M, M) [receiver, sender]; payload(state):
# (B, M, M, F) what sender m sends receiver n; update(...): every node's update from its
# views (B, M, M, F); select(mask (B, M), new, old); objective(problem, state): (B,).

def _rows(mask, value):
    """``mask`` (B, M) broadcast over the trailing axes of a (B, M, ...) value."""
    return mask.reshape(mask.shape + (1,) * (value.ndim - 2))


class _P2P:
    instant = None  # no node computes in no time
    channels = 1

    def __init__(self, algorithm):
        self.algorithm = algorithm

    def nodes(self, community: Community) -> int:
        return community.n_max

    def active(self, community):
        return community.active

    def links(self, community):
        return community.edges

    def payload(self, state):
        return state.trades.mT[..., None]

    def select(self, mask, new, old):
        return old._replace(trades=jnp.where(_rows(mask, new.trades), new.trades, old.trades),
                            prices=jnp.where(_rows(mask, new.prices), new.prices, old.prices),
                            **self._own(mask, new, old))

    def objective(self, community, state):
        return p2p_objective(community, state.trades)


class _ADMM(_P2P):
    channels = 2

    def payload(self, state):
        return jnp.stack([state.trades.mT, state.prices.mT], -1)

    def update(self, community, params, state, views, count):
        admm, partner = self.algorithm, views[..., 0]
        prices = admm.moved_prices(0.5 * (state.prices + views[..., 1]), state.rho, state.trades,
                                   partner, community.edges)
        trades, local = admm.local.solve(community, admm.consensus(state.trades, partner),
                                         prices, state.rho, state.local)
        return state._replace(trades=trades, prices=prices, local=local)

    def _own(self, mask, new, old):
        local = jax.tree_util.tree_map(lambda n, o: jnp.where(mask, n, o), new.local, old.local)
        return {"local": local}


class _RCI(_P2P):
    channels = 2

    def payload(self, state):
        return jnp.stack([state.trades.mT, state.prices.mT], -1)

    def update(self, community, params, state, views, count):
        trades, prices, upper, lower = self.algorithm.update(
            community, state.trades, state.prices, views[..., 0], views[..., 1],
            state.upper_dual, state.lower_dual, count)
        return state._replace(trades=trades, prices=prices, upper_dual=upper, lower_dual=lower)

    def _own(self, mask, new, old):
        return {"upper_dual": jnp.where(mask, new.upper_dual, old.upper_dual),
                "lower_dual": jnp.where(mask, new.lower_dual, old.lower_dual)}


class _CED:
    """Agents 0..N-1 and the manager, node N."""
    channels = 2

    def __init__(self, algorithm):
        self.algorithm = algorithm

    def nodes(self, community):
        return community.n_max + 1

    @property
    def instant(self):
        return -1  # the manager: the last node

    def active(self, community):
        return jnp.concatenate([community.active, jnp.ones((community.n_cases, 1), bool)], 1)

    def links(self, community):
        n = community.n_max
        to_manager = jnp.zeros((community.n_cases, n + 1, n + 1), bool)
        to_manager = to_manager.at[:, n, :n].set(community.active)
        return to_manager | to_manager.mT

    def payload(self, state):
        batch, n = state.power.shape
        payload = jnp.zeros((batch, n + 1, n + 1, 2), state.power.dtype)
        payload = payload.at[:, :n, n, 0].set(state.price[:, None])
        payload = payload.at[:, :n, n, 1].set(state.imbalance[:, None])
        return payload.at[:, n, :n, 0].set(state.power)

    def update(self, community, params, state, views, count):
        n = community.n_max
        power = self.algorithm.dispatch(community, params, state.power, views[:, :n, n, 0],
                                        views[:, :n, n, 1])
        price, imbalance = self.algorithm.clear(community, params, state.price, views[:, n, :n, 0])
        return state._replace(power=power, price=price, imbalance=imbalance)

    def select(self, mask, new, old):
        manager = mask[:, -1]
        return old._replace(power=jnp.where(mask[:, :-1], new.power, old.power),
                            price=jnp.where(manager, new.price, old.price),
                            imbalance=jnp.where(manager, new.imbalance, old.imbalance))

    def objective(self, community, state):
        return agent_costs(community, state.power).sum(-1)


def form(algorithm: Algorithm):
    """The asynchronous form of ``algorithm`` (module doc)."""
    check_algorithm(algorithm)
    if isinstance(algorithm, ConsensusADMM):
        return _ADMM(algorithm)
    return _RCI(algorithm) if isinstance(algorithm, RCI) else _CED(algorithm)


# --- the simulation ---------------------------------------------------------------------

class Settings(NamedTuple):
    """Per-case values of an ``[asynchrony]`` section (traced: one program for all)."""
    compute_spread: jax.Array  # (B,) eps, s
    delay_mean: jax.Array  # (B,) d, s
    weight: jax.Array  # (B,) w of the weighted strategy


class Clock(NamedTuple):
    """The simulation state of a batch."""
    finish: jax.Array  # (B, M) time at which each node's running update ends (inf: none)
    tau: jax.Array  # (B, M) compute time of each node
    iteration: jax.Array  # (B, M) index of each node's released update (-1: none yet)
    state: Any  # the algorithm's state as each node last computed it
    released: Any  # what each node last released: the market's state
    view: jax.Array  # (B, M, M, F) what receiver n uses of sender m's messages
    stamp: jax.Array  # (B, M, M) send time of the value in ``view`` (strategy latest)
    value: jax.Array  # (B, M, M, K, F) the buffered messages
    arrival: jax.Array  # (B, M, M, K) their arrival times (inf: a free slot)
    sent: jax.Array  # (B, M, M, K) their send times
    overflows: jax.Array  # (B,) messages that found their link's buffer full
    time: jax.Array  # (B,) time of the case's last event
    settled_time: jax.Array  # (B,) first event time of the current run of gap <= GAP (inf)
    settled_iteration: jax.Array  # (B,) the slowest node's updates then (-1)
    gap: jax.Array  # (B,) optimality gap of the released state
    done: jax.Array  # (B,) the case's run has ended
    converged: jax.Array  # (B,) synchronous run: the algorithm's stopping rule held
    events: jax.Array  # () events run


class Outcome(NamedTuple):
    time: jax.Array  # (B,) time to gap (NaN: not reached)
    iterations: jax.Array  # (B,) the slowest node's updates by then (NaN: not reached)
    reached: jax.Array  # (B,) bool
    gap: jax.Array  # (B,) optimality gap at the end of the run
    overflows: jax.Array  # (B,) messages refused by a full buffer
    converged: jax.Array  # (B,) synchronous run: the algorithm's stopping rule held
    events: jax.Array  # () events the batch ran
    released: Any  # the market's state at the end: what every node released last


def case_keys(seed: int, case_indices):
    """(B, 2) the asynchrony's key of every case (module doc)."""
    base = jax.random.PRNGKey(int(seed))
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.fold_in(base, i), ASYNC_STREAM))(
        jnp.asarray(case_indices, jnp.uint32))


def _start(algorithm, community, params, settings: Settings, keys):
    negotiation = form(algorithm)
    n_nodes = negotiation.nodes(community)
    batch, dtype = community.n_cases, community.dtype
    u = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0), (n_nodes,), dtype))(keys)
    tau = TAU_C + settings.compute_spread[:, None] * (u - 0.5)
    active = negotiation.active(community)
    state = algorithm.init(community, params)
    links = (batch, n_nodes, n_nodes)
    inf = jnp.full(batch, jnp.inf, dtype)
    return Clock(
        finish=jnp.where(active, 0.0, jnp.inf).astype(dtype), tau=tau,
        iteration=jnp.full((batch, n_nodes), -1, jnp.int32), state=state, released=state,
        view=jnp.zeros(links + (negotiation.channels,), dtype),
        stamp=jnp.full(links, -jnp.inf, dtype),
        value=jnp.zeros(links + (BUFFER, negotiation.channels), dtype),
        arrival=jnp.full(links + (BUFFER,), jnp.inf, dtype),
        sent=jnp.full(links + (BUFFER,), jnp.inf, dtype),
        overflows=jnp.zeros(batch, jnp.int32), time=jnp.zeros(batch, dtype), settled_time=inf,
        settled_iteration=jnp.full(batch, -1, jnp.int32), gap=inf,
        done=jnp.zeros(batch, bool), converged=jnp.zeros(batch, bool), events=jnp.int32(0))


def _delays(node_keys, iteration, dtype):
    """(B, M, M) [sender, receiver] standard exponential draws of the messages every node
    sends at its release ``iteration`` (B, M): one Threefry hash of (release, receiver)
    under the sender's key (module doc), drawn in the loop without a table."""
    shape = iteration.shape + (iteration.shape[-1],)
    key = [jnp.broadcast_to(node_keys[..., j, None], shape) for j in (0, 1)]
    release = jnp.broadcast_to(iteration.astype(jnp.uint32)[..., None], shape)
    receiver = jnp.broadcast_to(jnp.arange(shape[-1], dtype=jnp.uint32), shape)
    bits, _ = threefry2x32_p.bind(*key, release, receiver)
    return -jnp.log((bits.astype(dtype) + 0.5) / 2.0**32)  # u in (0, 1), 32 bits


def _send(clock: Clock, negotiation, community, senders, now, settings: Settings, node_keys):
    """The messages of ``senders`` (B, M) into the buffers, each with its own delay."""
    delay = settings.delay_mean[:, None, None] * _delays(node_keys, clock.iteration,
                                                          clock.arrival.dtype).mT
    push = senders[:, None, :] & negotiation.links(community)
    free = jnp.isinf(clock.arrival)
    slot = jnp.argmax(free, -1)
    write = push & free.any(-1)
    into = write[..., None] & (jnp.arange(BUFFER) == slot[..., None])
    payload = negotiation.payload(clock.state)
    return clock._replace(
        value=jnp.where(into[..., None], payload[:, :, :, None, :], clock.value),
        arrival=jnp.where(into, (now[:, None, None] + delay)[..., None], clock.arrival),
        sent=jnp.where(into, now[:, None, None, None], clock.sent),
        overflows=clock.overflows + (push & ~write).sum((1, 2), dtype=jnp.int32))


def _read(clock: Clock, receivers, now, strategy: str, settings: Settings) -> Clock:
    """``receivers`` (B, M) take what has arrived by ``now`` into their views (strategy)."""
    due = (clock.arrival <= now[:, None, None, None]) & receivers[:, :, None, None]
    any_due = due.any(-1)
    view, stamp = clock.view, clock.stamp
    if strategy == "latest":
        newest = jnp.where(due, clock.sent, -jnp.inf)
        pick = jnp.argmax(newest, -1)
        sent = jnp.max(newest, -1)
        value = jnp.take_along_axis(clock.value, pick[..., None, None], 3)[..., 0, :]
        newer = any_due & (sent > stamp)
        view = jnp.where(newer[..., None], value, view)
        stamp = jnp.where(newer, sent, stamp)
    elif strategy == "mean":
        count = due.sum(-1)
        total = jnp.where(due[..., None], clock.value, 0.0).sum(-2)
        view = jnp.where(any_due[..., None], total / jnp.maximum(count, 1)[..., None], view)
    else:  # weighted, in arrival order
        weight = settings.weight[:, None, None, None]

        def arrival(_, carry):  # the next arrival of every link, if any
            left, first, average = carry
            pick = jnp.argmin(jnp.where(left, clock.arrival, jnp.inf), -1)
            has = left.any(-1)
            value = jnp.take_along_axis(clock.value, pick[..., None, None], 3)[..., 0, :]
            mixed = jnp.where(first[..., None], value, weight * value + (1 - weight) * average)
            return (left & (jnp.arange(BUFFER) != pick[..., None]), first & ~has,
                    jnp.where(has[..., None], mixed, average))

        _, _, average = jax.lax.fori_loop(0, BUFFER, arrival,
                                          (due, jnp.ones(due.shape[:-1], bool), view))
        view = average
    return clock._replace(view=view, stamp=stamp,
                          arrival=jnp.where(due, jnp.inf, clock.arrival))


def _event(algorithm, strategy: str, synchronous, community, params, settings, node_keys,
           reference, floor, horizon, max_iter, clock: Clock) -> Clock:
    """One event of every case still running (module doc)."""
    negotiation, start = form(algorithm), clock
    now = jnp.min(clock.finish, 1)
    done = clock.done | ~jnp.isfinite(now) | (~synchronous & (now > horizon))
    running = ~done
    due = (clock.finish == now[:, None]) & running[:, None]
    instant = jnp.zeros(due.shape, bool)
    if negotiation.instant is not None:
        instant = instant.at[:, negotiation.instant].set(True)
    agents, managers = due & ~instant, due & instant
    previous = clock.released
    # 1. agents release their updates
    clock = clock._replace(iteration=clock.iteration + due,
                           released=negotiation.select(agents, clock.state, clock.released))
    clock = _send(clock, negotiation, community, agents, now, settings, node_keys)
    # 2. a manager reads, computes and releases at once
    if negotiation.instant is not None:
        clock = _read(clock, managers, now, strategy, settings)
        new = negotiation.update(community, params, clock.state, clock.view, clock.iteration)
        state = negotiation.select(managers, new, clock.state)
        clock = clock._replace(state=state, released=negotiation.select(managers, state,
                                                                        clock.released))
        clock = _send(clock, negotiation, community, managers, now, settings, node_keys)
    # 3. agents start their next update from what has arrived
    clock = _read(clock, agents, now, strategy, settings)
    new = negotiation.update(community, params, clock.state, clock.view, clock.iteration)
    clock = clock._replace(state=negotiation.select(agents, new, clock.state),
                           finish=jnp.where(due, clock.finish + clock.tau, clock.finish))

    gap = optimality_gap(negotiation.objective(community, clock.released), reference, floor)
    active = negotiation.active(community)
    slowest = jnp.min(jnp.where(active, clock.iteration, jnp.iinfo(jnp.int32).max), 1)
    below = gap <= GAP  # NaN: not below
    settled = below & jnp.isinf(clock.settled_time)
    settled_time = jnp.where(below, jnp.where(settled, now, clock.settled_time), jnp.inf)
    settled_iteration = jnp.where(below, jnp.where(settled, slowest, clock.settled_iteration), -1)
    # Synchronous: the algorithm's own stopping rule ends the run, as on the driver (a
    # traced flag, so that one program serves both runs).
    res = algorithm.residuals(community, params, previous, clock.released)
    finite = jnp.stack([jnp.isfinite(r) for r in res]).all(0)
    converged = synchronous & finite & algorithm.converged(params, res) & (slowest >= 1)
    done = done | converged | (synchronous & (~finite | (slowest >= max_iter)))
    done = done | ~jnp.isfinite(gap)

    updated = clock._replace(time=now, settled_time=settled_time,
                             settled_iteration=settled_iteration, gap=gap, converged=converged)

    def keep(new, old):  # cases that were not running keep their values
        if new.ndim == 0:
            return new
        return jnp.where(running.reshape(running.shape + (1,) * (new.ndim - 1)), new, old)

    return jax.tree_util.tree_map(keep, updated, start)._replace(done=done,
                                                                  events=start.events + 1)


@partial(jax.jit, static_argnames=("algorithm", "strategy"))
def simulate(algorithm: Algorithm, community: Community, params, settings: Settings, keys,
             reference, horizon, max_iter, max_events, strategy: str = "latest",
             synchronous=False) -> Outcome:
    """Run every case of the batch until its run ends (module doc): ``synchronous`` (a
    traced flag), until the algorithm's stopping rule holds or ``max_iter`` updates; else
    until ``horizon`` (B,) seconds. ``reference`` (B,) is the exact objective;
    ``max_events`` bounds the loop (a case still running then has not reached the gap
    unless it had)."""
    clock = _start(algorithm, community, params, settings, keys)
    n_nodes = clock.tau.shape[1]
    node_keys = jax.vmap(lambda key: jax.vmap(lambda m: jax.random.fold_in(key, 1 + m))(
        jnp.arange(n_nodes)))(keys)  # (B, M, 2), drawn before the loop
    floor = gap_floor(community).astype(reference.dtype)  # the gap's, once per case

    def going(clock):
        return ~clock.done.all() & (clock.events < max_events)

    def advance(clock):
        return _event(algorithm, strategy, synchronous, community, params, settings, node_keys,
                      reference, floor, horizon, max_iter, clock)

    clock = jax.lax.while_loop(going, advance, clock)
    reached = jnp.isfinite(clock.settled_time)
    return Outcome(jnp.where(reached, clock.settled_time, jnp.nan),
                   jnp.where(reached, clock.settled_iteration, jnp.nan), reached, clock.gap,
                   clock.overflows, clock.converged, clock.events, clock.released)


def columns(community: Community, algorithm: Algorithm, params: AsynchronyParams, seed: int,
            case_indices, reference) -> dict[str, np.ndarray]:
    """The asynchrony columns of a batch's rows: the synchronous run (``eps = d = 0``), then
    the asynchronous one to ``HORIZON`` times its time to gap (module doc); ``reference``
    (B,) is the exact objective of every case."""
    n = community.n_cases
    dtype = community.dtype
    keys = case_keys(seed, case_indices)
    traced = algorithm.params(n, dtype)
    reference = jnp.asarray(reference, dtype)

    def run(spread, delay, horizon, max_events, synchronous):
        settings = Settings(*(jnp.full(n, v, dtype) for v in (spread, delay, params.weight)))
        return simulate(algorithm.static(), community, traced, settings, keys, reference,
                        jnp.asarray(horizon, dtype), jnp.int32(algorithm.max_iter),
                        jnp.int32(max_events), strategy=params.strategy,
                        synchronous=synchronous)

    sync = run(0.0, 0.0, jnp.zeros(n), algorithm.max_iter + 1, True)
    sync_time = np.asarray(sync.time)
    horizon = np.nan_to_num(HORIZON * sync_time, nan=0.0)  # no synchronous time: no run
    # Every node updates at most twice per tau_C (tau_n >= tau_C / 2).
    slowest = np.nanmax(np.append(np.asarray(sync.iterations), 0))
    n_nodes = form(algorithm).nodes(community)
    events = int(np.ceil(HORIZON * slowest + 2) * 2 * n_nodes)
    late = run(params.compute_spread, params.delay_mean, horizon, min(events, 2**31 - 1), False)
    reached = np.asarray(late.reached) & np.isfinite(sync_time)
    time = np.where(reached, np.asarray(late.time), np.nan)
    return {"synchronous_time_s": sync_time,
            "synchronous_iterations": np.asarray(sync.iterations),
            "async_time_s": time,
            "async_iterations": np.where(reached, np.asarray(late.iterations), np.nan),
            "reached_gap": reached,
            "time_ratio": time / sync_time,
            "async_gap": np.where(np.isfinite(sync_time), np.asarray(late.gap), np.nan),
            "message_overflows": np.asarray(late.overflows)}
