"""The one iteration driver shared by every algorithm.

An algorithm plugs in as ``Algorithm(init, step, residuals, converged)``:

    state = init(problem, params)
    state = step(problem, params, state)
    res   = residuals(problem, params, previous_state, state)   # pytree of (B,) arrays
    done  = converged(params, res)                              # (B,) bool

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
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp


class Algorithm(NamedTuple):
    init: Callable[[Any, Any], Any]
    step: Callable[[Any, Any, Any], Any]
    residuals: Callable[[Any, Any, Any, Any], Any]
    converged: Callable[[Any, Any], jax.Array]


class DriverOptions(NamedTuple):
    max_iter: int = 10_000
    check_every: int = 1
    trace_every: int = 0  # 0: no trace
    block_size: int = 0  # 0: the whole batch at once; else blocks of cases one after another

    @property
    def n_blocks(self) -> int:
        return -(-self.max_iter // self.check_every)

    @property
    def n_trace(self) -> int:
        return self.n_blocks * self.check_every // self.trace_every if self.trace_every else 0


class DriverResult(NamedTuple):
    state: Any  # final (or frozen) state of every case
    residuals: Any  # residuals at the last check of every case
    iterations: jax.Array  # (B,) iterations run until the case stopped
    converged: jax.Array  # (B,) bool
    diverged: jax.Array  # (B,) bool: non-finite residuals
    trace: Any  # residual pytree of (B, n_trace) arrays, or None


def _freeze(stopped, old, new):
    def pick(o, n):
        mask = stopped.reshape(stopped.shape + (1,) * (n.ndim - 1))
        return jnp.where(mask, o, n)

    return jax.tree_util.tree_map(pick, old, new)


def _finite(tree):
    """(B,) True where every value of the case is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.stack([jnp.isfinite(v).reshape(v.shape[0], -1).all(1) for v in leaves]).all(0)


@partial(jax.jit, static_argnames=("algorithm", "options"))
def iterate(algorithm: Algorithm, problem, params, options: DriverOptions) -> DriverResult:
    """Iterate every case of the batch (leading axis of ``problem`` and ``params``)."""
    n_cases = jax.tree_util.tree_leaves(params)[0].shape[0]
    size = options.block_size
    if not size or size >= n_cases:
        return _iterate(algorithm, problem, params, options)
    n_blocks = -(-n_cases // size)
    padding = n_blocks * size - n_cases

    def to_blocks(v):  # pad by repeating the last case; its copies are dropped below
        v = jnp.concatenate([v, jnp.repeat(v[-1:], padding, 0)]) if padding else v
        return v.reshape((n_blocks, size) + v.shape[1:])

    blocks = jax.tree_util.tree_map(to_blocks, (problem, params))
    result = jax.lax.map(lambda block: _iterate(algorithm, *block, options), blocks)
    return jax.tree_util.tree_map(lambda v: v.reshape((-1,) + v.shape[2:])[:n_cases], result)


def _iterate(algorithm: Algorithm, problem, params, options: DriverOptions) -> DriverResult:
    state0 = algorithm.init(problem, params)
    res0 = algorithm.residuals(problem, params, state0, state0)
    n_cases = jax.tree_util.tree_leaves(res0)[0].shape[0]
    res0 = jax.tree_util.tree_map(lambda r: jnp.full_like(r, jnp.inf), res0)
    trace0 = None
    if options.trace_every:
        trace0 = jax.tree_util.tree_map(
            lambda r: jnp.full((n_cases, options.n_trace), jnp.nan, r.dtype), res0)
    zeros = jnp.zeros(n_cases, bool)
    blocks_per_trace = options.trace_every // options.check_every if options.trace_every else 0

    def block(carry):
        blk, state, res, iterations, conv, div, trace = carry
        stopped = conv | div

        def one(_, s):
            return _freeze(stopped, s, algorithm.step(problem, params, s))

        before = jax.lax.fori_loop(0, options.check_every - 1, one, state)
        after = one(0, before)
        new_res = algorithm.residuals(problem, params, before, after)
        finite = _finite(new_res) & _finite(after)
        running = ~stopped
        new_conv = conv | (running & finite & algorithm.converged(params, new_res))
        new_div = div | (running & ~finite)
        res = _freeze(stopped, res, new_res)
        iterations = jnp.where(stopped, iterations, (blk + 1) * options.check_every)
        if trace is not None:
            slot = (blk + 1) // blocks_per_trace - 1
            record = ((blk + 1) % blocks_per_trace == 0)

            def write(t, r):
                column = jnp.where(running, r, jnp.nan)
                return jnp.where(record, jax.lax.dynamic_update_index_in_dim(t, column, slot, 1), t)

            trace = jax.tree_util.tree_map(write, trace, new_res)
        return blk + 1, after, res, iterations, new_conv, new_div, trace

    def keep_going(carry):
        blk, _, _, _, conv, div, _ = carry
        return (blk < options.n_blocks) & ~jnp.all(conv | div)

    carry = (jnp.int32(0), state0, res0, jnp.zeros(n_cases, jnp.int32), zeros, zeros, trace0)
    _, state, res, iterations, conv, div, trace = jax.lax.while_loop(keep_going, block, carry)
    return DriverResult(state, res, iterations, conv, div, trace)
