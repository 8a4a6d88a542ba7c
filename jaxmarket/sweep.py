"""The sweep runner: a study's cells x cases, solved in chunks, written as a Parquet dataset.

Case k of every cell is the community ``cell.communities(seed, [k])``: cells that share the
community parameters (e.g. a solver sweep) solve the very same communities, so their rows
pair up by ``case_index`` for paired comparisons; cells whose community parameters differ
draw case k from the same (seed, k) stream.

A cell's cases run in chunks of ``min(chunk_size, cases_per_cell)``; the last chunk is
padded by repeating its last case index (the extra rows are dropped) so that one compiled
shape serves the whole cell. Results do not depend on the chunk size: the solver freezes
each case once it stops.

Dataset layout under ``OUT``::

    manifest.json                         config, hash, versions, device, finished chunks
    cases/part-cCCCC-kKKKKK.parquet       one row per case (cell C, cases from K on)
    traces/part-cCCCC-kKKKKK.parquet      residual trace, long format (trace_every > 0)

Every file is written to a hidden temporary file in its directory and renamed into place;
a chunk's trace is written before its cases, and the manifest is updated last, so the
manifest only lists chunks that are complete on disk. ``--resume`` reruns every chunk the
manifest does not list.

A run in several processes (``jax.distributed``, ``prepare(..., process, processes)``)
splits the chunks by position, every ``processes``-th one to a process; each process
writes its parts and its own ``manifest-process-PPPP.json``, and ``read_manifest`` merges
the manifests of a dataset.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import jax
import jaxlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import jaxmarket
from jaxmarket.community import Community, concatenate, take
from jaxmarket.config import Cell, Study
from jaxmarket.errors import InputError
from jaxmarket.reserve_study import run_reserve_market, tabulate_reserve
from jaxmarket.solve import (DRIVERS, SolverOptions, driver_options, neighbour_widths, run_market,
                             tabulate)

TIMING_COLUMNS = ("wall_time_s",)  # the only columns allowed to differ between two runs
MANIFEST = "manifest.json"
FORMAT = 1
# What must not change while a study is resumed: the rows would mix two computations.
PINNED = ("jaxmarket", "jax", "jaxlib", "numpy", "backend", "device_kind")


@dataclass(frozen=True)
class Chunk:
    cell: Cell
    start: int  # first case index
    stop: int  # one past the last case index

    @property
    def name(self) -> str:
        return f"part-c{self.cell.index:04d}-k{self.start:05d}"

    @property
    def n_cases(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Plan:
    study: Study
    chunks: tuple[Chunk, ...]  # every chunk of the study, in run order
    done: dict  # manifest entries of the chunks already on disk
    overwrite: bool  # delete the existing dataset before writing
    process: int = 0  # this process of a multi-process run ...
    processes: int = 1  # ... of this many: it runs chunks process, process + processes, ...

    @property
    def assigned(self) -> tuple[Chunk, ...]:
        """The chunks this process runs (every chunk in a run in one process)."""
        return self.chunks[self.process::self.processes]

    @property
    def pending(self) -> tuple[Chunk, ...]:
        return tuple(c for c in self.assigned if c.name not in self.done)

    @property
    def manifest(self) -> str:
        return manifest_name(self.process, self.processes)


def batch_size(study: Study) -> int:
    return min(study.chunk_size, study.cases_per_cell)


def chunks(study: Study) -> tuple[Chunk, ...]:
    size, count = batch_size(study), study.cases_per_cell
    return tuple(Chunk(cell, start, min(start + size, count))
                 for cell in study.cells for start in range(0, count, size))


def case_indices(chunk: Chunk, size: int) -> np.ndarray:
    """The chunk's case indices, padded to ``size`` by repeating the last one."""
    return np.minimum(np.arange(chunk.start, chunk.start + size), chunk.stop - 1)


def check_driver(driver: str) -> None:
    if driver not in DRIVERS:
        raise InputError("--driver", f"unknown driver {driver!r}; choose one of {list(DRIVERS)}")


