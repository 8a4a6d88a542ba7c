"""The energy + reserve market (T ch. 5) of a study: renewables, allocation, consensus ADMM
with the reserve market's local update, joint reference, Monte Carlo coverage, one row
per case.

Columns (per case):
``iterations, converged, diverged, primal_residual, dual_residual, local_failures``
(local QPs that missed their tolerance, summed over iterations), ``objective`` (with
charges), ``cost`` (energy and reserve cost, no charges), ``joint_cost``,
``joint_converged``, ``optimality_gap`` (NaN, see below) and ``cost_gap = (cost - joint_cost) / |joint_cost|`` (the joint
reference clears energy as a pool and books no charges, so compare studies without
charges); ``coverage_global`` and ``coverage_local_min/mean`` (empirical probabilities,
next to ``delta``) and ``joint_coverage_global``; ``delta_local_min/mean`` (the
allocation's delta_n); reserves per agent type: ``up_bought_renewable`` and
``down_bought_renewable`` (net reserve trades of the uncertain agents),
``down_held_renewable`` (their own spill), ``up_held_producer``, ``down_held_producer``,
``up_held_consumer``, ``down_held_consumer`` (self-procured r+-_n of the others; a
prosumer counts as a producer), ``joint_reserve_up/down``; ``n_uncertain``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxmarket import reserve, uncertainty
from jaxmarket.algorithms import Algorithm
from jaxmarket.community import Community
from jaxmarket.driver import DriverResult, iterate
from jaxmarket.errors import InputError
from jaxmarket.markets.lanes import driver_options
from jaxmarket.markets.rows import BatchResult, driver_columns
from jaxmarket.renewables import RenewableParams, add_renewables, case_keys


@dataclass(frozen=True)
class ReserveStudyParams:
    allocation: str = "rel_1"
    delta: float = 0.95
    renewables: RenewableParams = RenewableParams()

    def validate(self) -> None:
        if self.allocation not in uncertainty.ALLOCATIONS:
            raise InputError("reserve.allocation", f"unknown allocation {self.allocation!r}; "
                                                   f"choose one of {list(uncertainty.ALLOCATIONS)}")
        if not 0 < self.delta < 1:
            raise InputError("reserve.delta", f"must be in (0, 1), got {self.delta}")
        self.renewables.validate()


def build_market(community: Community, seed: int, case_indices, params: ReserveStudyParams):
    """The market with the allocation's requirement quantiles, its forecasts, the case
    keys and the local confidence levels delta_n."""
    params.validate()
    market, forecast = add_renewables(community, seed, case_indices, params.renewables)
    keys = case_keys(seed, case_indices)
    delta = jnp.full(community.n_cases, params.delta, community.dtype)
    local = uncertainty.allocate(params.allocation, delta, forecast, market.uncertain, keys)
    q_low, q_high = uncertainty.requirement_quantiles(forecast, local)
    market = market._replace(q_low=jnp.where(market.uncertain, q_low, 0.0),
                             q_high=jnp.where(market.uncertain, q_high, 0.0))
    return market, forecast, keys, local


class ReserveRun(NamedTuple):
    """The ADMM of a batch with what its rows need; every field is batch-first."""
    market: reserve.ReserveMarket
    forecast: uncertainty.Forecast
    keys: jax.Array  # (B, 2) the cases' random keys
    local: jax.Array  # (B, N) the allocation's delta_n
    result: DriverResult

    @property
    def lane_iterations(self) -> jax.Array:
        return self.result.lane_iterations


def check_algorithm(algorithm: Algorithm, field: str = "solver.algorithm") -> None:
    if "reserve" not in algorithm.markets:
        raise InputError(field, f"the energy and reserve market runs consensus ADMM only "
                                f"(\"admm\"), got {algorithm.name!r}")


def run(community: Community, params: ReserveStudyParams, seed: int, case_indices,
        algorithm: Algorithm, driver: str = "continuous") -> ReserveRun:
    """Consensus ADMM with the reserve market's local update alone on every case of the
    batch (the costly part); no trace."""
    check_algorithm(algorithm)
    return _iterate(*build_market(community, seed, case_indices, params), algorithm, driver)


def _iterate(market: reserve.ReserveMarket, forecast, keys, local, algorithm: Algorithm,
             driver: str) -> ReserveRun:
    community = market.community
    algorithm = dataclasses.replace(algorithm, local=reserve.ReserveUpdate(), trace_every=0)
    solver = algorithm.case_params(algorithm.params(community.n_cases, community.dtype),
                                   community)
    return ReserveRun(market, forecast, keys, local,
                      iterate(algorithm.static(), market, solver,
                              driver_options(community, algorithm, driver)))


def tabulate(community: Community, params: ReserveStudyParams, run: ReserveRun) -> BatchResult:
    """One row per case: the ADMM's outcome, its Monte Carlo coverage and the joint
    chance-constrained reference."""
    market, forecast, keys, local, result = run
    state = result.state
    agents = state.local
    n_cases, dtype = community.n_cases, community.dtype
    uncertain = market.uncertain
    up_total, down_total = reserve.reserve_totals(state.trades, agents)
    on = lambda v, mask: jnp.where(mask, v, 0.0).sum(-1)  # noqa: E731
    cover = uncertainty.coverage(forecast, uncertain, agents.power, up_total, down_total,
                                 on(up_total, uncertain), on(down_total, uncertain), keys)

    levels = uncertainty.global_levels(jnp.full(n_cases, params.delta, dtype))
    sum_low, sum_high = uncertainty.sum_quantile(forecast, uncertain, levels, keys).T
    joint = reserve.solve_joint(market, sum_low, sum_high)
    joint_cover = uncertainty.coverage(forecast, uncertain, joint.power, joint.up, joint.down,
                                       joint.up.sum(-1), joint.down.sum(-1), keys)
    cost = reserve.market_cost(market, agents.power, agents.up, agents.down)
    active = community.active
    certain = active & ~uncertain
    producer = certain & (community.p_max > 0)
    consumer = certain & (community.p_max <= 0)
    local_cov = np.asarray(cover.local)
    with np.errstate(all="ignore"):
        local_min = np.nanmin(np.where(np.isnan(local_cov), np.inf, local_cov), -1)
        local_mean = np.nanmean(local_cov, -1)
    delta_local = np.where(np.asarray(uncertain), np.asarray(local), np.nan)
    rows = {
        **driver_columns(result),
        "local_failures": agents.local_failures,
        "objective": result.residuals.objective,
        "cost": cost,
        "joint_cost": joint.cost,
        "joint_converged": joint.converged,
        "cost_gap": (cost - joint.cost) / jnp.abs(joint.cost),
        # No exact reference of the P2P energy + reserve problem runs inside a study (the
        # tests check the ADMM against Clarabel); NaN keeps the column every study has.
        "optimality_gap": jnp.full(n_cases, jnp.nan),
        "coverage_global": cover.global_,
        "coverage_local_min": local_min,
        "coverage_local_mean": local_mean,
        "joint_coverage_global": joint_cover.global_,
        "delta_local_min": np.nanmin(np.where(np.isnan(delta_local), np.inf, delta_local), -1),
        "delta_local_mean": np.nanmean(delta_local, -1),
        "up_bought_renewable": on(state.trades[:, 1].sum(-1), uncertain),
        "down_bought_renewable": on(state.trades[:, 2].sum(-1), uncertain),
        "down_held_renewable": on(agents.down, uncertain),
        "up_held_producer": on(agents.up, producer),
        "down_held_producer": on(agents.down, producer),
        "up_held_consumer": on(agents.up, consumer),
        "down_held_consumer": on(agents.down, consumer),
        "joint_reserve_up": joint.up.sum(-1),
        "joint_reserve_down": joint.down.sum(-1),
        "n_uncertain": uncertain.sum(-1),
    }
    rows = {k: np.asarray(v) for k, v in rows.items()}
    trades = state.trades[:, 0].astype(jnp.float64)
    prices = state.prices[:, 0].astype(jnp.float64)
    return BatchResult(rows, None, trades, prices)


def has_reserve(case) -> bool:
    """Whether a case file carries reserve data: a ``reserve`` section or an agent's
    reserve field (``jaxmarket.case``); such a case clears the energy + reserve market."""
    return "reserve" in case.meta or any(case.meta["agent_reserve"])


def case_params(case) -> ReserveStudyParams:
    """The confidence level and allocation of a case file's ``reserve`` section."""
    settings = case.meta.get("reserve")
    if settings is None:
        raise InputError("reserve", "missing: the case's agents carry reserve data, which "
                                    "needs the reserve section (delta, allocation)")
    return ReserveStudyParams(settings.get("allocation", "rel_1"), settings["delta"])


