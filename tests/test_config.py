"""Study files: defaults, the order of the cells, overrides, the hash and the errors."""

from pathlib import Path

import pytest

from jaxmarket.algorithms.admm import ConsensusADMM
from jaxmarket.errors import InputError
from jaxmarket.generator import GeneratorParams
from jaxmarket.study.config import load_study, parse_override, resolve, solver_options


def test_defaults():
    study = resolve({}, "study")
    assert (study.name, study.seed, study.out, study.chunk_size) == ("study", 0, Path("outputs/study"), 256)
    assert (study.dtype, study.cases_per_cell, study.swept) == ("float64", 100, ())
    (cell,) = study.cells
    assert cell.algorithm == ConsensusADMM() and cell.generator == GeneratorParams()
    assert (cell.n_agents, cell.layout, cell.sparsity) == (25, "full", 0.0)


def test_cells_are_a_product_in_schema_order():
    # Given in another order in the file; swept in schema order, the last one fastest.
    raw = {"solver": {"rho": [1.0, 2.0]}, "graph": {"sparsity": [0.0, 0.5, 0.25]},
           "community": {"producer_b": [[10, 20], [20, 30]]}}
    study = resolve(raw, "study")
    assert study.swept == ("community.producer_b", "graph.sparsity", "solver.rho")
    points = [(c.generator.producer_b, c.sparsity, c.algorithm.rho) for c in study.cells]
    assert points[:4] == [((10.0, 20.0), 0.0, 1.0), ((10.0, 20.0), 0.0, 2.0),
                          ((10.0, 20.0), 0.5, 1.0), ((10.0, 20.0), 0.5, 2.0)]
    assert len(points) == 12 and points[-1] == ((20.0, 30.0), 0.25, 2.0)
    assert [c.index for c in study.cells] == list(range(12))
    assert study.cells[0].labels()["producer_b_lo"] == 10.0


def test_a_single_range_is_not_a_sweep():
    study = resolve({"community": {"consumer_b": [50, 90]}}, "study")
    assert study.swept == () and study.cells[0].generator.consumer_b == (50.0, 90.0)


@pytest.mark.parametrize("raw, message", [
    ({"solver": {"rho": "x"}}, 'solver.rho: expected a positive number, got "x"'),
    ({"solver": {"rho": -1}}, "solver.rho: must be > 0, got -1.0"),
    ({"solver": {"rhoo": 1}}, "solver.rhoo: unknown key"),
    ({"grid": {}}, "grid: unknown key"),
    ({"run": []}, "run: expected a table, got []"),
    ({"run": {"seed": True}}, "run.seed: expected a non-negative integer, got true"),
    ({"run": {"seed": [1, 2]}}, "run.seed: expected a non-negative integer, got [1, 2]"),
    ({"run": {"dtype": "float16"}}, 'run.dtype: expected one of "float64", "float32", got "float16"'),
    ({"run": {"name": "a b"}}, "run.name: expected letters, digits"),
    ({"run": {"chunk_size": 0}}, "run.chunk_size: must be > 0, got 0"),
    ({"community": {"n_agents": 10.0}}, "community.n_agents: expected an integer >= 2, got 10.0"),
    ({"community": {"producer_b": [1]}}, "community.producer_b: expected [low, high], got [1]"),
    ({"community": {"producer_b": [40, 15]}}, "community.producer_b: low 40.0 exceeds high 15.0"),
    ({"community": {"n_agents": 4, "max_share": 0.4}}, "community.max_share: 0.4 x 2 agents"),
    ({"graph": {"sparsity": 1.0}}, "graph.sparsity: must be < 1, got 1.0"),
    ({"graph": {"sparsity": -0.1}}, "graph.sparsity: must be >= 0, got -0.1"),
    ({"graph": {"sparsity": [0.0, 1.0]}}, "graph.sparsity[1]: must be < 1, got 1.0"),
    ({"graph": {"sparsity": []}}, "graph.sparsity: empty sweep list"),
    ({"graph": {"sparsity": [0.5, 0.5]}}, "graph.sparsity[1]: duplicate value 0.5"),
    ({"graph": {"layout": "ring"}}, 'graph.layout: expected one of "full", "bipartite", "centralized", "community", got "ring"'),
    ({"solver": {"eps_dual": 0}}, "solver.eps_dual: must be > 0, got 0.0"),
    ({"solver": {"algorithm": "simplex"}}, 'solver.algorithm: expected one of "admm"'),
    ({"solver": {"max_iter": float("nan")}}, "solver.max_iter: expected an integer in (0, 1073741824), got NaN"),
    ({"solver": {"check_every": 3, "trace_every": [9, 10]}},
     "solver.trace_every: must be a multiple of solver.check_every (3), got 10"),
])
def test_bad_studies(raw, message):
    with pytest.raises(InputError) as error:
        resolve(raw, "study")
    assert str(error.value).startswith(message)


