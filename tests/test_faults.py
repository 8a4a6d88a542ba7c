"""Faults a dataset must survive: foreign and damaged folders, concurrent writers, truncated
parts and manifests, edited case files, failed writes, huge limits. Each one ends in one
line with exit status 2 (or a correct result), and no row is lost, duplicated or mixed.

One tiny study (4 agents, 2 cells x 6 cases in chunks of 3) is solved once; the faults
work on copies of its dataset, and the runs that recompute share its compiled programs."""

import errno
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from jaxmarket.cases import locate
from jaxmarket.cli import app
from jaxmarket.errors import InputError
from jaxmarket.study import plan as planner, resources, run as runner, store
from jaxmarket.study.config import load_study

STUDY = """
[run]
name = "faults"
cases_per_cell = 6
chunk_size = 3
[community]
n_agents = 4
charge_per_distance = 1.0
[solver]
rho = [1.0, 2.0]
max_iter = 300
trace_every = 10
"""
cli = CliRunner()


def invoke(*args):
    return cli.invoke(app, [str(a) for a in args])


def assert_one_line(result, *fragments):
    """Exit status 2, one line on stderr holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    return result.stderr


def rows(out, kind="cases"):
    frame = pd.read_parquet(out / kind).drop(columns=list(store.TIMING_COLUMNS), errors="ignore")
    keys = ["cell", "case_index"] + (["iteration"] if kind == "traces" else [])
    return frame.sort_values(keys).reset_index(drop=True)


def assert_same_dataset(out, expected):
    """The rows of ``expected``, none lost or duplicated, every part listed and intact."""
    for kind in ("cases", "traces"):
        pd.testing.assert_frame_equal(rows(out, kind), rows(expected, kind), check_exact=True)
    assert not rows(out).duplicated(["cell", "case_index"]).any()
    manifest = store.read_manifest(out)
    assert manifest["complete"] and store.damaged_parts(out, manifest) == {}
    on_disk = {f"{p.parent.name}/{p.name}" for p in out.glob("*/*.parquet")}
    assert on_disk == {e[k] for e in manifest["chunks"].values() for k in ("cases", "traces")}
    assert not list(out.glob("**/.*"))  # no temporary or lock file left


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("study") / "faults.toml"
    path.write_text(STUDY)
    return path


@pytest.fixture(scope="module")
def baseline(study_file):
    out = study_file.parent / "baseline"
    assert invoke("sweep", study_file, "--out", out).exit_code == 0
    return out


@pytest.fixture
def dataset(tmp_path, baseline):
    """A copy of the finished dataset to damage."""
    return shutil.copytree(baseline, tmp_path / "out")


# --- 1. --overwrite deletes only a dataset of ours, and only what it owns ---

@pytest.mark.parametrize("manifest, problem", [
    ('{"name": "app"}', "not a jaxmarket manifest (format None"),
    ("[1, 2]", "not a jaxmarket manifest (a JSON list"),
    ("", "unreadable manifest"),
    ('{"format": 1, "study": "x", "config_hash": "0", "con', "unreadable manifest"),
], ids=["foreign", "list", "empty", "truncated"])
def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path, study_file, manifest, problem):
    out = tmp_path / "o"
    out.mkdir()
    (out / "manifest.json").write_text(manifest)
    (out / "index.html").write_text("x")
    for flags in (["--overwrite"], ["--resume"], []):
        message = assert_one_line(invoke("sweep", study_file, "--out", out, *flags), problem)
        assert "--overwrite" not in message
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "manifest.json"]
    assert_one_line(invoke("report", out), problem)


def test_overwrite_keeps_files_the_dataset_does_not_own(dataset, study_file, baseline):
    (dataset / "notes.txt").write_text("mine")
    (dataset / "report").mkdir()
    (dataset / "report" / "old.md").write_text("stale")
    (dataset / "cases" / "part-c0000-k00000.parquet").write_bytes(b"damaged")
    result = invoke("sweep", study_file, "--out", dataset, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (dataset / "notes.txt").read_text() == "mine" and not (dataset / "report").exists()
    (dataset / "notes.txt").unlink()
    assert_same_dataset(dataset, baseline)


def test_a_truncated_manifest_is_one_line(dataset, study_file):
    text = (dataset / "manifest.json").read_text()
    (dataset / "manifest.json").write_text(text[:len(text) // 2])
    for command in (["sweep", study_file, "--out", dataset, "--resume"], ["report", dataset]):
        assert "--overwrite" not in assert_one_line(invoke(*command), "unreadable manifest")
    with pytest.raises(InputError, match="unreadable manifest"):
        store.read_parts(dataset)


# --- 2. one writer at a time ---

HOLD_LOCK = """
import sys
from pathlib import Path
from jaxmarket.study import store
with store.writer_lock(Path(sys.argv[1]), sys.argv[2], shared=sys.argv[3] == "shared"):
    print("locked", flush=True)
    sys.stdin.read()
