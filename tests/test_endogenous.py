"""Endogenous DC network charges (SPEC 7.1): both mechanisms reach the line-constrained
optimum of Clarabel, congestion prices included, on New England and on perturbed cases
with tightened ratings."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DATA
from oracle import clarabel_p2p_dc
from jaxmarket import markets
from jaxmarket.algorithms.endogenous import DecentralizedEndogenousADMM, EndogenousADMM
from jaxmarket.case import perturbed_costs
from jaxmarket.charges import load_grid_case
from jaxmarket.congestion import limited_line_names, line_limits
from jaxmarket.metrics import optimality_gap

TIGHT = 1e-6  # MW, both residuals


@pytest.fixture(scope="module")
def batch():
    """New England as published, then two cost perturbations (30 %) with every rating
    scaled by 0.8 and 0.6 (several congested lines)."""
    grid_case = load_grid_case(DATA / "new_england.json")
    community = perturbed_costs(grid_case.case.community, 11, np.arange(3), 0.3)
    limits = line_limits(grid_case.grid.network, 3)
    limits = limits._replace(rate=limits.rate * jnp.asarray([1.0, 0.8, 0.6])[:, None])
    oracles = [clarabel_p2p_dc(community, k, limits.shift[k], limits.rate[k]) for k in range(3)]
    return grid_case, community, limits, oracles


@pytest.mark.parametrize("cls", [EndogenousADMM, DecentralizedEndogenousADMM])
def test_reaches_the_line_constrained_optimum(batch, cls):
    grid_case, community, limits, oracles = batch
    result = markets.solve(community, cls(eps_primal=TIGHT, eps_dual=TIGHT, max_iter=5000),
                           "plain", limits)
    rows = result.rows
    assert rows["converged"].all() and rows["reference_converged"].all()
    assert (rows["optimality_gap"] <= 1e-8).all()
    trades = result.trades
    power = np.asarray(trades.sum(-1))
    charge = np.asarray(result.agent_charge)
    for k, oracle in enumerate(oracles):
        assert optimality_gap(rows["objective"][k], oracle["objective"], 1.0) <= 1e-8
        np.testing.assert_allclose(power[k], oracle["p"], rtol=0, atol=1e-3)  # MW
        # EUR/MWh; Clarabel's own prices agree to about 2e-6 (test_congestion).
        np.testing.assert_allclose(charge[k], oracle["congestion"], rtol=0, atol=1e-4)
        flows = np.abs(np.asarray(limits.shift[k]) @ power[k])
        assert np.all(flows <= np.asarray(limits.rate[k]) + 1e-5)
    # New England (Table 4.2): 16-19 at its rating, about 3832 MW traded between peers, and
    # the SO collects money: -sum eta_n p_n > 0.
    loading = np.abs(np.asarray(limits.shift[0]) @ power[0]) / np.asarray(limits.rate[0])
    assert limited_line_names(grid_case.grid.network)[int(loading.argmax())] == "16-19"
    assert loading.max() == pytest.approx(1.0, abs=1e-8)
    assert np.abs(np.asarray(trades[0])).sum() / 2 == pytest.approx(3832, abs=0.5)
    np.testing.assert_allclose(rows["congestion_collected"], -(charge * power).sum(-1), rtol=1e-12)
    assert rows["congestion_collected"][0] > 0
    np.testing.assert_allclose(rows["endogenous_charge_min"], charge.min(-1))
    # Trade prices carry the rest of the nodal price: on New England every trade clears at
    # the perceived price of the exact reference.
    traded = np.abs(np.asarray(trades[0])) > 1e-3
    np.testing.assert_allclose(np.asarray(result.prices[0])[traded], oracles[0]["price"][0], atol=1e-4)
    # The charge is the congestion part of the nodal price: 0 away from congestion.
    assert np.abs(charge[0]).min() <= 1e-4 and charge[0].min() < -5



def test_bad_input_is_one_line_and_exit_2(tmp_path):
    import json

    from typer.testing import CliRunner

    from jaxmarket.cli import app

    doc = json.loads((DATA / "new_england.json").read_text())
    for key in ("buses", "branches", "reference_bus"):
        doc.pop(key, None)
    gridless = tmp_path / "gridless.json"
    gridless.write_text(json.dumps(doc))
    for args in (["new_england", "--policy", "endogenous_dc", "--algorithm", "rci"],
                 ["new_england", "--algorithm", "endogenous_dc"],
                 [str(gridless), "--policy", "endogenous_dc_decentralized"]):
        result = CliRunner().invoke(app, ["solve", *args])
        assert result.exit_code == 2, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    with pytest.raises(Exception, match="needs a case with a grid"):
        markets.solve(load_grid_case(DATA / "new_england.json").case.community, EndogenousADMM())


STUDY = """
[run]
name = "endogenous"
seed = 0
cases_per_cell = 1
[network]
case = "new_england"
policy = ["none", "zonal", "endogenous_dc"]
fee = {{ zonal = 17.0 }}
[solver]
algorithm = "{algorithm}"
eps_primal = 1e-3
eps_dual = 1e-3
"""


def test_a_study_compares_the_policies_and_reports_them(tmp_path, batch):
    """The thesis' Table 4.2 in small: the free market, zonal fees at u = 17 and endogenous
    charges in one study (its parts have different columns), its report table and the
    figure of the charges per bus."""
    import pandas as pd
    from typer.testing import CliRunner

    from jaxmarket.api import read_dataset
    from jaxmarket.cli import app

    (tmp_path / "bad.toml").write_text(STUDY.format(algorithm="rci"))
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and "solver.algorithm" in result.output
    (tmp_path / "study.toml").write_text(STUDY.format(algorithm="admm"))
    result = CliRunner().invoke(app, ["sweep", str(tmp_path / "study.toml"), "--out",
                                      str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    rows = read_dataset(tmp_path / "out").set_index("policy")
    assert list(rows["fee"]) == [0.0, 17.0, 0.0]
    row = rows.loc["endogenous_dc"]
    assert row["converged"] and row["optimality_gap"] <= 1e-6
    assert row["most_loaded_line"] == "16-19" and row["congestion_collected"] > 0
    oracle = batch[3][0]  # Clarabel's line-constrained optimum of the published case
    assert row["total_traded"] == pytest.approx(np.abs(oracle["trades"]).sum() / 2, abs=1)
    assert np.isnan(rows.loc["none", "congestion_collected"])
    assert rows.loc["none", "overloaded_lines"] == 1 and rows.loc["zonal", "overloaded_lines"] == 0

    result = CliRunner().invoke(app, ["report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "out" / "report"
    table = pd.read_csv(report / "network_comparison.csv").set_index("policy")
    assert list(table.index) == ["free market", "zonal", "endogenous, distributed (4.24)"]
    endogenous = table.loc["endogenous, distributed (4.24)"]
    assert endogenous["network_collected"] == pytest.approx(row["congestion_collected"])
    assert endogenous["traded_vs_free"] == pytest.approx(row["total_traded"] / rows.loc["none", "total_traded"])
    assert table.loc["zonal", "network_collected"] == pytest.approx(rows.loc["zonal", "charges_collected"])
    assert list(table["overloaded_lines"]) == [1, 0, 0]
    assert (report / "network_endogenous_charges.png").stat().st_size > 0
    assert not (report / "network_fees.md").exists()  # no fee is swept
