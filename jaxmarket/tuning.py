"""Learned tunings: an algorithm's continuous parameters fitted to a study's communities.

The knobs are the continuous hyperparameters of an algorithm: ADMM's penalty rho (the
initial one under residual balancing), the relaxation of ``admm_relaxed`` and
``admm_pairwise`` and the two largest factors of ``admm_pairwise``'s rule; RCI's and
PCMBED's ``[c, p]`` of the four sequences ``c / k^p`` (alpha, beta, eta, delta), or with
``constant`` only their scales c (p = 0: a tuning that a truncated surrogate cannot buy
with gains that decay after K iterations). Scales (rho, every c) are optimised as
logarithms, exponents, the relaxation and the factors as themselves, each kept within a
box (``Knob``).

The surrogate of a tuning on a batch of communities is, per case, the log of

    mean over the last quarter of K iterations of ( optimality gap + primal residual / capacity )

after K unrolled iterations (``jax.lax.scan``) from the algorithm's own start, with the
gap ``|obj - obj*| / max(1, |obj*|)`` against the exact reference ``obj*`` and ``capacity = sum_n (|p_min_n| + |p_max_n|)``. The residual term keeps a
tuning from buying a small gap with trades that do not match; the window average smooths
the oscillation of RCI's iterates. The batch value is the mean over cases (a geometric
mean of the measure), so no single case dominates.

Two searches, both on the same training communities:

* ``random_search``: log-uniform draws of every scale within two decades of the start
  (inside its box), uniform draws of the other knobs over their box, all evaluated on the
  whole batch in one compiled program; optionally in rounds, each drawn around the best
  point so far with half the previous spread (an evolutionary search);
* ``adam``: optax Adam on the knobs from the start (the algorithm's own values), with
  the exact gradient of the surrogate through the K iterations (forward mode: one tangent
  per knob, and ADMM's exact local solve is a while loop that reverse mode cannot
  differentiate), stepping back to the best point seen with half the learning rate
  whenever the loss or its gradient is not finite (a diverging tuning).

``tune`` keeps the candidate (start, best draw, Adam) with the lowest surrogate on separate
validation communities. Training, validation and held-out cases come from disjoint case
indices (``case_split``): the held-out ones are those a sweep of the study solves.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmarket.algorithms import Algorithm
from jaxmarket.algorithms.rci import RCI, SEQUENCES
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.metrics import gap_floor, optimality_gap
from jaxmarket.reference import solve_reference
from jaxmarket.schedules import Sequences

# Case indices are 32-bit (``fold_in(PRNGKey(seed), k)``).
MAX_CASE_INDEX = 2**31
# Keeps the log finite when a case is solved to rounding.
FLOOR = 1e-16
# Two decades either side of the start for the random draws of a scale.
DRAW_DECADES = 2.0
# Significant digits of the written tuning: the held-out runs use the written values.
DIGITS = 4
# Trade slots (tangents x cases x N x N) of the gradient's batched tangents (``_programs``).
TANGENT_TRADES = 2**17


@dataclasses.dataclass(frozen=True)
class Knob:
    """One continuous parameter: the solver key, its position in a ``[c, p]`` pair (None:
    a scalar), whether it is optimised as a logarithm, and its box."""

    key: str
    part: int | None
    log: bool
    low: float
    high: float

    @property
    def name(self) -> str:
        return self.key if self.part is None else f"{self.key}_{'cp'[self.part]}"

    def encode(self, value: float) -> float:
        return math.log(value) if self.log else value

    def decode(self, x):
        return jnp.exp(x) if self.log else x

    @property
    def box(self) -> tuple[float, float]:
        return self.encode(self.low), self.encode(self.high)


def knobs(algorithm: Algorithm, constant: bool = False) -> tuple[Knob, ...]:
    """The continuous parameters ``tune`` fits for ``algorithm``; with ``constant``, only
    the scales of RCI's sequences (their exponents are then 0)."""
    if isinstance(algorithm, RCI):
        parts = ((0, True, (1e-6, 1e3)),) if constant else ((0, True, (1e-6, 1e3)), (1, False, (0.0, 1.0)))
        return tuple(Knob(name, part, log, *box) for name in SEQUENCES for part, log, box in parts)
    if constant:
        raise InputError("--constant", f"{algorithm.name} has no sequences (only rci and pcmbed)")
    fields = {f.name for f in algorithm.declarations()}
    found = []
    if "rho" in fields:
        found.append(Knob("rho", None, True, 1e-4, 1e4))
    if "relaxation" in fields:
        found.append(Knob("relaxation", None, False, 0.05, 1.95))
    for factor in ("pair_rho_stiffen", "pair_rho_soften"):  # admm_pairwise's rule
        if factor in fields:
            found.append(Knob(factor, None, False, 1.05, 10.0))
    if not found:
        raise InputError("--algorithm", f"{algorithm.name} has no continuous parameter to tune")
    return tuple(found)


