"""The sweep runner on a tiny study with the real generator and solver: the rows do not
depend on the chunk size, and interrupted runs resume to exactly the uninterrupted rows.

Every run here uses 4 agents and the same solver options, so that the compiled functions
are shared across tests (batch sizes 3, 7 and 16 only)."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from jaxmarket.errors import InputError
from jaxmarket.markets import p2p
from jaxmarket.study import plan as planner, run as runner, store
from jaxmarket.study.config import load_study

TINY = """
[run]
name = "tiny"
cases_per_cell = 16
chunk_size = 7
[community]
n_agents = 4
charge_per_distance = 1.0
[graph]
sparsity = 0.5
[solver]
rho = [1.0, 2.0]
max_iter = 300
trace_every = 10
"""


def tiny_study(folder, *overrides, text=TINY):
    path = folder / "tiny.toml"
    path.write_text(text)
    return load_study(path, overrides, out=folder / "out")


def run_study(study, **flags):
    return list(runner.run(planner.prepare(study, **flags)))


def read_rows(out, folder="cases"):
    """Every part of the dataset, timing columns dropped, in a canonical order."""
    frame = pd.read_parquet(out / folder).drop(columns=list(store.TIMING_COLUMNS), errors="ignore")
    keys = ["cell", "case_index"] + (["iteration"] if folder == "traces" else [])
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_dataset(out, expected_out):
    for folder in ("cases", "traces"):
        pd.testing.assert_frame_equal(read_rows(out, folder), read_rows(expected_out, folder),
                                      check_exact=True)
    manifest = store.read_manifest(out)  # every process's manifest, merged
    assert manifest["complete"]
    on_disk = {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")}
    listed = {entry[key] for entry in manifest["chunks"].values() for key in ("cases", "traces")}
    assert on_disk == listed and not list(out.glob("**/.*"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The uninterrupted run with chunks of 7."""
    study = tiny_study(tmp_path_factory.mktemp("baseline"))
    run_study(study)
    return study.out


def test_dataset(baseline):
    rows = pd.read_parquet(baseline / "cases")
    assert len(rows) == 32 and not rows.duplicated(["cell", "case_index"]).any()
    assert sorted(rows.case_index.unique()) == list(range(16))
    assert set(rows.rho) == {1.0, 2.0} and set(rows.sparsity) == {0.5} and set(rows.study) == {"tiny"}
    assert {"n_agents", "layout", "charge_per_distance", "algorithm", "dtype", "seed", "iterations",
            "converged", "objective", "optimality_gap", "wall_time_s"} <= set(rows.columns)
    assert (rows.wall_time_s > 0).all() and rows.iterations.between(1, 300).all()
    # Paired cells: case k is the same community whatever rho.
    by_cell = rows.set_index(["case_index", "cell"]).reference_objective.unstack()
    assert np.array_equal(by_cell[0], by_cell[1])
    trace = pd.read_parquet(baseline / "traces")
    assert {"study", "cell", "case_index", "iteration", "primal_residual",
            "dual_residual"} <= set(trace.columns)
    assert (trace.iteration % 10 == 0).all()
    manifest = json.loads((baseline / store.MANIFEST).read_text())
    assert len(manifest["chunks"]) == manifest["n_chunks"] == 6  # 2 cells x (7 + 7 + 2)
    meta = json.loads(pq.read_schema(baseline / "cases" / "part-c0001-k00014.parquet").metadata[b"jaxmarket"])
    assert meta["config_hash"] == manifest["config_hash"] and meta["cases"] == [14, 16]


@pytest.mark.parametrize("chunk_size", [3, 16])
def test_rows_do_not_depend_on_the_chunk_size(tmp_path, baseline, chunk_size):
    study = tiny_study(tmp_path, f"run.chunk_size={chunk_size}")
    run_study(study)
    assert_same_dataset(study.out, baseline)


MEDIUM = """
[run]
name = "medium"
cases_per_cell = 16
chunk_size = 16
[community]
n_agents = 20
charge_per_distance = 1.0
[graph]
sparsity = 0.5
[solver]
max_iter = 200
trace_every = 20
"""