MAGNITUDE = "must be 0 or of magnitude 1e-12 to 1e12 (a market quantity in its unit), got "


@pytest.mark.parametrize("raw, message", [
    ({"solver": {"rho": 1e300}}, "solver.rho: " + MAGNITUDE + "1e+300"),
    ({"solver": {"rho": 1e-300}}, "solver.rho: " + MAGNITUDE + "1e-300"),
    ({"solver": {"rho": [1.0, 1e300]}}, "solver.rho[1]: " + MAGNITUDE + "1e+300"),
    ({"solver": {"eps_primal": 1e-300}}, "solver.eps_primal: " + MAGNITUDE + "1e-300"),
    ({"solver": {"algorithm": "rci", "alpha": [1e300, 0.01]}}, "solver.alpha[0]: " + MAGNITUDE + "1e+300"),
    ({"community": {"capacity_per_agent": 1e300}},
     "community.capacity_per_agent: " + MAGNITUDE + "1e+300"),
    ({"community": {"producer_b": [[15, 40], [1e300, 2e300]]}},
     "community.producer_b[1][0]: " + MAGNITUDE + "1e+300"),
    ({"community": {"charge_per_distance": 1e300}},
     "community.charge_per_distance: " + MAGNITUDE + "1e+300"),
    ({"network": {"case": "new_england", "policy": "zonal", "fee": 1e300}},
     "network.fee: " + MAGNITUDE + "1e+300"),
    ({"network": {"case": "new_england", "policy": ["zonal", "unique"],
                  "fee": {"zonal": 17.0, "unique": 1e300}}},
     "network.fee.unique: " + MAGNITUDE + "1e+300"),
])
def test_extreme_magnitudes_are_refused(raw, message):
    """Such a study once ran and wrote NaN or meaningless rows (rho = 1e300: converged
    after one iteration, mean price -4.6e268) with exit status 0."""
    with pytest.raises(InputError) as error:
        resolve(raw, "study")
    assert str(error.value) == message


def test_magnitudes_are_checked_in_overrides():
    with pytest.raises(InputError, match=r"^solver.rho: must be 0 or of magnitude 1e-12 to 1e12"):
        resolve({}, "study", [parse_override("solver.rho=1e300")])
    assert resolve({"solver": {"rho": 1e12, "eps_primal": 1e-12}}, "study").cells[0].algorithm.rho == 1e12


RCI_OPTIONS = ("eps_primal, eps_dual, max_iter, check_every, trace_every, eps_price, eps_power, "
               "tuning, alpha, beta, eta, delta")