def start(algorithm: Algorithm, chosen: tuple[Knob, ...]) -> np.ndarray:
    """The algorithm's own values of the knobs, encoded."""
    values = []
    for knob in chosen:
        value = getattr(algorithm, knob.key)
        values.append(knob.encode(float(value if knob.part is None else value[knob.part])))
    return np.asarray(values)


def values_of(chosen: tuple[Knob, ...], x) -> dict:
    """Solver values of an encoded point: scalars, and ``(c, p)`` pairs for sequences (a
    sequence whose exponent is no knob is constant, p = 0)."""
    values: dict = {}
    for knob, v in zip(chosen, x):
        v = knob.decode(v)
        if knob.part is None:
            values[knob.key] = v
        else:
            pair = values.setdefault(knob.key, [None, 0.0])
            pair[knob.part] = v
    return {key: tuple(v) if isinstance(v, list) else v for key, v in values.items()}


def rounded(chosen: tuple[Knob, ...], x) -> dict:
    """The solver values of ``x`` as Python floats with ``DIGITS`` significant digits."""
    def r(v):
        v = float(v)
        return 0.0 if v == 0 else float(f"{v:.{DIGITS}g}")
    return {key: tuple(r(p) for p in v) if isinstance(v, tuple) else r(v)
            for key, v in values_of(chosen, x).items()}


def encoded(chosen: tuple[Knob, ...], values: dict) -> np.ndarray:
    return np.asarray([knob.encode(values[knob.key] if knob.part is None else values[knob.key][knob.part])
                       for knob in chosen])


def _power_law(c, p):
    return lambda count: c / (jnp.asarray(count) + 1.0) ** p


def configure(algorithm: Algorithm, values: dict, n_cases: int, dtype):
    """``algorithm`` and its params with ``values`` (possibly traced) in place: traced
    fields go into the params, RCI's sequences into its schedules, the rest into fields."""
    params = algorithm.params(n_cases, dtype)
    traced = algorithm.traced()
    params = params._replace(**{key: jnp.broadcast_to(jnp.asarray(v, dtype), (n_cases,))
                                for key, v in values.items() if key in traced})
    fields = {key: v for key, v in values.items() if key not in traced and key not in SEQUENCES}
    if isinstance(algorithm, RCI):
        pairs = [values.get(name, getattr(algorithm, name)) for name in SEQUENCES]
        fields["schedules"] = Sequences(*(_power_law(c, p) for c, p in pairs))
    return dataclasses.replace(algorithm, **fields), params


class Batch(NamedTuple):
    """Communities of one setting and their exact optimal objectives."""

    community: Community
    reference: jax.Array  # (B,)
    floor: jax.Array  # (B,) the gap's floor (metrics.gap_floor)


def batch(community: Community) -> Batch:
    solution = solve_reference(community)
    if not bool(jnp.all(solution.converged)):
        raise RuntimeError("the exact reference did not converge on a tuning case")
    return Batch(community, solution.objective.astype(community.dtype),
                 gap_floor(community).astype(community.dtype))


