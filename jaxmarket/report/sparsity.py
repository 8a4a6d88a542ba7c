"""The sparsity study (thesis section 3.5.2, Fig. 3.12): market outcome, convergence and
messages against the share of trading links removed.

Applies to a study that sweeps ``graph.sparsity`` over at least three values. Cells that
differ in other swept keys are drawn as separate lines. Figures (x: sparsity in %):

* ``sparsity_welfare``, ``sparsity_price``, ``sparsity_iterations``,
  ``sparsity_messages``: the median (line) and the 10-90 % band over the cases of each
  step (quantiles: a count never gets a band below zero, as a mean +- sd band did). In
  the iterations figure a case that stopped at ``max_iter`` is censored: it counts as more
  iterations than every converged case, a percentile that depends on one runs to the top
  edge, an open triangle there marks each step with such cases, and the legend says how
  many of all cases stopped; the axis ends above the known values, not at ``max_iter``.
  Large numbers are scaled (messages in millions, welfare in k€/h), with plain tick labels.
* ``sparsity_tradeoff``: messages against welfare loss. The welfare loss of a case is
  ``1 - W_s / W_0``, paired with the same ``case_index`` at the lowest sparsity of its
  line; messages are relative to that step's mean. The best trade-off is the step
  nearest to the ideal point (no loss, no messages) once both axes are scaled to [0, 1]
  over the line (min-max); the *good range* is every step within 0.1 of that distance.
  Points are labelled with their sparsity in %, skipping labels that would overprint.

Table ``sparsity``: per step, the welfare and price statistics, iterations, converged
share, messages, welfare loss, the connectivity columns (isolated agents, components,
unsupplied consumers) and the trade-off distance, with the good range flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from jaxmarket.report import (Dataset, band_table, band_top, censored_iterations, distribution, draw_band,
                              magnitude, mark_censored, new_figure, save_figure, save_table, swept_columns)

GOOD_RANGE = 0.1  # distance to the ideal point, in scaled units, within the best step's

FIGURES = {  # stem -> (column, (y label, unit), lower bound of the quantity)
    "sparsity_welfare": ("social_welfare", ("social welfare", "€/h"), None),
    "sparsity_price": ("mean_price", ("mean trade price", "€/MWh"), None),
    "sparsity_iterations": ("iterations", ("iterations to convergence", ""), 0.0),
    "sparsity_messages": ("messages", ("messages sent until the stop", ""), 0.0),
}


def applies(dataset: Dataset) -> bool:
    return ("graph.sparsity" in dataset.swept
            and dataset.cases["sparsity"].nunique() >= 3)


def lines(dataset: Dataset, stopped: bool = False):
    """(label, cases of the line) for each combination of the other swept keys; with
    ``stopped``, the cases get a column ``stopped`` (censored at max_iter)."""
    others = [c for c in swept_columns(dataset) if c != "sparsity"]
    cases = dataset.cases.assign(stopped=censored_iterations(dataset.cases)) if stopped else dataset.cases
    if not others:
        yield "", cases
        return
    for key, group in cases.groupby(others, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        yield ", ".join(f"{name}={value:g}" if isinstance(value, (int, float)) else f"{name}={value}"
                        for name, value in zip(others, key)), group


def step_statistics(cases: pd.DataFrame, column: str) -> pd.DataFrame:
    return pd.DataFrame({s: distribution(group[column]) for s, group in cases.groupby("sparsity")}).T


def tradeoff(cases: pd.DataFrame) -> pd.DataFrame:
    """Per step: mean welfare loss (paired by case), mean messages relative to the first
    step, the scaled distance to the ideal point and the good-range flag."""
    first = cases[cases["sparsity"] == cases["sparsity"].min()].set_index("case_index")
    loss = 1 - cases["social_welfare"] / cases["case_index"].map(first["social_welfare"])
    frame = pd.DataFrame({"sparsity": cases["sparsity"], "loss": loss,
                          "messages": cases["messages"] / first["messages"].mean()})
    steps = frame.groupby("sparsity").mean()

    def scaled(v):
        spread = v.max() - v.min()
        return (v - v.min()) / spread if spread > 0 else v * 0.0

    steps["distance"] = np.hypot(scaled(steps["loss"]), scaled(steps["messages"]))
    steps["good"] = steps["distance"] <= steps["distance"].min() + GOOD_RANGE
    return steps


def _figure(dataset: Dataset, column: str, ylabel: str, lower: float | None) -> Figure:
    fig = new_figure(1, height=2.9)
    ax = fig.add_subplot()
    censor = column == "iterations"
    per_line = [(label, cases, band_table(cases, "sparsity", column,
                                          censored="stopped" if censor else None, lower=lower))
                for label, cases in lines(dataset, stopped=censor)]
    factor, word = magnitude(np.concatenate([s[["p10", "median", "p90"]].to_numpy().ravel()
                                             for _, _, s in per_line]))
    top = factor * band_top(*(s for _, _, s in per_line)) if censor else None
    for k, (label, cases, stats) in enumerate(per_line):
        draw_band(ax, 100 * stats.index.to_numpy(float), stats, f"C{k}", label or None, top=top,
                  scale=factor)
    ax.plot([], [], color="0.3", label="median")
    ax.fill_between([], [], [], color="0.3", alpha=0.2, linewidth=0, label="10–90 % of cases")
    if censor:
        ax.set_ylim(0, top)
        mark_censored(ax, len(dataset.cases), int(sum(s["censored"].sum() for _, _, s in per_line)),
                      dataset.study.cells[0].algorithm.max_iter)
    elif lower is not None:
        ax.set_ylim(bottom=lower)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center",
               ncols=1 if max(map(len, labels)) > 24 else 2)
    ax.set_xlabel("sparsity: edges removed (%)")
    name, unit = ylabel
    if unit and word:  # "k€/h", "M€/h"
        unit = {"thousands": "k", "millions": "M", "billions": "G"}[word] + unit
    ax.set_ylabel(f"{name} ({unit or word})" if unit or word else name)
    ax.set_xlim(0, 100)
    return fig


def _labels(ax, xs, ys, texts, spacing: float = 14.0) -> None:
    """Annotate points, skipping any whose label would come within ``spacing`` points of
    one already written (so labels near a crowded end do not overprint)."""
    ax.autoscale_view()
    to_points = ax.transData + ax.figure.dpi_scale_trans.inverted()
    placed = []
    for x, y, text in zip(xs, ys, texts):
        at = np.asarray(to_points.transform((x, y))) * 72
        if any(np.hypot(*(at - other)) < spacing for other in placed):
            continue
        placed.append(at)
        # Clear of the open circle (7 pt across) that marks a good step.
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=5.5,
                    color="0.3", ha="left", va="bottom")


def _tradeoff_figure(dataset: Dataset) -> Figure:
    fig = new_figure(1, height=3.0)
    ax = fig.add_subplot()
    ax.set_xscale("symlog", linthresh=0.1, linscale=0.5)
    highest = 100.0
    for k, (label, cases) in enumerate(lines(dataset)):
        steps = tradeoff(cases)
        loss, messages = 100 * steps["loss"], 100 * steps["messages"]
        highest = max(highest, messages.max())
        ax.plot(loss, messages, color=f"C{k}", marker="o", markersize=2.5, label=label or None)
        good = steps["good"].to_numpy()
        ax.plot(loss[good], messages[good], "o", color=f"C{k}", markersize=7, fillstyle="none",
                label=f"good trade-off: {_span(steps.index[good])} removed")
    # Mean messages of a step with a case stopped at max_iter can exceed the full graph's:
    # the axis holds every step rather than cutting the curve off.
    ax.set_ylim(0, 1.05 * highest)
    ax.set_xlim(left=-0.02)
    for k, (label, cases) in enumerate(lines(dataset)):
        steps = tradeoff(cases)
        _labels(ax, 100 * steps["loss"], 100 * steps["messages"],
                [f"{100 * s:.0f} %" for s in steps.index])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("welfare loss vs. lowest sparsity (%, paired by case)")
    ax.set_ylabel("messages (% of lowest sparsity)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=1,
               title="point labels: edges removed")
    return fig


def _span(sparsities) -> str:
    values = 100 * np.asarray(sparsities, float)
    return f"{values.min():.0f}–{values.max():.0f} %" if values.size > 1 else f"{values[0]:.0f} %"


def table(dataset: Dataset) -> pd.DataFrame:
    frames = []
    for label, cases in lines(dataset):
        welfare = step_statistics(cases, "social_welfare").add_prefix("welfare_")
        steps = cases.groupby("sparsity")
        frame = pd.concat([
            welfare,
            steps["mean_price"].mean().rename("price_mean"),
            steps["iterations"].median().rename("iterations_median"),
            steps["converged"].mean().rename("converged_share"),
            steps["messages"].mean().rename("messages_mean"),
            steps["messages_per_agent_max"].mean().rename("messages_busiest_agent"),
            steps["isolated_agents"].mean().rename("isolated_agents"),
            steps["n_components"].mean().rename("components"),
            steps["unsupplied_consumers"].mean().rename("unsupplied_consumers"),
            tradeoff(cases).rename(columns={"loss": "welfare_loss", "messages": "messages_rel",
                                            "distance": "tradeoff_distance"}),
        ], axis=1)
        frame.insert(0, "sparsity", frame.index)
        if label:
            frame.insert(0, "line", label)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def write(dataset: Dataset, directory: Path) -> list[Path]:
    written = []
    for stem, (column, ylabel, lower) in FIGURES.items():
        written += save_figure(_figure(dataset, column, ylabel, lower), directory, stem)
    written += save_figure(_tradeoff_figure(dataset), directory, "sparsity_tradeoff")
    frame = table(dataset)
    good = frame[frame["good"]]
    note = (f"Sparsity study: {len(dataset.cases)} cases. Welfare loss is paired by case_index "
            f"against the lowest sparsity; `good` marks the steps within {GOOD_RANGE} of the "
            f"best scaled distance to the ideal point (no loss, no messages): "
            f"{_span(good['sparsity'])}.")
    return written + save_table(frame, directory, "sparsity", note)
