"""Study files: reading, validating and expanding a study into its cells.

The keys, their defaults, checks and units are declared in ``jaxmarket.study.keys`` (and
rendered in ``docs/study-file.md``): sections ``[run]``, ``[community]``, ``[graph]``,
``[network]``, ``[reserve]``, ``[solver]`` and ``[asynchrony]``.

With ``network.case`` (a JSON case file with a grid, path relative to the working
directory) the cells solve that case instead of generated communities: case k is the
file's case with costs perturbed from ``(seed, k)`` (``case.perturbed_costs``; case 0 is
the file itself) and the policy's network charges at fee u (``jaxmarket.charges``;
``network.fee`` may be a table giving each policy its own fee, ``fee_of_policy``); such a
study has no ``[community]`` or ``[graph]`` section, and its rows carry the grid columns
(line loadings, inter-zone volume). Without ``network.case`` the ``[network]`` section is
left out of the resolved config, so generator studies keep their cells and config hash.

Any key of ``[community]``, ``[graph]``, ``[network]``, ``[reserve]``, ``[solver]`` and
``[asynchrony]`` may be given as a list of values
(for a range key: a list of ranges) to sweep it. The cells are the Cartesian product of
the swept lists, ordered like nested loops: keys in the order of the declarations
(community, graph, network, reserve, solver, asynchrony; within a section as listed, generator fields in
GeneratorParams order), the last swept key varying fastest, values in the order given.
Cell c is the c-th element of that product.

``run.out`` is relative to the working directory. The config hash identifies what a
study computes: it covers the resolved config except ``run.out`` (moving a dataset does
not change it), including ``network.case_sha256``, the SHA-256 of every case file's bytes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterable

import jax

from jaxmarket import algorithms
from jaxmarket.algorithms.rci import tuned
from jaxmarket.asynchrony import check_algorithm as check_async_algorithm
from jaxmarket.cases import locate
from jaxmarket.charges import GridCase, load_grid_case
from jaxmarket.errors import InputError
from jaxmarket.markets.reserve import check_algorithm as check_reserve_algorithm
from jaxmarket.schema import child, magnitude, record, show
from jaxmarket.study.cell import Cell
from jaxmarket.study.keys import (FEE_POLICIES, OPTIONAL_KEYS, RANGES, SCHEMA, SWEPT_SECTIONS,
                                  name_check)
from jaxmarket.study.resources import check_resources

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
    """A key's value: one scalar, or for swept sections a non-empty list of distinct ones;
    every number in it a market quantity in the key's unit (``schema.magnitude``)."""
    def check(v, f):
        return magnitude(SCHEMA[section][key].check(v, f), f)

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


def resolve(raw: dict, default_name: str, overrides: Iterable[tuple[str, Any]] = (), *,
            recorded: bool = False) -> Study:
    """Validate a decoded study (plus overrides) and expand its cells; the only I/O is
    reading the case files a ``[network]`` section names. ``recorded``: ``raw`` is the
    resolved config a dataset's manifest holds (``jaxmarket report``), which lists every
    algorithm's keys; its options were checked when it ran."""
    merged = _apply(raw, overrides)
    record(merged, "", {section: lambda value, field: value for section in SCHEMA}, what="a table")
    pinned = merged.get("network", {}).pop("case_sha256", None) if isinstance(merged.get("network"), dict) else None
    checked = {}
    for section, keys in SCHEMA.items():
        given = record(merged.get(section, {}), section,
                       {key: partial(_check_value, section, key) for key in keys}, what="a table")
        checked[section] = {key: given.get(key, entry.default) for key, entry in keys.items()}
    run = checked["run"]
    run["name"] = run["name"] or name_check(default_name, "run.name")
    run["out"] = run["out"] or f"outputs/{run['name']}"
    grid_cases = _grid_cases(checked, merged)
    _omit_unused_keys(checked, merged)
    # RCI sequences left unset take their tuning's values, here when the study has one
    # tuning (the config then shows what runs, and a study without solver.tuning keeps the
    # config hash it had before tunings existed), else cell by cell below.
    checked["solver"] = tuned(checked["solver"])
    for section in ("reserve", "asynchrony"):
        if not merged.get(section):
            del checked[section]  # studies without it keep their hash

    values = {f"{s}.{k}": v for s in SWEPT_SECTIONS if s in checked for k, v in checked[s].items()}
    swept = tuple(key for key, v in values.items() if isinstance(v, list))
    _check_fee_table(values)
    cells = []
    for c, point in enumerate(itertools.product(*(values[key] for key in swept))):
        cell_values = fee_of_policy(tuned({**values, **dict(zip(swept, point))}, prefix="solver."))
        cells.append(Cell(c, cell_values, grid_cases.get(cell_values.get("network.case"))))
    cells = tuple(cells)
    for cell in cells:
        _check_cell(cell)
    # Before the generator is traced: tracing a huge community allocates its index arrays.
    check_resources(len(cells), max(cell.n_agents for cell in cells), run["cases_per_cell"],
                    run["chunk_size"])
    _check_communities(cells, run["seed"], run["dtype"])

    config = {section: {key: _json_ready(v) for key, v in values.items()}
              for section, values in checked.items()}
    if grid_cases:
        config["network"]["case_sha256"] = _case_checksums(grid_cases, pinned)
    if not recorded:
        _check_solver_keys(cells, raw, merged, overrides)
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