def case_market(case) -> tuple:
    """A case file's energy + reserve market (its agents' reserve fields, see
    ``jaxmarket.case``): the ``ReserveMarket`` with the allocation's requirement
    quantiles, the forecasts, the case's random keys (``case_keys(0, [0])``: coverage
    samples) and the local confidence levels."""
    agents = case.meta["agent_reserve"]
    params = case_params(case)
    c = case.community

    def column(key, default):
        return jnp.asarray([[agent.get(key, default[n]) for n, agent in enumerate(agents)]],
                           c.dtype)

    a = np.asarray(c.a[0])
    zeros = np.zeros(len(agents))
    uncertain = jnp.asarray([[bool(agent.get("uncertain")) for agent in agents]])
    forecasts = [agent.get("forecast", {}) for agent in agents]
    forecast = uncertainty.Forecast(
        *(jnp.asarray([[f.get(key, 0.0) for f in forecasts]], c.dtype)
          for key in ("mean", "sd", "low", "high")),
        jnp.asarray([[f.get("distribution") == "beta" for f in forecasts]]))
    keys = case_keys(0, [0])
    delta = jnp.full(1, params.delta, c.dtype)
    local = uncertainty.allocate(params.allocation, delta, forecast, uncertain, keys)
    q_low, q_high = uncertainty.requirement_quantiles(forecast, local)
    market = reserve.ReserveMarket(
        c, column("reserve_a_up", a), column("reserve_b_up", zeros),
        column("reserve_a_down", a), column("reserve_b_down", zeros),
        column("r_up_max", zeros), column("r_down_max", zeros), uncertain,
        jnp.where(uncertain, q_low, 0.0), jnp.where(uncertain, q_high, 0.0))
    return market, forecast, keys, local


def run_case(case, algorithm: Algorithm, driver: str = "continuous") -> ReserveRun:
    """Consensus ADMM on a case file's energy + reserve market (``case_market``; its
    community with the charges it clears under); rows: ``tabulate(case.community,
    case_params(case), ...)``."""
    check_algorithm(algorithm)
    return _iterate(*case_market(case), algorithm, driver)
