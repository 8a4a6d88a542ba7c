"""The sparsity study (thesis section 3.5.2, Fig. 3.12): market outcome, convergence and
messages against the share of trading links removed.

Applies to a study that sweeps ``graph.sparsity`` over at least three values. Cells that
differ in other swept keys are drawn as separate lines. Figures (x: sparsity in %):

* ``sparsity_welfare``, ``sparsity_price``, ``sparsity_iterations``,
  ``sparsity_messages``: mean with a +-1 sd band, median (dashed) and the 10-90 %
  band (light) over the cases of each step; the iterations figure marks ``max_iter``
  and the share of converged cases.
* ``sparsity_tradeoff``: messages against welfare loss. The welfare loss of a case is
  ``1 - W_s / W_0``, paired with the same ``case_index`` at the lowest sparsity of its
  line; messages are relative to that step's mean. The best trade-off is the step
  nearest to the ideal point (no loss, no messages) once both axes are scaled to [0, 1]
  over the line (min-max); the *good range* is every step within 0.1 of that distance.

Table ``sparsity``: per step, the welfare and price statistics, iterations, converged
share, messages, welfare loss, the connectivity columns (isolated agents, components,
unsupplied consumers) and the trade-off distance, with the good range flagged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxmarket.report import Dataset, distribution, save_figure, save_table, swept_columns

GOOD_RANGE = 0.1  # distance to the ideal point, in scaled units, within the best step's

FIGURES = {  # stem -> (column, y label)
    "sparsity_welfare": ("social_welfare", "social welfare (€/h)"),
    "sparsity_price": ("mean_price", "mean trade price (€/MWh)"),
    "sparsity_iterations": ("iterations", "ADMM iterations"),
    "sparsity_messages": ("messages", "messages sent (until the stop)"),
}


def applies(dataset: Dataset) -> bool:
    return ("graph.sparsity" in dataset.swept
            and dataset.cases["sparsity"].nunique() >= 3)


def lines(dataset: Dataset):
    """(label, cases of the line) for each combination of the other swept keys."""
    others = [c for c in swept_columns(dataset) if c != "sparsity"]
    if not others:
        yield "", dataset.cases
        return
    for key, group in dataset.cases.groupby(others, sort=False):
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


def _band(ax, stats: pd.DataFrame, label: str, color) -> None:
    x = 100 * stats.index.to_numpy(float)
    ax.fill_between(x, stats["p10"], stats["p90"], color=color, alpha=0.12, linewidth=0)
    ax.fill_between(x, stats["mean"] - stats["sd"], stats["mean"] + stats["sd"], color=color,
                    alpha=0.25, linewidth=0)
    ax.plot(x, stats["mean"], color=color, label=f"mean ± sd {label}".strip())
    ax.plot(x, stats["median"], color=color, linestyle="--", label=f"median {label}".strip())


def _figure(dataset: Dataset, column: str, ylabel: str) -> Figure:
    fig = Figure()
    ax = fig.add_subplot()
    for k, (label, cases) in enumerate(lines(dataset)):
        _band(ax, step_statistics(cases, column), label, f"C{k}")
    if column == "iterations":
        ax.axhline(dataset.study.cells[0].algorithm.max_iter, color="0.4", linestyle=":",
                   linewidth=0.8, label="max_iter")
        share = ax.twinx()
        for k, (label, cases) in enumerate(lines(dataset)):
            converged = cases.groupby("sparsity")["converged"].mean()
            share.plot(100 * converged.index, 100 * converged, color=f"C{k}", linestyle="-.",
                       marker=".", markersize=3, linewidth=0.8, label=f"converged {label}".strip())
        share.set_ylabel("cases converged (%)")
        share.set_ylim(0, 105)
        share.grid(False)
        share.spines["right"].set_visible(True)
        handles = [h for axis in (ax, share) for h in axis.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(0.0, 0.62))
    else:
        ax.legend(loc="best")
    ax.set_xlabel("sparsity: edges removed (%)")
    ax.set_ylabel(ylabel)
    ax.text(1.0, 1.01, "bands: ±1 sd (dark), 10–90 % (light)", transform=ax.transAxes,
            ha="right", va="bottom", fontsize=6, color="0.4")
    return fig


def _tradeoff_figure(dataset: Dataset) -> Figure:
    fig = Figure()
    ax = fig.add_subplot()
    for k, (label, cases) in enumerate(lines(dataset)):
        steps = tradeoff(cases)
        loss, messages = 100 * steps["loss"], 100 * steps["messages"]
        ax.plot(loss, messages, color=f"C{k}", marker="o", markersize=2.5, label=label or None)
        good = steps["good"].to_numpy()
        ax.plot(loss[good], messages[good], "o", color=f"C{k}", markersize=7, fillstyle="none",
                label=f"good trade-off: {_span(steps.index[good])}")
        for s, x, y in zip(steps.index, loss, messages):
            ax.annotate(f"{100 * s:.0f}", (x, y), textcoords="offset points", xytext=(3, 2),
                        fontsize=5, color="0.3")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("welfare loss vs. lowest sparsity (%, paired)")
    ax.set_ylabel("messages (% of lowest sparsity)")
    ax.legend(loc="upper right")
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
    for stem, (column, ylabel) in FIGURES.items():
        written += save_figure(_figure(dataset, column, ylabel), directory, stem)
    written += save_figure(_tradeoff_figure(dataset), directory, "sparsity_tradeoff")
    frame = table(dataset)
    good = frame[frame["good"]]
    note = (f"Sparsity study: {len(dataset.cases)} cases. Welfare loss is paired by case_index "
            f"against the lowest sparsity; `good` marks the steps within {GOOD_RANGE} of the "
            f"best scaled distance to the ideal point (no loss, no messages): "
            f"{_span(good['sparsity'])}.")
    return written + save_table(frame, directory, "sparsity", note)