def surrogate(algorithm: Algorithm, chosen: tuple[Knob, ...], unroll: int) -> Callable:
    """``f(x, batch) -> (B,)``: the per-case surrogate (module doc) at encoded point x."""
    window = max(unroll // 4, 1)

    def per_case(x, data: Batch):
        community = data.community
        alg, params = configure(algorithm, values_of(chosen, x), community.n_cases, community.dtype)
        capacity = (jnp.abs(community.p_min) + jnp.abs(community.p_max)).sum(-1)

        def body(state, _):
            new = alg.step(community, params, state)
            res = alg.residuals(community, params, state, new)
            return new, optimality_gap(res.objective, data.reference, data.floor) + res.primal / capacity

        _, measures = jax.lax.scan(body, alg.init(community, params), None, length=unroll)
        return jnp.log(measures[-window:].mean(0) + FLOOR)

    return per_case


def project(chosen: tuple[Knob, ...], x):
    low, high = zip(*(knob.box for knob in chosen))
    return jnp.clip(x, jnp.asarray(low), jnp.asarray(high))


@functools.lru_cache(maxsize=16)
def _programs(algorithm: Algorithm, chosen: tuple[Knob, ...], unroll: int):
    """The compiled surrogate programs of one tuning problem, built once per (algorithm,
    knobs, unroll): every search round, Adam and the validation reuse them instead of
    compiling the same scan again."""
    per_case = surrogate(algorithm, chosen, unroll)

    @jax.jit
    def mean(x, data):
        return per_case(x, data).mean()

    @jax.jit
    def grad(x, data):
        # Forward mode, one tangent per knob: the knobs are few, and ADMM's exact local
        # solve is a while loop, which reverse mode cannot differentiate. Tangents are
        # batched only while the batch's arrays stay cache-sized: at N = 300 all eight at
        # once took twice as long as one after the other (memory-bound).
        def f(y):
            return per_case(y, data).mean()
        together = max(1, min(x.size, TANGENT_TRADES // data.community.charge.size))
        values, slopes = jax.lax.map(lambda v: jax.jvp(f, (x,), (v,)),
                                     jnp.eye(x.size, dtype=x.dtype), batch_size=together)
        return values[0], slopes

    @jax.jit
    def each(xs, data):
        return jax.lax.map(lambda x: per_case(x, data).mean(), xs)

    return mean, grad, each


def loss_function(algorithm: Algorithm, chosen: tuple[Knob, ...], unroll: int):
    """Mean surrogate over the cases of several batches (one per community setting)."""
    mean, grad, _ = _programs(algorithm, chosen, unroll)

    def loss(x, batches):
        return sum(mean(x, data) for data in batches) / len(batches)

    def value_and_grad(x, batches):
        results = [grad(x, data) for data in batches]
        return (sum(v for v, _ in results) / len(results),
                sum(g for _, g in results) / len(results))

    return loss, value_and_grad


def draws(chosen: tuple[Knob, ...], around: np.ndarray, count: int, seed: int,
          narrowing: int = 0) -> np.ndarray:
    """``count`` random points: scales log-uniform within ``DRAW_DECADES`` of ``around``,
    other knobs uniform over their box; every spread halved ``narrowing`` times (then
    centred on ``around``), within the box."""
    # The first round's draws are those of the single-round search (reproducible tunings).
    rng = np.random.default_rng([seed, narrowing] if narrowing else seed)
    points = np.empty((count, len(chosen)))
    for j, knob in enumerate(chosen):
        low, high = knob.box
        spread = DRAW_DECADES * math.log(10) if knob.log else (high - low) / 2
        if knob.log or narrowing:
            spread /= 2**narrowing
            low, high = max(low, around[j] - spread), min(high, around[j] + spread)
        points[:, j] = rng.uniform(low, high, count)
    return points


def random_search(algorithm: Algorithm, chosen: tuple[Knob, ...], unroll: int, batches,
                  points: np.ndarray) -> np.ndarray:
    """Mean surrogate of every point over the batches (non-finite: +inf), one compiled
    program per batch for all points."""
    evaluate = _programs(algorithm, chosen, unroll)[2]
    scores = sum(np.asarray(evaluate(jnp.asarray(points), data)) for data in batches) / len(batches)
    return np.where(np.isfinite(scores), scores, np.inf)


class AdamResult(NamedTuple):
    point: np.ndarray  # the best point seen (lowest training loss)
    loss: float
    history: list  # training loss of every step (nan for a refused step)


def adam(value_and_grad, chosen: tuple[Knob, ...], x0: np.ndarray, batches, steps: int,
         learning_rate: float) -> AdamResult:
    """optax Adam on the encoded knobs, projected on their box after every step."""
    optimiser = optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)
    x = jnp.asarray(x0)
    state = optimiser.init(x)
    best, best_loss, history = x, math.inf, []
    for _ in range(steps):
        value, gradient = value_and_grad(x, batches)
        if not (np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(gradient)))):
            history.append(math.nan)
            # A diverging tuning: back to the best point, with smaller steps.
            rate = state.hyperparams["learning_rate"] / 2
            x, state = best, optimiser.init(best)
            state.hyperparams["learning_rate"] = rate
            continue
        history.append(float(value))
        if value < best_loss:
            best, best_loss = x, float(value)
        updates, state = optimiser.update(gradient, state, x)
        x = project(chosen, optax.apply_updates(x, updates))
    return AdamResult(np.asarray(best), best_loss, history)


