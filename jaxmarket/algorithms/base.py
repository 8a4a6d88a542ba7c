"""What an algorithm is: a frozen, hashable object whose fields are its hyperparameters.

Model: optimistix's solvers and optax's ``init/update`` pairs. Every algorithm of the
package subclasses ``Algorithm`` and is driven by the one iteration driver
(``jaxmarket.driver``) through five pure, jit-able methods:

    params = algorithm.params(n_cases, dtype)            # per-case traced values
    state  = algorithm.init(problem, params)
    state  = algorithm.step(problem, params, state)
    res    = algorithm.residuals(problem, params, previous, state)   # (B,) arrays
    done   = algorithm.converged(params, res)                        # (B,) bool

and, with defaults built on those, the driver's ``advance``, ``report`` and ``finite``
(the end of the class).

Each field is declared once with ``hyperparameter`` (default, unit, description, checker).
The study schema's ``[solver]`` section, its defaults, the rows' label columns and the
command line's solver options all derive from these declarations. A field is either
*traced* (a per-case value of ``params``: penalties and tolerances, so a sweep over them
reuses one compiled program) or *static* (part of the compiled program: sequences,
balancing rules). ``static()`` is the algorithm with its traced fields blanked: the key
under which its program is compiled.
"""

from __future__ import annotations

import abc
import dataclasses
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxmarket.community import scales
from jaxmarket.schema import integer, number

# The iteration counter is int32 and max_iter is rounded up to a multiple of check_every:
# the largest limit that cannot wrap it.
MAX_ITERATIONS = 2**30


def hyperparameter(default, unit: str, description: str, check, *, traced: bool = False,
                   tolerance: bool = False, optional: bool = False, suffixes=None):
    """Declare a field: its default, unit, one-line description and input checker
    ``check(value, field) -> value``. ``traced``: a per-case value of ``params``;
    ``tolerance``: a stopping tolerance (infinite: the test is off); ``optional``: added
    after the first studies, so left out of a study's resolved config unless given (the
    studies written before keep their config hash); ``suffixes``: column suffixes of a
    pair-valued field (default ``_lo``, ``_hi``)."""
    return dataclasses.field(default=default, metadata={
        "unit": unit, "description": description, "check": check, "traced": traced,
        "tolerance": tolerance, "optional": optional, "suffixes": suffixes})


def positive(value, field):
    return number(value, field, gt=0)


def penalty(description: str = "ADMM penalty rho (the initial one under residual balancing)"):
    """The penalty rho of the ADMM family, declared once for all of them."""
    return hyperparameter(1.0, "EUR/MW^2h", description, positive, traced=True)


