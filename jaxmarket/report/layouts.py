"""Market layouts compared on the same communities (thesis Table 3.4).

Applies to a study that sweeps ``graph.layout``. Table ``layouts``: one row per cell
(layout, and the other swept keys such as the charge), with the means over its cases of
the social welfare, the welfare relative to the centralized market of the same case
(paired by ``case_index`` within the same other swept values, when that layout is in the
study), the median iterations and converged share, rho, the volume-weighted mean trade
price, consumption, total exchanged (hub layouts count every unit twice: in and out of
the hub) and the charges collected.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from jaxmarket.report import Dataset, save_table, swept_columns


def applies(dataset: Dataset) -> bool:
    return "graph.layout" in dataset.swept


def table(dataset: Dataset) -> pd.DataFrame:
    cases = dataset.cases
    by = swept_columns(dataset)
    others = [c for c in by if c != "layout"]
    central = cases[cases["layout"] == "centralized"].set_index(others + ["case_index"])
    rows = []
    for key, group in cases.groupby(by, sort=False):
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row = {**labels, "cases": len(group),
               "welfare_mean": group["social_welfare"].mean()}
        if len(central):
            index = pd.MultiIndex.from_frame(group[others + ["case_index"]]) if others else (
                group["case_index"])
            reference = central["social_welfare"].reindex(index).to_numpy()
            row["welfare_vs_centralized"] = (group["social_welfare"].to_numpy() / reference - 1).mean()
        row.update({
            "iterations_median": group["iterations"].median(),
            "converged_share": group["converged"].mean(),
            "rho": group["rho"].iloc[0],
            "mean_price": group["mean_price"].mean(),
            "consumption": group["consumption"].mean(),
            "total_exchanged": group["total_traded"].mean(),
            "charges_collected": group["charges_collected"].mean(),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def write(dataset: Dataset, directory: Path) -> list[Path]:
    note = (f"Layouts on the same communities: {len(dataset.cases)} cases; means over the cases "
            "of each cell (welfare in €/h, prices in €/MWh, power in MW). "
            "`welfare_vs_centralized` is the mean relative welfare difference to the "
            "centralized market of the same case.")
    return save_table(table(dataset), directory, "layouts", note)
