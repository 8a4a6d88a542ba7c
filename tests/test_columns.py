"""The declared column schema against the tables the code writes today: every kind of
output is produced for real on tiny batches, and must carry exactly its declared columns,
of the declared types; ``annotate`` puts a unit and a description on every field and
refuses an undeclared column.

Tiny on purpose: 4 agents, batches of 2 cases, a few iterations (one sweep with ADMM, a
trace and an ``[asynchrony]`` section, CED on a generated batch, the energy and reserve
market, and ``jaxmarket solve`` with RCI on the New England case, which gives the grid
columns and the trades table)."""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.algorithms.ced import CEDMean
from jaxmarket.markets import reserve, solve
from jaxmarket.markets.rows import GAP_THRESHOLDS
from jaxmarket.study import plan, run as runner
from jaxmarket.cases import locate
from jaxmarket.charges import grid_outcome, load_grid_case
from jaxmarket.cli import app
from jaxmarket.study.config import load_study
from jaxmarket.study.keys import label_units
from jaxmarket.generator import generate
from jaxmarket.markets import columns as schema
from jaxmarket.renewables import RenewableParams
from jaxmarket.markets.reserve import ReserveStudyParams

STUDY = """
[run]
name = "columns"
cases_per_cell = 2
chunk_size = 2
[community]
n_agents = 4
charge_per_distance = 1.0
[graph]
sparsity = 0.5
[solver]
max_iter = 20
trace_every = 5
[asynchrony]
compute_spread = 0.005
delay_mean = 0.005
"""


class Output(NamedTuple):
    table: pa.Table  # what is (or would be) written
    kinds: tuple[str, ...]  # the declared kinds that make up its columns
    labels: tuple[str, ...] = ()  # cell label columns, declared elsewhere
    rows: dict | None = None  # the numpy columns the table was made of


