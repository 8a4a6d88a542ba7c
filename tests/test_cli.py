"""The command line: one-line errors with exit status 2 and nothing written, the sweep
states, and ``jaxmarket solve`` on the New England case."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from jaxmarket.cases import locate
from jaxmarket.cli import app
from test_sweep import TINY

DATA = locate("new_england").parent  # the packaged cases
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, message):
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n" or (
        result.stderr.startswith(f"error: {message}") and result.stderr.count("\n") == 1), result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.mark.parametrize("text, set_, message", [
    (TINY + "colour = 1\n", [], "solver.colour: unknown key"),
    (TINY.replace("rho = [1.0, 2.0]", 'rho = "x"'), [], 'solver.rho: expected a positive number, got "x"'),
    (TINY.replace("sparsity = 0.5", "sparsity = 1.0"), [], "graph.sparsity: must be < 1, got 1.0"),
    (TINY.replace("[graph]", "[graph"), [], "{path}: malformed TOML: "),
    (TINY, ["graph.sparsity=[0.5, -0.5]"], "graph.sparsity[1]: must be >= 0, got -0.5"),
    (TINY, ["solver.rhoo=1"], "solver.rhoo: unknown key"),
    (TINY, ["rho"], '--set: expected section.key=value, got "rho"'),
    (TINY, ["solver.rho=1e300"], "solver.rho: must be 0 or of magnitude 1e-12 to 1e12 (a market "
                                 "quantity in its unit), got 1e+300"),
    (TINY.replace("charge_per_distance = 1.0", "charge_per_distance = 1e300"), [],
     "community.charge_per_distance: must be 0 or of magnitude 1e-12 to 1e12"),
    (TINY, ["solver.eps_price=1e-3"], "solver.eps_price: not an option of admm (its options: "),
    (TINY, ["solver.relaxation=[1.2, 1.6]"], "solver.relaxation: not an option of admm "),
], ids=["unknown-key", "wrong-type", "sparsity", "malformed", "set-value", "set-key", "set-syntax",
        "set-huge", "huge", "set-other-algorithm", "sweep-other-algorithm"])
def test_bad_studies(tmp_path, text, set_, message):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    flags = [arg for assignment in set_ for arg in ("--set", assignment)]
    for command in (["sweep", path, "--out", tmp_path / "out"], ["validate", path]):
        assert_user_error(invoke(*command, *flags), message.format(path=path))
    assert not (tmp_path / "out").exists() and not (tmp_path / "outputs").exists()


def test_missing_study(tmp_path):
    assert_user_error(invoke("sweep", tmp_path / "nope.toml", "--out", tmp_path / "out"),
                      f"{tmp_path / 'nope.toml'}: no such file")
    assert not (tmp_path / "out").exists()


def test_validate(study_file):
    result = invoke("validate", study_file, "--set", "graph.sparsity=[0.25, 0.5, 0.75]")
    assert result.exit_code == 0
    assert "6 cells x 16 cases = 96 cases" in result.stdout
    assert "swept: graph.sparsity (3), solver.rho (2)" in result.stdout


def test_sweep_states(tmp_path, study_file):
    out = tmp_path / "out"
    result = invoke("sweep", study_file, "--out", out, "--set", "graph.sparsity=0.25")
    assert result.exit_code == 0, result.output
    assert "6 chunks (32 cases) written" in result.stdout
    rows = pd.read_parquet(out / "cases")
    assert set(rows.sparsity) == {0.25} and len(rows) == 32

    again = invoke("sweep", study_file, "--out", out, "--set", "graph.sparsity=0.25")
    assert again.exit_code == 0 and "nothing to do" in again.stdout
    assert_user_error(invoke("sweep", study_file, "--out", out), f"run.out: {out} holds a different study")

    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["chunks"]["part-c0001-k00014"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    unfinished = invoke("sweep", study_file, "--out", out, "--set", "graph.sparsity=0.25")
    assert_user_error(unfinished, f"run.out: {out} holds an unfinished study (5/6 chunks); use --resume")
    resumed = invoke("sweep", study_file, "--out", out, "--set", "graph.sparsity=0.25", "--resume")
    assert resumed.exit_code == 0 and "1 chunks (2 cases) written" in resumed.stdout


def test_compiled_programs_are_kept_between_runs(tmp_path):
    """The CLI keeps compiled programs in the per-user cache folder (a fresh process, so
    that the folder is set before anything compiles)."""
    environment = {key: v for key, v in os.environ.items() if not key.startswith("JAX_")}
    command = [sys.executable, "-m", "jaxmarket", "solve", str(DATA / "new_england.json"),
               "--max-iter", "5"]
    run = subprocess.run(command, env={**environment, "XDG_CACHE_HOME": str(tmp_path)},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert any((tmp_path / "jaxmarket" / "xla").iterdir())


def test_solve_new_england(tmp_path):
    out = tmp_path / "ne" / "result.parquet"
    result = invoke("solve", DATA / "new_england.json", "--tol", "1e-4", "--out", out)
    assert result.exit_code == 0, result.output
    assert "converged True" in result.stdout and "57.23" in result.stdout
    row = pd.read_parquet(out).iloc[0]
    assert row.case == "new_england_31" and row.eps_primal == row.eps_dual == 1e-4
    assert row.mean_price == pytest.approx(57.23, abs=0.01)
    assert row.total_traded == pytest.approx(3893.3, abs=0.1)
    assert row.objective == pytest.approx(-92547.9, abs=0.1)
    trades = pd.read_parquet(tmp_path / "ne" / "result.trades.parquet")
    assert len(trades) == 2 * 10 * 21 and list(trades.columns) == ["i", "j", "p_ij", "price_ij"]
    assert set(trades.i) == set(range(1, 32))
    pair = trades.set_index(["i", "j"]).p_ij
    assert pair[22, 1] == pytest.approx(-pair[1, 22], abs=1e-3)
    assert trades.price_ij.between(57.2, 57.3).all()


def _case_with(tmp_path, change):
    doc = json.loads((DATA / "new_england.json").read_text())
    change(doc)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc["agents"][3].update(a=-1.0), "agents[3].a: must be >= 0, got -1.0"),
    (lambda doc: doc["agents"][25].update(p_min=10.0, p_max=2.0), "agents[25]: p_min (10.0) > p_max (2.0)"),
    (lambda doc: doc["agents"][0].update(p_max=True), "agents[0].p_max: expected a number, got true"),
    (lambda doc: doc.update(colour="red"), "colour: unknown key"),
])
def test_solve_bad_case(tmp_path, change, message):
    path = _case_with(tmp_path, change)
    out = tmp_path / "out" / "result.parquet"
    assert_user_error(invoke("solve", path, "--out", out), f"{path}: {message}")
    assert not out.parent.exists()


def test_solve_bad_files_and_options(tmp_path):
    path = tmp_path / "case.json"
    path.write_text('{"agents": [\n')
    assert_user_error(invoke("solve", path), f"{path}: malformed JSON at line 2 column 1: Expecting value")
    assert_user_error(invoke("solve", tmp_path / "nope.json"), f"{tmp_path / 'nope.json'}: no such file")
    case = DATA / "new_england.json"
    assert_user_error(invoke("solve", case, "--rho", "-1"), "--rho: must be > 0, got -1.0")
    assert_user_error(invoke("solve", case, "--algorithm", "simplex"), '--algorithm: expected one of "admm"')
    assert_user_error(invoke("solve", case, "--out", tmp_path / "x.csv"), "--out: expected a .parquet file name")
    assert not (tmp_path / "x.csv").exists()


def test_solve_refuses_options_of_another_algorithm(tmp_path):
    """--rho with RCI once ran RCI and ignored --rho; a flag the chosen algorithm does not
    read is one line naming it and the algorithm's own flags."""
    out = tmp_path / "result.parquet"
    assert_user_error(invoke("solve", "new_england", "--algorithm", "rci", "--rho", "2", "--out", out),
                      "--rho: not an option of rci (its options: --eps-primal, --eps-dual, "
                      "--max-iter, --check-every, --trace-every, --eps-price, --eps-power, "
                      "--tuning, --alpha, --beta, --eta, --delta)")
    assert_user_error(invoke("solve", "new_england", "--eps-price", "1e-3"),
                      "--eps-price: not an option of admm (its options: --eps-primal, ")
    assert_user_error(invoke("solve", "new_england", "--policy", "endogenous_dc", "--tuning", "thesis"),
                      "--tuning: not an option of endogenous_dc (its options: ")
    assert not out.exists()


@pytest.mark.parametrize("flags, message", [
    (["--rho", "1e300"], "--rho: must be 0 or of magnitude 1e-12 to 1e12"),
    (["--rho", "1e-300"], "--rho: must be 0 or of magnitude 1e-12 to 1e12"),
    (["--tol", "1e300"], "--tol: must be 0 or of magnitude 1e-12 to 1e12"),
    (["--policy", "zonal", "--fee", "1e300"], "--fee: must be 0 or of magnitude 1e-12 to 1e12"),
])
def test_solve_refuses_extreme_magnitudes(tmp_path, flags, message):
    """Such options once gave NaN prices or a gap of 1 with exit status 0."""
    out = tmp_path / "result.parquet"
    assert_user_error(invoke("solve", "new_england", *flags, "--out", out), message)
    assert not out.exists()


def test_solve_refuses_a_case_file_beyond_the_magnitudes(tmp_path):
    path = _case_with(tmp_path, lambda doc: doc["agents"][0].update(p_max=1e300))
    assert_user_error(invoke("solve", path), f"{path}: agents[0].p_max: must be 0 or of magnitude "
                                             "1e-12 to 1e12 (a market quantity in its unit), got 1e+300")