def use_cpu_devices(count: int) -> None:
    """Split the CPU into ``count`` JAX devices (0: one per core) so that continuous batching
    runs a set of lanes on every core; rows do not change. Only possible before JAX's first
    computation and left alone when ``XLA_FLAGS`` already forces a device count."""
    if count < 0:
        raise InputError("--cpu-devices", f"must be >= 0, got {count}")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    try:
        jax.config.update("jax_num_cpu_devices", count or os.cpu_count() or 1)
    except RuntimeError:  # JAX already computed something: keep the devices it started with
        pass


def environment() -> dict:
    devices = jax.devices()
    return {
        "jaxmarket": jaxmarket.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
    }


# ---------------------------------------------------------------------------------------
# Computing a group of chunks (pure apart from the clock)


@dataclass(frozen=True)
class Group:
    """Consecutive chunks solved as one queue (same agent count and solver options): the
    lanes of the continuous driver drain only at the end of a group, not of every chunk."""
    chunks: tuple[Chunk, ...]
    slots: int  # chunks the compiled queue holds (the last group of a run may fill fewer)

    @property
    def cell(self) -> Cell:
        return self.chunks[0].cell


def queue_cases(n_agents: int) -> int:
    """Cases a group may hold: about 2^20 trades on a CPU (some 100 MB of communities,
    results and traces at N = 25, 1677 cases), 2^26 on an accelerator (16 queues of lanes)."""
    trades = 2**20 if jax.default_backend() == "cpu" else 2**26
    return max(1, trades // n_agents**2)


def groups(study: Study, pending: tuple[Chunk, ...]) -> tuple[Group, ...]:
    """Cut the pending chunks into groups of consecutive chunks sharing a compiled solver,
    as even in size as the queue bound allows (few shapes, little padding)."""
    runs: list[list[Chunk]] = []
    for chunk in pending:
        first = runs[-1][0].cell if runs else None
        if first is not None and compile_key(first) == compile_key(chunk.cell) \
                and (first.solver, first.reserve) == (chunk.cell.solver, chunk.cell.reserve):
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    result = []
    for run_ in runs:
        most = max(1, queue_cases(run_[0].cell.n_agents) // batch_size(study))
        slots = -(-len(run_) // -(-len(run_) // most))
        result += [Group(tuple(run_[i:i + slots]), slots) for i in range(0, len(run_), slots)]
    return tuple(result)


def compile_key(cell: Cell) -> tuple:
    """What makes the solver compile anew within a study (fixed batch size and dtype); rho
    and the tolerances are traced values."""
    reserve = cell.reserve and cell.reserve.allocation  # a static argument of the allocation
    return cell.n_agents, cell.solver._replace(rho=0.0, eps_primal=0.0, eps_dual=0.0), reserve


def group_communities(study: Study, group: Group) -> tuple[Community, np.ndarray]:
    """The group's queue and its case indices: every chunk padded to the batch size
    (``case_indices``), missing slots filled with copies of the last case (their rows are
    dropped)."""
    size = batch_size(study)
    indices = [case_indices(chunk, size) for chunk in group.chunks]
    parts = [chunk.cell.communities(study.seed, chunk_indices, study.dtype)
             for chunk, chunk_indices in zip(group.chunks, indices)]
    missing = (group.slots - len(group.chunks)) * size
    if missing:
        parts.append(take(parts[-1], np.full(missing, size - 1)))
        indices.append(np.full(missing, indices[-1][-1]))
    return concatenate(parts), np.concatenate(indices)


def run_cell(study: Study, cell: Cell, community: Community, indices: np.ndarray,
             solver: SolverOptions, driver: str):
    """The cell's distributed algorithm on the queue: the P2P or pool market, or the energy
    and reserve market of a ``[reserve]`` study."""
    if cell.reserve is None:
        return run_market(community, solver, driver)
    return run_reserve_market(community, cell.reserve, study.seed, indices, solver, driver)


def trade_layouts(group: Group, community: Community, driver: str) -> dict[str, dict]:
    """Per trade layout of the kernel ("dense", "neighbours/D"): the queue's cases on it and
    the lanes (blocked and plain drivers: cases per block) that served them, logged in the
    manifest; the energy and reserve market always runs dense."""
    solver = group.cell.solver
    widths = (np.zeros(community.n_cases, int) if group.cell.reserve is not None
              else neighbour_widths(community, solver))
    layouts = {}
    for width, count in zip(*np.unique(widths, return_counts=True)):
        options = driver_options(community, solver, driver, int(width))
        layouts[f"neighbours/{width}" if width else "dense"] = {
            "cases": int(count), "lanes": options.lanes or options.block_size}
    return layouts


def tabulate_cell(cell: Cell, community: Community, solver: SolverOptions, market):
    if cell.reserve is None:
        return tabulate(community, solver, market)
    return tabulate_reserve(community, cell.reserve, market)


def warm_up(study: Study, group: Group, community: Community, indices: np.ndarray,
            driver: str) -> None:
    """Compile the driver for the queue and the tabulation for a chunk at the cost of one
    iteration per case: infinite tolerances stop every case at its first check."""
    inf = float("inf")
    quick = group.cell.solver._replace(eps_primal=inf, eps_dual=inf, eps_price=inf, eps_power=inf)
    market = run_cell(study, group.cell, community, indices, quick, driver)
    first_chunk, first_market = _slot((community, market), 0, batch_size(study))
    jax.block_until_ready(tabulate_cell(group.cell, first_chunk, quick, first_market))


def _slot(tree, first: int, size: int):
    """Cases ``first .. first + size`` of a batch pytree (the lane count is not per case)."""
    def cut(v):
        return v[first:first + size] if getattr(v, "ndim", 0) else v
    return jax.tree_util.tree_map(cut, tree)


@dataclass(frozen=True)
class Solved:
    chunk: Chunk
    cases: pa.Table
    trace: pa.Table | None


def solve_group(study: Study, group: Group, community: Community, indices: np.ndarray,
                driver: str) -> tuple[list[Solved], dict]:
    """Rows (and residual traces) of the group's real cases, chunk by chunk, and the lane
    counts of the solve. ``wall_time_s`` is the group's solve time over its real cases."""
    size, cell = batch_size(study), group.cell
    start = time.perf_counter()
    market = run_cell(study, cell, community, indices, cell.solver, driver)
    results = [tabulate_cell(cell, chunk_community, cell.solver, chunk_market)
               for chunk_community, chunk_market in
               (_slot((community, market), slot * size, size) for slot in range(len(group.chunks)))]
    jax.block_until_ready(results)
    elapsed = time.perf_counter() - start
    n_real = sum(chunk.n_cases for chunk in group.chunks)
    solved = []
    for chunk, result in zip(group.chunks, results):
        n = chunk.n_cases
        indices = case_indices(chunk, size)
        ids = {"study": study.name, "cell": chunk.cell.index, "case_index": indices[:n],
               "seed": study.seed, "dtype": study.dtype, **chunk.cell.labels()}
        columns = {key: np.full(n, value) for key, value in ids.items()}
        for key, value in {**result.rows, **chunk.cell.grid_columns(result.trades)}.items():
            value = np.asarray(value)[:n]
            if key in columns and not np.array_equal(columns[key], value):  # e.g. n_agents
                raise RuntimeError(f"metric {key!r} disagrees with the cell's {key!r}")
            columns[key] = value
        columns["wall_time_s"] = np.full(n, elapsed / n_real)
        trace = None
        if result.trace is not None:
            position = np.asarray(result.trace["case"])
            keep = position < n
            head = {"study": study.name, "cell": chunk.cell.index,
                    "case_index": indices[position[keep]]}
            trace = pa.table({**{key: np.full(keep.sum(), v) for key, v in head.items()},
                              **{key: np.asarray(v)[keep] for key, v in result.trace.items()
                                 if key != "case"}})
        solved.append(Solved(chunk, pa.table(columns), trace))
    useful = sum(int(s.cases.column("iterations").to_numpy().sum()) for s in solved)
    return solved, {"case_iterations": useful, "lane_iterations": int(market.lane_iterations),
                    "solve_s": elapsed}


# ---------------------------------------------------------------------------------------
# Files


def write_atomic(path: Path, write: Callable) -> None:
    """Write through a hidden temporary file in the same directory, then rename it."""
    temporary = _temporary_of(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _temporary_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def write_table(path: Path, table: pa.Table, metadata: dict) -> None:
    table = table.replace_schema_metadata({b"jaxmarket": json.dumps(metadata).encode()})
    write_atomic(path, lambda handle: pq.write_table(table, handle))


def manifest_name(process: int, processes: int) -> str:
    """``manifest.json`` for a run in one process; process P of a multi-process run writes
    ``manifest-process-PPPP.json``, so that no file has two writers."""
    return MANIFEST if processes == 1 else f"manifest-process-{process:04d}.json"


def write_manifest(out: Path, manifest: dict, name: str = MANIFEST) -> None:
    text = json.dumps(manifest, indent=1).encode()
    write_atomic(out / name, lambda handle: handle.write(text))


def read_manifest(out: Path, name: str | None = None) -> dict | None:
    """The manifest ``name``, or (default) the dataset's manifests merged: the chunks that
    any of them lists (a study run by several processes, or resumed with another process
    count), complete when every chunk of the study is there."""
    paths = [out / name] if name else sorted(out.glob("manifest*.json"))
    manifests = []
    for path in paths:
        if not path.exists():
            continue
        try:
            manifests.append(json.loads(path.read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(str(path), f"unreadable manifest ({error}); use --overwrite to start over") from None
    if not manifests:
        return None
    first = manifests[0]
    if any(m.get("config_hash") != first.get("config_hash") for m in manifests):
        raise InputError(str(out), "its manifests describe different studies; use --overwrite or another --out")
    merged = {**first, "chunks": {k: v for m in manifests for k, v in m.get("chunks", {}).items()}}
    merged["complete"] = len(merged["chunks"]) == first.get("n_chunks")
    return merged


# ---------------------------------------------------------------------------------------
# Running a study


def prepare(study: Study, resume: bool = False, overwrite: bool = False, process: int = 0,
            processes: int = 1) -> Plan:
    """Decide what to run from the state of ``study.out``; reads only, writes nothing.

    Process ``process`` of a run in ``processes`` processes (``jax.distributed``) takes every
    ``processes``-th chunk of the study. The processes do not talk to each other: each one
    writes its own parts and its own manifest, and only its own earlier manifest asks for
    ``--resume`` (the others may already be writing theirs)."""
    out = study.out
    if resume and overwrite:
        raise InputError("--resume", "cannot be combined with --overwrite")
    if overwrite and processes > 1:
        raise InputError("--overwrite", "would let one process delete what another writes; "
                                        "delete the dataset first or choose another --out")
    if out.exists() and not out.is_dir():
        raise InputError("run.out", f"{out} exists and is not a directory")
    # Another process of the run may be writing its first manifest: list the directory
    # before reading the manifests, and skip hidden temporary files (``write_atomic``).
    entries = [p for p in out.iterdir() if not _temporary(p)] if out.exists() else []
    manifest = read_manifest(out) if out.exists() else None
    if manifest is None and entries:
        # Never write into, or delete, a directory that is not a dataset of ours.
        raise InputError("run.out", f"{out} is not empty and holds no {MANIFEST}; choose another --out")
    everything = chunks(study)
    if manifest is None or overwrite:
        return Plan(study, everything, {}, overwrite=manifest is not None, process=process,
                    processes=processes)
    if manifest.get("config_hash") != study.config_hash:
        flag = "--resume" if resume else "run.out"
        raise InputError(flag, f"{out} holds a different study (config hash {manifest.get('config_hash')}, "
                               f"this config {study.config_hash}); use --overwrite or another --out")
    done = {name: entry for name, entry in manifest.get("chunks", {}).items()
            if (out / entry["cases"]).exists()}
    plan = Plan(study, everything, done, overwrite=False, process=process, processes=processes)
    earlier = manifest if processes == 1 else read_manifest(out, plan.manifest)
    if plan.pending and not resume and earlier is not None:
        raise InputError("run.out", f"{out} holds an unfinished study ({len(done)}/{len(everything)} "
                                    f"chunks); use --resume to continue it or --overwrite to start over")
    if plan.pending:
        _check_environment(manifest, out)
    return plan


def _check_environment(manifest: dict, out: Path) -> None:
    before, now = manifest.get("environment", {}), environment()
    changed = [f"{key} {before.get(key)} -> {now[key]}" for key in PINNED if before.get(key) != now[key]]
    if changed:
        raise InputError("--resume", f"{out} was started in another environment ({', '.join(changed)}); "
                                     f"rows would mix; use --overwrite to start over")


def run(plan: Plan, driver: str = "continuous") -> Iterator[Chunk]:
    """Solve and write every pending chunk, yielding each one once it is on disk.

    Groups are solved one after the other; the parts of a group are written by a second
    thread while the next group is generated and solved, so file I/O overlaps compute and
    at most two groups of rows are held in memory."""
    study, out = plan.study, plan.study.out
    check_driver(driver)  # before anything is written
    if plan.overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    # Temporary files a killed run left of this process's files (the other processes of a
    # multi-process run may be writing theirs).
    for path in [out / plan.manifest] + [out / folder / f"{chunk.name}.parquet"
                                         for chunk in plan.assigned for folder in ("cases", "traces")]:
        _temporary_of(path).unlink(missing_ok=True)
    env = environment()
    manifest = {
        "format": FORMAT, "study": study.name, "config_hash": study.config_hash,
        "config": study.config, "environment": env, "dtype": study.dtype,
        "n_cells": len(study.cells), "cases_per_cell": study.cases_per_cell,
        "n_chunks": len(plan.chunks), "timing_columns": list(TIMING_COLUMNS),
        "chunks": dict(plan.done), "complete": len(plan.done) == len(plan.chunks),
        # How this run (the latest one, when resumed) used the device; not the study's identity.
        "execution": {"driver": driver, "process": plan.process, "processes": plan.processes,
                      "groups": [], "case_iterations": 0, "lane_iterations": 0,
                      "lane_utilisation": None},
    }
    write_manifest(out, manifest, plan.manifest)  # first: the directory is now a dataset
    (out / "cases").mkdir(exist_ok=True)
    metadata = {"study": study.name, "config_hash": study.config_hash, "dtype": study.dtype,
                "environment": env}

    def write(solved: list[Solved], stats: dict) -> list[Chunk]:
        execution = manifest["execution"]
        execution["groups"].append(stats)
        for key in ("case_iterations", "lane_iterations"):
            execution[key] += stats[key]
        execution["lane_utilisation"] = execution["case_iterations"] / max(1, execution["lane_iterations"])
        for item in solved:
            chunk = item.chunk
            entry = {"cell": chunk.cell.index, "start": chunk.start, "rows": item.cases.num_rows,
                     "cases": f"cases/{chunk.name}.parquet"}
            part = {**metadata, "cell": chunk.cell.index, "cases": [chunk.start, chunk.stop]}
            if item.trace is not None:
                entry["traces"], entry["trace_rows"] = f"traces/{chunk.name}.parquet", item.trace.num_rows
                (out / "traces").mkdir(exist_ok=True)
                write_table(out / entry["traces"], item.trace, part)
            write_table(out / entry["cases"], item.cases, part)
            manifest["chunks"][chunk.name] = entry
            manifest["complete"] = len(manifest["chunks"]) == len(plan.chunks)
            write_manifest(out, manifest, plan.manifest)
        return [item.chunk for item in solved]

    compiled = set()
    with ThreadPoolExecutor(max_workers=1) as writer:
        writing = None
        for group in groups(study, plan.pending):
            community, indices = group_communities(study, group)
            layouts = trade_layouts(group, community, driver)
            key = (compile_key(group.cell), group.slots, tuple(layouts))
            if key not in compiled:  # wall_time_s never includes compilation
                warm_up(study, group, community, indices, driver)
                compiled.add(key)
            solved, stats = solve_group(study, group, community, indices, driver)
            options = driver_options(community, group.cell.solver, driver)  # devices: any layout
            stats = {"cell": group.cell.index, "chunks": len(group.chunks),
                     "queue": community.n_cases, "devices": options.devices if options.lanes else 1,
                     "trade_layouts": layouts, **stats}
            if writing is not None:
                yield from writing.result()
            writing = writer.submit(write, solved, stats)
        if writing is not None:
            yield from writing.result()
