"""``jaxmarket report OUT_DIR``: figures and tables from a study's dataset.

A report is a set of *sections*. A section is a module of this package with

    applies(dataset) -> bool                 does the study hold what the section shows?
    write(dataset, directory) -> list[Path]  write its figures and tables, return the files

and is listed in ``SECTIONS``. ``write_report`` writes every applicable section into
``OUT_DIR/report/``. Figures are written as vector PDF and 300 dpi PNG (``save_figure``),
tables as Markdown and CSV (``save_table``), each file atomically. Figures are built with
matplotlib's object API (``Figure``, made by ``new_figure``), never pyplot, so a report
leaves no global figure state and needs no display.

Every figure uses one style, the package's ``jaxmarket.mplstyle`` (``style()``), and is one
column (``ONE_COLUMN``, 3.5 in) or two columns (``TWO_COLUMNS``, 7.2 in) of a paper wide,
saved at exactly that size. Every axis label and Markdown column header names its unit.
Spreads are quantile bands (``quantile_band``): the median and the 10-90 % range, which
stay inside the range of the data (a non-negative quantity never gets a band below zero),
and count cases that stopped at ``max_iter`` as censored (more than the iterations they ran).

Only the chunks the manifest lists are read, so a report of an unfinished study shows the
finished chunks and says so in its summary.
"""

from __future__ import annotations

import fnmatch
import io
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from jaxmarket.study.config import Study, resolve
from jaxmarket.errors import InputError
from jaxmarket.study.store import read_listed, read_manifest, verified, write_atomic

SECTIONS = ("summary", "algorithms", "sparsity", "layouts", "network", "endogenous", "uncertainty",
            "convergence", "asynchrony")

STYLE_FILE = Path(__file__).with_name("jaxmarket.mplstyle")
ONE_COLUMN = 3.5  # in: figure widths of a two-column paper
TWO_COLUMNS = 7.2
DPI = 300  # of the PNG copies
QUANTILES = (0.1, 0.5, 0.9)  # the bands: 10-90 % around the median


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib style (``jaxmarket.mplstyle``), for the figures created
    inside the block."""
    with matplotlib.style.context(STYLE_FILE):
        yield


def new_figure(columns: int = 1, height: float | None = None) -> Figure:
    """A figure one (3.5 in) or two (7.2 in) paper columns wide, constrained layout."""
    if columns not in (1, 2):
        raise ValueError(f"a figure is 1 or 2 columns wide, not {columns}")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMNS
    return Figure(figsize=(width, height or 0.72 * ONE_COLUMN), layout="constrained")


def quantile_band(values, censored=None, lower: float | None = None,
                  quantiles=QUANTILES) -> dict[str, float]:
    """``p10``, ``median``, ``p90`` (the ``quantiles``), ``cases`` and ``censored`` of
    the finite values.

    ``censored`` (booleans like ``values``) marks values that are only lower bounds, such
    as the iterations of a case stopped at ``max_iter``: they count as larger than every
    other value, so a quantile that depends on one is ``inf`` (not known). ``lower`` is
    the smallest value the quantity can take (0 for a count, a volume, a price spread):
    the band is clipped to it. Quantiles of data never leave the data's range, so unlike a
    mean +- sd band they never cross a bound the data respect."""
    values = np.asarray(values, float)
    censored = np.zeros(values.shape, bool) if censored is None else np.asarray(censored, bool)
    keep = np.isfinite(values) | censored
    values, censored = values[keep], censored[keep]
    result = {"cases": int(values.size), "censored": int(censored.sum())}
    names = ["p10", "median", "p90"] if len(quantiles) == 3 else [f"q{q:g}" for q in quantiles]
    if not values.size:
        return {**result, **dict.fromkeys(names, float("nan"))}
    known = values[~censored]
    # Censored values sort above every known one; a quantile interpolated with any weight
    # on one of them is larger than the largest known value, and is unknown.
    largest = known.max() if known.size else 0.0
    sentinel = 1e300
    stats = np.quantile(np.where(censored, sentinel, values), quantiles)
    stats = np.where(stats > largest, np.inf, stats)
    if lower is not None:
        stats = np.maximum(stats, lower)
    return {**result, **{name: float(v) for name, v in zip(names, stats)}}


def band_table(cases: pd.DataFrame, by, column: str, censored=None,
               lower: float | None = None) -> pd.DataFrame:
    """``quantile_band`` of ``column`` per group of ``by`` (a column or a list), one row
    each; ``censored``: a boolean column of ``cases`` (e.g. ``~converged``)."""
    rows = {}
    for key, group in cases.groupby(by, sort=True):
        rows[key] = quantile_band(group[column], None if censored is None else group[censored],
                                  lower=lower)
    return pd.DataFrame.from_dict(rows, orient="index")


def censored_iterations(cases: pd.DataFrame) -> pd.Series:
    """The cases that stopped at ``max_iter`` without converging (nor diverging): their
    iteration count is only a lower bound."""
    stopped = ~cases["converged"].astype(bool)
    if "diverged" in cases:
        stopped &= ~cases["diverged"].astype(bool)
    return stopped


@dataclass(frozen=True)
class Dataset:
    out: Path
    manifest: dict

    @cached_property
    def study(self) -> Study:
        """The study as resolved from the manifest's config (cells, swept keys)."""
        return resolve(self.manifest["config"], default_name=self.manifest["study"], recorded=True)

    @property
    def swept(self) -> list[str]:
        """Swept keys as ``section.key``, in the study's product order."""
        return list(self.study.swept)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @cached_property
    def cases(self) -> pd.DataFrame:
        """Every finished case row, ordered by cell and case index; a column some parts
        lack (a study mixing markets) is null in their rows."""
        cases = read_listed(self.out, self.manifest, "cases")
        if cases is None:
            raise InputError(str(self.out), "the dataset has no finished chunk yet")
        return cases

    @cached_property
    def traces(self) -> pd.DataFrame | None:
        """The long-format traces, or None when the study recorded none."""
        return read_listed(self.out, self.manifest, "traces")