"""


def hold_lock(out, name="manifest.json", shared=False):
    """Another process that holds a writer lock of ``out`` until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out), name,
                                "shared" if shared else "exclusive"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "locked\n"
    return process


def test_a_second_writer_is_refused(dataset, study_file, baseline):
    (dataset / "cases" / "part-c0001-k00003.parquet").unlink()  # something to resume
    holder = hold_lock(dataset)
    try:
        for flag in ("--resume", "--overwrite"):
            assert_one_line(invoke("sweep", study_file, "--out", dataset, flag),
                            "another jaxmarket run is writing this dataset")
        assert not (dataset / "cases" / "part-c0001-k00003.parquet").exists()
        assert (dataset / "cases" / "part-c0000-k00000.parquet").exists()  # nothing deleted
    finally:
        holder.kill()  # like kill -9: the lock dies with its process, the file stays
        holder.wait()
    assert (dataset / ".manifest.json.lock").exists()
    assert invoke("sweep", study_file, "--out", dataset, "--resume").exit_code == 0
    assert_same_dataset(dataset, baseline)


def test_lock_design(tmp_path):
    """A one-process writer excludes everyone; processes of a multi-process run share the
    folder's lock and each hold their own manifest's lock alone."""
    lock = store.writer_lock
    with lock(tmp_path, "manifest.json", shared=True), lock(tmp_path, "manifest.json", shared=True):
        with lock(tmp_path, "manifest-process-0000.json"), lock(tmp_path, "manifest-process-0001.json"):
            with pytest.raises(InputError, match=r"another jaxmarket run .* \.manifest-process-0001"):
                with lock(tmp_path, "manifest-process-0001.json"):
                    pass
        with pytest.raises(InputError, match="another jaxmarket run"):
            with lock(tmp_path, "manifest.json"):
                pass
    assert not list(tmp_path.iterdir())  # the last holder removed the lock file
    with lock(tmp_path, "manifest.json"):
        with pytest.raises(InputError, match="another jaxmarket run"):
            with lock(tmp_path, "manifest.json", shared=True):
                pass


def test_a_plan_made_stale_by_another_writer_is_refused(dataset, study_file):
    study = load_study(study_file, out=dataset)
    plan = planner.prepare(study, overwrite=True)
    manifest = json.loads((dataset / "manifest.json").read_text())
    store.write_manifest(dataset, {**manifest, "complete": False})  # another run wrote meanwhile
    with pytest.raises(InputError, match="another run changed this dataset"):
        next(runner.run(plan))
    assert (dataset / "cases" / "part-c0000-k00000.parquet").exists()


# --- 3. the config hash covers the case file's bytes ---

def test_case_file_content_is_part_of_the_study(tmp_path):
    case = tmp_path / "grid.json"
    case.write_bytes(locate("new_england").read_bytes())
    study_file = tmp_path / "s.toml"
    study_file.write_text(f'[network]\ncase = "{case}"\n')
    before = load_study(study_file)
    assert before.config["network"]["case_sha256"] == {
        str(case): hashlib.sha256(case.read_bytes()).hexdigest()}
    data = json.loads(case.read_text())
    data["agents"][0]["a"] *= 1.5
    case.write_text(json.dumps(data))
    assert load_study(study_file).config_hash != before.config_hash
    # The report reads the case again: an edited file no longer matches the dataset.
    from jaxmarket.study.config import resolve
    with pytest.raises(InputError, match="changed since the dataset was written"):
        resolve(before.config, default_name="s")


def test_studies_without_a_case_file_keep_their_hash():
    # Recorded by the code before case files were hashed (sweeps/quickstart.toml).
    path = Path(__file__).parent.parent / "sweeps" / "quickstart.toml"
    assert load_study(path).config_hash == "1452f53ab8a7b998"


# --- 4. parts verified against their row count and checksum ---

@pytest.mark.parametrize("part, damage", [
    ("cases/part-c0000-k00003.parquet", "truncate"),
    ("traces/part-c0001-k00000.parquet", "truncate"),
    ("cases/part-c0001-k00003.parquet", "delete"),
])
def test_damaged_parts_are_named_and_recomputed(dataset, study_file, baseline, part, damage):
    path = dataset / part
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.unlink()
    problem = "missing" if damage == "delete" else "damaged: checksum mismatch"
    assert_one_line(invoke("report", dataset), f"part {part} ({problem})", "--resume")
    with pytest.raises(InputError, match=f"part {part}"):
        store.read_parts(dataset, "traces")
    assert_one_line(invoke("sweep", study_file, "--out", dataset), "1 listed parts missing or damaged")
    result = invoke("sweep", study_file, "--out", dataset, "--resume")
    assert result.exit_code == 0, result.output
    assert f"recomputing 1 chunks whose listed parts are missing or damaged: {part}" in result.stderr
    assert_same_dataset(dataset, baseline)


