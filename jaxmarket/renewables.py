"""Uncertain renewable agents added to generated communities (SPEC section 6).

``add_renewables(community, seed, case_indices, params)`` turns some producers of each
case into renewables and equips every agent with reserve data, returning the
``ReserveMarket`` (requirement quantiles still zero: ``jaxmarket.markets.reserve`` sets them
from an allocation) and the ``Forecast`` of every agent. The community itself is drawn by
``jaxmarket.generator`` and left bit-identical; the draws here come from a separate stream
``fold_in(fold_in(PRNGKey(seed), case_index), RENEWABLE_STREAM)``, so the same
``(seed, case_index)`` gives the same renewables under every allocation, confidence level
and distribution (common random numbers for paired comparisons).

Decisions:

- ``k = max(1, round(uncertain_fraction * N))`` producers with at least one trade partner
  become renewable (fewer if the case has fewer such producers), picked uniformly at
  random. A renewable keeps its capacity ``p_max``; its energy cost is zero
  (``a = b = 0``), it holds no upward reserve (``r+max = 0``) and spills for free
  (``r-max = p_max``, zero cost).
- Its forecast has mean ``U(mean_share) * p_max`` and standard deviation
  ``U(sd_share) * p_max``; a ``"beta"`` forecast is a scaled Beta on ``[0, p_max]`` with
  the same two moments (the defaults, mean 15-35 % and sd 10-20 % of capacity, give
  right-skewed shapes where the allocations stop being equivalent).
- Every other agent may hold reserves up to ``reserve_share * (p_max - p_min)`` in each
  direction at cost ``a+- = reserve_cost_factor * a_n``, ``b+- = 0`` (SPEC: a+- = a_n).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp

from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.reserve import ReserveMarket
from jaxmarket.schema import number, text
from jaxmarket.uncertainty import DISTRIBUTIONS, Forecast

RENEWABLE_STREAM = 0x5E5E00


def _key(default, unit: str, description: str, check):
    """A study key of the ``[reserve]`` section (``jaxmarket.study.config``)."""
    return dataclasses.field(default=default, metadata={"unit": unit, "description": description,
                                                        "check": check})


@dataclass(frozen=True)
class RenewableParams:
    uncertain_fraction: float = _key(0.2, "1", "share of the agents that are uncertain renewables",
                                     partial(number, ge=0, lt=1))
    distribution: str = _key("gaussian", "n/a", "forecast distribution: gaussian or beta",
                             partial(text, choices=DISTRIBUTIONS))
    reserve_share: float = _key(0.2, "1", "reserve limit of every certain agent in each "
                                "direction, as a share of p_max - p_min", partial(number, ge=0))
    reserve_cost_factor: float = _key(1.0, "1", "reserve cost curvature as a multiple of the "
                                      "agent's a", partial(number, ge=0))
    mean_share: tuple[float, float] = (0.15, 0.35)
    sd_share: tuple[float, float] = (0.1, 0.2)

    def validate(self) -> None:
        if not 0 <= number(self.uncertain_fraction, "reserve.uncertain_fraction") <= 1:
            raise InputError("reserve.uncertain_fraction", "must be in [0, 1]")
        if self.distribution not in DISTRIBUTIONS:
            raise InputError("reserve.distribution",
                             f"unknown distribution {self.distribution!r}; choose one of "
                             f"{list(DISTRIBUTIONS)}")
        if number(self.reserve_share, "reserve.reserve_share") < 0:
            raise InputError("reserve.reserve_share", "must be >= 0")
        if number(self.reserve_cost_factor, "reserve.reserve_cost_factor") < 0:
            raise InputError("reserve.reserve_cost_factor", "must be >= 0")
        for name in ("mean_share", "sd_share"):
            low, high = (number(v, f"reserve.{name}") for v in getattr(self, name))
            if not 0 <= low <= high <= 1:
                raise InputError(f"reserve.{name}", "must be a range 0 <= low <= high <= 1")
        narrowest = min(m * (1 - m) for m in self.mean_share)
        if self.distribution == "beta" and not self.sd_share[1] ** 2 < narrowest:
            raise InputError("reserve.sd_share",
                             "too large for a Beta on [0, capacity] with these mean shares "
                             "(needs sd^2 < mean (1 - mean))")
        if self.sd_share[0] < 0:
            raise InputError("reserve.sd_share", "sigma must be >= 0")


def case_keys(seed: int, case_indices):
    base = jax.random.PRNGKey(int(seed))
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(case_indices, jnp.uint32))


def add_renewables(community: Community, seed: int, case_indices,
                   params: RenewableParams) -> tuple[ReserveMarket, Forecast]:
    params.validate()
    keys = jax.vmap(lambda k: jax.random.fold_in(k, RENEWABLE_STREAM))(
        case_keys(seed, case_indices))
    n = community.n_max
    score, mean_unit, sd_unit = jax.vmap(
        lambda k: jax.random.uniform(k, (3, n), jnp.float64))(keys).transpose(1, 0, 2)
    eligible = (community.active & (community.p_min >= 0) & (community.p_max > 0)
                & community.edges.any(-1))
    count = jnp.maximum(1, jnp.round(params.uncertain_fraction * community.active.sum(-1)))
    count = jnp.where(params.uncertain_fraction > 0, count, 0)
    ranked = jnp.where(eligible, score, jnp.inf)
    rank = jnp.argsort(jnp.argsort(ranked, -1), -1)
    renewable = eligible & (rank < count[:, None])

    dtype = community.dtype
    cap = community.p_max
    low_m, high_m = params.mean_share
    low_s, high_s = params.sd_share
    mean = (low_m + mean_unit * (high_m - low_m)) * cap
    sd = (low_s + sd_unit * (high_s - low_s)) * cap
    zero = jnp.zeros_like(cap)
    forecast = Forecast(jnp.where(renewable, mean, zero).astype(dtype),
                        jnp.where(renewable, sd, zero).astype(dtype), zero, cap,
                        renewable & (params.distribution == "beta"))
    size = params.reserve_share * (community.p_max - community.p_min)
    reserve_a = jnp.where(renewable, 0.0, params.reserve_cost_factor * community.a)
    energy = community._replace(a=jnp.where(renewable, 0.0, community.a),
                                b=jnp.where(renewable, 0.0, community.b))
    market = ReserveMarket(
        energy, up_a=reserve_a, up_b=zero, down_a=reserve_a, down_b=zero,
        up_max=jnp.where(renewable, 0.0, size), down_max=jnp.where(renewable, cap, size),
        uncertain=renewable, q_low=zero, q_high=zero)
    return market, forecast
