"""Anderson-accelerated consensus ADMM with a safeguard (type-II Anderson acceleration of
memory m on ADMM's fixed-point map, safeguarded as in Zhang, O'Donoghue & Boyd 2020 and
Fu, Zhang & Boyd 2020).

Consensus ADMM is a fixed-point iteration ``x <- T(x)`` on ``x = (z, lambda / rho)``: the
skew-symmetric consensus trades and the scaled, symmetric trade prices. One iteration
solves the local problems against ``x`` and returns

    T(x) = ( (p - p^T) / 2,  lambda / rho - (p + p^T) / 2 ),   g(x) = T(x) - x.

Type-II Anderson acceleration extrapolates from the last m accepted points: with the
differences ``dF``, ``dG`` of their images and residuals (columns of consecutive pairs),

    gamma = argmin ||g_k - dG gamma||^2 (+ a tiny ridge),   x_AA = T(x_k) - dF gamma,

a least-squares problem of size m per case. The safeguard: the next iteration solves
against ``x_AA`` and accepts it only if ``||g(x_AA)|| <= safeguard ||g_k||`` and, as the
n-th accepted extrapolation, ``||g(x_AA)|| <= bound ||g_0|| n^-(1 + 1e-6)`` (Zhang,
O'Donoghue & Boyd's summable bound, ``g_0`` the first residual since the memory was last
cleared); otherwise the evaluation is discarded and the next iteration solves against
``T(x_k)``, the plain ADMM step. Every iteration is one local solve and one exchange of
trades, whether accepted or not, so iteration counts compare with ADMM's one for one.
Linear combinations of skew (symmetric) arrays stay skew (symmetric), so ``x_AA`` is a
valid consensus and price pair. Residual balancing composes: when rho changes the map
changes, and the memory is cleared; balancing reads the residuals of kept points only
(``balanced``).

Anderson acceleration needs global inner products: the m(m+1)/2 entries of ``dG^T dG``, the
m of ``dG^T g_k`` and ``||g||^2``, each a sum over all agents of their own trades' terms,
every iteration (docs/acceleration.md). Exact at convergence as ``admm_fast``: trades must
also lie within ``eps_dual`` of the centre they were solved against.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from jaxmarket.algorithms.admm import ADMMState, residual_norms
from jaxmarket.algorithms.centred import Centre, CertifiedADMM, batch_norm, per_case
from jaxmarket.algorithms.base import hyperparameter
from jaxmarket.schema import integer, number

# Ridge of the least squares, relative to the trace of dG^T dG: keeps gamma bounded when
# the stored differences are nearly dependent; empty memory slots get gamma = 0.
RIDGE = 1e-6


class AndersonState(NamedTuple):
    agents: object  # the local update's state (power, perceived price)
    centre: Centre  # x of this iteration's solve (prices unscaled)
    candidate: jax.Array  # (B,) bool: the centre is an extrapolation, under the safeguard
    image: jax.Array  # (B, 2, ...) T(x_k) of the last accepted point, scaled
    residual: jax.Array  # (B, 2, ...) g(x_k)
    residual_norm: jax.Array  # (B,) ||g(x_k)||; -1 when there is none (the state stays finite)
    first_norm: jax.Array  # (B,) ||g_0||, the first residual since the memory was cleared
    extrapolations: jax.Array  # (B,) int32: extrapolations accepted since then
    image_steps: jax.Array  # (B, m, 2, ...) dF, a ring buffer
    residual_steps: jax.Array  # (B, m, 2, ...) dG
    slot: jax.Array  # (B,) int32: the ring slot written next
    balance_residuals: jax.Array  # (B, 2) primal and dual residuals balancing read last
    kept_trades: jax.Array  # (B, N, N) the trades of the last kept point (balancing)


def _gamma(residual_steps, residual):
    """(B, m) Anderson coefficients: the ridge-regularised least squares per case."""
    steps = residual_steps.reshape(residual_steps.shape[:2] + (-1,))
    gram = jnp.einsum("bid,bjd->bij", steps, steps)
    rhs = jnp.einsum("bid,bd->bi", steps, residual.reshape(residual.shape[0], -1))
    trace = jnp.trace(gram, axis1=1, axis2=2)
    ridge = RIDGE * trace + jnp.finfo(gram.dtype).tiny
    eye = jnp.eye(gram.shape[-1], dtype=gram.dtype)
    gamma = jnp.linalg.solve(gram + ridge[:, None, None] * eye, rhs[..., None])[..., 0]
    return jnp.where(jnp.isfinite(gamma), gamma, 0.0)


@dataclasses.dataclass(frozen=True)
class AndersonADMM(CertifiedADMM):
    """Consensus ADMM with safeguarded type-II Anderson acceleration (module doc)."""

    name: ClassVar[str] = "admm_anderson"
    label: ClassVar[str] = "ADMM, Anderson-accelerated"
    markets: ClassVar[frozenset[str]] = frozenset({"p2p"})

    anderson_memory: int = hyperparameter(
        5, "iterations", "Anderson acceleration: accepted iterations remembered (m)",
        partial(integer, gt=0, lt=51), optional=True)
    anderson_safeguard: float = hyperparameter(
        1.0, "1", "Anderson acceleration: an extrapolated point is kept when its fixed-point "
        "residual is at most this factor times the last accepted one's",
        partial(number, gt=0), optional=True)
    anderson_bound: float = hyperparameter(
        1e6, "1", "Anderson acceleration: the n-th accepted extrapolation's fixed-point "
        "residual is at most this factor times the first one's, times n^-(1 + 1e-6)",
        partial(number, gt=0), optional=True)

    def init(self, problem, params) -> ADMMState:
        state = super().init(problem, params)
        zeros = state.trades
        n_cases = params.rho.shape
        pair = jnp.stack([zeros, zeros], 1)
        steps = jnp.zeros((pair.shape[0], self.anderson_memory) + pair.shape[1:], pair.dtype)
        centre = Centre(zeros, zeros, jnp.full(n_cases, jnp.inf, zeros.dtype))
        return state._replace(local=AndersonState(
            state.local, centre, jnp.zeros(n_cases, bool), pair, pair,
            jnp.full(n_cases, -1.0, zeros.dtype), jnp.zeros(n_cases, zeros.dtype),
            jnp.zeros(n_cases, jnp.int32), steps, steps, jnp.zeros(n_cases, jnp.int32),
            jnp.zeros(n_cases + (2,), zeros.dtype), zeros))

    def balanced(self, params, rho, aa: AndersonState, trades, accept, count, reverse):
        """Residual balancing on kept points only: ``(next rho, the residuals it read, the
        kept trades)``. The dual residual runs from the last kept trades, and a discarded
        evaluation leaves the residuals as they were: its trades jump there and back, and
        balancing on those jumps left 5 % of the held-out cases without charges and 2 % with
        them stalled until max_iter (docs/acceleration.md)."""
        if not self.rho_balance:
            return rho, aa.balance_residuals, aa.kept_trades
        measured = jnp.stack(residual_norms(aa.kept_trades, trades, reverse,
                                            self.local.primal_weight), -1)
        residuals = jnp.where(accept[:, None], measured, aa.balance_residuals)
        kept = jnp.where(per_case(accept, trades), trades, aa.kept_trades)
        return self.balance(params, rho, residuals[:, 0], residuals[:, 1], count), residuals, kept

    def step(self, problem, params, state: ADMMState) -> ADMMState:
        edges, reverse = self.local.layout(problem)
        aa: AndersonState = state.local
        centre = aa.centre
        trades, agents = self.local.solve(problem, centre.consensus, centre.prices, state.rho,
                                          aa.agents)
        rho = per_case(state.rho, trades)
        mismatch = 0.5 * (trades + reverse(trades))
        prices = jnp.where(edges, centre.prices - rho * mismatch, 0.0)
        point = jnp.stack([centre.consensus, centre.prices / rho], 1)
        image = jnp.stack([0.5 * (trades - reverse(trades)), prices / rho], 1)
        residual = image - point
        residual_norm = batch_norm(residual)
        count = state.count + 1

        # Safeguard: an extrapolated point whose residual did not fall enough, or lies above
        # the summable bound, is discarded.
        nth = (aa.extrapolations + 1).astype(residual_norm.dtype)
        bounded = residual_norm <= self.anderson_bound * aa.first_norm * nth ** -(1 + 1e-6)
        accept = ~aa.candidate | (
            (residual_norm <= self.anderson_safeguard * aa.residual_norm) & bounded)
        extrapolations = aa.extrapolations + (aa.candidate & accept)
        first_norm = jnp.where(aa.residual_norm < 0, residual_norm, aa.first_norm)
        record = accept & (aa.residual_norm >= 0)
        next_rho, balance_residuals, kept_trades = self.balanced(params, state.rho, aa, trades,
                                                                 accept, count, reverse)
        wide = per_case(record, aa.image_steps)
        slot = jax.nn.one_hot(aa.slot, self.anderson_memory, dtype=bool)
        slot = slot.reshape(slot.shape + (1,) * (image.ndim - 1)) & wide
        image_steps = jnp.where(slot, (image - aa.image)[:, None], aa.image_steps)
        residual_steps = jnp.where(slot, (residual - aa.residual)[:, None], aa.residual_steps)
        ring = jnp.where(record, (aa.slot + 1) % self.anderson_memory, aa.slot)
        kept = per_case(accept, image)
        image = jnp.where(kept, image, aa.image)
        residual = jnp.where(kept, residual, aa.residual)
        residual_norm = jnp.where(accept, residual_norm, aa.residual_norm)

        # The next centre: T(x_k) - dF gamma after an accepted point, T(x_k) after a rejection.
        gamma = _gamma(residual_steps, residual)
        extrapolated = image - jnp.einsum("bi,bi...->b...", gamma, image_steps)
        nxt = jnp.where(kept, extrapolated, image)
        # A change of rho changes the map: forget the memory, continue from T(x_k).
        changed = next_rho != state.rho
        wide_changed = per_case(changed, image_steps)
        nxt = jnp.where(per_case(changed, nxt), image, nxt)
        image_steps = jnp.where(wide_changed, 0.0, image_steps)
        residual_steps = jnp.where(wide_changed, 0.0, residual_steps)
        residual_norm = jnp.where(changed, -1.0, residual_norm)
        extrapolations = jnp.where(changed, 0, extrapolations)
        candidate = record & ~changed  # the memory holds a difference
        next_centre = Centre(jnp.where(edges, nxt[:, 0], 0.0),
                             jnp.where(edges, nxt[:, 1] * rho, 0.0),
                             batch_norm(trades - centre.consensus))
        return ADMMState(trades, prices, AndersonState(
            agents, next_centre, candidate, image, residual, residual_norm, first_norm,
            extrapolations, image_steps, residual_steps, ring, balance_residuals,
            kept_trades), next_rho, count)
