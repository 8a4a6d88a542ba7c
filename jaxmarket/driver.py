"""The one iteration driver shared by every algorithm.

An algorithm (``jaxmarket.algorithms.Algorithm``, a static argument: pass
``algorithm.static()`` so that every penalty and tolerance shares one program) plugs in
through its methods:

    state = algorithm.init(problem, params)
    state = algorithm.step(problem, params, state)
    res   = algorithm.residuals(problem, params, previous_state, state)   # (B,) arrays
    done  = algorithm.converged(params, res)                              # (B,) bool

At a check it calls ``algorithm.advance`` (the step and the residuals the stopping test
reads, which an algorithm may compute together), ``algorithm.finite`` (the divergence test)
and, only where residuals are recorded (traces, the result), ``algorithm.report`` (what the
stopping test does not read, e.g. the objective); by default these are ``step``,
``residuals`` and a finiteness test of the whole state.

The driver iterates a whole batch inside one compiled ``lax.while_loop``. Residuals are
checked every ``check_every`` iterations; a case stops at the first check where it has
converged (or its state or residuals stopped being finite: it is then flagged as
diverged) and its state is frozen from then on, so its result does not depend on the
other cases of the batch. The loop ends when every case has stopped or ``max_iter`` iterations have run
(``max_iter`` is rounded up to a multiple of ``check_every``). With ``trace_every > 0``
(a multiple of ``check_every``) the residuals of running cases are recorded every
``trace_every`` iterations; entries after a case stopped are NaN.

With ``block_size`` the batch is cut into blocks of cases that are iterated one after the
other (``lax.map``), each with its own loop. On a CPU this keeps the working set of a
block in cache and lets a block stop as soon as its own cases have, instead of waiting
for the slowest case of the whole batch. Results do not change: cases never interact.

With ``lanes`` the batch is a queue served by continuous batching: a fixed number of
lanes iterate ``refill_every`` iterations at a time inside one compiled loop; after each
such round every lane whose case has stopped hands its result to the output and takes the
next case of the queue (in case order, lowest lane first). A lane therefore never waits for
a slow case of its neighbours, only for the end of the round. Each case runs the same
arithmetic as in the plain loop, so the rows are identical; ``lane_iterations`` counts the
lane-iterations spent, and the sum of ``iterations`` over it is the lane utilisation.

With ``queued`` only the first cases of the batch run (a traced count): batches of
varying length padded to one shape share one compiled program.

With ``devices > 1`` the queue is dealt round-robin to that many local devices
(``jax.shard_map``), each running its own lanes and its own loop with no communication.
Every device runs the very same program on ``lanes`` lanes, so each case sees the same
arithmetic whatever the device count: rows are bit-identical on 1 or 4 devices (tested).
(Splitting one batch over devices instead changes the per-device shapes, which lets XLA
fuse and vectorise differently and changed the last bits of some rows.)
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec


class DriverOptions(NamedTuple):
    max_iter: int = 10_000
    check_every: int = 1
    trace_every: int = 0  # 0: no trace
    block_size: int = 0  # 0: the whole batch at once; else blocks of cases one after another
    lanes: int = 0  # > 0: continuous batching on this many lanes (block_size is then unused)
    refill_every: int = 16  # lanes: iterations between refills, rounded up to check_every
    devices: int = 1  # lanes: local devices sharing the queue, each with its own lanes

    @property
    def n_blocks(self) -> int:
        return -(-self.max_iter // self.check_every)

    @property
    def n_trace(self) -> int:
        return self.n_blocks * self.check_every // self.trace_every if self.trace_every else 0

    @property
    def iteration_limit(self) -> int:
        """Iterations a case may run: ``max_iter`` rounded up to a multiple of check_every."""
        return self.n_blocks * self.check_every

    @property
    def checks_per_refill(self) -> int:
        # Never more than a case may run: a lane whose case stopped only waits for the refill.
        return max(1, -(-min(self.refill_every, self.iteration_limit) // self.check_every))


class DriverResult(NamedTuple):
    state: Any  # final (or frozen) state of every case
    residuals: Any  # residuals at the last check of every case
    iterations: jax.Array  # (B,) iterations run until the case stopped
    converged: jax.Array  # (B,) bool
    diverged: jax.Array  # (B,) bool: non-finite residuals
    trace: Any  # residual pytree of (B, n_trace) arrays, or None
    lane_iterations: jax.Array  # () case-iterations computed, useful or not (utilisation)


def _freeze(stopped, old, new):
    def pick(o, n):
        mask = stopped.reshape(stopped.shape + (1,) * (n.ndim - 1))
        return jnp.where(mask, o, n)

    return jax.tree_util.tree_map(pick, old, new)


def _inf_like(tree):
    """Residuals before the first check: infinite (from shapes, nothing computed)."""
    return jax.tree_util.tree_map(lambda r: jnp.full(r.shape, jnp.inf, r.dtype), tree)


def _residual_shapes(algorithm, problem, params, state):
    """Shapes of the check residuals (``advance``) and of the reported ones (``report``)."""
    def both():
        after, res = algorithm.advance(problem, params, state)
        return res, algorithm.report(problem, params, after, res)

    return jax.eval_shape(both)


def _report(algorithm, problem, params, state, res, ran):
    """The reported residuals of cases that ``ran``; the others keep infinite ones."""
    full = algorithm.report(problem, params, state, res)
    return jax.tree_util.tree_map(lambda r: jnp.where(ran, r, jnp.full_like(r, jnp.inf)), full)


@partial(jax.jit, static_argnames=("algorithm", "options"))
def iterate(algorithm, problem, params, options: DriverOptions,
            queued=None) -> DriverResult:
    """Iterate every case of the batch (leading axis of ``problem`` and ``params``), or only
    the first ``queued`` ones (a traced count, so that queues of varying length share one
    compiled shape): the rows after them are placeholders that never run (0 iterations,
    neither converged nor diverged)."""
    n_cases = jax.tree_util.tree_leaves(params)[0].shape[0]
    waiting = jnp.arange(n_cases) < (n_cases if queued is None else queued)
    if options.lanes and options.devices > 1:
        return _over_devices(algorithm, problem, params, waiting, options)
    if options.lanes:
        return _continuous(algorithm, problem, params, waiting, options)
    size = options.block_size
    if not size or size >= n_cases:
        return _iterate(algorithm, problem, params, waiting, options)
    n_blocks = -(-n_cases // size)
    padding = n_blocks * size - n_cases

    def to_blocks(v):  # pad by repeating the last case; its copies are dropped below
        return _pad(v, padding).reshape((n_blocks, size) + v.shape[1:])

    blocks = jax.tree_util.tree_map(to_blocks, (problem, params, waiting))
    result = jax.lax.map(lambda block: _iterate(algorithm, *block, options), blocks)
    spent = result.lane_iterations.sum()
    result = jax.tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:])[:n_cases],
                                    result._replace(lane_iterations=None))
    return result._replace(lane_iterations=spent)


def _pad(v, padding: int):
    return jnp.concatenate([v, jnp.repeat(v[-1:], padding, 0)]) if padding else v


def _over_devices(algorithm, problem, params, waiting, options: DriverOptions
                  ) -> DriverResult:
    """Continuous batching on each of ``options.devices`` local devices; case i runs on
    device i mod D (round-robin, so slow cases of a region of the queue are shared)."""
    n_cases = jax.tree_util.tree_leaves(params)[0].shape[0]
    devices = jax.local_devices()[:options.devices]
    n_devices = len(devices)
    per_device = -(-n_cases // n_devices)
    padding = per_device * n_devices - n_cases

    def deal(v):  # row d * per_device + j holds case j * n_devices + d
        v = _pad(v, padding).reshape((per_device, n_devices) + v.shape[1:])
        return jnp.swapaxes(v, 0, 1).reshape((-1,) + v.shape[2:])

    def collect(v):
        v = jnp.swapaxes(v.reshape((n_devices, per_device) + v.shape[1:]), 0, 1)
        return v.reshape((-1,) + v.shape[2:])[:n_cases]

    def local(problem, params, waiting):
        result = _continuous(algorithm, problem, params, waiting, options)
        return result._replace(lane_iterations=result.lane_iterations[None])

    cases = PartitionSpec("cases")
    run = jax.shard_map(local, mesh=Mesh(np.array(devices), ("cases",)), in_specs=cases,
                        out_specs=cases, check_vma=False)
    result = run(*jax.tree_util.tree_map(deal, (problem, params, waiting)))
    spent = result.lane_iterations.sum()
    result = jax.tree_util.tree_map(collect, result._replace(lane_iterations=None))
    return result._replace(lane_iterations=spent)


def _check(algorithm, problem, params, every: int, stopped, state, res, conv, div,
           freeze: bool = True):
    """``every`` iterations of the cases not ``stopped``, then their convergence check.
    Returns the state, the residuals (frozen where stopped), the fresh residuals and the
    converged and diverged flags. The residuals are those of ``algorithm.advance``. Without
    ``freeze`` the caller guarantees that no case has stopped (nothing to hold)."""
    def hold(old, new):
        return _freeze(stopped, old, new) if freeze else new

    def one(_, s):
        return hold(s, algorithm.step(problem, params, s))

    before = jax.lax.fori_loop(0, every - 1, one, state)
    stepped, new_res = algorithm.advance(problem, params, before)
    after = hold(before, stepped)
    finite = algorithm.finite(after, new_res)
    running = ~stopped
    conv = conv | (running & finite & algorithm.converged(params, new_res))
    div = div | (running & ~finite)
    return after, hold(res, new_res), new_res, conv, div


def _record(algorithm, problem, params, trace, state, new_res, running, write):
    """``write(trace, reported residuals)`` where some case records (``running`` of them
    at a traced iteration): the reported residuals are computed only then."""
    return jax.lax.cond(running.any(),
                        lambda t: write(t, algorithm.report(problem, params, state, new_res)),
                        lambda t: t, trace)


def _iterate(algorithm, problem, params, waiting, options: DriverOptions
             ) -> DriverResult:
    state0 = algorithm.init(problem, params)
    res0, reported = _residual_shapes(algorithm, problem, params, state0)
    n_cases = jax.tree_util.tree_leaves(res0)[0].shape[0]
    res0 = _inf_like(res0)
    trace0 = None
    if options.trace_every:
        trace0 = jax.tree_util.tree_map(
            lambda r: jnp.full((n_cases, options.n_trace), jnp.nan, r.dtype), reported)
    zeros = jnp.zeros(n_cases, bool)
    blocks_per_trace = options.trace_every // options.check_every if options.trace_every else 0

    def block(carry):
        blk, state, res, iterations, conv, div, trace = carry
        stopped = conv | div | ~waiting
        # A lone case runs only while it has not stopped (the loop ends then): no freeze.
        after, res, new_res, new_conv, new_div = _check(
            algorithm, problem, params, options.check_every, stopped, state, res, conv, div,
            freeze=n_cases > 1)
        running = ~stopped
        iterations = jnp.where(stopped, iterations, (blk + 1) * options.check_every)
        if trace is not None:
            slot = (blk + 1) // blocks_per_trace - 1
            record = ((blk + 1) % blocks_per_trace == 0)

            def write(trace, reported):
                def column(t, r):
                    return jax.lax.dynamic_update_index_in_dim(
                        t, jnp.where(running, r, jnp.nan), slot, 1)

                return jax.tree_util.tree_map(column, trace, reported)

            trace = _record(algorithm, problem, params, trace, after, new_res,
                            running & record, write)
        return blk + 1, after, res, iterations, new_conv, new_div, trace

    def keep_going(carry):
        blk, _, _, _, conv, div, _ = carry
        return (blk < options.n_blocks) & ~jnp.all(conv | div | ~waiting)

    carry = (jnp.int32(0), state0, res0, jnp.zeros(n_cases, jnp.int32), zeros, zeros, trace0)
    blk, state, res, iterations, conv, div, trace = jax.lax.while_loop(keep_going, block, carry)
    spent = blk.astype(jnp.int64) * options.check_every * n_cases
    # A case's state is frozen since its last check: its reported residuals are those of then.
    res = _report(algorithm, problem, params, state, res, iterations > 0)
    return DriverResult(state, res, iterations, conv, div, trace, spent)


def _take(tree, index):
    return jax.tree_util.tree_map(lambda v: v[index], tree)


def _put(tree, index, values):
    """Scatter ``values`` into rows ``index`` of ``tree``; out-of-range rows are dropped."""
    return jax.tree_util.tree_map(lambda t, v: t.at[index].set(v, mode="drop"), tree, values)


def _continuous(algorithm, problem, params, waiting, options: DriverOptions
                ) -> DriverResult:
    n_cases = jax.tree_util.tree_leaves(params)[0].shape[0]
    n_queued = waiting.sum(dtype=jnp.int32)  # ``waiting`` is a prefix of the queue
    n_lanes = min(options.lanes, n_cases)
    limit, every = options.iteration_limit, options.check_every
    idle = n_cases  # the case index of a lane with nothing left to do

    def load(case):
        """Problem, parameters and initial state of the cases ``case`` (idle lanes: the
        last case, never iterated)."""
        lane_problem, lane_params = _take((problem, params), jnp.minimum(case, n_cases - 1))
        return lane_problem, lane_params, algorithm.init(lane_problem, lane_params)

    case = jnp.arange(n_lanes, dtype=jnp.int32)
    case = jnp.where(case < n_queued, case, idle)
    lane_problem, lane_params, state = load(case)
    res_lane, reported = _residual_shapes(algorithm, lane_problem, lane_params, state)
    res_lane = _inf_like(res_lane)
    lanes_false = jnp.zeros(n_lanes, bool)
    lane = (case, lane_problem, lane_params, state, res_lane, jnp.zeros(n_lanes, jnp.int32),
            lanes_false, lanes_false)

    def rows(v):
        return jnp.zeros((n_cases,) + v.shape[1:], v.dtype)

    out = (jax.tree_util.tree_map(rows, state), jax.tree_util.tree_map(rows, reported),
           jnp.zeros(n_cases, jnp.int32), jnp.zeros(n_cases, bool), jnp.zeros(n_cases, bool))
    trace = None
    if options.trace_every:
        trace = jax.tree_util.tree_map(
            lambda r: jnp.full((n_cases, options.n_trace), jnp.nan, r.dtype), reported)

    def check(_, carry):
        """``check_every`` iterations of every running lane, then its convergence check."""
        (case, lane_problem, lane_params, state, res, iterations, conv, div), trace = carry
        stopped = conv | div | (iterations >= limit) | (case == idle)
        after, res, new_res, conv, div = _check(
            algorithm, lane_problem, lane_params, every, stopped, state, res, conv, div)
        running = ~stopped
        iterations = jnp.where(stopped, iterations, iterations + every)
        if trace is not None:
            record = running & (iterations % options.trace_every == 0)
            slot = iterations // options.trace_every - 1
            row = jnp.where(record, case, idle)

            def write(trace, reported):
                return jax.tree_util.tree_map(lambda t, r: t.at[row, slot].set(r, mode="drop"),
                                              trace, reported)

            trace = _record(algorithm, lane_problem, lane_params, trace, after, new_res, record,
                            write)
        return (case, lane_problem, lane_params, after, res, iterations, conv, div), trace

    def refill(finished, next_case, lane, out):
        """Finished lanes hand over their results and take the next cases of the queue,
        lowest lane first."""
        case, lane_problem, lane_params, state, res, iterations, conv, div = lane
        reported = _report(algorithm, lane_problem, lane_params, state, res, iterations > 0)
        out = _put(out, jnp.where(finished, case, idle), (state, reported, iterations, conv, div))
        incoming = next_case + jnp.cumsum(finished, dtype=jnp.int32) - 1
        new_case = jnp.where(finished, jnp.where(incoming < n_queued, incoming, idle), case)
        fresh = load(new_case)
        lane_problem, lane_params, state = _freeze(~finished, (lane_problem, lane_params, state),
                                                   fresh)
        res = _freeze(~finished, res, jax.tree_util.tree_map(lambda r: jnp.full_like(r, jnp.inf), res))
        lane = (new_case, lane_problem, lane_params, state, res,
                jnp.where(finished, 0, iterations), conv & ~finished, div & ~finished)
        return next_case + finished.sum(dtype=jnp.int32), lane, out

    def round_(carry):
        rounds, next_case, lane, out, trace = carry
        lane, trace = jax.lax.fori_loop(0, options.checks_per_refill, check, (lane, trace))
        case, _, _, _, _, iterations, conv, div = lane
        finished = (conv | div | (iterations >= limit)) & (case != idle)
        # Most rounds finish no case: skip the gathers and scatters then.
        next_case, lane, out = jax.lax.cond(finished.any(), refill, lambda f, *rest: rest,
                                            finished, next_case, lane, out)
        return rounds + 1, next_case, lane, out, trace

    def keep_going(carry):
        return jnp.any(carry[2][0] != idle)

    carry = (jnp.int32(0), jnp.int32(n_lanes), lane, out, trace)
    rounds, _, _, out, trace = jax.lax.while_loop(keep_going, round_, carry)
    state, res, iterations, conv, div = out
    spent = rounds.astype(jnp.int64) * options.checks_per_refill * every * n_lanes
    return DriverResult(state, res, iterations, conv, div, trace, spent)