@dataclasses.dataclass(frozen=True)
class Algorithm(abc.ABC):
    """Base of every algorithm: the global stopping rule (T3.12) and the iteration limits."""

    name: ClassVar[str]  # registry and study name
    label: ClassVar[str]  # name in reports
    markets: ClassVar[frozenset[str]]  # market kinds it solves: "p2p", "pool", "reserve", "endogenous"
    neighbour_lists: ClassVar[bool] = False  # runs on (B, N, D) neighbour lists too
    # > 0: every case is finished after this many steps (a direct solver): the markets run
    # no more, whatever max_iter, check_every and trace_every say.
    steps: ClassVar[int] = 0
    # Tolerances on a change of power per iteration under the penalty rho: such a change
    # leaves a price error of up to rho times it (docs/stopping.md, "Scale").
    penalised: ClassVar[tuple[str, ...]] = ()

    eps_primal: float = hyperparameter(
        1e-4, "MW", "tolerance on the primal residual sqrt(sum_n r_n)", positive, traced=True,
        tolerance=True)
    eps_dual: float = hyperparameter(
        1e-4, "MW", "tolerance on the dual residual sqrt(sum_n s_n)", positive, traced=True,
        tolerance=True)
    max_iter: int = hyperparameter(
        10_000, "iterations", "iteration limit (rounded up to a multiple of check_every)",
        partial(integer, gt=0, lt=MAX_ITERATIONS))
    check_every: int = hyperparameter(
        1, "iterations", "iterations between two convergence checks", partial(integer, gt=0))
    trace_every: int = hyperparameter(
        0, "iterations", "iterations between two recorded residuals (0: no trace; a multiple "
        "of check_every)", partial(integer, ge=0))

    @classmethod
    def declarations(cls) -> tuple[dataclasses.Field, ...]:
        """The hyperparameters (fields declared with ``hyperparameter``), in order."""
        return tuple(f for f in dataclasses.fields(cls) if "check" in f.metadata)

    def static(self) -> "Algorithm":
        """The algorithm with its traced fields blanked: equal for every penalty and
        tolerance, hence one compiled program for all of them."""
        return dataclasses.replace(self, **{f.name: None for f in self.declarations()
                                            if f.metadata["traced"]})

    def stopping_at_first_check(self) -> "Algorithm":
        """The algorithm with infinite tolerances: every case stops at its first check
        (compiles the programs at the cost of one iteration per case)."""
        return dataclasses.replace(self, **{f.name: float("inf") for f in self.declarations()
                                            if f.metadata["tolerance"]})

    def on_neighbour_lists(self) -> bool:
        """Whether this instance may run on neighbour lists (its class may, and its options
        allow it)."""
        return self.neighbour_lists

    def relative_tolerances(self) -> tuple[str, ...]:
        """Tolerances given as fractions of an agent's size (already scale-aware)."""
        return ()

    def case_params(self, params, community):
        """``params`` with every case's stopping tolerances made scale-aware
        (docs/stopping.md, "Scale"): a tolerance in MW is a fraction of the case's power
        scale P where P < 1 MW, one in EUR/MWh a fraction of its price scale where that is
        below 1 EUR/MWh, and a tolerance on a change of power under the penalty rho is
        also at most the share pi / rho of it (the price error rho times the change must
        stay a fraction of the price scale pi). Cases at ordinary scales keep their
        tolerances bit for bit (every factor is 1)."""
        rules = tuple((f.name, f.metadata["unit"], f.name in self.relative_tolerances(),
                       f.name in self.penalised and "rho" in params._fields)
                      for f in self.declarations()
                      if f.metadata["tolerance"] and getattr(params, f.name, None) is not None)
        return _scale_aware(params, community, rules)

    def traced(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.declarations()
                if f.metadata["traced"]}

    # The protocol (module doc).
    @abc.abstractmethod
    def params(self, n_cases: int, dtype): ...

    @abc.abstractmethod
    def init(self, problem, params): ...

    @abc.abstractmethod
    def step(self, problem, params, state): ...

    @abc.abstractmethod
    def residuals(self, problem, params, previous, current): ...

    @abc.abstractmethod
    def converged(self, params, residuals): ...

    # What the driver calls at a check (``jaxmarket.driver``). The defaults are the protocol
    # above; an algorithm may compute the step and the residuals of its stopping test
    # together, leave out of them what the test does not read, and answer the divergence
    # test from values it has already reduced.
    def advance(self, problem, params, state):
        """One step and the residuals of the convergence check: ``(state, residuals)``."""
        new = self.step(problem, params, state)
        return new, self.residuals(problem, params, state, new)

    def report(self, problem, params, state, residuals):
        """The residuals of ``advance`` completed to those of ``residuals`` for the traces
        and the result (``state``: the state they were checked at)."""
        return residuals

    def finite(self, state, residuals) -> jnp.ndarray:
        """(B,) whether every value of each case's state and check residuals is finite (else
        the case is flagged diverged)."""
        return all_finite(residuals) & all_finite(state)


def all_finite(tree) -> jnp.ndarray:
    """(B,) True where every value of the case (leading axis) is finite."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.stack([jnp.isfinite(v).reshape(v.shape[0], -1).all(1) for v in leaves]).all(0)


@partial(jax.jit, static_argnums=2)
def _scale_aware(params, community, rules):
    """``Algorithm.case_params`` in one compiled program (eagerly, every operation would
    compile one of its own per batch shape): ``rules`` holds (field, unit, relative,
    penalised)."""
    power, price = scales(community)
    one = jnp.ones_like(power)
    factors = {}
    for name, unit, relative, penalised in rules:
        value = getattr(params, name)
        factor = {"MW": one if relative else jnp.minimum(one, power),
                  "EUR/MWh": jnp.minimum(one, price)}.get(unit, one)
        if penalised:
            factor = jnp.minimum(factor, price / params.rho)
        factors[name] = value * factor.astype(value.dtype)
    return params._replace(**factors)
