"""Study files: the TOML schema of a Monte Carlo sweep, its validation and its cells.

```
[run]        name (file stem), seed (0), out ("outputs/<name>"), chunk_size (256),
             dtype ("float64" | "float32"), cases_per_cell (100)
[community]  n_agents (25) and every GeneratorParams field (ranges are [low, high])
[graph]      layout ("full" | "bipartite" | "centralized" | "community"), sparsity (0.0,
             in [0, 1)), n_communities (3), charges_between_communities_only (false)
[solver]     algorithm ("admm" | "rci" | "pcmbed" | "ced" | "ced_mean"), rho (1.0),
             eps_primal (1e-4), eps_dual (1e-4), max_iter (10000), check_every (1),
             trace_every (0 = no trace); RCI/PCMBED: eps_price, eps_power (1e-4) and the
             sequences alpha, beta, eta, delta as [c, p] in c / k^p (thesis defaults)
```

Any key of ``[community]``, ``[graph]`` and ``[solver]`` may be given as a list of values
(for a range key: a list of ranges) to sweep it. The cells are the Cartesian product of
the swept lists, ordered like nested loops: keys in the order of the schema above
(community, graph, solver; within a section as listed, generator fields in
GeneratorParams order), the last swept key varying fastest, values in the order given.
Cell c is the c-th element of that product.

``run.out`` is relative to the working directory. The config hash identifies what a
study computes: it covers the resolved config except ``run.out`` (moving a dataset does
not change it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import jax
import jax.numpy as jnp

from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.generator import LAYOUTS, GeneratorParams, generate
from jaxmarket.schema import child, integer, number, record, show, text
from jaxmarket.solve import ALGORITHMS, SolverOptions

DTYPES = ("float64", "float32")


def _name(value, field):
    value = text(value, field)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise InputError(field, f"expected letters, digits, '.', '_' or '-', got {show(value)}")
    return value


def _range(value, field):
    """A ``[low, high]`` pair of numbers; order checks belong to GeneratorParams.validate."""
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(field, f"expected [low, high], got {show(value)}")
    return tuple(number(v, child(field, k)) for k, v in enumerate(value))


def _generator_schema() -> dict[str, tuple[Any, Any]]:
    """GeneratorParams fields as (default, checker): tuples are ranges, the rest numbers."""
    schema = {}
    for f in dataclasses.fields(GeneratorParams):
        schema[f.name] = (f.default, _range if isinstance(f.default, tuple) else number)
    return schema


def _flag(value, field):
    if not isinstance(value, bool):
        raise InputError(field, f"expected true or false, got {show(value)}")
    return value


def _sequence(value, field):
    """A persistent RCI sequence ``c / k^p`` as ``[c, p]`` with c > 0 and p >= 0."""
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(field, f"expected [c, p] for c / k^p, got {show(value)}")
    return number(value[0], child(field, 0), gt=0), number(value[1], child(field, 1), ge=0)


SEQUENCES = ("alpha", "beta", "eta", "delta")

# section -> key -> (default, checker); defaults of None are filled in from the context.
SCHEMA: dict[str, dict[str, tuple[Any, Any]]] = {
    "run": {
        "name": (None, _name),
        "seed": (0, partial(integer, ge=0)),
        "out": (None, text),
        "chunk_size": (256, partial(integer, gt=0)),
        "dtype": ("float64", partial(text, choices=DTYPES)),
        "cases_per_cell": (100, partial(integer, gt=0)),
    },
    "community": {"n_agents": (25, partial(integer, ge=2)), **_generator_schema()},
    "graph": {
        "layout": ("full", partial(text, choices=LAYOUTS)),
        "sparsity": (0.0, partial(number, ge=0, lt=1)),
        "n_communities": (3, partial(integer, ge=1)),
        "charges_between_communities_only": (False, _flag),
    },
    "solver": {
        "algorithm": ("admm", partial(text, choices=tuple(ALGORITHMS))),
        "rho": (1.0, partial(number, gt=0)),
        "eps_primal": (1e-4, partial(number, gt=0)),
        "eps_dual": (1e-4, partial(number, gt=0)),
        "max_iter": (10_000, partial(integer, gt=0)),
        "check_every": (1, partial(integer, gt=0)),
        "trace_every": (0, partial(integer, ge=0)),
        # RCI / PCMBED only: the thesis stopping rule and the persistent sequences.
        "eps_price": (SolverOptions._field_defaults["eps_price"], partial(number, gt=0)),
        "eps_power": (SolverOptions._field_defaults["eps_power"], partial(number, gt=0)),
        **{name: (SolverOptions._field_defaults[name], _sequence) for name in SEQUENCES},
    },
}
# Keys whose value is a pair: a list of numbers is that pair, a list of lists a sweep.
RANGES = tuple(key for table in SCHEMA.values() for key, (default, _) in table.items()
               if isinstance(default, tuple))
SWEPT_SECTIONS = ("community", "graph", "solver")


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: every community/graph/solver key at one value."""

    index: int
    values: dict[str, Any]  # "section.key" -> value (ranges as tuples)

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {key[len(prefix):]: v for key, v in self.values.items() if key.startswith(prefix)}

    @property
    def n_agents(self) -> int:
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
    def solver(self) -> SolverOptions:
        return SolverOptions(**self.section("solver"))

    def communities(self, seed: int, case_indices, dtype: str) -> Community:
        """The cell's cases ``case_indices`` as one batch: the only place a sweep builds
        communities, so every runner solves the same cases."""
        return generate(seed, case_indices, self.n_agents, self.generator, self.layout,
                        self.sparsity, self.values["graph.n_communities"],
                        self.values["graph.charges_between_communities_only"],
                        dtype=jnp.dtype(dtype))

    def labels(self) -> dict[str, Any]:
        """The cell's parameters as flat scalar columns (a range r as r_lo, r_hi)."""
        flat = {}
        for key, value in self.values.items():
            name = key.split(".", 1)[1]
            if isinstance(value, tuple):
                suffixes = ("_c", "_p") if name in SEQUENCES else ("_lo", "_hi")
                flat[name + suffixes[0]], flat[name + suffixes[1]] = value
            else:
                flat[name] = value
        return flat


