"""The GPU benchmark script runs only when a GPU machine is lent: its kernel table must
keep working against ``bench.admm_kernel`` in between (a micro plan, on the CPU)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the bench package
from bench import gpu  # noqa: E402


def test_kernel_table_has_a_row_per_dtype_and_size():
    lines = gpu.kernel(dict(batches={4: 2, 5: 1}, iterations=2, study=[]))
    header, rows = lines[0], lines[2:]
    columns = header.count("|") - 1
    assert [row.split("|")[1:3] for row in rows] == [
        [" float32 ", " 4 "], [" float32 ", " 5 "], [" float64 ", " 4 "], [" float64 ", " 5 "]]
    for row in rows:
        cells = row.strip("|").split("|")
        assert len(cells) == columns
        # trade updates/s, ns per update, the limit, the ratio, µs per case-iteration
        values = [float(c.strip().rstrip("×")) for c in cells[3:8]]
        assert all(v > 0 for v in values), row
