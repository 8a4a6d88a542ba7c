"""Studies that compare network policies, each at one fee (the thesis' Table 4.2, e.g.
``sweeps/network_endogenous.toml`` with ``network.fee`` given per policy; also a study with
endogenous charges and one fee):

* ``network_comparison`` table: per policy, the published case (case 0): MW traded
  between peers (and as a fraction of the free market), between zones, social welfare,
  money the network collects (the fees, or ``-sum_n eta_n p_n`` for endogenous charges),
  the most loaded line and the overloaded lines, iterations and optimality gap; with
  several cases per cell, also how many cases have an overloaded line;
* ``network_endogenous_charges``: the endogenous charge of every bus with an agent
  (relative to the reference bus, €/MWh), case 0, for each endogenous mechanism of the
  study, with the exact line-constrained reference's congestion prices as markers. The
  rows hold only summaries of the charges, so these cases are solved again here with the
  study's own solver options.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pandas as pd

from jaxmarket import markets
from jaxmarket.charges import ENDOGENOUS
from jaxmarket.congestion import solve_dc_reference
from jaxmarket.report import Dataset, new_figure, save_figure, save_table
from jaxmarket.report.network import fee_per_policy

LABELS = {"none": "free market", "unique": "unique", "zonal": "zonal",
          "distance_ptd": "distance (PTD)", "distance_thevenin": "distance (Thevenin)",
          "endogenous_dc": "endogenous, distributed (4.24)",
          "endogenous_dc_decentralized": "endogenous, decentralized (4.29)"}
UNITS = {"traded_vs_free": "fraction of the free market", "network_collected": "€/h",
         "overloaded_lines": "lines", "overloaded_cases": "cases", "most_loaded_line": ""}


def applies(dataset: Dataset) -> bool:
    """A grid study with a fee per policy (a table), or with endogenous charges and every
    policy at one fee."""
    cases = dataset.cases
    if not {"policy", "fee", "inter_zone_traded"} <= set(cases.columns):
        return False
    one_fee = cases.groupby("policy")["fee"].nunique().max() == 1
    return fee_per_policy(dataset) or (one_fee and bool(cases["policy"].isin(ENDOGENOUS).any()))


def _policies(cases: pd.DataFrame) -> list[str]:
    present = set(cases["policy"])
    return [p for p in LABELS if p in present]


def comparison_table(cases: pd.DataFrame) -> pd.DataFrame:
    nominal = cases[cases["case_index"] == 0].set_index("policy")
    free = float(nominal.loc["none", "total_traded"]) if "none" in nominal.index else float("nan")
    rows = []
    for policy in _policies(cases):
        row = nominal.loc[policy]
        endogenous = policy in ENDOGENOUS
        rows.append({
            "policy": LABELS[policy], "fee": float(row["fee"]),
            "total_traded": float(row["total_traded"]),
            "traded_vs_free": float(row["total_traded"]) / free,
            "inter_zone_traded": float(row["inter_zone_traded"]),
            # whole euros: the policies' welfare differ in the fourth digit
            "social_welfare": int(round(float(row["social_welfare"]))),
            "network_collected": float(row["congestion_collected" if endogenous else "charges_collected"]),
            "max_loading": float(row["max_loading"]), "most_loaded_line": row["most_loaded_line"],
            "overloaded_lines": int(row["overloaded_lines"]),
            "iterations": int(row["iterations"]), "optimality_gap": float(row["optimality_gap"]),
        })
        all_cases = cases[cases["policy"] == policy]
        if len(all_cases) > 1:
            rows[-1]["overloaded_cases"] = int((all_cases["overloaded_lines"] > 0).sum())
            rows[-1]["cases"] = len(all_cases)
    return pd.DataFrame(rows)


def charges_figure(dataset: Dataset, directory: Path) -> list[Path]:
    cells = [c for c in dataset.study.cells if c.endogenous]
    if not cells:
        return []
    study = dataset.study
    network = cells[0].grid_case.grid.network
    community = cells[0].communities(study.seed, [0], study.dtype)
    limits = cells[0].line_limits(1)
    reference = np.asarray(solve_dc_reference(community, limits).congestion[0])
    charges = {c.values["network.policy"]: np.asarray(jax.block_until_ready(
        markets.solve(community, c.algorithm, limits=limits).agent_charge)[0]) for c in cells}
    # One value per bus: an agent's charge depends on its bus only (its shift factors).
    buses = np.unique(network.agent_bus)
    first = np.array([np.flatnonzero(network.agent_bus == b)[0] for b in buses])
    x = np.arange(len(buses))
    width = 0.8 / len(charges)
    fig = new_figure(2, height=2.6)
    ax = fig.subplots()
    for k, (policy, charge) in enumerate(charges.items()):
        ax.bar(x - 0.4 + width * (k + 0.5), charge[first], width, color=f"C{k}", label=LABELS[policy])
    ax.plot(x, reference[first], linestyle="none", marker="_", markersize=8, color="k",
            label="exact reference (congestion price)")
    ax.axhline(0.0, color="0.3", linewidth=0.5)
    ax.set_xticks(x, [str(network.bus_ids[b]) for b in buses], fontsize=6)
    ax.set_xlabel("bus")
    ax.set_ylabel("endogenous charge η (€/MWh)")
    ax.legend(loc="lower left")
    fig.suptitle("published case (case 0); charge per MW injected, relative to the reference bus",
                 fontsize=7)
    return save_figure(fig, directory, "network_endogenous_charges")


def write(dataset: Dataset, directory: Path) -> list[Path]:
    table = comparison_table(dataset.cases)
    written = save_table(
        table, directory, "network_comparison",
        "Per policy at its fee (the thesis' Table 4.2): the published case (case 0). "
        "total_traded: MW traded between peers; network_collected: the fees, or for "
        "endogenous charges the money the system operator collects (-sum_n eta_n p_n); "
        "loadings as flow / rate_a; overloaded_lines: lines above their rating.",
        units=UNITS)
    return written + charges_figure(dataset, directory)
