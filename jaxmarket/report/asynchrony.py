"""Studies with an ``[asynchrony]`` section (rows with ``time_ratio``): the time the
asynchronous negotiation takes to a 1e-4 optimality gap relative to the synchronous run of
the same case, per algorithm, strategy, compute spread eps and mean delay d (thesis
Fig. 3.6).

* ``asynchrony_time``: the mean time increase (``time_ratio - 1``, in %) against (eps, d),
  one panel per algorithm (and value of any other swept key, such as rho), one line per
  strategy, over the cases that reached the gap (bars: 10-90 % of them); below, the share
  of cases that reached the gap within 3 times their synchronous time. The dotted line is
  a doubling of the time (+100 %).
* ``asynchrony`` table: per algorithm (and other swept key), strategy, eps and d, the
  cases, those that reached the gap, the mean, median, 90 % quantile and maximum time
  ratio, the median final gap and the messages refused by a full buffer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxmarket.report import Dataset, new_figure, save_figure, save_table, style

STRATEGIES = ("latest", "mean", "weighted")
BY = ("algorithm", "strategy", "compute_spread", "delay_mean")


def applies(dataset: Dataset) -> bool:
    return "time_ratio" in dataset.cases.columns


def summary_table(cases: pd.DataFrame, other: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per ``BY`` and the ``other`` swept keys (e.g. rho)."""
    by = [BY[0], *other, *BY[1:]]
    rows = []
    for key, group in cases.groupby(by, sort=True):
        ratio = group["time_ratio"].dropna()
        rows.append({**dict(zip(by, key)), "cases": len(group),
                     "reached": int(group["reached_gap"].sum()),
                     "time_ratio_mean": ratio.mean(), "time_ratio_median": ratio.median(),
                     "time_ratio_p90": ratio.quantile(0.9), "time_ratio_max": ratio.max(),
                     "async_gap_median": group["async_gap"].median(),
                     "message_overflows": int(group["message_overflows"].sum())})
    return pd.DataFrame(rows)


def _settings(table: pd.DataFrame) -> list[tuple[float, float]]:
    pairs = table[["compute_spread", "delay_mean"]].drop_duplicates()
    return sorted(map(tuple, pairs.to_numpy()))


def _panel(row, other) -> str:
    return ", ".join([str(row["algorithm"]), *(f"{key} = {row[key]:g}" for key in other)])


def time_figure(table: pd.DataFrame, cases: pd.DataFrame, other: tuple[str, ...] = ()):
    """One panel column per algorithm and value of the ``other`` swept keys."""
    table = table.assign(panel=[_panel(row, other) for _, row in table.iterrows()])
    cases = cases.assign(panel=[_panel(row, other) for _, row in cases.iterrows()])
    algorithms = list(dict.fromkeys(table["panel"]))
    settings = _settings(table)
    x = np.arange(len(settings))
    labels = [f"{1e3 * eps:g}/{1e3 * d:g}" for eps, d in settings]
    fig = new_figure(2, height=3.6)
    axes = fig.subplots(2, len(algorithms), squeeze=False, sharex=True,
                        height_ratios=(2, 1))
    for column, algorithm in enumerate(algorithms):
        top, bottom = axes[0, column], axes[1, column]
        for k, strategy in enumerate(s for s in STRATEGIES if s in set(table["strategy"])):
            rows = table[(table["panel"] == algorithm) & (table["strategy"] == strategy)]
            rows = rows.set_index(["compute_spread", "delay_mean"]).reindex(settings)
            shift = (k - 1) * 0.08
            mine = cases[(cases["panel"] == algorithm) & (cases["strategy"] == strategy)]
            low, high = [], []
            for eps, d in settings:
                ratio = mine[(mine["compute_spread"] == eps) & (mine["delay_mean"] == d)][
                    "time_ratio"].dropna()
                low.append(ratio.quantile(0.1) if len(ratio) else np.nan)
                high.append(ratio.quantile(0.9) if len(ratio) else np.nan)
            mean = 100 * (rows["time_ratio_mean"].to_numpy() - 1)
            error = np.abs(np.vstack([mean - 100 * (np.array(low) - 1),
                                      100 * (np.array(high) - 1) - mean]))
            top.errorbar(x + shift, mean, yerr=error, marker="o", markersize=3, capsize=2,
                         color=f"C{k}", label=strategy)
            bottom.plot(x + shift, rows["reached"].to_numpy() / rows["cases"].to_numpy(),
                        marker="o", markersize=3, color=f"C{k}")
        top.axhline(100, color="0.3", linestyle=":", linewidth=0.8)
        top.axhline(0, color="0.6", linewidth=0.5)
        top.set_title(algorithm)
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_xticks(x, labels, rotation=45)
        bottom.set_xlabel("ε / d (ms)")
    axes[0, 0].set_ylabel("time increase to gap 1e-4 (%)")
    axes[1, 0].set_ylabel("reached (fraction)")
    axes[0, 0].legend(loc="best", title="strategy")
    return fig


def write(dataset: Dataset, directory: Path) -> list[Path]:
    cases = dataset.cases.copy()
    config = dataset.study.config  # a key the study does not sweep is no row column
    constants = {"algorithm": config["solver"]["algorithm"],
                 **{key: config["asynchrony"][key] for key in BY[1:]}}
    for key, value in constants.items():
        if key not in cases:
            cases[key] = value
    other = tuple(key.split(".", 1)[1] for key in dataset.swept
                  if key.split(".", 1)[1] not in BY)
    table = summary_table(cases, other)
    note = ("Time to an optimality gap of 1e-4 (from then on) of the asynchronous run over "
            "the synchronous run of the same case (eps = d = 0); `reached`: cases that got "
            "there within 3 times their synchronous time; the ratios are over those cases. "
            "eps and d in s.")
    with style():
        fig = time_figure(table, cases, other)
    return save_table(table, directory, "asynchrony", note=note,
                      units={"compute_spread": "s", "delay_mean": "s", "strategy": "",
                             "algorithm": "", "time_ratio_mean": "1", "time_ratio_median": "1",
                             "time_ratio_p90": "1", "time_ratio_max": "1",
                             "async_gap_median": "relative", "message_overflows": "messages"}
                      ) + save_figure(fig, directory, "asynchrony_time")
