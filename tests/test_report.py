"""``jaxmarket report``: the framework (loading, tables, figures) and the summary section,
checked against statistics computed here from the Parquet rows."""

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from jaxmarket import report
from jaxmarket.report.summary import cell_summary
from test_cli import assert_user_error, invoke
from test_sweep import run_study, tiny_study


def test_shifted_geometric_mean():
    assert report.shifted_geometric_mean([0, 90]) == pytest.approx(math.sqrt(10 * 100) - 10)
    assert report.shifted_geometric_mean([5, 5, 5]) == pytest.approx(5)
    assert math.isnan(report.shifted_geometric_mean([]))


def test_distribution_ignores_non_finite():
    stats = report.distribution([1.0, 2.0, 3.0, np.nan, np.inf], prefix="x_")
    assert stats == pytest.approx({"x_mean": 2.0, "x_sd": 1.0, "x_median": 2.0, "x_p10": 1.2, "x_p90": 2.8})


def test_markdown_table():
    frame = pd.DataFrame({"sparsity": [0.0, 0.5], "cases": [3, 4], "gap": [1.23456e-5, np.nan]})
    assert report.markdown(frame).splitlines() == [
        "| sparsity | cases | gap |", "|---|---|---|", "| 0 | 3 | 1.235e-05 |", "| 0.5 | 4 |  |"]


def test_cell_summary_counts():
    cases = pd.DataFrame({"rho": [1, 1, 1, 2], "converged": [True, True, False, False],
                          "diverged": [False, False, False, True], "iterations": [10, 30, 500, 7],
                          "optimality_gap": [1e-6, 3e-6, 1e-2, np.nan]})
    table = cell_summary(cases, ["rho"])
    first, second = table.to_dict("records")
    assert (first["cases"], first["converged"], first["diverged"]) == (3, 2, 0)
    assert first["success_rate"] == pytest.approx(2 / 3)
    assert first["iterations_median"] == 20 and first["iterations_max"] == 30
    assert first["gap_max"] == pytest.approx(1e-2)
    assert (second["cases"], second["converged"], second["diverged"]) == (1, 0, 1)
    assert math.isnan(second["iterations_median"])


def test_save_figure_and_table(tmp_path):
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    png, pdf = report.save_figure(fig, tmp_path / "r", "line")
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    md, csv = report.save_table(pd.DataFrame({"a": [1]}), tmp_path / "r", "t", note="Two cases.")
    assert md.read_text().startswith("Two cases.\n\n| a |") and csv.read_text() == "a\n1\n"
    assert not list((tmp_path / "r").glob(".*"))  # no temporary left


def test_report_of_a_study(tmp_path):
    study = tiny_study(tmp_path, "run.cases_per_cell=5", "solver.max_iter=60")
    run_study(study)
    result = invoke("report", study.out)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(study.out / "report" / "summary.csv")
    rows = pd.read_parquet(study.out / "cases")
    assert list(table["rho"]) == [1.0, 2.0]
    for rho, line in zip((1.0, 2.0), table.to_dict("records")):
        cell = rows[rows.rho == rho]
        assert line["cases"] == len(cell) == 5
        assert line["converged"] == cell.converged.sum()
        assert line["gap_max"] == pytest.approx(cell.optimality_gap.max())
    text = (study.out / "report" / "summary.md").read_text()
    assert f"{len(rows)} cases, {rows.converged.sum()} converged" in text and "complete" in text


def test_report_errors(tmp_path):
    assert_user_error(invoke("report", tmp_path / "nope"), f"{tmp_path / 'nope'}: no such dataset directory")
    assert_user_error(invoke("report", tmp_path), f"{tmp_path}: not a jaxmarket dataset (no manifest.json)")
