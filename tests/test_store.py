"""Reading a dataset whose parts have different columns: a study that mixes markets (the
free market next to endogenous charges) writes parts with and without the endogenous
columns, and every reader of the package merges them."""

import math

import numpy as np
import pyarrow as pa
import pytest

import jaxmarket as jm
from jaxmarket import report
from jaxmarket.study import store


def write_part(out, cell, table):
    name = f"cases/part-c{cell:04d}-k00000.parquet"
    (out / "cases").mkdir(exist_ok=True)
    checksum = store.write_table(out / name, table, {"cell": cell})
    return name, {"cell": cell, "start": 0, "rows": table.num_rows, "cases": name, "sha256": checksum}


@pytest.fixture
def mixed(tmp_path):
    """Cell 0 (first on disk and in the manifest) lacks the endogenous column and has an
    integer column that cell 1 holds as float."""
    free = pa.table({"cell": [0, 0], "case_index": [0, 1], "policy": ["none", "none"],
                     "so_messages": pa.array([None, None], pa.int64()), "count": [3, 4]})
    endogenous = pa.table({"cell": [1, 1], "case_index": [0, 1], "policy": ["endogenous_dc"] * 2,
                           "endogenous_charge_min": [-5.33, -1.0], "so_messages": [20, 22],
                           "count": [2.5, 1.0]})
    chunks = dict(write_part(tmp_path, cell, table) for cell, table in ((0, free), (1, endogenous)))
    store.write_manifest(tmp_path, {"format": store.FORMAT, "study": "mixed", "config_hash": "0" * 16,
                                    "config": {}, "n_chunks": 2, "chunks": chunks, "complete": True})
    return tmp_path


def check_rows(rows):
    assert list(rows["cell"]) == [0, 0, 1, 1]
    assert list(rows["policy"]) == ["none", "none", "endogenous_dc", "endogenous_dc"]
    charge = rows["endogenous_charge_min"].to_numpy(float)
    assert np.isnan(charge[:2]).all() and list(charge[2:]) == [-5.33, -1.0]
    assert list(rows["so_messages"].iloc[2:]) == [20, 22]
    assert all(v is None or math.isnan(v) for v in rows["so_messages"].iloc[:2])
    assert list(rows["count"]) == [3.0, 4.0, 2.5, 1.0]


def test_every_reader_merges_the_columns_of_all_parts(mixed):
    check_rows(store.read_parts(mixed))
    check_rows(jm.read_dataset(mixed))
    check_rows(report.load(mixed).cases)
