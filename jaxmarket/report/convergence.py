"""Convergence of any study: iterations and optimality gap against the swept keys.

The fallback figure of a study that no other section draws (the quickstart, a sweep of
the solver's options, the layouts study): ``convergence`` (two columns wide) shows, per
cell, the median and the 10-90 % range over the cases of

* the iterations to convergence. A case that stopped at ``max_iter`` without converging is
  censored: it counts as more iterations than every converged case (``quantile_band``), so
  a median or a percentile that depends on one is unknown and runs to the top of the axes,
  where an open triangle marks every cell with such cases; the legend says how many of
  each line's cases stopped at ``max_iter``. The axis ends above the known values, not at
  ``max_iter``, so a few long runs do not squash the rest;
* the final optimality gap (relative to the exact optimum, logarithmic, floored at 1e-16),
  over every case, stopped or not; left out when the study has no reference optimum.

The x axis is the swept number with most values (the number of agents first); the other
swept keys give the lines (e.g. with and without charges). A study without a swept number
gets one point per cell, named on the x axis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from jaxmarket.report import (Dataset, band_table, band_top, censored_iterations, draw_band, new_figure,
                              save_figure, sections, swept_columns)

GAP_FLOOR = 1e-16
DRAWN_ELSEWHERE = ("algorithms", "sparsity", "network", "uncertainty")  # sections with figures
NAMES = {  # column -> (axis label, scale)
    "n_agents": ("agents N", 1.0),
    "sparsity": ("sparsity: edges removed (%)", 100.0),
    "charge_per_distance": ("charge per distance (€/MWh per unit distance)", 1.0),
    "rho": ("penalty ρ (€/MW²h)", 1.0),
    "rho_balance": ("balance penalty ρ (€/MW²h)", 1.0),
    "max_share": ("largest share of capacity (fraction)", 1.0),
    "capacity_per_agent": ("capacity per agent (MW)", 1.0),
    "prosumer_fraction": ("prosumers (% of agents)", 100.0),
}
SHORT = {"n_agents": "N", "charge_per_distance": "charge", "sparsity": "sparsity"}
DODGE = 0.025  # of the x range: lines drawn side by side at a shared x value


def applies(dataset: Dataset) -> bool:
    return not any(section.applies(dataset) for section in sections(DRAWN_ELSEWHERE))


def _axis(cases: pd.DataFrame, swept: list[str]) -> tuple[str | None, list[str]]:
    """The x column (None: no swept number) and the columns that tell the lines apart."""
    numeric = [c for c in swept if pd.api.types.is_numeric_dtype(cases[c])
               and not pd.api.types.is_bool_dtype(cases[c]) and cases[c].nunique() > 1]
    if not numeric:
        return None, swept
    x = "n_agents" if "n_agents" in numeric else max(numeric, key=lambda c: cases[c].nunique())
    return x, [c for c in swept if c != x]


def _value(name: str, value) -> str:
    if name == "sparsity":
        return f"{SHORT[name]} {100 * value:g} %"
    if isinstance(value, (float, np.floating, int, np.integer)) and not isinstance(value, bool):
        return f"{SHORT.get(name, name)} = {value:g}"
    return f"{SHORT.get(name, name)}: {value}"


def _label(names: list[str], key) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ", ".join(_value(n, v) for n, v in zip(names, key))


def _lines(cases: pd.DataFrame, others: list[str]):
    if not others:
        return [("", cases)]
    return [(_label(others, key), group) for key, group in cases.groupby(others, sort=True)]


def _points(ax, x, stats: pd.DataFrame, color, label, top: float | None, joined: bool = True) -> None:
    """Medians (markers, joined by a thin line unless the x values are unordered cells)
    with 10-90 % bars; unknown values run to ``top`` and censored cells get an open
    triangle there."""
    median, low, high = (stats[c].to_numpy(float) for c in ("median", "p10", "p90"))
    known = np.isfinite(median)
    if top is not None:
        high = np.where(np.isfinite(high), high, top)
    ax.errorbar(x[known], median[known], yerr=[median[known] - low[known], high[known] - median[known]],
                fmt="o-" if joined else "o", color=color, markersize=3.5, linewidth=0.8, label=label)
    if top is not None:
        unknown = ~known & (stats["cases"].to_numpy() > 0)
        ax.vlines(x[unknown], np.minimum(low[unknown], top), top, color=color, linewidth=0.8)
        stopped = stats["censored"].to_numpy() > 0
        if stopped.any():  # (an empty unclipped line would stretch the layout to the origin)
            ax.plot(x[stopped], np.full(stopped.sum(), top), linestyle="none", marker="^",
                    markersize=4.5, markerfacecolor="none", markeredgecolor=color, clip_on=False,
                    zorder=5)


def _panel(ax, lines, x, column: str, censored: bool, log: bool, lower: float | None) -> None:
    cells = x == "cell_position"  # one point per cell: no order, so no joining line
    tables = [band_table(group, x, column, censored="stopped" if censored else None, lower=lower)
              for _, group in lines]
    top = band_top(*tables, log=log) if censored else None
    positions = np.unique(np.concatenate([t.index.to_numpy(float) for t in tables]))
    scale = NAMES.get(x, ("", 1.0))[1]
    values = np.asarray(positions, float) * scale
    spread = values.max() - values.min() if len(values) > 1 else 1.0
    many = len(values) > 6 and not cells
    for k, ((label, group), stats) in enumerate(zip(lines, tables)):
        stopped = int(group["stopped"].sum()) if censored else 0
        if stopped:  # in parentheses: a label such as "layout: full" has its own colon
            count = f"{stopped} of {len(group)} at max_iter"
            label = f"{label} ({count})" if label else count
        at = stats.index.to_numpy(float) * scale
        if many:
            draw_band(ax, at, stats, f"C{k}", label or None, top=top)
        else:
            offset = (k - (len(lines) - 1) / 2) * DODGE * spread
            _points(ax, at + offset, stats, f"C{k}", label or None, top, joined=not cells)
    if log:
        ax.set_yscale("log")
    if top is not None:
        ax.set_ylim(top=top)
    if not log and lower is not None:
        ax.set_ylim(bottom=lower)
    if not many:
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.grid(axis="x", visible=False)
        ax.set_xlim(values.min() - 0.5 * spread * max(0.3, DODGE * len(lines)),
                    values.max() + 0.5 * spread * max(0.3, DODGE * len(lines)))


def figure(dataset: Dataset) -> Figure:
    swept = swept_columns(dataset)
    cases = dataset.cases.assign(stopped=censored_iterations(dataset.cases))
    x, others = _axis(cases, swept)
    height, cell_axis = 2.7, ""
    if x is None:  # one point per cell, named on the axis
        keys = [key for key, _ in (cases.groupby(others, sort=True) if others else [((), cases)])]
        if len(others) == 1:  # the key names the axis, its values the ticks
            names = [str(key[0] if isinstance(key, tuple) else key) for key in keys]
            cell_axis = others[0]
        else:
            names = [_label(others, key) if others else "all cases" for key in keys]
        codes = cases.groupby(others, sort=True).ngroup() if others else pd.Series(0, cases.index)
        cases, x, others = cases.assign(cell_position=codes), "cell_position", []
        # Room for the slanted tick labels, so they do not squash the panels.
        height += 0.03 * max(map(len, names))
    gap = "optimality_gap" in cases and cases["optimality_gap"].notna().any()
    fig = new_figure(2 if gap else 1, height=height)
    axes = fig.subplots(1, 2 if gap else 1, squeeze=False)[0]
    lines = _lines(cases, others)
    iterations = cases["iterations"][~cases["stopped"]]
    log = iterations.size > 0 and iterations.max() > 30 * max(iterations.min(), 1)
    _panel(axes[0], lines, x, "iterations", True, log, 0.0)
    axes[0].set_ylabel("iterations to convergence")
    if gap:
        floored = [(label, group.assign(optimality_gap=group["optimality_gap"].clip(lower=GAP_FLOOR)))
                   for label, group in lines]
        _panel(axes[1], floored, x, "optimality_gap", False, True, None)
        axes[1].set_ylabel("final optimality gap (relative)")
    for ax in axes:
        if x == "cell_position":
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
            ax.set_xlabel(cell_axis)
        else:
            ax.set_xlabel(NAMES.get(x, (x, 1.0))[0])
    handles, labels = axes[0].get_legend_handles_labels()
    if cases["stopped"].any():
        handles.append(Line2D([], [], linestyle="none", marker="^", markersize=4.5,
                              markerfacecolor="none", markeredgecolor="0.3"))
        labels.append("cases stopped at max_iter (at the top edge)")
    if any(labels):
        fig.legend(handles, labels, loc="outside lower center", ncols=2 if gap else 1)
    fig.suptitle("median (marker) and 10–90 % of cases (bar); stopped cases count as more "
                 "than max_iter iterations", fontsize=6.5, color="0.35")
    return fig


def write(dataset: Dataset, directory: Path) -> list[Path]:
    return save_figure(figure(dataset), directory, "convergence")