def _case_checksums(grid_cases: dict, pinned) -> dict[str, str]:
    """SHA-256 of every case file's bytes, part of the config hash: a study over an edited
    case file is another study. ``pinned`` (a manifest's record, read back by ``jaxmarket
    report``) must match the files as they are now."""
    checksums = {path: hashlib.sha256(locate(path).read_bytes()).hexdigest() for path in grid_cases}
    if pinned is not None:
        for path, checksum in checksums.items():
            if not isinstance(pinned, dict) or pinned.get(path) != checksum:
                raise InputError("network.case", f"{path} changed since the dataset was written "
                                                 f"(its SHA-256 differs from the manifest's)")
    return checksums


def _check_fee_table(values: dict) -> None:
    """A fee table names only swept policies and gives every policy that charges a fee
    its own."""
    fees = values.get("network.fee")
    if not isinstance(fees, dict):
        return
    policies = values["network.policy"]
    policies = policies if isinstance(policies, list) else [policies]
    for policy in fees:
        if policy not in policies:
            raise InputError(f"network.fee.{policy}", f"policy {policy} is not in network.policy")
    missing = [p for p in policies if p in FEE_POLICIES and p not in fees]
    if missing:
        raise InputError("network.fee", f"the fee table has no fee for policy {missing[0]}")


def fee_of_policy(values: dict) -> dict:
    """A cell's values with a fee table (``network.fee = {policy = u}``) replaced by the
    fee of the cell's policy (0 for a policy without a fee): how a study pairs each policy
    with its own fee, since cells are the Cartesian product of the swept keys."""
    fees = values.get("network.fee")
    if not isinstance(fees, dict):
        return values
    return {**values, "network.fee": fees.get(values["network.policy"], 0.0)}


def _omit_unused_keys(checked: dict, merged: dict) -> None:
    for section, keys in OPTIONAL_KEYS.items():
        if section in checked:
            for key in keys:
                if key not in merged.get(section, {}):
                    del checked[section][key]


def _check_solver_keys(cells: tuple[Cell, ...], raw: dict, merged: dict,
                       overrides: Iterable[tuple[str, Any]]) -> None:
    """A ``[solver]`` key that no algorithm of the study reads is a mistake (an option of
    another algorithm, a sweep that only repeats cells): keys of other algorithms are meant
    only when one of the study's algorithms reads them (a study sweeping algorithms gives
    the union of their keys). A key of the file may also serve an algorithm the file names
    that ``--set solver.algorithm`` replaced (``jaxmarket tune`` narrows a study to one
    algorithm); a key given with ``--set`` must serve the study as it runs."""
    def options(running) -> dict[str, None]:
        return {f.name: None for algorithm in running for f in algorithm.declarations()}

    running = {cell.algorithm.name: cell.algorithm for cell in cells}
    read = options(running.values())
    solver = raw.get("solver")
    named = solver.get("algorithm", "admm") if isinstance(solver, dict) else "admm"
    named = [name for name in (named if isinstance(named, list) else [named])
             if isinstance(name, str) and name in algorithms.names()]
    read_by_file = options(algorithms.get(name) for name in named)
    overridden = {key.split(".", 1)[1] for key, _ in overrides if key.startswith("solver.")}
    for key in merged.get("solver", {}):
        if key == "algorithm" or key in read or (key not in overridden and key in read_by_file):
            continue
        if len(running) == 1:
            (name,) = running
            problem = f"not an option of {name} (its options: {', '.join(read)})"
        else:
            problem = f"not an option of any algorithm of the study ({', '.join(running)})"
        raise InputError(f"solver.{key}", problem)


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
        balanced = [name for name in algorithms.names()
                    if "rho_balance" in {f.name for f in algorithms.get(name).declarations()}]
        raise InputError("solver.rho_balance", f"residual balancing is an option of "
                                               f"{', '.join(balanced)} (P2P, no [reserve]) only")
    if cell.values.get("solver.stopping", "global") != "global" and (
            algorithm.name != "admm" or cell.reserve or algorithm.rho_balance):
        raise InputError("solver.stopping", "local stopping rules are an option of P2P consensus "
                                            "ADMM (admm, fixed rho, no [reserve]) only")
    if cell.asynchrony is not None:
        if cell.reserve is not None:
            raise InputError("asynchrony", "asynchrony is simulated for the P2P and pool markets "
                                           "only (no [reserve])")
        check_async_algorithm(algorithm)
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
    if not raw:  # an empty or truncated file is not a request for the default study
        raise InputError(str(path), "holds no study (no table, no key)")
    pairs = [parse_override(o) for o in overrides]
    if out is not None:
        pairs.append(("run.out", str(out)))
    return resolve(raw, default_name=path.stem, overrides=pairs)


def solver_options(values: dict):
    """The algorithm of a ``[solver]`` section checked like a study's (``jaxmarket solve``)."""
    return resolve({"solver": values}, default_name="solve").cells[0].algorithm
