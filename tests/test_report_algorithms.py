"""The algorithm-comparison report section: hand-computed pieces (power law, gap curves,
quantiles with cases that never reached a gap), then a real tiny study through the CLI,
its tables checked against statistics computed here from the Parquet rows."""

import math

import numpy as np
import pandas as pd
import pytest

from jaxmarket.report import algorithms, style
from test_cli import invoke
from test_sweep import run_study, tiny_study

STUDY = """
[run]
name = "tiny_algorithms"
cases_per_cell = 4
chunk_size = 4
[community]
n_agents = [4, 6, 8]
charge_per_distance = 0.0
[solver]
algorithm = ["admm", "ced_mean"]
max_iter = 400
check_every = 10
trace_every = 10
"""


def test_power_law_by_hand():
    fit = algorithms.power_law([10, 20, 40], [30, 120, 480])  # 0.3 N^2 exactly
    assert fit["exponent"] == pytest.approx(2) and fit["coefficient"] == pytest.approx(0.3)
    assert fit["r2"] == pytest.approx(1)
    # log y = [0, 1, 0] at log x = [0, 1, 2]: slope 0, R^2 = 0; two points give no R^2.
    fit = algorithms.power_law(np.exp([0, 1, 2]), np.exp([0, 1, 0]))
    assert fit["exponent"] == pytest.approx(0, abs=1e-12) and fit["r2"] == pytest.approx(0, abs=1e-12)
    fit = algorithms.power_law([10, 20], [1, 2])
    assert fit["exponent"] == pytest.approx(1) and math.isnan(fit["r2"])
    assert math.isnan(algorithms.power_law([10], [5])["exponent"])


def test_quantiles_count_unreached_cases_as_infinite():
    group = pd.DataFrame({"n_agents": [5] * 4 + [9] * 4,
                          "x": [10, 20, 30, np.nan, 10, np.nan, np.nan, np.nan]})
    stats = algorithms.size_quantiles(group, "x")
    # Lower order statistics of (10, 20, 30, inf): positions 0.3, 1.5, 2.7 -> 0, 1, 2.
    assert stats.loc[5].tolist() == [10, 20, 30]
    assert stats.loc[9].tolist() == [10, np.inf, np.inf]  # 10, inf, inf, inf


def test_gap_curves_by_hand():
    cases = pd.DataFrame({"case_index": [0, 1], "iterations": [30, 15], "optimality_gap": [1e-3, 0.0]})
    traces = pd.DataFrame({"case_index": [0, 0, 0, 1], "iteration": [10, 20, 30, 10],
                           "optimality_gap": [0.5, 0.1, 2e-3, 0.2]})
    curves = algorithms.gap_curves(cases, traces)
    assert curves.index.tolist() == [10, 15, 20, 30]
    # Case 0: its trace, then its final gap from its stop (30) on. Case 1 stopped at 15
    # with gap 0 (floored for the logarithmic axis) and keeps it.
    np.testing.assert_array_equal(curves[0], [0.5, 0.5, 0.1, 1e-3])
    np.testing.assert_array_equal(curves[1], [0.2, 1e-16, 1e-16, 1e-16])


def test_scaling_panels_span_every_size_and_name_the_missing_medians():
    # ADMM reaches 1e-4 at N = 4 only: the 1e-4 panel has one point, the same x range as
    # the others, and its legend says where the median is missing.
    cases = pd.DataFrame({"algorithm": "admm", "n_agents": [4] * 3 + [8] * 3,
                          "iterations": [30, 40, 50, 90, 100, 100],
                          "iterations_to_gap_e2": [10, 10, 20, 30, 30, 40],
                          "iterations_to_gap_e3": [20, 20, 30, 60, 70, 80],
                          "iterations_to_gap_e4": [30, 40, 50, np.nan, np.nan, 100]})
    with style():
        fig = algorithms.scaling_figure(cases, [], algorithms.scaling(cases, []))
    assert len({ax.get_xlim() for ax in fig.axes}) == 1
    left, right = fig.axes[0].get_xlim()
    assert left < 4 and right > 8
    labels = fig.axes[2].get_legend_handles_labels()[1]
    assert labels == ["ADMM (median not reached at N = 8)"]


def test_report_of_an_algorithm_study(tmp_path):
    study = tiny_study(tmp_path, text=STUDY)
    run_study(study)
    result = invoke("report", study.out)
    assert result.exit_code == 0, result.output
    folder = study.out / "report"
    for stem in ("algorithms_gap", "algorithms_scaling"):
        assert (folder / f"{stem}.png").stat().st_size > 0 and (folder / f"{stem}.pdf").stat().st_size > 0
    rows = pd.read_parquet(study.out / "cases")
    table = pd.read_csv(folder / "algorithms.csv")
    assert len(table) == 6 and table["cases"].tolist() == [4] * 6
    for line in table.to_dict("records"):
        cell = rows[(rows.algorithm == line["algorithm"]) & (rows.n_agents == line["n_agents"])]
        assert line["converged"] == cell.converged.sum()
        assert line["iterations_median"] == pytest.approx(cell.iterations.median())
        assert line["gap_max"] == pytest.approx(cell.optimality_gap.max())
        for suffix in ("e2", "e3", "e4"):
            reached = cell[f"iterations_to_gap_{suffix}"].dropna().sort_values()
            assert line[f"reached_gap_{suffix}"] == len(reached)
            if len(reached) >= 2:  # lower median of 4 cases: the 2nd smallest
                assert line[f"median_to_gap_{suffix}"] == reached.iloc[1]
    note = (folder / "algorithms.md").read_text()
    assert f"{len(rows)} cases, {rows.converged.sum()} converged" in note
    fits = pd.read_csv(folder / "algorithms_scaling.csv")
    admm = fits[(fits.algorithm == "admm") & (fits.gap == 1e-2)].iloc[0]
    medians = [rows[(rows.algorithm == "admm") & (rows.n_agents == n)]["iterations_to_gap_e2"]
               .sort_values().iloc[1] for n in (4, 6, 8)]
    slope, intercept = np.polyfit(np.log([4, 6, 8]), np.log(medians), 1)
    assert admm["exponent"] == pytest.approx(slope) and admm["coefficient"] == pytest.approx(np.exp(intercept))