@pytest.mark.parametrize("raw, overrides, message", [
    ({"solver": {"algorithm": "rci", "rho": 2.0}}, [],
     f"solver.rho: not an option of rci (its options: {RCI_OPTIONS})"),
    ({}, ["solver.eps_price=1e-3"], "solver.eps_price: not an option of admm (its options: "),
    # A sweep over an option no algorithm reads would only repeat cells.
    ({}, ["solver.relaxation=[1.2, 1.6]"], "solver.relaxation: not an option of admm "),
    ({"solver": {"algorithm": ["rci", "pcmbed"], "rho": 1.0}}, [],
     "solver.rho: not an option of any algorithm of the study (rci, pcmbed)"),
    # --set solver.algorithm narrows a study; a key given with --set must still be read.
    ({"solver": {"rho": 1.0}}, ["solver.algorithm=rci", "solver.rho=2"],
     f"solver.rho: not an option of rci (its options: {RCI_OPTIONS})"),
])
def test_solver_keys_no_algorithm_reads_are_errors(raw, overrides, message):
    with pytest.raises(InputError) as error:
        resolve(raw, "study", [parse_override(o) for o in overrides])
    assert str(error.value).startswith(message)


def test_solver_keys_of_the_study_algorithms_are_their_union():
    # sweeps/algorithms.toml: rho for admm and ced_mean, eps_price for rci and pcmbed.
    swept = {"algorithm": ["admm", "rci", "pcmbed", "ced_mean"], "rho": 1.0, "eps_price": 1e-4}
    assert len(resolve({"solver": swept}, "study").cells) == 4
    # A file's keys may serve an algorithm that --set solver.algorithm replaced (jaxmarket
    # tune narrows sweeps/algorithms.toml to one algorithm).
    study = resolve({"solver": swept}, "study", [parse_override("solver.algorithm=rci")])
    assert [c.algorithm.name for c in study.cells] == ["rci"]
    assert resolve({"solver": {"rho": 1.0}}, "study",
                   [parse_override("solver.algorithm=rci")]).cells[0].algorithm.name == "rci"
    # A dataset's manifest records every algorithm's keys; jaxmarket report reads it back.
    study = resolve({"solver": {"algorithm": "rci"}}, "study")
    assert "rho" in study.config["solver"]
    assert resolve(study.config, "study", recorded=True).config_hash == study.config_hash


def test_overrides():
    assert parse_override("graph.sparsity=[0, 0.5]") == ("graph.sparsity", [0, 0.5])
    assert parse_override("graph.layout=bipartite") == ("graph.layout", "bipartite")
    assert parse_override("run.name = a=b") == ("run.name", "a=b")
    study = resolve({"solver": {"rho": 2.0}}, "study", [parse_override("solver.rho=[0.5, 1]")])
    assert [c.algorithm.rho for c in study.cells] == [0.5, 1.0]
    with pytest.raises(InputError, match='^--set: expected section.key=value, got "rho=1"$'):
        parse_override("rho=1")
    with pytest.raises(InputError, match='^solver.rho: expected a positive number, got "x"$'):
        resolve({}, "study", [parse_override("solver.rho=x")])
    with pytest.raises(InputError, match="^solver.rhoo: unknown key"):
        resolve({}, "study", [parse_override("solver.rhoo=1")])


def test_config_hash():
    base = resolve({"solver": {"rho": 1}, "graph": {"layout": "full"}}, "study").config_hash
    assert resolve({"graph": {}, "solver": {"rho": 1.0}}, "study").config_hash == base
    assert resolve({"run": {"out": "elsewhere"}}, "study").config_hash == base
    assert resolve({"solver": {"rho": 2}}, "study").config_hash != base
    assert resolve({}, "other").config_hash != base
    assert resolve({"solver": {"rho_balance": 3}}, "study").config_hash != base


def test_residual_balancing_is_an_admm_option():
    study = resolve({"solver": {"rho_balance": 3, "rho_balance_every": 5}}, "study")
    solver = study.cells[0].algorithm
    assert (solver.rho_balance, solver.rho_balance_factor, solver.rho_balance_every) == (3.0, 2.0, 5)
    assert "rho_balance" not in resolve({}, "study").config["solver"]
    with pytest.raises(InputError, match="^solver.rho_balance: must be 0 .fixed rho. or a ratio"):
        resolve({"solver": {"rho_balance": 0.5}}, "study")
    for algorithm in ("rci", "admm_pairwise"):
        with pytest.raises(InputError, match="^solver.rho_balance: residual balancing is an "
                                             "option of admm, admm_relaxed, admm_fast, "
                                             "admm_anderson, endogenous_dc, ") as error:
            resolve({"solver": {"algorithm": algorithm, "rho_balance": 3}}, "study")
        assert "pairwise" not in str(error.value)
    with pytest.raises(InputError, match="^solver.rho_balance_factor: must be > 1"):
        resolve({"solver": {"rho_balance_factor": 1}}, "study")


