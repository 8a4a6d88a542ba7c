"""A dataset on disk: atomic Parquet parts, manifests, the environment that wrote them.

Dataset layout under ``OUT``::

    manifest.json                         config, hash, versions, device, finished chunks
    cases/part-cCCCC-kKKKKK.parquet       one row per case (cell C, cases from K on)
    traces/part-cCCCC-kKKKKK.parquet      residual trace, long format (trace_every > 0)

Every file is written to a hidden temporary file in its directory and renamed into place;
a chunk's trace is written before its cases, and the manifest is updated last, so the
manifest only lists chunks that are complete on disk. A run in several processes writes
one ``manifest-process-PPPP.json`` per process; ``read_manifest`` merges them.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable

import jax
import jaxlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import jaxmarket
from jaxmarket.errors import InputError

TIMING_COLUMNS = ("wall_time_s",)  # the only columns allowed to differ between two runs
MANIFEST = "manifest.json"
FORMAT = 1
# What must not change while a study is resumed: the rows would mix two computations.
PINNED = ("jaxmarket", "jax", "jaxlib", "numpy", "backend", "device_kind")


def environment() -> dict:
    devices = jax.devices()
    return {
        "jaxmarket": jaxmarket.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(), "device_kind": devices[0].device_kind,
        "devices": [str(d) for d in devices],
    }


def check_environment(manifest: dict, out: Path) -> None:
    before, now = manifest.get("environment", {}), environment()
    changed = [f"{key} {before.get(key)} -> {now[key]}" for key in PINNED if before.get(key) != now[key]]
    if changed:
        raise InputError("--resume", f"{out} was started in another environment ({', '.join(changed)}); "
                                     f"rows would mix; use --overwrite to start over")


def write_atomic(path: Path, write: Callable) -> None:
    """Write through a hidden temporary file in the same directory, then rename it."""
    temporary = temporary_of(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def temporary_of(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def is_temporary(path: Path) -> bool:
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


def read_parts(out: Path, kind: str = "cases"):
    """The rows of a dataset's listed parts of ``kind`` ("cases" or "traces") as one
    DataFrame, in (cell, case) order; a dataset without a manifest is an ``InputError``."""
    import pandas as pd

    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(str(out), f"no {MANIFEST}: not a jaxmarket dataset")
    entries = sorted(manifest.get("chunks", {}).values(), key=lambda e: (e["cell"], e["start"]))
    paths = [out / e[kind] for e in entries if kind in e]
    if not paths:
        return pd.DataFrame()
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pandas()
