"""Algorithm comparison (a study that sweeps ``solver.algorithm``): how fast each algorithm
approaches the exact optimum, and how that grows with the number of agents.

Written when the study sweeps the algorithm (the thesis' T3.2.3-3.2.4 and Fig. 3.2-3.3):

* ``algorithms_gap`` (figure, needs traces): optimality gap vs iteration, one panel per
  setting of the other swept keys (e.g. per community size): the median (solid), the mean
  (dashed) and the 10-90 % band over the cases of each algorithm. A case that stopped keeps
  its final gap from its stopping iteration on, so every curve is over all its cases.
  Gaps are floored at 1e-16 for the logarithmic axis.
* ``algorithms_scaling`` (figure and table, needs ``n_agents`` swept): iterations to reach
  a gap of 1e-2, 1e-3, 1e-4 (the rows' ``iterations_to_gap_*``) vs the number of agents:
  median and 10-90 % percentiles over *all* cases, a case that never reached the gap
  counting as infinitely many iterations (lower order statistics: a median exists only
  where about half of the cases reached the gap, and a bar that runs to the top marks a
  90 % percentile that does not exist). The power law ``iterations = c N^p`` is fitted by least squares on
  log(median) vs log(N) over the sizes with a median (p and c from two sizes on, R^2, on
  the logarithms, from three). The table says how many cases reached each gap.
* ``algorithms`` (table): per algorithm and setting, the cases, how many converged
  (success rate), the iterations of *all* cases (shifted geometric mean with shift 10,
  median, 10/90 % percentiles; a case that did not converge counts the iterations it ran,
  so these are lower bounds where the success rate is below 1), the final optimality gap
  (median, 90 % percentile, max), and for each gap threshold how many cases reached it
  and their median iterations to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxmarket.report import (Dataset, distribution, new_figure, save_figure, save_table, shifted_geometric_mean,
                              swept_columns)
from jaxmarket.markets.rows import GAP_THRESHOLDS

GAP_FLOOR = 1e-16
GAP_COLUMNS = {suffix: f"iterations_to_gap_{suffix}" for suffix in GAP_THRESHOLDS}
NAMES = {"admm": "ADMM", "rci": "RCI", "pcmbed": "PCMBED", "ced": "CED (sum)", "ced_mean": "CED (mean)"}
COLORS = {"admm": "C0", "rci": "C1", "pcmbed": "C2", "ced": "C4", "ced_mean": "C3"}  # every figure


def _order(algorithm: str) -> int:
    """Plot order: the order of NAMES, algorithms it does not know last."""
    return list(NAMES).index(algorithm) if algorithm in NAMES else len(NAMES)


def applies(dataset: Dataset) -> bool:
    return "solver.algorithm" in dataset.swept and set(GAP_COLUMNS.values()) <= set(dataset.cases.columns)


def _settings(dataset: Dataset) -> list[str]:
    """The swept columns other than the algorithm: one panel or table block each."""
    return [c for c in swept_columns(dataset) if c != "algorithm"]


def _label(by: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(f"{'N' if name == 'n_agents' else name} = {value:g}" if isinstance(value, float)
                     else f"{'N' if name == 'n_agents' else name} = {value}" for name, value in zip(by, key))


def _groups(frame: pd.DataFrame, by: list[str]):
    return frame.groupby(by, sort=True) if by else [((), frame)]


def gap_curves(cases: pd.DataFrame, traces: pd.DataFrame) -> pd.DataFrame:
    """(iterations x cases) gaps of one cell: the trace, then each case's final gap from its
    stopping iteration on (forward filled on the union of traced iterations)."""
    grid = np.union1d(traces["iteration"].unique(), cases["iterations"].unique())
    curves = traces.pivot_table(index="iteration", columns="case_index", values="optimality_gap")
    curves = curves.reindex(index=grid, columns=cases["case_index"])
    stopped = grid[:, None] >= cases["iterations"].to_numpy()[None, :]
    curves = curves.mask(stopped, np.broadcast_to(cases["optimality_gap"].to_numpy(), curves.shape))
    return curves.ffill().clip(lower=GAP_FLOOR)


def gap_figure(dataset: Dataset) -> Figure | None:
    traces = dataset.traces
    if traces is None:
        return None
    by = _settings(dataset)
    panels = list(_groups(dataset.cases, by))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    fig = new_figure(2 if columns > 1 else 1, height=2.0 * rows + 0.7)
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True)
    for ax, (key, setting) in zip(axes.flat, panels):
        for algorithm, cell in sorted(setting.groupby("algorithm"), key=lambda g: _order(g[0])):
            cell_traces = traces[traces["cell"] == cell["cell"].iloc[0]]
            if cell_traces.empty:
                continue
            curves = gap_curves(cell, cell_traces)
            x = curves.index.to_numpy()
            low, median, high = np.percentile(curves.to_numpy(), [10, 50, 90], axis=1)
            color = COLORS.get(algorithm, "C5")
            ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
            ax.plot(x, median, color=color, label=NAMES.get(algorithm, algorithm))
            ax.plot(x, curves.mean(axis=1).to_numpy(), color=color, linestyle="--", linewidth=0.7)
        ax.set(xscale="log", yscale="log", title=_label(by, key), xlabel="iteration")
    for ax in axes[:, 0]:
        ax.set_ylabel("optimality gap (relative)")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels),
               title="median (solid), mean (dashed), 10-90 % of cases (band)")
    return fig


def power_law(n_agents, iterations) -> dict[str, float]:
    """Least squares of log(iterations) = log(c) + p log(N): c and p from two points on,
    R^2 (on the logarithms) from three."""
    x, y = np.log(np.asarray(n_agents, float)), np.log(np.asarray(iterations, float))
    fit = {"exponent": np.nan, "coefficient": np.nan, "r2": np.nan}
    if x.size < 2:
        return fit
    p, log_c = np.polyfit(x, y, 1)
    fit.update(exponent=p, coefficient=np.exp(log_c))
    if x.size >= 3:
        total = ((y - y.mean()) ** 2).sum()
        fit["r2"] = 1 - ((y - (log_c + p * x)) ** 2).sum() / total if total > 0 else 1.0
    return fit


def size_quantiles(group: pd.DataFrame, column: str) -> pd.DataFrame:
    """10/50/90 % iterations to a gap per size, over all cases (not reached = infinity; the
    lower order statistic, so that a percentile is finite exactly when enough cases reached)."""
    iterations = group[column].fillna(np.inf)
    return iterations.groupby(group["n_agents"]).quantile([0.1, 0.5, 0.9], interpolation="lower").unstack()


def scaling(cases: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per (algorithm, other settings, threshold): the power law in N of the medians."""
    rows = []
    for key, group in cases.groupby(["algorithm", *by], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for suffix, threshold in GAP_THRESHOLDS.items():
            column = GAP_COLUMNS[suffix]
            medians = size_quantiles(group, column)[0.5]
            medians = medians[np.isfinite(medians)]
            rows.append({**dict(zip(["algorithm", *by], key)), "gap": threshold, "cases": len(group),
                         "reached": int(np.isfinite(group[column]).sum()), "sizes_fitted": len(medians),
                         **power_law(medians.index, medians.to_numpy())})
    return pd.DataFrame(rows)


def scaling_figure(cases: pd.DataFrame, by: list[str], fits: pd.DataFrame) -> Figure:
    fig = new_figure(2, height=3.4)
    axes = fig.subplots(1, len(GAP_THRESHOLDS), sharey=True)
    groups = list(cases.groupby(["algorithm", *by], sort=True))
    groups.sort(key=lambda g: _order(g[0][0] if isinstance(g[0], tuple) else g[0]))
    sizes = np.sort(cases["n_agents"].unique())
    top = cases["iterations"].max() * 1.5
    for ax, (suffix, threshold) in zip(axes, GAP_THRESHOLDS.items()):
        column = GAP_COLUMNS[suffix]
        for k, (key, group) in enumerate(groups):
            key = key if isinstance(key, tuple) else (key,)
            stats = size_quantiles(group, column)
            stats = stats[np.isfinite(stats[0.5])]
            name = " ".join([NAMES.get(key[0], key[0]), *map(str, key[1:])])
            color = COLORS.get(key[0], f"C{k}") if not by else f"C{k}"
            if stats.empty:
                ax.errorbar([], [], fmt="o", markersize=3, color=color,
                            label=f"{name}: median not reached")
                continue
            n, median = stats.index.to_numpy(float), stats[0.5].to_numpy()
            high = np.minimum(stats[0.9].to_numpy(), top)
            fit = fits[(fits["gap"] == threshold)
                       & np.all([fits[c] == v for c, v in zip(["algorithm", *by], key)], axis=0)].iloc[0]
            label = name
            if np.isfinite(fit["exponent"]):
                label += f": $N^{{{fit['exponent']:.2f}}}$"
                label += f", $R^2$ = {fit['r2']:.2f}" if np.isfinite(fit["r2"]) else ""
            missing = np.setdiff1d(group["n_agents"].unique(), stats.index)
            if missing.size:  # a size without a point says why
                label += f" (median not reached at N = {', '.join(str(m) for m in missing)})"
            ax.errorbar(n, median, yerr=[median - stats[0.1].to_numpy(), high - median], fmt="o",
                        markersize=3, capsize=2, color=color, label=label)
            if np.isfinite(fit["exponent"]):
                line = np.geomspace(n.min(), n.max(), 50)
                ax.plot(line, fit["coefficient"] * line ** fit["exponent"], color=color, linewidth=0.8)
        ax.set(xscale="log", yscale="log", xlabel="agents N", title=f"gap $\\leq$ {threshold:g}",
               ylim=(None, top))
        ax.set_xticks(sizes, [str(n) for n in sizes])
        # Every panel spans every size, so N sits at the same place in each.
        ax.set_xlim(sizes.min() / 1.15, sizes.max() * 1.15)
        ax.minorticks_off()
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=6)
    axes[0].set_ylabel("iterations to reach the gap")
    fig.suptitle("median and 10–90 % of all cases (a case that never reached the gap counts as "
                 "infinite: bars to the top); lines: power law fitted to the medians",
                 fontsize=6.5, color="0.35")
    return fig


