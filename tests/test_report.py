"""``jaxmarket report``: the framework (loading, tables, figures) and the summary section,
checked against statistics computed here from the Parquet rows."""

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

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
    assert report.markdown(frame, {"sparsity": "fraction"}).splitlines() == [
        "| sparsity (fraction) | cases | gap (relative) |", "|---|---|---|", "| 0 | 3 | 1.235e-05 |",
        "| 0.5 | 4 |  |"]


def test_every_table_column_of_a_number_names_its_unit():
    for column, expected in (("success_rate", "fraction"), ("iterations_p90", "iterations"),
                             ("welfare_mean", "€/h"), ("mean_price", "€/MWh"), ("total_traded", "MW"),
                             ("messages_mean", "messages"), ("wall_time_s", "s"), ("policy", ""),
                             ("unsupplied_consumers", "fraction of consumers"), ("isolated_agents", "agents")):
        assert report.unit(column) == expected, column


def test_quantile_band_of_a_non_negative_quantity_stays_non_negative():
    # Iteration-like counts: mostly short runs, a few very long ones. mean - sd < 0 here,
    # which is what a +-1 sd band showed; the 10-90 % band stays within the data.
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(50, 200, 45), [9000, 9500, 9800, 9900, 10000]])
    assert values.mean() - values.std() < 0
    band = report.quantile_band(values, lower=0.0)
    assert 0 <= band["p10"] <= band["median"] <= band["p90"] <= values.max()
    assert band["median"] == pytest.approx(np.median(values))
    # Noise around zero (a volume that is zero up to solver tolerance) is clipped at the bound.
    band = report.quantile_band(rng.normal(0, 1e-6, 200), lower=0.0)
    assert min(band["p10"], band["median"], band["p90"]) >= 0
    # Per group, every band of every synthetic step.
    cases = pd.DataFrame({"sparsity": np.repeat([0.0, 0.5, 0.9], 40),
                          "messages": rng.exponential(1e5, 120) * rng.integers(0, 2, 120)})
    table = report.band_table(cases, "sparsity", "messages", lower=0.0)
    assert list(table.index) == [0.0, 0.5, 0.9] and (table[["p10", "median", "p90"]] >= 0).all().all()


def test_quantile_band_treats_censored_cases_as_unknown_upper_values():
    # 1 of 10 cases stopped at max_iter: the 90 % percentile depends on it, the median not.
    values = np.arange(1.0, 11.0)
    band = report.quantile_band(values, censored=values == 10)
    assert band["median"] == pytest.approx(5.5) and band["p90"] == np.inf
    assert (band["cases"], band["censored"]) == (10, 1)
    # Half of them stopped: the median is unknown too; none converged: nothing is known.
    assert report.quantile_band(values, censored=values > 5)["median"] == np.inf
    assert report.quantile_band(values, censored=values > 0)["p10"] == np.inf
    assert math.isnan(report.quantile_band([])["median"])


def test_magnitude_of_axis_values():
    assert report.magnitude([0, 2.1e6]) == (1e-6, "millions")
    assert report.magnitude([4e4]) == (1e-3, "thousands")
    assert report.magnitude([1100, np.inf]) == (1.0, "")


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


def test_cell_summary_counts_agents_stopped_apart_from_converged():
    """Rows of a stopping study: cases whose agents all stopped by their local rule are
    counted apart; converged counts only those certified (docs/stopping.md)."""
    cases = pd.DataFrame({"converged": [True, False, False], "diverged": [False] * 3,
                          "all_agents_stopped": [True, True, False],
                          "iterations": [10, 20, 500], "optimality_gap": [1e-7, 1e-3, 1e-2]})
    (row,) = cell_summary(cases, []).to_dict("records")
    assert (row["converged"], row["agents_stopped"]) == (1, 2)
    assert "agents_stopped" not in cell_summary(cases.drop(columns="all_agents_stopped"), [])


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
    assert "| success_rate (fraction) |" in text and "| iterations_median (iterations) |" in text
    # As a user runs it (a fresh process, 64-bit mode not yet on): nothing but the paths.
    fresh = subprocess.run([sys.executable, "-m", "jaxmarket", "report", str(study.out)],
                           capture_output=True, text=True)
    assert fresh.returncode == 0 and fresh.stderr == "", fresh.stderr


def test_every_figure_of_a_study_is_a_pdf_and_a_300_dpi_png_of_paper_width(tmp_path):
    """The TINY study (like the quickstart: no section of its own draws it) gets the
    convergence figure; every figure is written as PDF and PNG, one or two columns wide."""
    study = tiny_study(tmp_path, "run.cases_per_cell=5", "solver.max_iter=60")
    run_study(study)
    written = report.write_report(study.out)
    figures = {p.stem for p in written if p.suffix in (".png", ".pdf")}
    assert "convergence" in figures
    for stem in figures:
        png, pdf = (study.out / "report" / f"{stem}.{kind}" for kind in ("png", "pdf"))
        assert png in written and pdf in written, stem
        assert pdf.read_bytes()[:4] == b"%PDF" and png.read_bytes()[:4] == b"\x89PNG"
        with Image.open(png) as image:
            width, height = image.size
            dpi = image.info.get("dpi", (0, 0))[0]
        assert round(dpi) == report.DPI, stem
        assert width in (round(report.ONE_COLUMN * report.DPI), round(report.TWO_COLUMNS * report.DPI)), stem
        assert height <= 9 * report.DPI, stem