def _output(rows: dict, kind: str) -> Output:
    rows = {key: np.asarray(value) for key, value in rows.items()}
    return Output(pa.table(rows), (kind,), rows=rows)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Output]:
    folder = tmp_path_factory.mktemp("columns")
    made = {}

    # A sweep with asynchrony: dataset + p2p + asynchrony columns and the cell's labels; the
    # trace table.
    (folder / "columns.toml").write_text(STUDY)
    study = load_study(folder / "columns.toml", (), out=folder / "sweep")
    list(runner.run(plan.prepare(study), driver="plain"))  # same rows, less to compile
    (cases,) = sorted((study.out / "cases").glob("*.parquet"))
    (trace,) = sorted((study.out / "traces").glob("*.parquet"))
    made["sweep rows"] = Output(pq.read_table(cases), ("dataset", "p2p", "asynchrony"),
                                tuple(study.cells[0].labels()))
    made["sweep trace"] = Output(pq.read_table(trace), ("trace",))

    # Pool rows and energy + reserve rows on a generated batch.
    indices = np.arange(2)
    community = generate(0, indices, 4)
    pool = solve(community, CEDMean(max_iter=20), "plain")
    made["pool rows"] = _output(pool.rows, "pool")
    local = solve(community, ConsensusADMM(stopping="per_agent", max_iter=20), "plain")
    made["local stopping rows"] = Output(pa.table(dict(local.rows)), ("p2p", "stopping"),
                                         rows={k: np.asarray(v) for k, v in local.rows.items()})
    params = ReserveStudyParams("rel_1", 0.95, RenewableParams(uncertain_fraction=0.25))
    run = reserve.run(community, params, 0, indices, ConsensusADMM(max_iter=20), "plain")
    made["reserve rows"] = _output(reserve.tabulate(community, params, run).rows, "reserve")

    # jaxmarket solve --out on the packaged New England case: the solve row (with the
    # grid columns) and the trades table.
    out = folder / "solve" / "row.parquet"
    result = CliRunner().invoke(app, ["solve", str(locate("new_england")), "--algorithm", "rci",
                                      "--max-iter", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    solve_row = pq.read_table(out)
    made["solve row"] = Output(solve_row, ("solve", "p2p", "grid"),
                               tuple(set(solve_row.column_names) & set(label_units())))
    made["trades"] = Output(pq.read_table(out.with_name("row.trades.parquet")), ("trades",))
    # The same under endogenous network charges.
    out = folder / "endogenous" / "row.parquet"
    result = CliRunner().invoke(app, ["solve", "new_england", "--policy", "endogenous_dc",
                                      "--max-iter", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    solve_row = pq.read_table(out)
    made["endogenous solve row"] = Output(solve_row, ("solve", "p2p", "grid", "endogenous"),
                                          tuple(set(solve_row.column_names) & set(label_units())))
    made["endogenous trades"] = Output(pq.read_table(out.with_name("row.trades.parquet")),
                                       ("trades", "endogenous_trades"))
    grid = load_grid_case("new_england")
    trades = np.zeros((2,) + grid.case.community.edges.shape[1:])
    made["grid columns"] = _output(grid_outcome(grid.grid, trades), "grid")
    return made


OUTPUTS = ("sweep rows", "sweep trace", "pool rows", "local stopping rows", "reserve rows",
           "solve row", "trades", "endogenous solve row", "endogenous trades", "grid columns")


def _labels(output: Output) -> dict[str, tuple[str, str]]:
    """The declarations of the label columns: every study key declares its unit and
    description (``study.config.label_units``); ``n_agents`` is both a label and a metric."""
    units = label_units()
    assert set(output.labels) <= set(units)
    return {name: units[name] for name in output.labels}


def test_every_column_is_declared_once_with_a_unit_and_a_description():
    names = [column.name for column in schema.COLUMNS]
    assert len(names) == len(set(names))
    for column in schema.COLUMNS:
        assert column.unit.strip() and column.description.strip(), column.name
        assert column.dtype in schema.DTYPES and column.kinds <= set(schema.KINDS)
        assert column.unit != "%"  # fractions are "1"
    assert set(schema.GAPS) == set(GAP_THRESHOLDS)
    assert {float(v) for v in schema.GAPS.values()} == set(GAP_THRESHOLDS.values())
    for kind in schema.KINDS:
        assert schema.columns(kind)
    with pytest.raises(ValueError, match="unknown output kind"):
        schema.columns("p2q")


def test_every_kind_is_produced(outputs):
    assert {kind for output in outputs.values() for kind in output.kinds} == set(schema.KINDS)
    assert set(outputs) == set(OUTPUTS)


@pytest.mark.parametrize("name", OUTPUTS)
def test_columns_are_exactly_the_declared_ones(outputs, name):
    output = outputs[name]
    present = set(output.table.column_names)
    declared = set(schema.columns(output.kinds))
    assert present - set(output.labels) - declared == set(), "undeclared"
    assert declared - present == set(), "declared but not written"
    if name == "sweep rows":
        assert "sparsity" in output.labels and "n_agents" in output.labels


@pytest.mark.parametrize("name", OUTPUTS)
def test_values_have_the_declared_types(outputs, name):
    output = outputs[name]
    declared = schema.columns(output.kinds)
    for field in output.table.schema:
        if field.name not in declared:
            continue
        column = declared[field.name]
        assert column.accepts(field.type), (field.name, field.type, column.dtype)
        values = output.table.column(field.name).to_numpy(zero_copy_only=False)
        assert values.dtype.kind in schema.DTYPES[column.dtype].numpy_kinds, (
            field.name, values.dtype, column.dtype)
    for key, value in (output.rows or {}).items():  # the tabulation's own arrays
        assert value.dtype.kind in schema.DTYPES[declared[key].dtype].numpy_kinds, (
            key, value.dtype, declared[key].dtype)


def _assert_same_data(table: pa.Table, expected: pa.Table) -> None:
    """Same columns, types and values (NaN equal to NaN)."""
    assert table.schema.names == expected.schema.names
    assert table.schema.types == expected.schema.types
    for name in table.column_names:
        values, wanted = table.column(name), expected.column(name)
        if pa.types.is_floating(values.type):
            np.testing.assert_array_equal(values.to_numpy(), wanted.to_numpy())
        else:
            assert values.to_pylist() == wanted.to_pylist(), name


@pytest.mark.parametrize("name", OUTPUTS)
def test_annotate_describes_every_field_in_parquet(outputs, name, tmp_path):
    output = outputs[name]
    extra = _labels(output)
    annotated = schema.annotate(output.table, output.kinds, extra)
    _assert_same_data(annotated, output.table)
    assert annotated.schema.metadata == output.table.schema.metadata
    pq.write_table(annotated, tmp_path / "annotated.parquet")
    written = pq.read_schema(tmp_path / "annotated.parquet")
    declared = schema.columns(output.kinds)
    for field in written:
        unit, description = (extra[field.name] if field.name not in declared else
                             (declared[field.name].unit, declared[field.name].description))
        assert field.metadata[b"unit"] == unit.encode()
        assert field.metadata[b"description"] == description.encode()


def test_annotate_refuses_an_undeclared_column(outputs):
    rows = outputs["pool rows"].table
    with pytest.raises(KeyError, match="bogus"):
        schema.annotate(rows.append_column("bogus", pa.array(np.zeros(rows.num_rows))), "pool")
    # A column of another kind is undeclared here.
    with pytest.raises(KeyError, match="local_failures"):
        schema.annotate(outputs["reserve rows"].table, "pool")
    # The cell labels must be declared by the caller.
    sweep_rows = outputs["sweep rows"]
    with pytest.raises(schema.UndeclaredColumnError, match="sparsity"):
        schema.annotate(sweep_rows.table, sweep_rows.kinds)


def test_annotate_checks_types_and_label_units():
    table = pa.table({"iterations": pa.array([1.5]), "n_agents": pa.array([4])})
    with pytest.raises(TypeError, match="iterations"):
        schema.annotate(table, "p2p")
    table = table.set_column(0, "iterations", pa.array([3], pa.int32()))
    with pytest.raises(ValueError, match="n_agents"):
        schema.annotate(table, "p2p", {"n_agents": ("1", "agents")})
    annotated = schema.annotate(table, "p2p", {"n_agents": ("count", "agents of the generator")})
    assert annotated.schema.field("n_agents").metadata[b"unit"] == b"count"
    with pytest.raises(ValueError, match="unknown output kind"):
        schema.annotate(table, "rows")


def test_markdown_reference_is_current():
    table = schema.markdown()
    assert table.count("\n") == len(schema.COLUMNS) + 2
    assert "| `optimality_gap` | float | 1 |" in table
    assert schema.markdown("trades").count("\n") == len(schema.columns("trades")) + 2
    docs = Path(__file__).resolve().parents[1] / "docs" / "columns.md"
    assert docs.read_text() == schema.document(), \
        "regenerate: python3 -m jaxmarket.markets.columns > docs/columns.md"