def case_split(held_out: int, training: int, validation: int) -> dict[str, range]:
    """Disjoint case indices: held-out ``0 .. held_out - 1`` (the cases a sweep of the
    study solves), then the training cases, then the validation cases."""
    split = {"held_out": range(0, held_out),
             "training": range(held_out, held_out + training),
             "validation": range(held_out + training, held_out + training + validation)}
    if split["validation"].stop > MAX_CASE_INDEX:
        raise InputError("run.cases_per_cell", f"held-out, training and validation cases need "
                                               f"indices below 2^31, got {split['validation'].stop}")
    return split


def cases_for(agents: int, smallest: int, count: int) -> int:
    """Training cases for communities of ``agents``: ``count`` at the smallest size, fewer
    (by the ratio of trade counts, at least 2) for larger ones, so that every size costs
    about the same per step."""
    return max(2, round(count * (smallest / agents) ** 2))


class Tuned(NamedTuple):
    values: dict  # the chosen tuning, rounded (solver key -> value)
    source: str  # "start", "random search" or "adam"
    validation: dict  # candidate -> mean validation surrogate
    training: dict  # candidate -> mean training surrogate
    history: list  # Adam's training losses


def tune(algorithm: Algorithm, train: list[Batch], validate: list[Batch], *, unroll: int,
         n_draws: int, steps: int, learning_rate: float, seed: int, rounds: int = 1,
         constant: bool = False, report: Callable[[str], None] = lambda line: None) -> Tuned:
    """Random search and Adam from the start (the algorithm's own values; with
    ``constant``, its sequences' scales held constant); the candidate with the lowest
    validation surrogate wins (module doc). The random search draws ``n_draws`` points in
    each of ``rounds`` rounds, every round after the first around the best point so far
    with half the previous spread."""
    chosen = knobs(algorithm, constant)
    x0 = start(algorithm, chosen)
    loss, value_and_grad = loss_function(algorithm, chosen, unroll)
    candidates = {"start": x0}
    training = {"start": float(loss(jnp.asarray(x0), train))}
    report(f"start: training surrogate {training['start']:.3f}")
    if n_draws:
        best, best_score = x0, math.inf
        for narrowing in range(rounds):
            points = draws(chosen, best, n_draws, seed, narrowing)
            scores = random_search(algorithm, chosen, unroll, train, points)
            if scores.min() < best_score:
                best, best_score = points[int(np.argmin(scores))], float(scores.min())
            report(f"random search, round {narrowing + 1}, {n_draws} draws: best training "
                   f"surrogate so far {best_score:.3f}")
        candidates["random search"], training["random search"] = best, best_score
    if steps:
        # From the start, not the best draw: near a draw at the edge of stability the
        # truncated gradient explodes (measured: 1e10 against finite differences of 1e2).
        result = adam(value_and_grad, chosen, x0, train, steps, learning_rate)
        candidates["adam"], training["adam"] = result.point, result.loss
        report(f"adam, {steps} steps: best training surrogate {result.loss:.3f}")
    else:
        result = AdamResult(x0, math.nan, [])
    # Compared as written: the held-out runs use the rounded values.
    written = {name: encoded(chosen, rounded(chosen, x)) for name, x in candidates.items()}
    validation = {name: float(loss(jnp.asarray(x), validate)) for name, x in written.items()}
    validation = {name: v if math.isfinite(v) else math.inf for name, v in validation.items()}
    winner = min(validation, key=validation.get)
    report("validation surrogate: " + ", ".join(f"{k} {v:.3f}" for k, v in validation.items())
           + f"; chosen: {winner}")
    return Tuned(rounded(chosen, written[winner]), winner, validation, training, result.history)


def toml_value(value) -> str:
    """A solver value as TOML: a float, or ``[c, p]``."""
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(float(value))


