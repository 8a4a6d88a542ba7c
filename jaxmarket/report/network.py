"""Studies over a case file with a grid (``[network]``): B19's figures against the fee u.

* ``network_traded``: total and inter-zone volume traded vs u per policy (B19 Fig. 4);
* ``network_loading``: mean and max DC line loading vs u per policy (B19 Fig. 6);
* ``network_collected``: money collected by the operator vs u per policy;
* ``network_map``: the trades of the published case (case 0) on the agents' x/y
  positions, intra-zone and inter-zone trades in two colours, for the free market and
  every policy at ``MAP_FEE`` (B19 Fig. 3); the rows hold no trades, so these few cases
  are solved again here with the study's own solver options;
* ``network_fees`` table: per policy and fee, the case-0 values and the mean over cases;
* ``network_thresholds`` table: per policy, the smallest swept u from which on no
  inter-zone trade remains (``inter_zone_traded`` below ``NO_TRADE`` MW), in case 0 and
  in every case, and likewise the smallest u from which on no line is overloaded.

Lines are case 0 (the file's case); bands the 10-90 % range over all cases of the cell
(cost perturbations). The fee is in €/MWh, per unit of distance for the distance policies.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxmarket.community import concatenate
from jaxmarket.report import Dataset, new_figure, save_figure, save_table
from jaxmarket.markets import solve

MAP_FEE = 10.0  # u of the trade maps (the nearest swept fee is used)
NO_TRADE = 1e-3  # MW: below this an inter-zone volume counts as none (ADMM tolerance 1e-4)
LABELS = {"none": "free market", "unique": "unique", "zonal": "zonal",
          "distance_ptd": "distance (PTD)", "distance_thevenin": "distance (Thevenin)"}
FEE_LABEL = "fee u (€/MWh, per unit distance)"


def applies(dataset: Dataset) -> bool:
    """A grid study whose fee is one value or swept; a fee per policy (a table) is the
    comparison of ``jaxmarket.report.endogenous``."""
    return ({"policy", "fee", "inter_zone_traded"} <= set(dataset.cases.columns)
            and not fee_per_policy(dataset))


def fee_per_policy(dataset: Dataset) -> bool:
    return isinstance(dataset.manifest["config"].get("network", {}).get("fee"), dict)


def _policies(cases: pd.DataFrame) -> list[str]:
    return [p for p in LABELS if p in set(cases["policy"])]


def _by_fee(cases: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per fee: case 0's value and the 10/90 % percentiles over the cell's cases."""
    grouped = cases.groupby("fee")[column]
    nominal = cases[cases["case_index"] == 0].set_index("fee")[column]
    return pd.DataFrame({"nominal": nominal, "p10": grouped.quantile(0.1), "p90": grouped.quantile(0.9)})


def _panel(ax, cases: pd.DataFrame, column: str, scale: float, ylabel: str) -> None:
    for k, policy in enumerate(_policies(cases)):
        stats = _by_fee(cases[cases["policy"] == policy], column) * scale
        colour = f"C{k}"
        ax.plot(stats.index, stats["nominal"], color=colour, label=LABELS[policy])
        ax.fill_between(stats.index, stats["p10"], stats["p90"], color=colour, alpha=0.2, linewidth=0)
    ax.set_xlabel(FEE_LABEL)
    ax.set_ylabel(ylabel)


def _figure(cases, panels, directory, stem, reference=None) -> list[Path]:
    fig = new_figure(len(panels), height=2.8)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (column, scale, ylabel) in zip(axes, panels):
        _panel(ax, cases, column, scale, ylabel)
        if reference is not None:
            ax.axhline(reference, color="0.3", linestyle=":", linewidth=0.8)
    axes[0].legend(loc="best")
    fig.suptitle("lines: published case (case 0); bands: 10-90 % over cost perturbations",
                 fontsize=7)
    return save_figure(fig, directory, stem)


def threshold(table: pd.DataFrame, holds: str) -> float:
    """The smallest fee from which on ``holds`` is true at every larger swept fee."""
    ok = table.sort_values("fee")[holds].to_numpy(bool)
    fees = table.sort_values("fee")["fee"].to_numpy()
    failing = np.flatnonzero(~ok)
    start = 0 if not failing.size else failing[-1] + 1
    return float(fees[start]) if start < len(fees) else float("nan")


def fee_table(cases: pd.DataFrame) -> pd.DataFrame:
    columns = ["total_traded", "inter_zone_traded", "charges_collected", "mean_loading", "max_loading",
               "objective"]
    nominal = cases[cases["case_index"] == 0].set_index(["policy", "fee"])[columns + ["iterations",
                                                                                      "optimality_gap"]]
    grouped = cases.groupby(["policy", "fee"])
    table = nominal.join(grouped[columns].mean().add_prefix("mean_")).join(
        grouped.agg(cases=("converged", "size"), converged=("converged", "sum"),
                    iterations_max=("iterations", "max"), gap_max=("optimality_gap", "max"),
                    overloaded_share=("overloaded_lines", lambda v: float((v > 0).mean()))))
    return table.reset_index()