def test_parts_without_checksums_are_checked_by_row_count(dataset):
    manifest = json.loads((dataset / "manifest.json").read_text())
    for entry in manifest["chunks"].values():
        del entry["sha256"], entry["trace_sha256"]  # a dataset written before checksums
    store.write_manifest(dataset, manifest)
    assert store.damaged_parts(dataset, manifest) == {}
    path = dataset / "cases" / "part-c0000-k00000.parquet"
    path.write_bytes(path.read_bytes()[:-30])
    damaged = store.damaged_parts(dataset, manifest)
    assert list(damaged) == ["part-c0000-k00000"]
    assert damaged["part-c0000-k00000"].startswith("cases/part-c0000-k00000.parquet (damaged: ")


# --- 5. I/O errors, empty files, huge limits ---

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_is_one_line_and_resumable(dataset, study_file, baseline, monkeypatch, code):
    manifest = json.loads((dataset / "manifest.json").read_text())
    for name in ("part-c0001-k00000", "part-c0001-k00003"):  # as a killed run leaves it
        del manifest["chunks"][name]
        for kind in ("cases", "traces"):
            (dataset / kind / f"{name}.parquet").unlink()
    store.write_manifest(dataset, {**manifest, "complete": False})
    real, calls = store.write_atomic, []

    def failing(path, write):
        calls.append(path)
        if len(calls) == 5:  # manifest, trace, cases, manifest, then the second chunk's trace
            raise OSError(code, "simulated", str(path))
        return real(path, write)

    monkeypatch.setattr(store, "write_atomic", failing)
    message = assert_one_line(invoke("sweep", study_file, "--out", dataset, "--resume"),
                              "rerun with --resume")
    assert ("no space left" in message) == (code == errno.ENOSPC)
    monkeypatch.setattr(store, "write_atomic", real)
    manifest = store.read_manifest(dataset)
    assert len(manifest["chunks"]) == 3 and store.damaged_parts(dataset, manifest) == {}
    assert invoke("sweep", study_file, "--out", dataset, "--resume").exit_code == 0
    assert_same_dataset(dataset, baseline)


@pytest.mark.parametrize("options, message", [
    (["--coordinator", "garbage", "--num-processes", "1", "--process-id", "0"], "--coordinator: must be HOST:PORT"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "5"], "--process-id: must be in [0, 2)"),
    (["--num-processes", "0"], "--num-processes: must be >= 1"),
], ids=["address", "process-id", "processes"])
def test_bad_distributed_options_are_one_line(tmp_path, study_file, options, message):
    """Checked before joining: JAX's own errors were tracebacks."""
    assert_one_line(invoke("sweep", study_file, "--out", tmp_path / "out", "--distributed",
                           *options), message)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_cannot_be_created_is_one_line(tmp_path, study_file):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line(invoke("sweep", study_file, "--out", blocker / "out"), str(blocker / "out"))


@pytest.mark.parametrize("text", ["", "  \n\t\n"], ids=["0-byte", "whitespace"])
def test_an_empty_study_file_is_an_error(tmp_path, text):
    path = tmp_path / "empty.toml"
    path.write_text(text)
    for command in (["validate", path], ["sweep", path, "--out", tmp_path / "out"]):
        assert_one_line(invoke(*command), f"{path}: holds no study")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setting, message", [
    ("run.cases_per_cell=1000000000000", "run.cases_per_cell: must be < 2147483648"),
    ("run.cases_per_cell=2000000000", "make 1.33e+09 chunks, more than 100000"),
    ("community.n_agents=200000", "a queue of 3 cases of 200000 agents needs about 7.15e+03 GiB"),
])
def test_studies_beyond_the_limits_are_refused_before_work(tmp_path, study_file, setting, message):
    out = tmp_path / "out"
    for command in (["validate", study_file], ["sweep", study_file, "--out", out]):
        assert_one_line(invoke(*command, "--set", setting), message)
    assert not out.exists()


def test_memory_estimate_is_checked_against_the_machine(monkeypatch, study_file):
    need = resources.check_resources(2, 4, 6, 3)
    assert need["chunks"] == 4 and need["queue_bytes"] == need["queue_cases"] * 4 * 4 * 8 * 8
    monkeypatch.setattr(resources, "memory_bytes", lambda: need["queue_bytes"] - 1)
    with pytest.raises(InputError, match="^community.n_agents: a queue of .* cases of 4 agents"):
        load_study(study_file)
    # The example: 20000 agents, a chunk of 3 cases, on a machine with 64 GiB.
    monkeypatch.setattr(resources, "memory_bytes", lambda: 64 * 2**30)
    with pytest.raises(InputError, match="a queue of 3 cases of 20000 agents needs about 71.5 GiB, "
                                         "this .* has 64 GiB"):
        load_study(study_file, ["community.n_agents=20000"])
