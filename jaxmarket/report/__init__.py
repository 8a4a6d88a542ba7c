"""``jaxmarket report OUT_DIR``: figures and tables from a study's dataset.

A report is a set of *sections*. A section is a module of this package with

    applies(dataset) -> bool                 does the study hold what the section shows?
    write(dataset, directory) -> list[Path]  write its figures and tables, return the files

and is listed in ``SECTIONS``. ``write_report`` writes every applicable section into
``OUT_DIR/report/``. Figures are written as PNG and PDF (``save_figure``), tables as
Markdown and CSV (``save_table``), each file atomically. Figures are built with
matplotlib's object API (``Figure``), never pyplot, so a report leaves no global figure
state and needs no display.

Only the chunks the manifest lists are read, so a report of an unfinished study shows the
finished chunks and says so in its summary.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Iterable, Iterator

import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib.figure import Figure

from jaxmarket.study.config import Study, resolve
from jaxmarket.errors import InputError
from jaxmarket.study.store import read_manifest, write_atomic

SECTIONS = ("summary", "algorithms", "sparsity", "layouts", "network", "uncertainty")

# Publication style: single-column figures (3.5 in wide) with fonts that stay legible at
# print size, light grids, no top/right spines.
STYLE = {
    "figure.figsize": (3.5, 2.6), "figure.dpi": 100, "savefig.dpi": 300,
    "savefig.bbox": "tight", "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
    "legend.fontsize": 7, "xtick.labelsize": 7, "ytick.labelsize": 7, "lines.linewidth": 1.2,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.spines.top": False,
    "axes.spines.right": False, "legend.frameon": False, "pdf.fonttype": 42,
}


@contextmanager
def style() -> Iterator[None]:
    """The report's matplotlib style, for the figures created inside the block."""
    with matplotlib.rc_context(STYLE):
        yield


@dataclass(frozen=True)
class Dataset:
    out: Path
    manifest: dict

    @cached_property
    def study(self) -> Study:
        """The study as resolved from the manifest's config (cells, swept keys)."""
        return resolve(self.manifest["config"], default_name=self.manifest["study"])

    @property
    def swept(self) -> list[str]:
        """Swept keys as ``section.key``, in the study's product order."""
        return list(self.study.swept)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    def _read(self, kind: str) -> pd.DataFrame | None:
        entries = sorted(self.manifest.get("chunks", {}).values(), key=lambda e: (e["cell"], e["start"]))
        paths = [self.out / e[kind] for e in entries if kind in e]
        if not paths:
            return None
        return pa.concat_tables([pq.read_table(p) for p in paths]).to_pandas()

    @cached_property
    def cases(self) -> pd.DataFrame:
        """Every finished case row, ordered by cell and case index."""
        cases = self._read("cases")
        if cases is None:
            raise InputError(str(self.out), "the dataset has no finished chunk yet")
        return cases

    @cached_property
    def traces(self) -> pd.DataFrame | None:
        """The long-format traces, or None when the study recorded none."""
        return self._read("traces")


def load(out) -> Dataset:
    out = Path(out)
    if not out.is_dir():
        raise InputError(str(out), "no such dataset directory")
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(str(out), "not a jaxmarket dataset (no manifest.json)")
    return Dataset(out, manifest)


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


def save_figure(fig: Figure, directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.{fmt}" for fmt in ("png", "pdf")]
    for path in paths:
        write_atomic(path, lambda handle, fmt=path.suffix[1:]: fig.savefig(handle, format=fmt))
    return paths


def _cell(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table, numbers to 4 significant digits."""
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |",
             "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def save_table(frame: pd.DataFrame, directory: Path, stem: str, note: str = "") -> list[Path]:
    """``stem.md`` (with ``note`` as a paragraph above the table) and ``stem.csv``."""
    directory.mkdir(parents=True, exist_ok=True)
    text = (note.strip() + "\n\n" if note else "") + markdown(frame)
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