def threshold_table(cases: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for policy in _policies(cases):
        per_fee = cases[cases["policy"] == policy].groupby("fee").agg(
            inter_max=("inter_zone_traded", "max"), overloads=("overloaded_lines", "max"))
        nominal = cases[(cases["policy"] == policy) & (cases["case_index"] == 0)].set_index("fee")
        per_fee["no_inter_nominal"] = nominal["inter_zone_traded"] < NO_TRADE
        per_fee["no_inter_all"] = per_fee["inter_max"] < NO_TRADE
        per_fee["no_overload_nominal"] = nominal["overloaded_lines"] == 0
        per_fee["no_overload_all"] = per_fee["overloads"] == 0
        per_fee = per_fee.reset_index()
        rows.append({"policy": policy, **{f"u_{key}": threshold(per_fee, key) for key in
                                          ("no_inter_nominal", "no_inter_all", "no_overload_nominal",
                                           "no_overload_all")}})
    return pd.DataFrame(rows)


def _map_cells(dataset: Dataset, fees: np.ndarray):
    """The free-market cell (u = 0) and every policy's cell at the swept fee nearest MAP_FEE."""
    fee = float(fees[np.abs(fees - MAP_FEE).argmin()])
    chosen = {}
    for cell in dataset.study.cells:
        policy, value = cell.values["network.policy"], cell.values["network.fee"]
        if value == 0 and "free" not in chosen:
            chosen["free"] = cell
        if value == fee and policy != "none":
            chosen.setdefault(policy, cell)
    return fee, chosen


def width_key(biggest: float) -> list[float]:
    """Two round trade volumes (MW) for the map's line-width key: the largest trade
    rounded down to one significant digit, and half of it."""
    if biggest <= 0:
        return []
    step = 10.0 ** np.floor(np.log10(biggest))
    top = float(np.floor(biggest / step) * step)
    return [top / 2, top]


def trade_map(dataset: Dataset, directory: Path) -> list[Path]:
    fee, chosen = _map_cells(dataset, np.sort(dataset.cases["fee"].unique()))
    if not chosen:
        return []
    cells = list(chosen.values())
    community = concatenate([cell.communities(dataset.manifest["config"]["run"]["seed"], [0], "float64")
                             for cell in cells])
    trades = np.asarray(jax.block_until_ready(solve(community, cells[0].algorithm)).trades)
    grid = cells[0].grid_case.grid
    x, y = np.asarray(community.x[0]), np.asarray(community.y[0])
    producer = np.asarray(community.p_min[0]) >= 0
    zone = grid.network.zone[grid.network.agent_bus]
    width = 3 if len(cells) > 2 else len(cells)
    rows = -(-len(cells) // width)
    fig = new_figure(2 if width > 1 else 1, height=2.4 * rows + 0.5)
    axes = fig.subplots(rows, width, squeeze=False).ravel()
    biggest = max(np.abs(trades).max(), 1e-9)
    for ax, (name, cell), flows in zip(axes, chosen.items(), trades):
        sells = np.argwhere((flows > NO_TRADE) & producer[:, None])
        for n, m in sells:
            inter = grid.inter_zone[n, m]
            ax.plot([x[n], x[m]], [y[n], y[m]], color="C3" if inter else "C0", alpha=0.8,
                    linewidth=0.3 + 2.5 * flows[n, m] / biggest, zorder=1)
        for marker, members in (("^", producer), ("o", ~producer)):
            ax.scatter(x[members], y[members], c=zone[members], cmap="Set2", vmin=0, vmax=7,
                       marker=marker, s=14, edgecolors="k", linewidths=0.3, zorder=2)
        title = LABELS["none"] if name == "free" else f"{LABELS[name]}, u = {fee:g}"
        ax.set_title(title)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_aspect("equal")
        for spine in ax.spines.values():  # a light frame: positions have no axis to read
            spine.set(visible=True, color="0.8")
    for ax in axes[len(cells):]:
        ax.set_visible(False)
    axes[0].plot([], [], color="C0", label="intra-zone trade")
    axes[0].plot([], [], color="C3", label="inter-zone trade")
    axes[0].scatter([], [], marker="^", c="w", edgecolors="k", label="producer")
    axes[0].scatter([], [], marker="o", c="w", edgecolors="k", label="consumer")
    for volume in width_key(biggest):
        axes[0].plot([], [], color="0.4", linewidth=0.3 + 2.5 * volume / biggest, label=f"{volume:g} MW")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=6,
               title="line width: MW traded; marker colour: zone", title_fontsize=7)
    return save_figure(fig, directory, "network_map")


def write(dataset: Dataset, directory: Path) -> list[Path]:
    cases = dataset.cases
    written = _figure(cases, [("total_traded", 1.0, "total traded (MW)"),
                              ("inter_zone_traded", 1.0, "inter-zone traded (MW)")],
                      directory, "network_traded")
    written += _figure(cases, [("mean_loading", 100.0, "mean line loading (% of rating)"),
                               ("max_loading", 100.0, "max line loading (% of rating)")],
                       directory, "network_loading", reference=100.0)
    written += _figure(cases, [("charges_collected", 1e-3, "money collected (k€/h)")],
                       directory, "network_collected")
    written += save_table(fee_table(cases), directory, "network_fees",
                          "Per policy and fee u: case 0 (the published case) and the mean over all "
                          "cases (cost perturbations); volumes in MW, money in €/h, loadings as "
                          "flow / rate_a.")
    thresholds = threshold_table(cases)
    written += save_table(thresholds, directory, "network_thresholds",
                          f"Smallest swept fee u (€/MWh) from which on no inter-zone trade remains "
                          f"(inter-zone volume below {NO_TRADE} MW) and no line is overloaded, in "
                          f"case 0 and in every case; NaN: not reached in the swept range.")
    return written + trade_map(dataset, directory)
