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
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import jax
import jaxlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import jaxmarket
from jaxmarket.config import Cell, Study
from jaxmarket.errors import InputError
from jaxmarket.reserve_study import solve_reserve_batch
from jaxmarket.solve import solve_batch

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

    @property
    def pending(self) -> tuple[Chunk, ...]:
        return tuple(c for c in self.chunks if c.name not in self.done)


def batch_size(study: Study) -> int:
    return min(study.chunk_size, study.cases_per_cell)


def chunks(study: Study) -> tuple[Chunk, ...]:
    size, count = batch_size(study), study.cases_per_cell
    return tuple(Chunk(cell, start, min(start + size, count))
                 for cell in study.cells for start in range(0, count, size))


def case_indices(chunk: Chunk, size: int) -> np.ndarray:
    """The chunk's case indices, padded to ``size`` by repeating the last one."""
    return np.minimum(np.arange(chunk.start, chunk.start + size), chunk.stop - 1)


def environment() -> dict:
    devices = jax.devices()
    return {
        "jaxmarket": jaxmarket.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
    }


# ---------------------------------------------------------------------------------------
# Computing one chunk (pure apart from the clock)


def compile_key(cell: Cell) -> tuple:
    """What makes the solver compile anew within a study (fixed batch size and dtype); rho
    and the tolerances are traced values."""
    reserve = cell.reserve and cell.reserve.allocation  # a static argument of the allocation
    return cell.n_agents, cell.solver._replace(rho=0.0, eps_primal=0.0, eps_dual=0.0), reserve


def solve_chunk(study: Study, chunk: Chunk, warm_up: bool) -> tuple[pa.Table, pa.Table | None]:
    """Rows (and residual trace) of the chunk's real cases; padding rows are dropped.

    With ``warm_up`` the batch is solved once untimed first, so that ``wall_time_s`` never
    includes compilation."""
    cell, n = chunk.cell, chunk.n_cases
    indices = case_indices(chunk, batch_size(study))
    community = cell.communities(study.seed, indices, study.dtype)

    def solve():
        if cell.reserve is not None:
            return solve_reserve_batch(community, cell.reserve, study.seed, indices, cell.solver)
        return solve_batch(community, cell.solver)

    if warm_up:
        jax.block_until_ready(solve())
    start = time.perf_counter()
    result = jax.block_until_ready(solve())
    elapsed = time.perf_counter() - start

    ids = {"study": study.name, "cell": cell.index, "case_index": indices[:n], "seed": study.seed,
           "dtype": study.dtype, **cell.labels()}
    columns = {key: np.full(n, value) for key, value in ids.items()}
    for key, value in {**result.rows, **cell.grid_columns(result.trades)}.items():
        value = np.asarray(value)[:n]
        if key in columns and not np.array_equal(columns[key], value):  # e.g. n_agents
            raise RuntimeError(f"metric {key!r} disagrees with the cell's {key!r}")
        columns[key] = value
    columns["wall_time_s"] = np.full(n, elapsed / n)
    cases = pa.table(columns)

    trace = None
    if result.trace is not None:
        position = np.asarray(result.trace["case"])
        keep = position < n
        head = {"study": study.name, "cell": cell.index, "case_index": indices[position[keep]]}
        trace = pa.table({**{key: np.full(keep.sum(), v) for key, v in head.items()},
                          **{key: np.asarray(v)[keep] for key, v in result.trace.items() if key != "case"}})
    return cases, trace


# ---------------------------------------------------------------------------------------
# Files


def write_atomic(path: Path, write: Callable) -> None:
    """Write through a hidden temporary file in the same directory, then rename it."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_table(path: Path, table: pa.Table, metadata: dict) -> None:
    table = table.replace_schema_metadata({b"jaxmarket": json.dumps(metadata).encode()})
    write_atomic(path, lambda handle: pq.write_table(table, handle))


def write_manifest(out: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1).encode()
    write_atomic(out / MANIFEST, lambda handle: handle.write(text))


def read_manifest(out: Path) -> dict | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(str(path), f"unreadable manifest ({error}); use --overwrite to start over") from None


# ---------------------------------------------------------------------------------------
# Running a study


def prepare(study: Study, resume: bool = False, overwrite: bool = False) -> Plan:
    """Decide what to run from the state of ``study.out``; reads only, writes nothing."""
    out = study.out
    if resume and overwrite:
        raise InputError("--resume", "cannot be combined with --overwrite")
    if out.exists() and not out.is_dir():
        raise InputError("run.out", f"{out} exists and is not a directory")
    manifest = read_manifest(out) if out.exists() else None
    if manifest is None and out.exists() and any(out.iterdir()):
        # Never write into, or delete, a directory that is not a dataset of ours.
        raise InputError("run.out", f"{out} is not empty and holds no {MANIFEST}; choose another --out")
    everything = chunks(study)
    if manifest is None or overwrite:
        return Plan(study, everything, {}, overwrite=manifest is not None)
    if manifest.get("config_hash") != study.config_hash:
        flag = "--resume" if resume else "run.out"
        raise InputError(flag, f"{out} holds a different study (config hash {manifest.get('config_hash')}, "
                               f"this config {study.config_hash}); use --overwrite or another --out")
    done = {name: entry for name, entry in manifest.get("chunks", {}).items()
            if (out / entry["cases"]).exists()}
    plan = Plan(study, everything, done, overwrite=False)
    if plan.pending and not resume:
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


def run(plan: Plan) -> Iterator[Chunk]:
    """Solve and write every pending chunk, yielding each one once it is on disk."""
    study, out = plan.study, plan.study.out
    if plan.overwrite:
        shutil.rmtree(out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    for stray in out.glob("**/.*.tmp"):  # left by a killed run
        stray.unlink()
    env = environment()
    manifest = {
        "format": FORMAT, "study": study.name, "config_hash": study.config_hash,
        "config": study.config, "environment": env, "dtype": study.dtype,
        "n_cells": len(study.cells), "cases_per_cell": study.cases_per_cell,
        "n_chunks": len(plan.chunks), "timing_columns": list(TIMING_COLUMNS),
        "chunks": dict(plan.done), "complete": not plan.pending,
    }
    write_manifest(out, manifest)
    metadata = {"study": study.name, "config_hash": study.config_hash, "dtype": study.dtype,
                "environment": env}
    compiled = set()
    for chunk in plan.pending:
        cases, trace = solve_chunk(study, chunk, warm_up=compile_key(chunk.cell) not in compiled)
        compiled.add(compile_key(chunk.cell))
        entry = {"cell": chunk.cell.index, "start": chunk.start, "rows": cases.num_rows,
                 "cases": f"cases/{chunk.name}.parquet"}
        part = {**metadata, "cell": chunk.cell.index, "cases": [chunk.start, chunk.stop]}
        if trace is not None:
            entry["traces"], entry["trace_rows"] = f"traces/{chunk.name}.parquet", trace.num_rows
            (out / "traces").mkdir(exist_ok=True)
            write_table(out / entry["traces"], trace, part)
        write_table(out / entry["cases"], cases, part)
        manifest["chunks"][chunk.name] = entry
        manifest["complete"] = len(manifest["chunks"]) == len(plan.chunks)
        write_manifest(out, manifest)
        yield chunk
