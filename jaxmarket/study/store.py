"""A dataset on disk: atomic Parquet parts, manifests, the environment that wrote them.

Dataset layout under ``OUT``::

    manifest.json                         config, hash, versions, device, finished chunks
    cases/part-cCCCC-kKKKKK.parquet       one row per case (cell C, cases from K on)
    traces/part-cCCCC-kKKKKK.parquet      residual trace, long format (trace_every > 0)

Every file is written to a hidden temporary file in its directory and renamed into place;
a chunk's trace is written before its cases, and the manifest is updated last, so the
manifest only lists chunks that are complete on disk, each part with its row count and the
SHA-256 of its bytes (``verify``). A run in several processes writes one
``manifest-process-PPPP.json`` per process; ``read_manifest`` merges them. A writer holds
an exclusive lock on its manifest's name (``writer_lock``) while it writes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
from contextlib import contextmanager
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
# What a dataset owns in its folder: ``--overwrite`` deletes these and nothing else.
OWNED_FOLDERS = ("cases", "traces", "report")
_PART = re.compile(r"(cases|traces)/part-c\d{4,}-k\d{5,}\.parquet")


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


def is_lock(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".lock")


def write_table(path: Path, table: pa.Table, metadata: dict) -> str:
    """Write ``table`` atomically; returns the SHA-256 of the file's bytes."""
    table = table.replace_schema_metadata({b"jaxmarket": json.dumps(metadata).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    data = buffer.getvalue()
    write_atomic(path, lambda handle: handle.write(data))
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    count), complete when every chunk of the study is there. ``None`` when there is none;
    a manifest that is not a valid jaxmarket manifest is an ``InputError``."""
    paths = [out / name] if name else sorted(out.glob("manifest*.json"))
    manifests = []
    for path in paths:
        if not path.exists():
            continue
        try:
            manifests.append(check_manifest(json.loads(path.read_text()), path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(str(path), f"unreadable manifest ({getattr(error, 'strerror', None) or error}); "
                                        f"not a jaxmarket dataset as it stands: move it away or "
                                        f"choose another --out") from None
    if not manifests:
        return None
    first = manifests[0]
    if any(m["config_hash"] != first["config_hash"] for m in manifests):
        raise InputError(str(out), "its manifests describe different studies; use --overwrite or another --out")
    merged = {**first, "chunks": {k: v for m in manifests for k, v in m["chunks"].items()}}
    merged["complete"] = len(merged["chunks"]) == first["n_chunks"]
    return merged


def check_manifest(manifest, path: Path) -> dict:
    """``manifest`` if it has the shape a jaxmarket run writes (format, study, config hash,
    config, chunk count, chunks with their parts), else an ``InputError`` that does not
    suggest ``--overwrite``: a folder is deleted only when it is one of ours."""
    def refuse(problem: str):
        raise InputError(str(path), f"not a jaxmarket manifest ({problem}); move it away or choose "
                                    f"another --out")

    if not isinstance(manifest, dict):
        refuse(f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        refuse(f"format {manifest.get('format')!r}, expected {FORMAT}")
    for key, kind in (("study", str), ("config_hash", str), ("config", dict), ("n_chunks", int),
                      ("chunks", dict)):
        if not isinstance(manifest.get(key), kind):
            refuse(f"{key!r} missing or not a {kind.__name__}")
    for name, entry in manifest["chunks"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("cell"), int)
                and isinstance(entry.get("start"), int) and isinstance(entry.get("rows"), int)
                and all(_PART.fullmatch(str(entry[kind])) for kind in ("cases", "traces") if kind in entry)
                and "cases" in entry):
            refuse(f"chunk {name!r} malformed")
    return manifest


def damaged_parts(out: Path, manifest: dict) -> dict[str, str]:
    """Chunk name -> what is wrong with one of its listed parts (``cases/...: missing``,
    ``...: damaged``): a part must exist and hash to the SHA-256 the manifest records
    (datasets written before checksums: the Parquet footer must read and hold the listed
    row count)."""
    found = {}
    for name, entry in manifest["chunks"].items():
        for kind, rows_key, sum_key in (("cases", "rows", "sha256"), ("traces", "trace_rows", "trace_sha256")):
            if kind not in entry:
                continue
            problem = _part_problem(out / entry[kind], entry.get(sum_key), entry.get(rows_key))
            if problem:
                found[name] = f"{entry[kind]} ({problem})"
                break
    return found


def _part_problem(path: Path, checksum: str | None, rows: int | None) -> str | None:
    if not path.is_file():
        return "missing"
    try:
        if checksum is not None:
            return None if sha256_of(path) == checksum else "damaged: checksum mismatch"
        if rows is not None and pq.read_metadata(path).num_rows != rows:
            return "damaged: row count mismatch"
    except (OSError, pa.ArrowException) as error:
        return f"damaged: {getattr(error, 'strerror', None) or error}"
    return None


def verified(out: Path, manifest: dict) -> dict:
    """``manifest`` when every listed part is there and intact, else an ``InputError``
    naming the first missing or damaged part."""
    damaged = damaged_parts(out, manifest)
    if damaged:
        parts = sorted(damaged.values())
        more = f" and {len(parts) - 1} more" if len(parts) > 1 else ""
        raise InputError(str(out), f"part {parts[0]}{more}; rerun the study with --resume to "
                                   f"recompute it")
    return manifest


def remove_dataset(out: Path) -> None:
    """Delete what a dataset owns in ``out`` (manifests, parts, report), nothing else:
    ``--overwrite`` on a folder that also holds other files leaves them."""
    for path in out.glob("manifest*.json"):
        path.unlink()
    for folder in OWNED_FOLDERS:
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)


@contextmanager
def writer_lock(out: Path, name: str, shared: bool = False):
    """Hold the lock of manifest ``name`` in ``out``: a hidden ``.NAME.lock`` file locked
    with ``fcntl.flock``, exclusive (or ``shared``); a writer that cannot have it at once is
    refused with an ``InputError``. The file is removed on release by the last holder; a
    writer that locked a file removed meanwhile tries again on the new one."""
    path = out / f".{name}.lock"
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise InputError(str(out), f"another jaxmarket run is writing this dataset (it holds "
                                       f"{path.name}); wait for it to finish") from None
        try:
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(descriptor)  # removed by the writer before us: lock the new file
    try:
        yield
    finally:
        try:  # the last holder removes the file (a shared holder: when it can lock it alone)
            if shared:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        finally:
            os.close(descriptor)


def manifest_state(out: Path, name: str | None = None) -> tuple:
    """What the manifest ``name`` (default: every manifest) holds now, to tell whether
    another writer changed the dataset between planning a run and locking it."""
    paths = [out / name] if name else sorted(out.glob("manifest*.json"))
    return tuple((path.name, sha256_of(path)) for path in paths if path.is_file())


def io_error(error: OSError, out: Path) -> InputError:
    """A failed read or write of the dataset as one line (the dataset stays resumable:
    the manifest lists only parts that were complete on disk)."""
    what = "no space left on the device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
    return InputError(str(error.filename or out), f"{what}; the finished chunks are kept: free the "
                                                  f"problem and rerun with --resume")


def read_parts(out: Path, kind: str = "cases"):
    """The rows of a dataset's listed parts of ``kind`` ("cases" or "traces") as one
    DataFrame, in (cell, case) order, columns merged across parts (``read_listed``); a
    dataset without a manifest, or with a missing or damaged part, is an ``InputError``."""
    import pandas as pd

    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(str(out), f"no {MANIFEST}: not a jaxmarket dataset")
    verified(out, manifest)
    rows = read_listed(out, manifest, kind)
    return pd.DataFrame() if rows is None else rows


def read_listed(out: Path, manifest: dict, kind: str):
    """The parts of ``kind`` that ``manifest`` lists, in (cell, case) order, as one
    DataFrame (None when it lists none). Parts may have different columns (a study mixing
    markets: endogenous charges, the reserve market): the schemas are merged, a column a
    part lacks is null there, and a column's type is widened where parts disagree (an
    integer column that is float elsewhere). ``pandas.read_parquet`` on the folder would
    keep the first part's columns only."""
    entries = sorted(manifest.get("chunks", {}).values(), key=lambda e: (e["cell"], e["start"]))
    paths = [out / e[kind] for e in entries if kind in e]
    if not paths:
        return None
    return pa.concat_tables([pq.read_table(path) for path in paths],
                            promote_options="permissive").to_pandas()