def iteration_table(cases: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    rows = []
    for key, group in cases.groupby(["algorithm", *by], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        iterations = group["iterations"].to_numpy(float)
        its = distribution(iterations, "iterations_")
        gaps = group["optimality_gap"].to_numpy(float)
        row = {**dict(zip(["algorithm", *by], key)), "cases": len(group),
               "converged": int(group["converged"].sum()), "success_rate": group["converged"].mean(),
               "iterations_sgm10": shifted_geometric_mean(iterations),
               "iterations_median": its["iterations_median"], "iterations_p10": its["iterations_p10"],
               "iterations_p90": its["iterations_p90"], "gap_median": np.nanmedian(gaps),
               "gap_p90": np.nanpercentile(gaps, 90), "gap_max": np.nanmax(gaps)}
        for suffix in GAP_THRESHOLDS:
            reached = group[GAP_COLUMNS[suffix]].to_numpy(float)
            row[f"reached_gap_{suffix}"] = int(np.isfinite(reached).sum())
            row[f"median_to_gap_{suffix}"] = size_quantiles(group, GAP_COLUMNS[suffix])[0.5].iloc[0]
        rows.append(row)
    return pd.DataFrame(rows)


def write(dataset: Dataset, directory: Path) -> list[Path]:
    cases, by = dataset.cases, _settings(dataset)
    table = iteration_table(cases, by)
    note = (f"{len(cases)} cases, {int(table['converged'].sum())} converged "
            f"(per row: `converged` of `cases`). Iterations over all cases; a case that did not "
            f"converge counts the iterations it ran (max_iter), so `iterations_*` are lower bounds "
            f"where `success_rate` < 1. `reached_gap_e2/e3/e4`: cases whose optimality gap settled "
            f"at or below 1e-2/1e-3/1e-4; `median_to_gap_*`: the median iterations to it over all "
            f"cases, a case that never reached it counting as infinite (inf: fewer than half reached).")
    written = save_table(table, directory, "algorithms", note)
    figure = gap_figure(dataset)
    if figure is not None:
        written += save_figure(figure, directory, "algorithms_gap")
    if "n_agents" in by and cases["n_agents"].nunique() > 1:
        others = [c for c in by if c != "n_agents"]
        fits = scaling(cases, others)
        note = ("Power law iterations = coefficient * N^exponent fitted on log-log to the median "
                "iterations to each gap of the `sizes_fitted` community sizes where at least half "
                "of the cases reached it (`reached` of `cases` over all sizes); `r2` on the "
                "logarithms, from three sizes on.")
        written += save_table(fits, directory, "algorithms_scaling", note)
        written += save_figure(scaling_figure(cases, others, fits), directory, "algorithms_scaling")
    return written
