"""Energy and reserve studies (rows with ``coverage_global``): per allocation and delta,
the cost gap to the joint chance-constrained market, the empirical global and local
coverage next to the target, and the reserves procured per agent type.

Figures: ``uncertainty_cost_gap`` (median cost gap vs delta, one line per allocation,
10-90 % band; Abs-sigma dashed, as it coincides with Rel-1 for Gaussian forecasts), ``uncertainty_coverage`` (median global coverage and mean of the
minimum local coverage vs delta, with the target delta as a dashed diagonal),
``uncertainty_reserves`` (mean reserves per agent type and allocation at each delta);
one panel row per forecast distribution. Table ``uncertainty`` holds the numbers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxmarket.report import Dataset, new_figure, save_figure, save_table, style
from jaxmarket.uncertainty import ALLOCATIONS

LABELS = {"rel_mu": "Rel-μ", "rel_sigma": "Rel-σ", "rel_1": "Rel-1", "abs_sigma": "Abs-σ"}
# "net": what renewables buy less what they sell, so a bar may be negative.
RESERVES = {"up_bought_renewable": "up bought by renewables (net)",
            "down_bought_renewable": "down bought by renewables (net)",
            "down_held_renewable": "down spilled by renewables",
            "up_held_producer": "up held by producers", "down_held_producer": "down held by producers",
            "up_held_consumer": "up held by consumers", "down_held_consumer": "down held by consumers"}


def applies(dataset: Dataset) -> bool:
    return "coverage_global" in dataset.cases.columns


def _groups(cases: pd.DataFrame) -> list[str]:
    return [c for c in ("distribution", "allocation", "confidence") if c in cases.columns]


def summary_table(cases: pd.DataFrame) -> pd.DataFrame:
    by = _groups(cases)
    rows = []
    for key, group in cases.groupby(by, sort=False):
        rows.append({**dict(zip(by, key)), "cases": len(group),
                     "converged": int(group["converged"].sum()),
                     "cost_gap_median": group["cost_gap"].median(),
                     "cost_gap_p10": group["cost_gap"].quantile(0.1),
                     "cost_gap_p90": group["cost_gap"].quantile(0.9),
                     "coverage_global_median": group["coverage_global"].median(),
                     "coverage_global_min": group["coverage_global"].min(),
                     "coverage_local_min_mean": group["coverage_local_min"].mean(),
                     "joint_coverage_global_median": group["joint_coverage_global"].median(),
                     "delta_local_mean": group["delta_local_mean"].mean(),
                     **{f"{name}_mean": group[name].mean() for name in RESERVES}})
    return pd.DataFrame(rows)


FORECASTS = {"gaussian": "Gaussian", "beta": "scaled Beta"}  # panel titles


def _forecast(kind) -> str:
    return FORECASTS.get(kind, kind)


def _distributions(table):
    return list(table["distribution"].unique()) if "distribution" in table else [None]


def _rows(table, distribution):
    return table if distribution is None else table[table["distribution"] == distribution]


def _allocations(table):
    return [a for a in ALLOCATIONS if a in set(table["allocation"])]


def _dodge(table, allocation) -> float:
    """A small x offset per allocation, so bars at the same delta do not hide each other."""
    deltas = np.sort(table["confidence"].unique())
    step = np.diff(deltas).min() if deltas.size > 1 else 0.05
    allocations = _allocations(table)
    return (allocations.index(allocation) - (len(allocations) - 1) / 2) * 0.06 * step


def cost_gap_figure(table: pd.DataFrame) -> Figure:
    kinds = _distributions(table)
    fig = new_figure(1, height=1.9 * len(kinds) + 0.5)
    axes = fig.subplots(len(kinds), 1, squeeze=False, sharex=True)[:, 0]
    for ax, kind in zip(axes, kinds):
        part = _rows(table, kind)
        for allocation in _allocations(part):
            rows = part[part["allocation"] == allocation].sort_values("confidence")
            x = rows["confidence"].to_numpy() + _dodge(table, allocation)
            median = 100 * rows["cost_gap_median"].to_numpy()
            # Abs-sigma dashed: with Gaussian forecasts it lies exactly on Rel-1.
            ax.errorbar(x, median, yerr=[median - 100 * rows["cost_gap_p10"].to_numpy(),
                                         100 * rows["cost_gap_p90"].to_numpy() - median],
                        marker="o", ms=3, ls="--" if allocation == "abs_sigma" else "-",
                        label=LABELS[allocation])
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_ylabel("cost gap to joint (%)")
        ax.set_title(f"{_forecast(kind)} forecasts" if kind else "")
    deltas = np.sort(table["confidence"].unique())
    axes[-1].set_xticks(deltas, [f"{d:g}" for d in deltas])
    axes[-1].set_xlabel("global confidence δ (fraction)")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4,
               title="median and 10–90 % of cases", handlelength=1.5, columnspacing=1.0)
    return fig


def coverage_figure(table: pd.DataFrame) -> Figure:
    kinds = _distributions(table)
    fig = new_figure(2, height=1.9 * len(kinds) + 0.4)
    axes = fig.subplots(len(kinds), 2, squeeze=False, sharex=True, sharey=True)
    for row, kind in zip(axes, kinds):
        part = _rows(table, kind)
        for column, title in ((0, "global"), (1, "local (worst agent)")):
            ax = row[column]
            for allocation in _allocations(part):
                rows = part[part["allocation"] == allocation].sort_values("confidence")
                y = rows["coverage_global_median"] if column == 0 else rows["coverage_local_min_mean"]
                ax.plot(100 * rows["confidence"], 100 * y, marker="o", ms=3, label=LABELS[allocation],
                        ls="--" if allocation == "abs_sigma" else "-")
            if column == 0:
                joint = part.groupby("confidence")["joint_coverage_global_median"].median()
                ax.plot(100 * joint.index, 100 * joint.to_numpy(), color="k", marker="x", ms=3, lw=0.8,
                        label="joint")
            grid = 100 * np.sort(part["confidence"].unique())
            ax.plot(grid, grid, color="k", ls=":", lw=0.8, marker="_", ms=8, label="target δ")
            ax.set_title(f"{title}, {_forecast(kind)}" if kind else title)
            ax.set_ylabel("empirical coverage (%)" if column == 0 else "")
    deltas = 100 * np.sort(table["confidence"].unique())
    for ax in axes[-1]:
        ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
        ax.set_xlabel("global confidence δ (%)")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper")
    return fig


def reserves_figure(table: pd.DataFrame) -> Figure:
    kinds = _distributions(table)
    deltas = np.sort(table["confidence"].unique())
    fig = new_figure(2, height=2.4 * len(kinds))
    axes = fig.subplots(len(kinds), 1, squeeze=False)[:, 0]
    largest = max(table[f"{n}_mean"].abs().max() for n in RESERVES)
    names = [n for n in RESERVES if table[f"{n}_mean"].abs().max() > 1e-3 * largest]
    for ax, kind in zip(axes, kinds):
        part = _rows(table, kind)
        allocations = _allocations(part)
        positions, labels = [], []
        width = 0.8 / len(names)
        for i, (allocation, delta) in enumerate((a, d) for a in allocations for d in deltas):
            rows = part[(part["allocation"] == allocation) & (part["confidence"] == delta)]
            for j, name in enumerate(names):
                value = rows[f"{name}_mean"].mean()
                ax.bar(i + (j - len(names) / 2 + 0.5) * width, value, width,
                       color=f"C{j}", label=RESERVES[name] if i == 0 else None)
            positions.append(i)
            labels.append(f"{LABELS[allocation]}\nδ={delta:g}")
        ax.set_xticks(positions, labels, fontsize=6)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_ylabel("mean reserve per case (MW)")
        ax.set_title(f"{_forecast(kind)} forecasts" if kind else "")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper")
    return fig


def write(dataset: Dataset, directory: Path) -> list[Path]:
    table = summary_table(dataset.cases)
    files = save_table(table, directory, "uncertainty",
                       "Per forecast family, allocation and delta: cost gap to the joint "
                       "chance-constrained market (fraction), empirical coverage (4096 samples "
                       "per case), mean reserves per case in MW.")
    with style():
        files += save_figure(cost_gap_figure(table), directory, "uncertainty_cost_gap")
        files += save_figure(coverage_figure(table), directory, "uncertainty_coverage")
        files += save_figure(reserves_figure(table), directory, "uncertainty_reserves")
    return files
