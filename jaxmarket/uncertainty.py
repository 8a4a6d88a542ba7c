"""Forecast distributions of uncertain agents, allocations of a global confidence level,
and Monte Carlo coverage (SPEC section 6, T5.11-5.23, Table 5.1).

Forecasts
    ``Forecast(mean, sd, low, high, beta)``: per agent, the forecast p~_n of its
    injection with mean ``p^mu_n`` and standard deviation ``sigma_n``; ``beta`` selects a
    *scaled Beta* on ``[low, high]`` with those two moments (shape parameters by the
    method of moments; needs ``sigma^2 < (mean - low)(high - mean)``), otherwise a
    Gaussian. Renewables use ``[0, capacity]``. The Beta quantile is found by 64 steps of
    bisection on the regularized incomplete Beta function, which pins it to the last
    bit of float64 on ``[low, high]`` (``tests/test_uncertainty.py`` checks it against
    SciPy).

Split tails (beta = 1/2)
    ``P(-r-tot <= p - p~ <= r+tot) >= delta_n`` is met by ``r+tot >= p - q_low`` and
    ``r-tot >= q_high - p`` with ``q_low = F^-1(beta (1 - delta_n))`` and
    ``q_high = F^-1(1 - (1 - beta)(1 - delta_n))``.

Allocations (Table 5.1), over the uncertain agents of a case
    ``rel_mu``: ``delta_n = delta p^mu_n / p^mu_nc``; ``rel_sigma``:
    ``delta_n = delta sigma_n / sigma_nc``; ``rel_1``: ``delta_n = delta``; ``abs_sigma``:
    ``delta_n = F_n(m_n + a_n (F_nc^-1(d+) - m_nc)) - F_n(m_n + a_n (F_nc^-1(d-) - m_nc))``,
    ``a_n = sigma_n / sigma_nc``, ``d- = beta (1 - delta)``, ``d+ = 1 - (1 - beta)(1 - delta)``.
    ``p^mu_nc`` and ``sigma_nc`` are the mean and standard deviation of the sum
    ``p~_nc = sum_n p~_n`` of independent forecasts (``sigma_nc = ||sigma||_2``).

Distribution of the sum, F_nc
    Gaussian forecasts: exact, ``N(sum mean, ||sigma||_2)``. A case with any Beta forecast:
    empirical quantiles of ``SUM_SAMPLES`` sums drawn from the case's own key stream (a
    Gaussian by moments would make the joint reference miss its delta on skewed
    forecasts). ``abs_sigma`` and the joint reference use it.

Monte Carlo coverage
    ``COVERAGE_SAMPLES`` realizations per case from another stream of the case key: the
    fraction of samples where each local constraint holds, and where the global one
    ``-R- <= sum_nc (p_n - p~_n) <= R+`` holds, with ``R+-`` the reserves standing behind the
    uncertain agents (their totals in the P2P market, all reserves in the joint market).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import betainc, ndtr, ndtri

ALLOCATIONS = ("rel_mu", "rel_sigma", "rel_1", "abs_sigma")
DISTRIBUTIONS = ("gaussian", "beta")
SPLIT = 0.5  # beta of the split tails
SUM_SAMPLES = 1 << 13  # Beta sampling is slow on a CPU (two gamma draws each)
COVERAGE_SAMPLES = 1 << 12
# fold_in tags of the case key (the generator uses small integers; these stay clear).
SUM_STREAM = 0x5E5E01
COVERAGE_STREAM = 0x5E5E02


class Forecast(NamedTuple):
    mean: jax.Array  # (B, N)
    sd: jax.Array  # (B, N), >= 0
    low: jax.Array  # (B, N) support of a scaled Beta
    high: jax.Array  # (B, N)
    beta: jax.Array  # (B, N) bool: scaled Beta, else Gaussian


def _beta_shapes(f: Forecast):
    width = jnp.where(f.high > f.low, f.high - f.low, 1.0)
    m = (f.mean - f.low) / width
    v = (f.sd / width) ** 2
    k = m * (1 - m) / jnp.where(v > 0, v, 1.0) - 1
    return m * k, (1 - m) * k, width


def cdf(f: Forecast, x):
    """F_n(x), elementwise; a point mass at the mean where sd = 0."""
    gaussian = ndtr((x - f.mean) / jnp.where(f.sd > 0, f.sd, 1.0))
    alpha, beta, width = _beta_shapes(f)
    unit = jnp.clip((x - f.low) / width, 0.0, 1.0)
    scaled_beta = betainc(jnp.where(f.beta, alpha, 1.0), jnp.where(f.beta, beta, 1.0), unit)
    value = jnp.where(f.beta, scaled_beta, gaussian)
    return jnp.where(f.sd > 0, value, jnp.where(x >= f.mean, 1.0, 0.0))


def quantile(f: Forecast, u):
    """F_n^-1(u) for u in (0, 1), elementwise."""
    gaussian = f.mean + f.sd * ndtri(u)
    alpha, beta, width = _beta_shapes(f)
    alpha, beta = jnp.where(f.beta, alpha, 1.0), jnp.where(f.beta, beta, 1.0)

    def bisect(_, bracket):
        left, right = bracket
        mid = 0.5 * (left + right)
        below = betainc(alpha, beta, mid) < u
        return jnp.where(below, mid, left), jnp.where(below, right, mid)

    zero = jnp.zeros_like(gaussian)
    left, right = jax.lax.fori_loop(0, 64, bisect, (zero, zero + 1.0))
    scaled_beta = f.low + width * 0.5 * (left + right)
    value = jnp.where(f.beta, scaled_beta, gaussian)
    return jnp.where(f.sd > 0, value, f.mean)


@jax.jit
def requirement_quantiles(f: Forecast, delta_n, split=SPLIT):
    """(q_low, q_high): the split-tail deterministic equivalents of confidence ``delta_n``."""
    return (quantile(f, split * (1 - delta_n)),
            quantile(f, 1 - (1 - split) * (1 - delta_n)))


def sample(f: Forecast, key, n_samples: int):
    """(B, S, N) forecast realizations; one key per case (``key`` has shape (B, 2))."""
    alpha, beta, width = _beta_shapes(f)

    def one(k, mean, sd, low, w, a, b, is_beta):
        k_normal, k_beta = jax.random.split(k)
        shape = (n_samples,) + mean.shape
        normal = mean + sd * jax.random.normal(k_normal, shape, mean.dtype)
        a, b = jnp.where(is_beta, a, 1.0), jnp.where(is_beta, b, 1.0)
        unit = jax.random.beta(k_beta, a, b, shape, mean.dtype)
        return jnp.where(is_beta & (sd > 0), low + w * unit, normal)

    return jax.vmap(one)(key, f.mean, f.sd, f.low, width, alpha, beta, f.beta)


def stream_keys(case_keys, tag: int):
    return jax.vmap(lambda k: jax.random.fold_in(k, tag))(case_keys)


def sum_moments(f: Forecast, uncertain):
    """(B,) mean and standard deviation of the sum of the uncertain forecasts."""
    mean = jnp.where(uncertain, f.mean, 0.0).sum(-1)
    sd = jnp.sqrt(jnp.where(uncertain, f.sd**2, 0.0).sum(-1))
    return mean, sd


@partial(jax.jit, static_argnames="n_samples")
def sum_quantile(f: Forecast, uncertain, levels, case_keys, n_samples: int = SUM_SAMPLES):
    """(B, K) F_nc^-1 at the per-case levels ``levels`` (B, K): exact for all-Gaussian
    cases, empirical (linear interpolation between order statistics of ``n_samples``
    sums) otherwise; see the module docstring."""
    mean, sd = sum_moments(f, uncertain)
    gaussian = mean[:, None] + sd[:, None] * ndtri(levels)
    any_beta = jnp.any(f.beta & uncertain, -1)

    def empirical():
        realized = sample(f, stream_keys(case_keys, SUM_STREAM), n_samples)
        sums = jnp.sort(jnp.where(uncertain[:, None, :], realized, 0.0).sum(-1), -1)
        position = levels * (n_samples - 1)
        below = jnp.clip(jnp.floor(position).astype(jnp.int32), 0, n_samples - 2)
        weight = position - below
        lower = jnp.take_along_axis(sums, below, -1)
        upper = jnp.take_along_axis(sums, below + 1, -1)
        return lower + weight * (upper - lower)

    value = jax.lax.cond(jnp.any(any_beta), empirical, lambda: gaussian)
    return jnp.where(any_beta[:, None], value, gaussian)


def global_levels(delta, split=SPLIT):
    """(B, 2) the two levels (d-, d+) of the split tails of the global constraint."""
    return jnp.stack([split * (1 - delta), 1 - (1 - split) * (1 - delta)], -1)


@partial(jax.jit, static_argnames=("allocation", "split"))
def allocate(allocation: str, delta, f: Forecast, uncertain, case_keys, split=SPLIT):
    """(B, N) local confidence levels delta_n (0 on certain agents); ``delta`` is (B,)."""
    delta = jnp.broadcast_to(jnp.asarray(delta, f.mean.dtype), f.mean.shape[:1])
    mean_nc, sd_nc = sum_moments(f, uncertain)
    if allocation == "rel_mu":
        local = delta[:, None] * f.mean / mean_nc[:, None]
    elif allocation == "rel_sigma":
        local = delta[:, None] * f.sd / sd_nc[:, None]
    elif allocation == "rel_1":
        local = jnp.broadcast_to(delta[:, None], f.mean.shape)
    elif allocation == "abs_sigma":
        q = sum_quantile(f, uncertain, global_levels(delta, split), case_keys)
        alpha = f.sd / sd_nc[:, None]

        def shifted(level):  # m_n + a_n (F_nc^-1(level) - m_nc)
            return f.mean + alpha * (level[:, None] - mean_nc[:, None])

        local = cdf(f, shifted(q[:, 1])) - cdf(f, shifted(q[:, 0]))
    else:
        raise ValueError(f"unknown allocation {allocation!r}")
    return jnp.where(uncertain, local, 0.0)


class Coverage(NamedTuple):
    local: jax.Array  # (B, N) fraction of samples where agent n's constraint holds (NaN if certain)
    global_: jax.Array  # (B,) fraction where the aggregate constraint holds


@partial(jax.jit, static_argnames="n_samples")
def coverage(f: Forecast, uncertain, power, up_total, down_total, global_up, global_down,
             case_keys, n_samples: int = COVERAGE_SAMPLES) -> Coverage:
    """Empirical probabilities of ``-r-tot_n <= p_n - p~_n <= r+tot_n`` (per uncertain agent)
    and ``-R- <= sum_nc (p_n - p~_n) <= R+`` (per case) over fresh forecast samples."""
    realized = sample(f, stream_keys(case_keys, COVERAGE_STREAM), n_samples)  # (B, S, N)
    error = power[:, None, :] - realized
    holds = (error <= up_total[:, None, :]) & (error >= -down_total[:, None, :])
    local = jnp.where(uncertain, holds.mean(1), jnp.nan)
    total = jnp.where(uncertain[:, None, :], error, 0.0).sum(-1)
    holds_global = (total <= global_up[:, None]) & (total >= -global_down[:, None])
    return Coverage(local, holds_global.mean(1))