def overrides(values: dict) -> list[str]:
    """The tuning as ``--set`` assignments (``solver.KEY=VALUE``)."""
    return [f"solver.{key}={toml_value(v)}" for key, v in values.items()]


def snippet(algorithm: str, values: dict, header: list[str]) -> str:
    """A ``[solver]`` section holding the tuning, with comment lines ``header`` above it."""
    lines = [f"# {line}" for line in header]
    lines += [f"# Tuned for {algorithm}. Copy the keys below into a study's [solver] section",
              f"# (they apply to every {algorithm} cell), or pass each as --set solver.KEY=VALUE.",
              "[solver]"]
    lines += [f"{key} = {toml_value(v)}" for key, v in values.items()]
    return "\n".join(lines) + "\n"


THRESHOLDS = ("e2", "e3", "e4")  # the rows' iterations_to_gap_e2/_e3/_e4 (1e-2, 1e-3, 1e-4)


def median_reached(column) -> float:
    """Median iterations to a gap over all cases, a case that never reached it counting as
    more than any: NaN when fewer than half reached it."""
    values = np.sort(np.where(np.isnan(column), np.inf, column))
    median = float(np.median(values)) if len(values) else math.nan
    return median if math.isfinite(median) else math.nan


def held_out_table(default, tuned) -> list[dict]:
    """Per number of agents: held-out cases, and for the default and the tuned rows the
    median iterations to each gap, how many cases reached it, how many met the stopping
    rule and the largest final gap; every row's gap is against the exact reference, whose
    convergence is counted too."""
    table = []
    for agents in sorted(set(default["n_agents"])):
        entry = {"n_agents": int(agents)}
        for name, rows in (("default", default), ("tuned", tuned)):
            rows = rows[rows["n_agents"] == agents]
            entry[f"{name}_cases"] = len(rows)
            entry[f"{name}_reference_converged"] = int(rows["reference_converged"].sum())
            entry[f"{name}_converged"] = int(rows["converged"].sum())
            entry[f"{name}_max_iter"] = int(rows["iterations"].max())
            entry[f"{name}_largest_gap"] = float(rows["optimality_gap"].max())
            entry[f"{name}_median_gap"] = float(rows["optimality_gap"].median())
            for t in THRESHOLDS:
                column = rows[f"iterations_to_gap_{t}"].to_numpy(float)
                entry[f"{name}_{t}"] = median_reached(column)
                entry[f"{name}_{t}_reached"] = int(np.isfinite(column).sum())
        table.append(entry)
    return table


def _iterations(value: float, limit: int) -> str:
    return f"> {limit}" if math.isnan(value) else f"{value:.0f}"


def _speedup(default: float, tuned: float, limit: int) -> str:
    if math.isnan(tuned):
        return "–"
    if math.isnan(default):
        return f"> {limit / tuned:.3g}"
    return f"{default / tuned:.3g}"


def markdown_table(table: list[dict]) -> list[str]:
    """The held-out table as Markdown lines: medians to 1e-2 / 1e-3 / 1e-4 ("> max_iter"
    where fewer than half of the cases reached the gap), the speed-up at 1e-3, cases
    reaching each gap, converged cases and the largest final gap."""
    lines = ["| N | cases | default to 1e-2 / 1e-3 / 1e-4 | tuned to 1e-2 / 1e-3 / 1e-4 | "
             "× fewer to 1e-3 | reached 1e-3 default / tuned | converged default / tuned | "
             "largest gap default / tuned | references converged |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        medians = {name: " / ".join(_iterations(e[f"{name}_{t}"], e[f"{name}_max_iter"]) for t in THRESHOLDS)
                   for name in ("default", "tuned")}
        lines.append(
            f"| {e['n_agents']} | {e['default_cases']} | {medians['default']} | {medians['tuned']} | "
            f"{_speedup(e['default_e3'], e['tuned_e3'], e['default_max_iter'])} | "
            f"{e['default_e3_reached']} / {e['tuned_e3_reached']} | "
            f"{e['default_converged']} / {e['tuned_converged']} | "
            f"{e['default_largest_gap']:.2g} / {e['tuned_largest_gap']:.2g} | "
            f"{e['default_reference_converged'] + e['tuned_reference_converged']} of "
            f"{e['default_cases'] + e['tuned_cases']} |")
    return lines