def test_solver_options():
    options = solver_options({"rho": 2, "eps_primal": 1e-3, "eps_dual": 1e-3})
    assert options == ConsensusADMM(rho=2.0, eps_primal=1e-3, eps_dual=1e-3)
    with pytest.raises(InputError, match="^solver.max_iter: must be > 0, got 0$"):
        solver_options({"max_iter": 0})


def test_load_study(tmp_path):
    path = tmp_path / "my-study.toml"
    path.write_text('[graph]\nsparsity = [0.0, 0.5]\n')
    study = load_study(path, ["solver.rho=2"], out=tmp_path / "out")
    assert (study.name, study.out, len(study.cells)) == ("my-study", tmp_path / "out", 2)
    assert study.config["run"]["out"] == str(tmp_path / "out")
    path.write_text("[graph\nsparsity = 0.5\n")
    with pytest.raises(InputError, match=f"^{path}: malformed TOML: .*line 1"):
        load_study(path)
    with pytest.raises(InputError, match="no such file"):
        load_study(tmp_path / "missing.toml")


def test_rci_sequences_are_pairs_and_lists_of_pairs_sweep():
    study = resolve({"solver": {"algorithm": "rci", "alpha": [[0.01, 0.01], [0.02, 0.0]],
                                "beta": [0.2, 0.1]}}, default_name="rci")
    assert [cell.algorithm.alpha for cell in study.cells] == [(0.01, 0.01), (0.02, 0.0)]
    assert study.cells[0].algorithm.beta == (0.2, 0.1)
    assert study.cells[1].labels()["alpha_c"] == 0.02
    with pytest.raises(InputError, match=r"^solver\.eta\[1\]: must be >= 0"):
        resolve({"solver": {"eta": [0.005, -1.0]}}, default_name="rci")


def test_a_fee_table_gives_each_policy_its_own_fee():
    network = {"case": "new_england", "policy": ["none", "zonal", "unique", "endogenous_dc"],
               "fee": {"zonal": 17, "unique": 16.0}}
    study = resolve({"network": network}, "table")
    assert study.swept == ("network.policy",)
    assert [(c.values["network.policy"], c.labels()["fee"]) for c in study.cells] == [
        ("none", 0.0), ("zonal", 17.0), ("unique", 16.0), ("endogenous_dc", 0.0)]
    assert study.config["network"]["fee"] == {"zonal": 17.0, "unique": 16.0}
    other = resolve({"network": {**network, "fee": {"zonal": 17, "unique": 15.0}}}, "table")
    assert other.config_hash != study.config_hash
    via_set = resolve({"network": {**network, "fee": 0.0}}, "table",
                      [parse_override("network.fee={zonal = 17, unique = 16}")])
    assert via_set.config_hash == study.config_hash
    for fee, message in (({"zonal": 17}, "network.fee: the fee table has no fee for policy unique"),
                         ({"zonal": 17, "unique": 16, "distance_ptd": 3},
                          "network.fee.distance_ptd: policy distance_ptd is not in network.policy"),
                         ({"zonal": 17, "unique": 16, "none": 0},
                          "network.fee.none: not a policy that charges a fee"),
                         ({"zonal": -1, "unique": 16}, "network.fee.zonal: must be >= 0"),
                         ({}, "network.fee: empty fee table")):
        with pytest.raises(InputError) as error:
            resolve({"network": {**network, "fee": fee}}, "table")
        assert str(error.value).startswith(message), str(error.value)
