"""Running a study: every pending chunk solved on the device and written to the store.

Case k of every cell is the community ``cell.communities(seed, [k])``: cells that share the
community parameters (e.g. a solver sweep) solve the very same communities, so their rows
pair up by ``case_index`` for paired comparisons; cells whose community parameters differ
draw case k from the same (seed, k) stream. Chunks are solved in groups (``plan.groups``),
one group after the other; the parts of a group are written by a second thread while the
next group is generated and solved.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Iterator

import jax
import numpy as np
import pyarrow as pa

from jaxmarket import asynchrony, progress
from jaxmarket.algorithms import Algorithm
from jaxmarket.community import Community, cases_of, concatenate, take
from jaxmarket.errors import InputError
from jaxmarket.markets import endogenous, kind, p2p, pool, reserve
from jaxmarket.markets.columns import annotate
from jaxmarket.markets.lanes import check_driver, driver_options, neighbour_widths
from jaxmarket.markets.rows import STOP_COLUMNS, global_stop_columns, tabulate_in_blocks
from jaxmarket.study import store
from jaxmarket.study.cell import Cell
from jaxmarket.study.config import Study
from jaxmarket.study.keys import label_units
from jaxmarket.study.plan import (Chunk, Group, Plan, batch_size, case_indices, compile_key,
                                  groups)


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
             algorithm: Algorithm, driver: str):
    """The cell's algorithm on the queue: the P2P or pool market, or the energy and reserve
    market of a ``[reserve]`` study."""
    if cell.reserve is not None:
        return reserve.run(community, cell.reserve, study.seed, indices, algorithm, driver)
    if cell.endogenous:
        return endogenous.run(community, cell.line_limits(community.n_cases), algorithm, driver)
    return _market(algorithm).run(community, algorithm, driver)


def _kinds(cell: Cell) -> tuple[str, ...]:
    """The column kinds of the cell's rows (``markets.columns``)."""
    grid = ("grid",) if cell.grid_case is not None else ()
    grid += ("endogenous",) if cell.endogenous else ()
    stopping = ("stopping",) if "solver.stopping" in cell.values else ()
    negotiation = ("asynchrony",) if cell.asynchrony is not None else ()
    return ("dataset", kind(cell.algorithm, cell.reserve is not None), *grid, *stopping,
            *negotiation)


def _market(algorithm: Algorithm):
    return pool if "pool" in algorithm.markets else p2p


def trade_layouts(group: Group, community: Community, driver: str) -> dict[str, dict]:
    """Per trade layout of the kernel ("dense", "neighbours/D"): the queue's cases on it and
    the lanes (blocked and plain drivers: cases per block) that served them, logged in the
    manifest; the energy and reserve market always runs dense."""
    algorithm = group.cell.algorithm
    widths = (np.zeros(community.n_cases, int) if group.cell.reserve is not None
              else neighbour_widths(community, algorithm))
    layouts = {}
    for width, count in zip(*np.unique(widths, return_counts=True)):
        options = driver_options(community, algorithm, driver, int(width))
        layouts[f"neighbours/{width}" if width else "dense"] = {
            "cases": int(count), "lanes": options.lanes or options.block_size}
    return layouts


def tabulate_cell(cell: Cell, community: Community, algorithm: Algorithm, market, seed: int,
                  indices: np.ndarray):
    if cell.reserve is not None:
        return reserve.tabulate(community, cell.reserve, market)
    if cell.endogenous:
        result = endogenous.tabulate(community, cell.line_limits(community.n_cases), algorithm, market)
    else:
        result = _market(algorithm).tabulate(community, algorithm, market)
    if cell.asynchrony is not None:
        result.rows.update(asynchrony.columns(community, algorithm, cell.asynchrony, seed,
                                              indices, result.rows["reference_objective"]))
    if "solver.stopping" in cell.values:  # last, in one order for every rule of the study
        local = {key: result.rows.pop(key) for key in STOP_COLUMNS if key in result.rows}
        result.rows.update(local or global_stop_columns(result.rows))
    return result


def warm_up(study: Study, group: Group, community: Community, indices: np.ndarray,
            driver: str) -> None:
    """Compile the driver for the queue and the tabulation for a chunk at the cost of one
    iteration per case: infinite tolerances stop every case at its first check."""
    quick = group.cell.algorithm.stopping_at_first_check()
    market = run_cell(study, group.cell, community, indices, quick, driver)
    jax.block_until_ready(_tabulate(group.cell, quick, (community, market, indices), 1,
                                    study.seed))


def _tabulate(cell: Cell, algorithm: Algorithm, batch, n_cases: int, seed: int):
    """Rows of the first ``n_cases`` cases of ``batch = (community, market, case
    indices)``, tabulated in blocks of one fixed shape (``rows.TABULATE_CASES``):
    bit-identical whatever the chunk size."""
    return tabulate_in_blocks(
        lambda block: tabulate_cell(cell, block[0], algorithm, block[1], seed, block[2]),
        batch, n_cases)


