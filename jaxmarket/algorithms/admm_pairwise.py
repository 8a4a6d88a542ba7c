"""Over-relaxed consensus ADMM in which every trade balances its own penalty.

Residual balancing (``admm``, ``rho_balance``) moves one rho per case with the global
primal and dual residuals. Here the two ends of a trade move the trade's own ``rho_nm``
with the trade's shares of those residuals, every iteration,

    r_nm = sqrt(2) |p_nm + p_mn|,   s_nm = sqrt((p_nm - p_nm^prev)^2 + (p_mn - p_mn^prev)^2),
    rho_nm <- rho_nm * clip(sqrt(r_nm / s_nm), 1 / soften, stiffen)

(``sum r_nm^2`` and ``sum s_nm^2`` over the pairs are the squares of the stopping rule's
residuals, T3.13): a trade whose ends disagree more than they move stiffens, by at most the
factor ``pair_rho_stiffen`` per iteration, one that moves more than its ends disagree
softens, by at most ``pair_rho_soften``, within a factor eps^(-1/3) of the initial rho as
residual balancing; a trade with both shares zero keeps its rho. Stiffening faster than
softening (3 against 1.5) saves a tenth of the iterations with and without charges
(docs/acceleration.md, "Pairwise penalties"). Both ends of a trade know ``p_nm``,
``p_mn`` and their previous values, and the rule is symmetric in n and m to the last bit,
so both compute the same ``rho_nm``: it costs no message, not even the global residuals
that balancing reads. The prices stay unscaled and symmetric, and each agent's local solve
takes one penalty per trade (``jaxmarket.local``). The consensus step is over-relaxed as in
``admm_relaxed``, and the stop is exact as there (``centred``).

With distance charges a per-case rho must serve trades whose reduced costs differ by
orders of magnitude; per trade, each finds its own (docs/acceleration.md, "Pairwise
penalties").
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import ClassVar

import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMParams, ADMMState
from jaxmarket.algorithms.admm_relaxed import RelaxedADMM
from jaxmarket.algorithms.base import hyperparameter
from jaxmarket.algorithms.centred import per_case
from jaxmarket.errors import InputError
from jaxmarket.schema import number


@dataclasses.dataclass(frozen=True)
class PairwiseADMM(RelaxedADMM):
    """Over-relaxed ADMM with one self-balancing penalty per trade (module doc);
    ``state.rho`` has the layout of the trades."""

    name: ClassVar[str] = "admm_pairwise"
    label: ClassVar[str] = "ADMM, pairwise penalties"

    pair_rho_stiffen: float = hyperparameter(
        3.0, "1", "pairwise penalties: the largest factor by which a trade's rho grows in one "
        "iteration", partial(number, gt=1), optional=True)
    pair_rho_soften: float = hyperparameter(
        1.5, "1", "pairwise penalties: the largest factor by which a trade's rho falls in one "
        "iteration", partial(number, gt=1), optional=True)

    # Its rule replaces residual balancing of one rho per case: those keys are not its own.
    replaced: ClassVar[frozenset[str]] = frozenset({"rho_balance", "rho_balance_factor",
                                                    "rho_balance_every"})

    @classmethod
    def declarations(cls):
        return tuple(f for f in super().declarations() if f.name not in cls.replaced)

    def init(self, problem, params: ADMMParams) -> ADMMState:
        if self.rho_balance:
            raise InputError("solver.rho_balance", "admm_pairwise balances every trade's own "
                                                   "rho; set rho_balance = 0")
        state = super().init(problem, params)
        return state._replace(rho=jnp.broadcast_to(per_case(params.rho, state.trades),
                                                  state.trades.shape))

    def balanced_rho(self, params: ADMMParams, state: ADMMState, trades, count, reverse):
        """Every trade's next penalty (module doc)."""
        primal = math.sqrt(2) * jnp.abs(trades + reverse(trades))
        change = trades - state.trades
        # hypot orders its two arguments before any arithmetic, so both ends round alike;
        # sqrt(a^2 + b^2) was seen to differ between the two ends in the last bit.
        dual = jnp.hypot(change, reverse(change))
        up, down = self.pair_rho_stiffen, self.pair_rho_soften
        moved, apart = dual > 0, primal > 0
        # The square root only of positive ratios: its derivative at 0 is infinite, and
        # `jaxmarket tune` differentiates through this rule.
        both = moved & apart
        ratio = jnp.sqrt(jnp.where(both, primal, 1.0) / jnp.where(both, dual, 1.0))
        factor = jnp.where(both, jnp.clip(ratio, 1 / down, up),
                           jnp.where(moved, 1 / down, jnp.where(apart, up, 1.0)))
        return self.bounded(params, state.rho * factor)
