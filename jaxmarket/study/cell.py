"""One cell of a study: the values of every swept key at one point, and what they build
(the communities, the algorithm, the energy and reserve study, the label columns)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from jaxmarket import algorithms
from jaxmarket.algorithms import Algorithm
from jaxmarket.asynchrony import AsynchronyParams
from jaxmarket.case import perturbed_costs
from jaxmarket.charges import ENDOGENOUS, GridCase, apply_policy, grid_outcome
from jaxmarket.congestion import LineLimits, line_limits
from jaxmarket.errors import InputError
from jaxmarket.community import Community, astype
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.markets.reserve import ReserveStudyParams
from jaxmarket.renewables import RenewableParams


def pair_suffixes(key: str) -> tuple[str, str]:
    """Column suffixes of a pair-valued key: an RCI sequence's [c, p], else a [low, high]."""
    section, name = key.split(".", 1)
    field = algorithms.solver_schema().get(name) if section == "solver" else None
    return (field and field.metadata["suffixes"]) or ("_lo", "_hi")


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: every community/graph/solver key at one value."""

    index: int
    values: dict[str, Any]  # "section.key" -> value (ranges as tuples)
    grid_case: GridCase | None = dataclasses.field(default=None, compare=False, repr=False)

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {key[len(prefix):]: v for key, v in self.values.items() if key.startswith(prefix)}

    @property
    def n_agents(self) -> int:
        if self.grid_case is not None:
            return self.grid_case.case.community.n_max
        return self.values["community.n_agents"]

    @property
    def generator(self) -> GeneratorParams:
        params = self.section("community")
        del params["n_agents"]
        return GeneratorParams(**params)

    @property
    def layout(self) -> str:
        return self.values["graph.layout"]

    @property
    def sparsity(self) -> float:
        return self.values["graph.sparsity"]

    @property
    def endogenous(self) -> bool:
        """Endogenous network charges: the system operator joins the negotiation."""
        return self.grid_case is not None and self.values.get("network.policy") in ENDOGENOUS

    @property
    def algorithm(self) -> Algorithm:
        solver = self.section("solver")
        if self.endogenous:  # the policy names the negotiation; [solver] gives its options
            policy = self.values["network.policy"]
            if solver.get("algorithm", "admm") != "admm":
                raise InputError("solver.algorithm", f"network.policy = {policy} runs its own "
                                                     f"negotiation: leave solver.algorithm out")
            solver = {**solver, "algorithm": policy}
        return algorithms.build(solver)

    def line_limits(self, n_cases: int) -> LineLimits | None:
        """The grid's limited lines for endogenous charges (None otherwise)."""
        return line_limits(self.grid_case.grid.network, n_cases) if self.endogenous else None

    def communities(self, seed: int, case_indices, dtype: str) -> Community:
        """The cell's cases ``case_indices`` as one batch: the only place a sweep builds
        communities, so every runner solves the same cases."""
        if self.grid_case is not None:
            network = self.section("network")
            community = perturbed_costs(self.grid_case.case.community, seed, case_indices,
                                        network["cost_perturbation"])
            if not self.endogenous:
                community = apply_policy(community, self.grid_case.grid, network["policy"],
                                         network["fee"])
            return astype(community, jnp.dtype(dtype))
        graph = self.section("graph")  # keys a study leaves out take generate's defaults
        return generate(seed, case_indices, self.n_agents, self.generator, dtype=jnp.dtype(dtype),
                        **graph)

    @property
    def reserve(self) -> ReserveStudyParams | None:
        """The energy and reserve study of the cell, None without a ``[reserve]`` section."""
        values = self.section("reserve")
        if not values:
            return None
        allocation, delta = values.pop("allocation"), values.pop("confidence")
        return ReserveStudyParams(allocation, delta, RenewableParams(**values))

    @property
    def asynchrony(self) -> AsynchronyParams | None:
        """The asynchronous negotiation of the cell, None without an ``[asynchrony]`` section."""
        values = self.section("asynchrony")
        return AsynchronyParams(**values) if values else None

    def grid_columns(self, result) -> dict[str, Any]:
        """Grid outcome columns of a market's ``BatchResult`` (none without a network case)."""
        return {} if self.grid_case is None else grid_outcome(self.grid_case.grid, result.trades,
                                                              result.injections)

    def labels(self) -> dict[str, Any]:
        """The cell's parameters as flat scalar columns (a range r as r_lo, r_hi)."""
        return flat_labels(self.values)


def flat_labels(values: dict[str, Any]) -> dict[str, Any]:
    """``section.key`` values as flat scalar columns (a pair r as r_lo, r_hi, or r_c, r_p
    for an RCI sequence)."""
    flat = {}
    for key, value in values.items():
        name = key.split(".", 1)[1]
        if isinstance(value, tuple):
            suffixes = pair_suffixes(key)
            flat[name + suffixes[0]], flat[name + suffixes[1]] = value
        else:
            flat[name] = value
    return flat