@dataclass(frozen=True)
class Study:
    name: str
    seed: int
    out: Path
    chunk_size: int
    dtype: str
    cases_per_cell: int
    cells: tuple[Cell, ...]
    swept: tuple[str, ...]  # "section.key" of the swept keys, in product order
    config: dict  # the resolved, normalized config (JSON-ready)
    config_hash: str

    @property
    def n_cases(self) -> int:
        return len(self.cells) * self.cases_per_cell


def parse_override(assignment: str) -> tuple[str, Any]:
    """``section.key=value``; the value is read as TOML, else taken as a bare string."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise InputError("--set", f"expected section.key=value, got {show(assignment)}")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def _apply(raw: dict, overrides: Iterable[tuple[str, Any]]) -> dict:
    merged = {section: dict(v) if isinstance(v, dict) else v for section, v in raw.items()}
    for key, value in overrides:
        section, name = key.split(".", 1)
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise InputError(section, f"expected a table, got {show(table)}")
        table[name] = value
    return merged


def _check_value(section: str, key: str, value, field: str):
    """A key's value: one scalar, or for swept sections a non-empty list of distinct ones."""
    check = SCHEMA[section][key][1]
    sweeps = section in SWEPT_SECTIONS and isinstance(value, list) and (
        key not in RANGES or any(isinstance(v, list) for v in value))
    if not sweeps:
        return check(value, field)
    if not value:
        raise InputError(field, "empty sweep list")
    values = [check(v, child(field, k)) for k, v in enumerate(value)]
    for k, v in enumerate(values):
        if v in values[:k]:
            raise InputError(child(field, k), f"duplicate value {show(value[k])} in the sweep list")
    return values


def _json_ready(value):
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    return value


def resolve(raw: dict, default_name: str, overrides: Iterable[tuple[str, Any]] = ()) -> Study:
    """Validate a decoded study (plus overrides) and expand its cells (pure, no I/O)."""
    merged = _apply(raw, overrides)
    record(merged, "", {section: lambda value, field: value for section in SCHEMA}, what="a table")
    checked = {}
    for section, keys in SCHEMA.items():
        given = record(merged.get(section, {}), section,
                       {key: partial(_check_value, section, key) for key in keys}, what="a table")
        checked[section] = {key: given.get(key, default) for key, (default, _) in keys.items()}
    run = checked["run"]
    run["name"] = run["name"] or _name(default_name, "run.name")
    run["out"] = run["out"] or f"outputs/{run['name']}"

    values = {f"{s}.{k}": v for s in SWEPT_SECTIONS for k, v in checked[s].items()}
    swept = tuple(key for key, v in values.items() if isinstance(v, list))
    cells = tuple(Cell(c, {**values, **dict(zip(swept, point))})
                  for c, point in enumerate(itertools.product(*(values[key] for key in swept))))
    for cell in cells:
        _check_cell(cell)
    _check_communities(cells, run["seed"], run["dtype"])

    config = {section: {key: _json_ready(v) for key, v in values.items()}
              for section, values in checked.items()}
    return Study(
        name=run["name"], seed=run["seed"], out=Path(run["out"]), chunk_size=run["chunk_size"],
        dtype=run["dtype"], cases_per_cell=run["cases_per_cell"], cells=cells, swept=swept,
        config=config, config_hash=config_hash(config))


def _check_cell(cell: Cell) -> None:
    """Checks that involve several keys, on every combination the sweep produces."""
    cell.generator.validate()
    solver = cell.solver
    if solver.trace_every % solver.check_every:
        raise InputError("solver.trace_every", f"must be a multiple of solver.check_every "
                                               f"({solver.check_every}), got {solver.trace_every}")


def _check_communities(cells: tuple[Cell, ...], seed: int, dtype: str) -> None:
    """Let the generator check each distinct community setting (e.g. max_share against
    n_agents) by tracing it abstractly: nothing is computed or compiled."""
    settings = {(c.n_agents, c.generator, tuple(c.section("graph").values())): c for c in cells}
    for cell in settings.values():
        jax.eval_shape(lambda: cell.communities(seed, [0], dtype))


def config_hash(config: dict) -> str:
    """Stable hash of what a study computes (the resolved config without ``run.out``)."""
    content = {s: {k: v for k, v in values.items() if (s, k) != ("run", "out")}
               for s, values in config.items()}
    text_form = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text_form.encode()).hexdigest()[:16]


def load_study(path, overrides: Iterable[str] = (), out=None) -> Study:
    """Read a study file, apply ``--set`` overrides and ``--out``, validate everything."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(str(path), f"cannot read: {getattr(error, 'strerror', None) or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(str(path), f"malformed TOML: {error}") from None
    pairs = [parse_override(o) for o in overrides]
    if out is not None:
        pairs.append(("run.out", str(out)))
    return resolve(raw, default_name=path.stem, overrides=pairs)


def solver_options(values: dict) -> SolverOptions:
    """Solver options checked like a study's ``[solver]`` section (``jaxmarket solve``)."""
    return resolve({"solver": values}, default_name="solve").cells[0].solver
