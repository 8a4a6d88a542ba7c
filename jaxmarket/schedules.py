"""The persistent sequences of relaxed consensus + innovation (SPEC 3.3, T3.5).

A sequence is an optax schedule: a function of the step count (0 for the first update,
so the thesis index is ``k = count + 1``) returning a scalar or a (B,) value. Any optax
schedule fits (``optax.constant_schedule``, ``optax.exponential_decay``, ...);
``inverse_power`` adds the thesis family ``c / k^p``, which optax does not provide.

Algorithms close over their sequences, so a sequence is part of the compiled program, not
a traced parameter. ``inverse_power`` is memoised: equal ``(scale, power)`` give the very
same function, hence the same compiled program when a sweep rebuilds its options.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import optax


@functools.cache
def inverse_power(scale: float, power: float) -> optax.Schedule:
    """``scale / k^power`` with ``k = count + 1`` (a constant for ``power = 0``)."""

    def schedule(count):
        return scale / (jnp.asarray(count) + 1.0) ** power

    return schedule


class Sequences(NamedTuple):
    alpha: optax.Schedule  # innovation gain on the reciprocity mismatch
    beta: optax.Schedule  # consensus gain on the price disagreement
    eta: optax.Schedule  # step of the bound duals
    delta: optax.Schedule  # offset of the trade weights g_nm


# Named settings of the four sequences as (c, p) pairs in c / k^p.
TUNINGS = {
    # T3.5, the thesis' persistent sequences.
    "thesis": dict(alpha=(0.01, 0.01), beta=(0.1, 0.1), eta=(0.005, 0.0), delta=(1.0, 0.0)),
    # The consensus + innovation loop published with the New England case in 2018
    # (virtual-node form): constant gains, slowly decaying dual step and weight offset.
    "reference_2018": dict(alpha=(0.01, 0.0), beta=(0.01, 0.0), eta=(0.005, 0.01),
                           delta=(1.0, 0.01)),
}


def power_laws(alpha, beta, eta, delta) -> Sequences:
    """The four sequences from ``(scale, power)`` pairs."""
    return Sequences(*(inverse_power(float(c), float(p)) for c, p in (alpha, beta, eta, delta)))


THESIS = power_laws(**TUNINGS["thesis"])