def test_report_errors(tmp_path):
    assert_user_error(invoke("report", tmp_path / "nope"), f"{tmp_path / 'nope'}: no such dataset directory")
    assert_user_error(invoke("report", tmp_path), f"{tmp_path}: not a jaxmarket dataset (no manifest.json)")


def test_convergence_legend_counts_stopped_cases_after_the_line_label():
    # Two layouts x two charges x two cases; one case of the full layout stopped at max_iter.
    from types import SimpleNamespace
    from jaxmarket.report import convergence
    cases = pd.DataFrame({"layout": np.repeat(["full", "centralized"], 4),
                          "charge_per_distance": np.tile([0.0, 0.0, 1.0, 1.0], 2),
                          "iterations": [100, 120, 300, 1000, 90, 95, 90, 95],
                          "converged": [True, True, True, False] + [True] * 4, "diverged": False,
                          "optimality_gap": 1e-7})
    dataset = SimpleNamespace(cases=cases, swept=["community.charge_per_distance", "graph.layout"])
    with report.style():
        fig = convergence.figure(dataset)
    labels = fig.legends[0].get_texts()
    assert [t.get_text() for t in labels][:2] == ["layout: centralized", "layout: full (1 of 4 at max_iter)"]


def test_convergence_of_unordered_cells_names_them_and_does_not_join_them():
    # One swept label (no swept number): one point per cell, the key on the axis, its
    # values as ticks, and no line between cells that have no order.
    from types import SimpleNamespace
    from jaxmarket.report import convergence
    cases = pd.DataFrame({"policy": ["zonal", "none", "endogenous_dc"], "iterations": [300, 140, 250],
                          "converged": True, "diverged": False, "optimality_gap": [1e-8, 1e-6, 1e-8]})
    with report.style():
        fig = convergence.figure(SimpleNamespace(cases=cases, swept=["network.policy"]))
    for ax in fig.axes:
        assert ax.get_xlabel() == "policy"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["endogenous_dc", "none", "zonal"]
        assert all(line.get_linestyle() == "None" for line in ax.get_lines())


def test_asynchrony_table_and_figure():
    """The asynchrony section's table against counts and ratios worked out here; its
    figure has a panel column per algorithm (time increase above, reached share below)."""
    from jaxmarket.report import asynchrony
    cases = pd.DataFrame({
        "algorithm": ["admm"] * 4 + ["ced"] * 2,
        "strategy": ["latest", "latest", "mean", "mean", "latest", "latest"],
        "compute_spread": [0.005] * 6, "delay_mean": [0.0] * 6,
        "time_ratio": [1.2, 1.6, np.nan, 0.9, 1.1, 1.3],
        "reached_gap": [True, True, False, True, True, True],
        "async_gap": [1e-5, 2e-5, 0.3, 1e-6, 1e-5, 1e-5],
        "message_overflows": [0, 0, 1, 0, 0, 0]})
    table = asynchrony.summary_table(cases)
    latest, mean, ced = table.to_dict("records")
    assert (latest["algorithm"], latest["strategy"], latest["cases"], latest["reached"]) == (
        "admm", "latest", 2, 2)
    assert latest["time_ratio_mean"] == pytest.approx(1.4)
    assert latest["time_ratio_max"] == pytest.approx(1.6)
    assert (mean["cases"], mean["reached"], mean["message_overflows"]) == (2, 1, 1)
    assert mean["time_ratio_mean"] == pytest.approx(0.9)
    assert mean["async_gap_median"] == pytest.approx((0.3 + 1e-6) / 2)
    assert (ced["algorithm"], ced["time_ratio_median"]) == ("ced", pytest.approx(1.2))
    with report.style():
        fig = asynchrony.time_figure(table, cases)
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes[:2]] == ["admm", "ced"]
    # Another swept key (rho) splits the groups and the panels.
    cases["rho"] = [1.0, 0.1, 1.0, 1.0, 1.0, 1.0]
    table = asynchrony.summary_table(cases, ("rho",))
    assert list(table["cases"]) == [1, 1, 2, 2]
    assert list(table["rho"]) == [0.1, 1.0, 1.0, 1.0]
    with report.style():
        fig = asynchrony.time_figure(table, cases, ("rho",))
    assert [ax.get_title() for ax in fig.axes[:3]] == ["admm, rho = 0.1", "admm, rho = 1",
                                                       "ced, rho = 1"]
