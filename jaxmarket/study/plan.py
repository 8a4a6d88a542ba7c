"""What a run of a study does: its chunks, the groups they are solved in, which are done.

A cell's cases run in chunks of ``min(chunk_size, cases_per_cell)``; the last chunk is
padded by repeating its last case index (the extra rows are dropped) so that one compiled
shape serves the whole cell. Results do not depend on the chunk size: the solver freezes
each case once it stops. ``--resume`` reruns every chunk the manifest does not list.

A run in several processes (``jax.distributed``, ``prepare(..., process, processes)``)
splits the chunks by position, every ``processes``-th one to a process; each process
writes its parts and its own manifest (``store.manifest_name``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from jaxmarket.errors import InputError
from jaxmarket.study import store
from jaxmarket.study.cell import Cell
from jaxmarket.study.config import Study
from jaxmarket.study.resources import queue_cases


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
    repairs: tuple[str, ...] = ()  # listed parts of assigned chunks found missing or damaged
    seen: tuple = ()  # store.manifest_state of the manifests this run rewrites, when planned
    driver: str | None = None  # the driver that wrote the chunks done (a resume keeps it)

    @property
    def assigned(self) -> tuple[Chunk, ...]:
        """The chunks this process runs (every chunk in a run in one process)."""
        return self.chunks[self.process::self.processes]

    @property
    def pending(self) -> tuple[Chunk, ...]:
        return tuple(c for c in self.assigned if c.name not in self.done)

    @property
    def manifest(self) -> str:
        return store.manifest_name(self.process, self.processes)

    def locks(self) -> list[tuple[str, bool]]:
        """(manifest name, shared) of the writer locks this run holds while it writes: a run
        in one process excludes every writer of the folder; the processes of a multi-process
        run share ``manifest.json``'s lock (so a one-process writer is refused) and each
        holds its own manifest's lock alone."""
        if self.processes > 1:
            return [(store.MANIFEST, True), (self.manifest, False)]
        others = sorted(p.name for p in self.study.out.glob("manifest-process-*.json"))
        return [(store.MANIFEST, False)] + [(name, False) for name in others]

    def watched(self) -> str | None:
        """The manifests whose change since planning makes this plan stale (None: all)."""
        return None if self.processes == 1 else self.manifest


def batch_size(study: Study) -> int:
    return min(study.chunk_size, study.cases_per_cell)


def chunks(study: Study) -> tuple[Chunk, ...]:
    size, count = batch_size(study), study.cases_per_cell
    return tuple(Chunk(cell, start, min(start + size, count))
                 for cell in study.cells for start in range(0, count, size))


def case_indices(chunk: Chunk, size: int) -> np.ndarray:
    """The chunk's case indices, padded to ``size`` by repeating the last one."""
    return np.minimum(np.arange(chunk.start, chunk.start + size), chunk.stop - 1)


@dataclass(frozen=True)
class Group:
    """Consecutive chunks solved as one queue (same agent count and solver options): the
    lanes of the continuous driver drain only at the end of a group, not of every chunk."""
    chunks: tuple[Chunk, ...]
    slots: int  # chunks the compiled queue holds (the last group of a run may fill fewer)

    @property
    def cell(self) -> Cell:
        return self.chunks[0].cell


def groups(study: Study, pending: tuple[Chunk, ...]) -> tuple[Group, ...]:
    """Cut the pending chunks into groups of consecutive chunks sharing a compiled solver,
    as even in size as the queue bound allows (few shapes, little padding)."""
    runs: list[list[Chunk]] = []
    for chunk in pending:
        first = runs[-1][0].cell if runs else None
        if first is not None and compile_key(first) == compile_key(chunk.cell) \
                and (first.algorithm, first.reserve) == (chunk.cell.algorithm, chunk.cell.reserve):
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
    strategy = cell.asynchrony and cell.asynchrony.strategy  # static in the simulation
    return cell.n_agents, cell.algorithm.static(), reserve, strategy


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
    entries = [p for p in out.iterdir() if not (store.is_temporary(p) or store.is_lock(p))] \
        if out.exists() else []
    manifest = store.read_manifest(out) if out.exists() else None
    if manifest is None and entries:
        # Never write into, or delete, a directory that is not a dataset of ours.
        raise InputError("run.out", f"{out} is not empty and holds no {store.MANIFEST}; choose another --out")
    everything = chunks(study)
    if manifest is None or overwrite:
        return _plan(study, everything, {}, overwrite=manifest is not None, process=process,
                     processes=processes)
    if manifest.get("config_hash") != study.config_hash:
        flag = "--resume" if resume else "run.out"
        raise InputError(flag, f"{out} holds a different study (config hash {manifest.get('config_hash')}, "
                               f"this config {study.config_hash}); use --overwrite or another --out")
    damaged = store.damaged_parts(out, manifest)
    done = {name: entry for name, entry in manifest["chunks"].items() if name not in damaged}
    plan = _plan(study, everything, done, overwrite=False, process=process, processes=processes,
                 repairs=tuple(damaged[c.name] for c in everything[process::processes] if c.name in damaged),
                 driver=manifest.get("execution", {}).get("driver"))
    earlier = manifest if processes == 1 else store.read_manifest(out, plan.manifest)
    if plan.pending and not resume and earlier is not None:
        broken = f", {len(damaged)} listed parts missing or damaged" if damaged else ""
        raise InputError("run.out", f"{out} holds an unfinished study ({len(done)}/{len(everything)} "
                                    f"chunks{broken}); use --resume to continue it or --overwrite to "
                                    f"start over")
    if plan.pending:
        store.check_environment(manifest, out)
    return plan


def _plan(study: Study, everything, done, **options) -> Plan:
    plan = Plan(study, everything, done, **options)
    seen = store.manifest_state(study.out, plan.watched()) if study.out.is_dir() else ()
    return dataclasses.replace(plan, seen=seen)