def load(out) -> Dataset:
    out = Path(out)
    if not out.is_dir():
        raise InputError(str(out), "no such dataset directory")
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(str(out), "not a jaxmarket dataset (no manifest.json)")
    return Dataset(out, verified(out, manifest))


def swept_columns(dataset: Dataset) -> list[str]:
    """The row columns that identify a cell: the swept keys' names (ranges as _lo/_hi)."""
    columns = []
    for key in dataset.swept:
        name = key.split(".", 1)[1]
        columns += [c for c in dataset.cases.columns if c == name or c in (f"{name}_lo", f"{name}_hi",
                                                                              f"{name}_c", f"{name}_p")]
    return columns


def shifted_geometric_mean(values, shift: float = 10.0) -> float:
    """exp(mean(log(x + shift))) - shift: the usual solver-benchmark mean of iteration
    counts, robust to a few very long runs and to very short ones."""
    values = np.asarray(values, float)
    return float(np.exp(np.log(values + shift).mean()) - shift) if values.size else float("nan")


def distribution(values, prefix: str = "") -> dict[str, float]:
    """Mean, sd, median and the 10/90 % percentiles of the finite values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not values.size:
        stats = dict.fromkeys(("mean", "sd", "median", "p10", "p90"), float("nan"))
    else:
        p10, median, p90 = np.percentile(values, [10, 50, 90])
        stats = {"mean": values.mean(), "sd": values.std(ddof=1) if values.size > 1 else 0.0,
                 "median": median, "p10": p10, "p90": p90}
    return {prefix + key: float(v) for key, v in stats.items()}


def magnitude(values) -> tuple[float, str]:
    """(factor, word) to show values of this size with plain tick labels: e.g. (1e-6,
    "millions") for values from a million on (thousands from 10 000 on), for an axis label such as "messages
    (millions)"."""
    values = np.abs(np.asarray(values, float))
    largest = values[np.isfinite(values)].max() if np.isfinite(values).any() else 0.0
    for factor, word, start in ((1e-9, "billions", 1e9), (1e-6, "millions", 1e6),
                                (1e-3, "thousands", 1e4)):
        if largest >= start:
            return factor, word
    return 1.0, ""


def band_top(*stats: pd.DataFrame, log: bool = False) -> float:
    """An upper axis limit that holds every known (finite) median and percentile of the
    bands, with a margin; unknown ones (censored, ``inf``) are drawn up to it."""
    known = [np.asarray(s[c], float) for s in stats for c in ("p10", "median", "p90") if c in s]
    known = np.concatenate(known) if known else np.array([])
    known = known[np.isfinite(known)]
    if not known.size:
        return 1.0
    largest = known.max()
    if log:
        return largest * 2.0
    return largest + 0.08 * (largest - min(known.min(), 0.0)) if largest > 0 else 1.0


def draw_band(ax, x, stats: pd.DataFrame, color, label: str | None = None, top: float | None = None,
              scale: float = 1.0, **line) -> None:
    """The median (a line) and the 10-90 % band of ``quantile_band`` rows over ``x``.

    A percentile that is unknown (``inf``: it depends on censored cases) runs to ``top``,
    the upper edge of the axes; where cases are censored an open triangle sits on the upper
    edge (``mark_censored`` adds its legend entry)."""
    x = np.asarray(x, float)
    low = scale * stats["p10"].to_numpy(float)
    median = scale * stats["median"].to_numpy(float)
    high = scale * stats["p90"].to_numpy(float)
    if top is not None:
        high = np.where(np.isfinite(high), np.minimum(high, top), top)
        low = np.where(np.isfinite(low), low, top)
    ax.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    ax.plot(x, np.where(np.isfinite(median), median, np.nan), color=color, label=label, **line)
    if top is not None and "censored" in stats:
        stopped = stats["censored"].to_numpy() > 0
        if stopped.any():  # (an empty unclipped line would stretch the layout to the origin)
            ax.plot(x[stopped], np.full(stopped.sum(), top), linestyle="none", marker="^",
                    markersize=4, markerfacecolor="none", markeredgecolor=color, clip_on=False,
                    zorder=5)


