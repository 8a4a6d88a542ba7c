"""Every study: one table row per cell with how many cases converged and how fast.

Columns: the swept parameters, ``cases``, ``converged``, ``diverged``, ``success_rate``
(converged / cases), the iteration counts of the converged cases (median, 10/90 %
percentiles, max and the shifted geometric mean with shift 10), and the median and max
optimality gap over all cases (converged or not). A study of stopping rules (rows with
``all_agents_stopped``) also gets ``agents_stopped``: the cases whose agents all stopped by
their rule, which under a local rule includes cases not converged (docs/stopping.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jaxmarket.report import Dataset, distribution, save_table, shifted_geometric_mean, swept_columns


def applies(dataset: Dataset) -> bool:
    return True


def cell_summary(cases: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    rows = []
    for key, group in cases.groupby(by or (lambda _: 0), sort=False):
        converged = group["converged"].to_numpy(bool)
        iterations = group["iterations"].to_numpy(float)[converged]
        stats = distribution(iterations)
        labels = dict(zip(by, key if isinstance(key, tuple) else (key,))) if by else {}
        stopped = ({"agents_stopped": int(group["all_agents_stopped"].astype(bool).sum())}
                   if "all_agents_stopped" in group else {})
        rows.append({
            **labels, "cases": len(group), "converged": int(converged.sum()), **stopped,
            "diverged": int(group["diverged"].sum()), "success_rate": converged.mean(),
            "iterations_median": stats["median"], "iterations_p10": stats["p10"],
            "iterations_p90": stats["p90"],
            "iterations_max": iterations.max() if iterations.size else np.nan,
            "iterations_sgm10": shifted_geometric_mean(iterations),
            "gap_median": group["optimality_gap"].median(), "gap_max": group["optimality_gap"].max(),
        })
    return pd.DataFrame(rows)


def write(dataset: Dataset, directory: Path) -> list[Path]:
    table = cell_summary(dataset.cases, swept_columns(dataset))
    manifest = dataset.manifest
    state = "complete" if dataset.complete else (
        f"INCOMPLETE: {len(manifest.get('chunks', {}))} of {manifest.get('n_chunks')} chunks finished")
    note = (f"Study `{manifest['study']}` (config hash {manifest['config_hash']}, {manifest['dtype']}), "
            f"{state}: {len(dataset.cases)} cases, {int(table['converged'].sum())} converged. "
            f"Iteration statistics are over converged cases; gaps over all cases.")
    return save_table(table, directory, "summary", note)
