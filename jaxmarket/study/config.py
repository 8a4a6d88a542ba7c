"""Study files: the TOML schema of a Monte Carlo sweep, its validation and its cells.

```
[run]        name (file stem), seed (0), out ("outputs/<name>"), chunk_size (256),
             dtype ("float64" | "float32"), cases_per_cell (100)
[community]  n_agents (25) and every GeneratorParams field (ranges are [low, high])
[graph]      layout ("full" | "bipartite" | "centralized" | "community"), sparsity (0.0,
             in [0, 1)), n_communities (3), charges_between_communities_only (false)
[network]    case (none: generated communities), policy ("none" | "unique" |
             "distance_ptd" | "distance_thevenin" | "zonal"), fee (0.0, u in €/MWh),
             cost_perturbation (0.0, relative, in [0, 1))
[reserve]    allocation ("rel_1" | "rel_mu" | "rel_sigma" | "abs_sigma"), confidence (delta:
             0.95, in (0, 1)),
             uncertain_fraction (0.2), distribution ("gaussian" | "beta"), reserve_share
             (0.2), reserve_cost_factor (1.0): the energy and reserve market
             (``jaxmarket.reserve_study``); absent, the section is left out of the resolved
             config (hashes of other studies unchanged)
[solver]     algorithm ("admm" | "rci" | "pcmbed" | "ced" | "ced_mean"), rho (1.0),
             eps_primal (1e-4), eps_dual (1e-4), max_iter (10000), check_every (1),
             trace_every (0 = no trace); ADMM: rho_balance (0 = fixed rho, else the
             residual ratio of residual balancing), rho_balance_factor (2.0),
             rho_balance_every (10); RCI/PCMBED: eps_price, eps_power (1e-4) and the
             sequences alpha, beta, eta, delta as [c, p] in c / k^p (thesis defaults)
```

With ``network.case`` (a JSON case file with a grid, path relative to the working
directory) the cells solve that case instead of generated communities: case k is the
file's case with costs perturbed from ``(seed, k)`` (``case.perturbed_costs``; case 0 is
the file itself) and the policy's network charges at fee u (``jaxmarket.charges``); such a
study has no ``[community]`` or ``[graph]`` section, and its rows carry the grid columns
(line loadings, inter-zone volume). Without ``network.case`` the ``[network]`` section is
left out of the resolved config, so generator studies keep their cells and config hash.

Any key of ``[community]``, ``[graph]``, ``[network]``, ``[reserve]`` and ``[solver]`` may be given as a list of values
(for a range key: a list of ranges) to sweep it. The cells are the Cartesian product of
the swept lists, ordered like nested loops: keys in the order of the schema above
(community, graph, network, reserve, solver; within a section as listed, generator fields in
GeneratorParams order), the last swept key varying fastest, values in the order given.
Cell c is the c-th element of that product.

``run.out`` is relative to the working directory. The config hash identifies what a
study computes: it covers the resolved config except ``run.out`` (moving a dataset does
not change it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import jax

from jaxmarket.algorithms import check_algorithm, solver_schema
from jaxmarket.charges import POLICIES, GridCase, load_grid_case
from jaxmarket.errors import InputError
from jaxmarket.generator import LAYOUTS, GeneratorParams, generate
from jaxmarket.markets.reserve import ReserveStudyParams, check_algorithm as check_reserve_algorithm
from jaxmarket.renewables import RenewableParams
from jaxmarket.schema import child, integer, number, record, show, text
from jaxmarket.study.cell import Cell, pair_suffixes
from jaxmarket.uncertainty import ALLOCATIONS, DISTRIBUTIONS

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


class Key(NamedTuple):
    """A study key, declared once: default (None: filled in from the context), checker
    ``check(value, field) -> value``, unit and description (the label columns' metadata)."""
    default: Any
    check: Any
    unit: str
    description: str


def _generator_schema() -> dict[str, Key]:
    """GeneratorParams fields: tuples are ranges, the rest numbers."""
    return {f.name: Key(f.default, _range if isinstance(f.default, tuple) else number,
                        f.metadata["unit"], f.metadata["description"])
            for f in dataclasses.fields(GeneratorParams)}


def _solver_schema() -> dict[str, Key]:
    return {"algorithm": Key("admm", check_algorithm, "n/a", "market algorithm (registry name)"),
            **{key: Key(f.default, f.metadata["check"], f.metadata["unit"], f.metadata["description"])
               for key, f in solver_schema().items()}}


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def _flag(value, field):
    if not isinstance(value, bool):
        raise InputError(field, f"expected true or false, got {show(value)}")
    return value


# section -> key -> Key.
SCHEMA: dict[str, dict[str, Key]] = {
    "run": {
        "name": Key(None, _name, "n/a", "study name (default: the file's stem)"),
        "seed": Key(0, partial(integer, ge=0), "n/a", "seed of every case's random stream"),
        "out": Key(None, text, "n/a", "output folder (default outputs/<name>)"),
        "chunk_size": Key(256, partial(integer, gt=0), "cases", "cases solved and written together"),
        "dtype": Key("float64", partial(text, choices=DTYPES), "n/a", "precision of the algorithm"),
        "cases_per_cell": Key(100, partial(integer, gt=0), "cases", "random cases of every cell"),
    },
    "community": {"n_agents": Key(25, partial(integer, ge=2), "count",
                                  "producers, consumers and prosumers per community"),
                  **_generator_schema()},
    "graph": {
        "layout": Key("full", partial(text, choices=LAYOUTS), "n/a",
                      "trade layout: full, bipartite, centralized or community"),
        "sparsity": Key(0.0, partial(number, ge=0, lt=1), "1",
                        "share of the layout's edges deleted at random"),
        "n_communities": Key(_default(generate, "n_communities"), partial(integer, ge=1), "count",
                             "communities (managers) of the community layout"),
        "charges_between_communities_only": Key(
            _default(generate, "charges_between_communities_only"), _flag, "n/a",
            "only trades between two communities pay the charge"),
    },
    "network": {
        "case": Key(None, text, "n/a", "case file with a grid: a packaged name or a path"),
        "policy": Key("none", partial(text, choices=POLICIES), "n/a",
                      "network charge policy: none, unique, distance_ptd, distance_thevenin, zonal"),
        "fee": Key(0.0, partial(number, ge=0), "EUR/MWh",
                   "unit network fee u (per unit of the policy's distance)"),
        "cost_perturbation": Key(0.0, partial(number, ge=0, lt=1), "1",
                                 "relative perturbation of every agent's a and b (case k > 0)"),
    },
    # Energy and reserve market (jaxmarket.markets.reserve); absent: the plain P2P market.
    "reserve": {
        "allocation": Key(ReserveStudyParams.allocation, partial(text, choices=ALLOCATIONS), "n/a",
                          "allocation of the confidence level: rel_1, rel_mu, rel_sigma, abs_sigma"),
        # delta of the thesis ("delta" names the RCI sequence of [solver]).
        "confidence": Key(ReserveStudyParams.delta, partial(number, gt=0, lt=1), "1",
                          "global confidence level delta of the reserve requirement"),
        **{f.name: Key(f.default, f.metadata["check"], f.metadata["unit"], f.metadata["description"])
           for f in dataclasses.fields(RenewableParams) if "check" in f.metadata},
    },
    # Derived from the fields of every registered algorithm (jaxmarket.algorithms).
    "solver": _solver_schema(),
}
def label_units() -> dict[str, tuple[str, str]]:
    """Unit and description of every label column a key of a swept section can give (a
    pair-valued key gives two columns, ``_lo``/``_hi`` or ``_c``/``_p``)."""
    labels = {}
    for section in SWEPT_SECTIONS:
        for key, entry in SCHEMA[section].items():
            if isinstance(entry.default, tuple):
                for suffix, end in zip(pair_suffixes(f"{section}.{key}"), ("first", "second")):
                    labels[key + suffix] = (entry.unit, f"{entry.description} ({end} value)")
            else:
                labels[key] = (entry.unit, entry.description)
    return labels


# Keys whose value is a pair: a list of numbers is that pair, a list of lists a sweep.
RANGES = tuple(key for table in SCHEMA.values() for key, entry in table.items()
               if isinstance(entry.default, tuple))
SWEPT_SECTIONS = ("community", "graph", "network", "reserve", "solver")


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
    check = SCHEMA[section][key].check
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
    """Validate a decoded study (plus overrides) and expand its cells; the only I/O is
    reading the case files a ``[network]`` section names."""
    merged = _apply(raw, overrides)
    record(merged, "", {section: lambda value, field: value for section in SCHEMA}, what="a table")
    checked = {}
    for section, keys in SCHEMA.items():
        given = record(merged.get(section, {}), section,
                       {key: partial(_check_value, section, key) for key in keys}, what="a table")
        checked[section] = {key: given.get(key, entry.default) for key, entry in keys.items()}
    run = checked["run"]
    run["name"] = run["name"] or _name(default_name, "run.name")
    run["out"] = run["out"] or f"outputs/{run['name']}"
    grid_cases = _grid_cases(checked, merged)
    _omit_unused_keys(checked, merged)
    if not merged.get("reserve"):
        del checked["reserve"]  # studies without it keep their hash

    values = {f"{s}.{k}": v for s in SWEPT_SECTIONS if s in checked for k, v in checked[s].items()}
    swept = tuple(key for key, v in values.items() if isinstance(v, list))
    cells = []
    for c, point in enumerate(itertools.product(*(values[key] for key in swept))):
        cell_values = {**values, **dict(zip(swept, point))}
        cells.append(Cell(c, cell_values, grid_cases.get(cell_values.get("network.case"))))
    cells = tuple(cells)
    for cell in cells:
        _check_cell(cell)
    _check_communities(cells, run["seed"], run["dtype"])

    config = {section: {key: _json_ready(v) for key, v in values.items()}
              for section, values in checked.items()}
    return Study(
        name=run["name"], seed=run["seed"], out=Path(run["out"]), chunk_size=run["chunk_size"],
        dtype=run["dtype"], cases_per_cell=run["cases_per_cell"], cells=cells, swept=swept,
        config=config, config_hash=config_hash(config))


def _grid_cases(checked: dict, merged: dict) -> dict[str, GridCase]:
    """Either generated communities (the ``[network]`` section is dropped) or case files
    with a grid (``[community]`` and ``[graph]`` are dropped); loads each case file once."""
    paths = checked["network"]["case"]
    if paths is None:
        given = sorted(merged.get("network", {}))
        if given:
            raise InputError(f"network.{given[0]}", "needs network.case (a JSON case file with a grid)")
        del checked["network"]
        return {}
    for section in ("community", "graph"):
        if merged.get(section):
            raise InputError(section, "a study over network.case takes its agents and graph from the "
                                      "case file; remove this section")
        del checked[section]
    return {path: load_grid_case(path) for path in (paths if isinstance(paths, list) else [paths])}


# Keys added after the first studies: left out of the resolved config unless given, so that
# the studies written before them keep their config hash (and can be resumed).
OPTIONAL_KEYS = {"graph": ("n_communities", "charges_between_communities_only"),
                 "solver": tuple(key for key, f in solver_schema().items() if f.metadata["optional"])}


def _omit_unused_keys(checked: dict, merged: dict) -> None:
    for section, keys in OPTIONAL_KEYS.items():
        if section in checked:
            for key in keys:
                if key not in merged.get(section, {}):
                    del checked[section][key]


def _check_cell(cell: Cell) -> None:
    """Checks that involve several keys, on every combination the sweep produces."""
    if cell.grid_case is None:
        cell.generator.validate()
    algorithm = cell.algorithm
    if cell.reserve is not None:
        cell.reserve.validate()
        check_reserve_algorithm(algorithm)
    if cell.values.get("solver.rho_balance") and (
            "rho_balance" not in {f.name for f in algorithm.declarations()} or cell.reserve):
        raise InputError("solver.rho_balance", "residual balancing is an option of the P2P "
                                               "consensus ADMM family (no [reserve]) only")
    if cell.values.get("solver.stopping", "global") != "global" and (
            algorithm.name != "admm" or cell.reserve or algorithm.rho_balance):
        raise InputError("solver.stopping", "local stopping rules are an option of P2P consensus "
                                            "ADMM (admm, fixed rho, no [reserve]) only")
    if algorithm.trace_every % algorithm.check_every:
        raise InputError("solver.trace_every", f"must be a multiple of solver.check_every "
                                               f"({algorithm.check_every}), got {algorithm.trace_every}")


def _check_communities(cells: tuple[Cell, ...], seed: int, dtype: str) -> None:
    """Let the generator check each distinct community setting (e.g. max_share against
    n_agents) by tracing it abstractly: nothing is computed or compiled."""
    settings = {(c.n_agents, c.generator, tuple(c.section("graph").values())): c
                for c in cells if c.grid_case is None}
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


def solver_options(values: dict):
    """The algorithm of a ``[solver]`` section checked like a study's (``jaxmarket solve``)."""
    return resolve({"solver": values}, default_name="solve").cells[0].algorithm