def test_metrics_and_references_do_not_depend_on_the_chunk_size(tmp_path):
    """At N = 20 the metrics and references of a chunk of 16 and of chunks of 5 differed in
    their last bits (XLA vectorised them by batch shape) until rows were tabulated in
    blocks of one shape: now every column is equal (==), traces included."""
    (tmp_path / "whole").mkdir(), (tmp_path / "split").mkdir()
    whole = tiny_study(tmp_path / "whole", text=MEDIUM)
    split = tiny_study(tmp_path / "split", "run.chunk_size=5", text=MEDIUM)
    for study in (whole, split):
        run_study(study)
    assert_same_dataset(split.out, whole.out)
    rows = read_rows(whole.out)
    assert len(rows) == 16 and rows.reference_converged.all()


def test_padding():
    chunk = planner.Chunk(cell=None, start=14, stop=16)
    assert list(planner.case_indices(chunk, 7)) == [14, 15, 15, 15, 15, 15, 15]


def _fail_on_call(monkeypatch, name, call):
    """Make ``store.<name>`` raise on its ``call``-th call, like a kill at that point."""
    real, calls = getattr(store, name), []

    def fake(*args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(store, name, fake)


@pytest.mark.parametrize("name, call", [
    ("write_table", 6),  # chunk 3's cases: its trace is on disk, the manifest lists 2 chunks
    ("write_manifest", 4),  # after chunk 3's parts: on disk but not in the manifest
])
def test_resume_after_a_kill(tmp_path, monkeypatch, baseline, name, call):
    study = tiny_study(tmp_path)
    with monkeypatch.context() as patch:
        _fail_on_call(patch, name, call)
        with pytest.raises(KeyboardInterrupt):
            run_study(study)
    (study.out / "cases" / ".part-c0000-k00000.parquet.tmp").write_bytes(b"half a file")
    manifest = json.loads((study.out / store.MANIFEST).read_text())
    assert len(manifest["chunks"]) == 2 and not manifest["complete"]

    with pytest.raises(InputError, match="unfinished study .* use --resume .* or --overwrite"):
        planner.prepare(study)
    # Another driver would mix rows whose last bits may differ: refused before any write.
    with pytest.raises(InputError, match="^--driver: .* written by the continuous driver"):
        runner.run(planner.prepare(study, resume=True), driver="plain")
    assert len(run_study(study, resume=True)) == 4
    assert_same_dataset(study.out, baseline)


def test_finished_study_reruns_nothing_and_overwrite_redoes_it(tmp_path, baseline):
    study = tiny_study(tmp_path)
    run_study(study)
    assert planner.prepare(study).pending == () == planner.prepare(study, resume=True).pending
    (study.out / "cases" / "stale.parquet").write_bytes(b"not ours")
    assert len(run_study(study, overwrite=True)) == 6
    assert not (study.out / "cases" / "stale.parquet").exists()
    assert_same_dataset(study.out, baseline)


def test_output_directory_checks(tmp_path):
    study = tiny_study(tmp_path)
    study.out.mkdir()
    (study.out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="is not empty and holds no manifest.json"):
        planner.prepare(study, overwrite=True)
    (study.out / "notes.txt").unlink()
    (tmp_path / "other").mkdir()
    other = tiny_study(tmp_path / "other", "run.seed=7")  # a valid manifest of another study
    list(runner.run(planner.prepare(other)))
    shutil.copy(other.out / store.MANIFEST, study.out / store.MANIFEST)
    with pytest.raises(InputError, match="^--resume: .* holds a different study"):
        planner.prepare(study, resume=True)
    with pytest.raises(InputError, match="^--resume: cannot be combined with --overwrite"):
        planner.prepare(study, resume=True, overwrite=True)
    assert planner.prepare(study, overwrite=True).overwrite


def test_diverging_cases_stay_rows(tmp_path, monkeypatch):
    real = p2p.tabulate

    def diverging(community, algorithm, market):
        result = real(community, algorithm, market)
        rows = {key: np.array(value) for key, value in result.rows.items()}
        rows["objective"][0], rows["diverged"][0] = np.nan, True
        return result._replace(rows=rows)

    monkeypatch.setattr(p2p, "tabulate", diverging)
    study = tiny_study(tmp_path)
    run_study(study)
    rows = pd.read_parquet(study.out / "cases")
    assert len(rows) == 32
    first = rows[rows.case_index % 7 == 0]  # the first case of each chunk
    assert first.diverged.all() and first.objective.isna().all()


def test_rows_do_not_depend_on_the_driver_or_the_queue(tmp_path, monkeypatch, baseline):
    """The blocked and plain drivers, and queues of two chunks (the last one padded with a
    copy of its last case), give the rows of the baseline (continuous, one queue per cell)."""
    for driver in ("blocked", "plain"):
        (tmp_path / driver).mkdir()
        study = tiny_study(tmp_path / driver)
        list(runner.run(planner.prepare(study), driver=driver))
        assert_same_dataset(study.out, baseline)
        manifest = json.loads((study.out / store.MANIFEST).read_text())["execution"]
        assert manifest["driver"] == driver and 0 < manifest["lane_utilisation"] <= 1
    (tmp_path / "small").mkdir()

    monkeypatch.setattr(planner, "queue_cases", lambda n_agents: 14)
    small = tiny_study(tmp_path / "small")
    plan = planner.prepare(small)
    assert [len(g.chunks) for g in planner.groups(small, plan.pending)] == [2, 1, 2, 1]
    run_study(small)
    assert_same_dataset(small.out, baseline)
    execution = json.loads((small.out / store.MANIFEST).read_text())["execution"]
    assert [g["queue"] for g in execution["groups"]] == [14] * 4
    assert all(g["trade_layouts"] == {"dense": {"cases": 14, "lanes": 8}} for g in execution["groups"])
    assert execution["case_iterations"] == pd.read_parquet(small.out / "cases").iterations.sum()
    assert 0 < execution["lane_utilisation"] <= 1


def test_unknown_driver_writes_nothing(tmp_path):
    study = tiny_study(tmp_path)
    with pytest.raises(InputError, match="^--driver: unknown driver 'fast'"):
        list(runner.run(planner.prepare(study), driver="fast"))
    assert not study.out.exists()


def test_processes_of_a_distributed_run_write_one_dataset(tmp_path, baseline, released_memory):
    """Two processes of one run (``jax.distributed``, here on one host) take every other
    chunk and write their own manifest; together they write the rows of the run in one
    process, and a resume in one process then finds nothing left to do."""
    (tmp_path / "tiny.toml").write_text(TINY)
    with socket.socket() as probe:  # a free port for the coordinator
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    environment = {**{k: v for k, v in os.environ.items() if not k.startswith("JAX_")},
                   "XDG_CACHE_HOME": str(tmp_path / "cache"),
                   "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "jaxmarket", "sweep", str(tmp_path / "tiny.toml"),
               "--out", str(tmp_path / "out"), "--cpu-devices", "1", "--distributed",
               "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id"]
    processes = [subprocess.Popen(command + [str(i)], env=environment, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    for i, process in enumerate(processes):
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        assert f"running 3 of 3 chunks (16 cases) into {tmp_path / 'out'} (process {i} of 2)" in stdout
    out = tmp_path / "out"
    assert not (out / store.MANIFEST).exists()
    own = [json.loads((out / store.manifest_name(i, 2)).read_text()) for i in range(2)]
    assert [sorted(m["chunks"]) for m in own] == [
        ["part-c0000-k00000", "part-c0000-k00014", "part-c0001-k00007"],
        ["part-c0000-k00007", "part-c0001-k00000", "part-c0001-k00014"]]
    assert_same_dataset(out, baseline)
    plan = planner.prepare(tiny_study(tmp_path), resume=True)
    assert not plan.pending and len(plan.done) == 6
    with pytest.raises(InputError, match="--overwrite"):
        planner.prepare(tiny_study(tmp_path), overwrite=True, process=0, processes=2)
