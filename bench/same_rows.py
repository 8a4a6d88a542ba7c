"""Compare two datasets of the same study row by row and column by column.

    python -m bench.same_rows [--tolerance T] BEFORE_DIR AFTER_DIR [BEFORE_DIR AFTER_DIR ...]

Rows are matched on (cell, case_index). Every column but the timing columns must hold
identical values (NaN equal to NaN); the traces likewise. Prints one line per dataset and
exits with status 1 when any value differs: the check that a refactoring changed no
result. With ``--tolerance T`` (a change of arithmetic, e.g. another summation order)
floating-point values may differ by up to T relative to max(1, |value|); every other
column must still be identical, and the largest relative difference of each column that
is not is printed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

TIMING = {"wall_time_s"}


def _read(out: Path, kind: str) -> pd.DataFrame | None:
    folder = out / kind
    if not folder.exists():
        return None
    frame = pq.read_table(folder).to_pandas()
    keys = [k for k in ("cell", "case_index", "iteration") if k in frame]
    return frame.sort_values(keys).reset_index(drop=True)


def differences(before: Path, after: Path, tolerance: float = 0.0) -> list[str]:
    found = []
    for kind in ("cases", "traces"):
        a, b = _read(before, kind), _read(after, kind)
        if a is None and b is None:
            continue
        if a is None or b is None or len(a) != len(b):
            found.append(f"{kind}: {0 if a is None else len(a)} rows before, "
                         f"{0 if b is None else len(b)} after")
            continue
        for column in sorted((set(a) | set(b)) - TIMING):
            if column not in a or column not in b:
                found.append(f"{kind}.{column}: only {'after' if column in b else 'before'}")
                continue
            x, y = a[column].to_numpy(), b[column].to_numpy()
            same = (x == y) | (pd.isna(x) & pd.isna(y)) if x.dtype.kind in "fc" else x == y
            if tolerance and x.dtype.kind == "f" and not np.all(same):
                with np.errstate(invalid="ignore"):
                    relative = np.abs(x - y) / np.maximum(1.0, np.abs(x))
                relative = np.where(same, 0.0, relative)
                largest = np.nanmax(np.where(np.isnan(relative), np.inf, relative))
                print(f"    {kind}.{column}: {int((~same).sum())} of {len(x)} differ, "
                      f"largest relative difference {largest:.1e}")
                same = same | (relative <= tolerance)
            if not np.all(same):
                bad = np.flatnonzero(~same)
                found.append(f"{kind}.{column}: {len(bad)} of {len(x)} rows differ, e.g. row "
                             f"{bad[0]}: {x[bad[0]]!r} -> {y[bad[0]]!r}")
    return found


def main(paths: list[str]) -> int:
    tolerance = 0.0
    if paths[:1] == ["--tolerance"] and len(paths) > 1:
        tolerance, paths = float(paths[1]), paths[2:]
    if not paths or len(paths) % 2:
        print(__doc__)
        return 2
    failed = 0
    for before, after in zip(paths[::2], paths[1::2]):
        found = differences(Path(before), Path(after), tolerance)
        rows = len(_read(Path(before), "cases"))
        verdict = "DIFFERENT" if found else f"within {tolerance:g}" if tolerance else "identical"
        print(f"{after}: {verdict} ({rows} rows)")
        for line in found:
            print("   ", line)
        failed |= bool(found)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