def mark_censored(ax, total: int, censored: int, max_iter: int | None = None) -> None:
    """The legend entry of ``draw_band``'s triangles: how many cases stopped at max_iter."""
    if censored:
        limit = f" = {max_iter}" if max_iter else ""
        ax.plot([], [], linestyle="none", marker="^", markersize=4, markerfacecolor="none",
                markeredgecolor="0.3", label=f"{censored} of {total} cases stopped at max_iter{limit}")


def save_figure(fig: Figure, directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.{fmt}" for fmt in ("png", "pdf")]
    for path in paths:
        write_atomic(path, lambda handle, fmt=path.suffix[1:]: fig.savefig(handle, format=fmt, dpi=DPI))
    return paths


# The unit of each table column, by name (fnmatch patterns, first match wins): the Markdown
# headers read ``column (unit)``. Shares are fractions (0-1) in every table, never percent.
UNITS = (
    ("cases", "cases"), ("converged", "cases"), ("diverged", "cases"), ("reached", "cases"),
    ("agents_stopped", "cases"),
    ("reached_gap_*", "cases"), ("sizes_fitted", "sizes"),
    ("iterations*", "iterations"), ("median_to_gap_*", "iterations"),
    ("success_rate", "fraction"), ("converged_share", "fraction"), ("overloaded_share", "fraction"),
    ("*_vs_centralized", "fraction"), ("welfare_loss", "fraction"), ("messages_rel", "fraction"),
    ("sparsity", "fraction of edges removed"), ("confidence", "fraction"), ("cost_gap*", "fraction"),
    ("*coverage*", "fraction"), ("delta_local_mean", "fraction"), ("*_loading", "fraction of rate_a"),
    ("gap", "relative"), ("gap_*", "relative"), ("optimality_gap", "relative"),
    ("welfare_*", "€/h"), ("social_welfare", "€/h"), ("*objective", "€/h"),
    ("*charges_collected", "€/h"), ("*price*", "€/MWh"), ("fee", "€/MWh"), ("u_*", "€/MWh"),
    ("charge_per_distance", "€/MWh per unit distance"),
    ("*_traded", "MW"), ("total_exchanged", "MW"), ("consumption", "MW"),
    ("*_bought_*", "MW"), ("*_held_*", "MW"), ("capacity_per_agent", "MW"),
    ("messages*", "messages"), ("n_agents", "agents"), ("isolated_agents", "agents"),
    ("unsupplied_consumers", "fraction of consumers"), ("components", "subgraphs"), ("tradeoff_distance", "scaled"),
    ("exponent", "dimensionless"), ("coefficient", "iterations"), ("r2", "dimensionless"),
    ("rho*", "€/MW²h"), ("wall_time*", "s"),
)


def unit(column: str) -> str:
    """The unit ``UNITS`` gives a column, or '' (a label such as a policy's name)."""
    return next((u for pattern, u in UNITS if fnmatch.fnmatchcase(str(column), pattern)), "")


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown(frame: pd.DataFrame, units: dict[str, str] | None = None) -> str:
    """A GitHub Markdown table, numbers to 4 significant digits; each column's unit
    (``units``, column -> unit, else ``unit(column)``) goes into its header as
    ``column (unit)``."""
    units = {c: unit(c) for c in frame.columns} | (units or {})
    headers = [f"{c} ({units[c]})" if units.get(c) not in ("", None, c) else str(c) for c in frame.columns]
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(frame: pd.DataFrame, directory: Path, stem: str, note: str = "",
               units: dict[str, str] | None = None) -> list[Path]:
    """``stem.md`` (with ``note`` as a paragraph above the table, and each column's unit
    from ``units`` in its header) and ``stem.csv`` (the plain column names, for programs;
    the same numbers, so in the units the Markdown headers name)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (note.strip() + "\n\n" if note else "") + markdown(frame, units)
    csv = io.StringIO()
    frame.to_csv(csv, index=False)
    paths = [directory / f"{stem}.md", directory / f"{stem}.csv"]
    for path, content in zip(paths, (text, csv.getvalue())):
        write_atomic(path, lambda handle, data=content.encode(): handle.write(data))
    return paths


def sections(names: Iterable[str] = SECTIONS):
    return [import_module(f"{__name__}.{name}") for name in names]


def write_report(out) -> list[Path]:
    """Every applicable section of the dataset in ``out`` into ``out/report/``."""
    dataset = load(out)
    directory = dataset.out / "report"
    written = []
    with style():
        for section in sections():
            if section.applies(dataset):
                written += section.write(dataset, directory)
    return written