def _slot(tree, first: int, size: int):
    """Cases ``first .. first + size`` of a batch pytree (the lane count is not per case)."""
    return cases_of(tree, np.arange(first, first + size))


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
    market = run_cell(study, cell, community, indices, cell.algorithm, driver)
    jax.block_until_ready(market)  # the solve is over: now the references and metrics
    progress.phase("tabulate", cases=sum(chunk.n_cases for chunk in group.chunks))
    results = [_tabulate(cell, cell.algorithm, _slot((community, market, indices), slot * size,
                                                   size), chunk.n_cases, study.seed)
               for slot, chunk in enumerate(group.chunks)]
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
        for key, value in {**result.rows, **chunk.cell.grid_columns(result)}.items():
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


def run(plan: Plan, driver: str = "continuous") -> Iterator[Chunk]:
    """Solve and write every pending chunk; returns an iterator that yields each chunk once
    it is on disk.

    The run takes its writer locks (``Plan.locks``) at once, before returning, and holds
    them until the iterator ends; it refuses to start when another writer changed the
    manifests since ``prepare``. Groups are solved one after the other; the parts of a group
    are written by a second thread while the next group is generated and solved, so file
    I/O overlaps compute and at most two groups of rows are held in memory. A failed read
    or write (permission, disk full) is an ``InputError``; the dataset stays resumable."""
    out = plan.study.out
    check_driver(driver)  # before anything is written
    if plan.done and plan.driver not in (None, driver):
        # Drivers agree on every iteration count, not always on a row's last bits (small N).
        raise InputError("--driver", f"{out} was written by the {plan.driver} driver; resume it "
                                     f"with --driver {plan.driver} so that its rows do not mix")
    locks = ExitStack()
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, shared in plan.locks():
            locks.enter_context(store.writer_lock(out, name, shared))
        if store.manifest_state(out, plan.watched()) != plan.seen:
            raise InputError(str(out), "another run changed this dataset while this one was "
                                       "starting; run the command again")
    except OSError as error:
        locks.close()
        raise store.io_error(error, out) from None
    except BaseException:
        locks.close()
        raise
    return _locked(plan, driver, locks)


def _locked(plan: Plan, driver: str, locks: ExitStack) -> Iterator[Chunk]:
    with locks:
        try:
            yield from _write(plan, driver)
        except OSError as error:
            raise store.io_error(error, plan.study.out) from None


def _write(plan: Plan, driver: str) -> Iterator[Chunk]:
    study, out = plan.study, plan.study.out
    if plan.overwrite:
        store.remove_dataset(out)
    # Temporary files a killed run left of this process's files (the other processes of a
    # multi-process run may be writing theirs).
    for path in [out / plan.manifest] + [out / folder / f"{chunk.name}.parquet"
                                         for chunk in plan.assigned for folder in ("cases", "traces")]:
        store.temporary_of(path).unlink(missing_ok=True)
    env = store.environment()
    manifest = {
        "format": store.FORMAT, "study": study.name, "config_hash": study.config_hash,
        "config": study.config, "environment": env, "dtype": study.dtype,
        "n_cells": len(study.cells), "cases_per_cell": study.cases_per_cell,
        "n_chunks": len(plan.chunks), "timing_columns": list(store.TIMING_COLUMNS),
        "chunks": dict(plan.done), "complete": len(plan.done) == len(plan.chunks),
        # How this run (the latest one, when resumed) used the device; not the study's identity.
        "execution": {"driver": driver, "process": plan.process, "processes": plan.processes,
                      "groups": [], "case_iterations": 0, "lane_iterations": 0,
                      "lane_utilisation": None},
    }
    store.write_manifest(out, manifest, plan.manifest)  # first: the directory is now a dataset
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
                entry["trace_sha256"] = store.write_table(out / entry["traces"],
                                                          annotate(item.trace, "trace"), part)
            entry["sha256"] = store.write_table(
                out / entry["cases"], annotate(item.cases, _kinds(chunk.cell), labels), part)
            manifest["chunks"][chunk.name] = entry
            manifest["complete"] = len(manifest["chunks"]) == len(plan.chunks)
            store.write_manifest(out, manifest, plan.manifest)
        return [item.chunk for item in solved]

    labels = label_units()
    compiled = set()
    with ThreadPoolExecutor(max_workers=1) as writer:
        writing = None
        for group in groups(study, plan.pending):
            cases = sum(chunk.n_cases for chunk in group.chunks)
            progress.phase("generate", cases=cases)
            community, indices = group_communities(study, group)
            layouts = trade_layouts(group, community, driver)
            key = (compile_key(group.cell), group.slots, tuple(layouts))
            if key not in compiled:  # wall_time_s never includes compilation
                progress.phase("compile", cases=cases)
                warm_up(study, group, community, indices, driver)
                compiled.add(key)
            progress.phase("solve", cases=cases)
            solved, stats = solve_group(study, group, community, indices, driver)
            progress.phase("write", cases=cases)
            options = driver_options(community, group.cell.algorithm, driver)  # devices: any layout
            stats = {"cell": group.cell.index, "chunks": len(group.chunks),
                     "queue": community.n_cases, "devices": options.devices if options.lanes else 1,
                     "trade_layouts": layouts, **stats}
            if writing is not None:
                yield from writing.result()
            writing = writer.submit(write, solved, stats)
        if writing is not None:
            yield from writing.result()
