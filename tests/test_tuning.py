"""Learned tunings (``jaxmarket.tuning``, ``jaxmarket tune``): the surrogate's gradient
against finite differences, the tuner improving the surrogate on tiny problems, disjoint
case splits, and the written snippet reproducing the held-out sweep, whose every case is
checked against Clarabel."""

import tomllib

import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from jaxmarket import tuning
from jaxmarket.cli import app
from jaxmarket.errors import InputError
from jaxmarket.study.config import load_study
from jaxmarket.study.store import read_manifest, read_parts
from oracle import clarabel_p2p

STUDY = """
[run]
name = "tiny_tune"
cases_per_cell = 3
chunk_size = 3
[community]
n_agents = 6
charge_per_distance = 0.0
[graph]
layout = "full"
[solver]
algorithm = "rci"
max_iter = 400
check_every = 10
trace_every = 10
"""


def study_file(folder, text=STUDY):
    path = folder / "study.toml"
    path.write_text(text)
    return path


def base_algorithm(folder, algorithm, *overrides):
    return load_study(study_file(folder), [f"solver.algorithm={algorithm}", *overrides]
                      ).cells[0].algorithm


# One shape for every surrogate program of the module, the end-to-end tune's included (4
# training and 4 validation cases, K = 30), so that each program compiles once. At K = 20
# Adam's first steps on ADMM's rho go uphill (measured), too short a surrogate to tune.
UNROLL = 30
TRAIN_CASES = 4


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """Training and validation batches of the study's communities (the same for every
    algorithm), disjoint case indices."""
    study = load_study(study_file(tmp_path_factory.mktemp("cases")))
    cell = study.cells[0]
    return [[tuning.batch(cell.communities(study.seed, list(indices), "float64"))]
            for indices in (range(10, 10 + TRAIN_CASES), range(10 + TRAIN_CASES, 10 + 2 * TRAIN_CASES))]


def test_split_is_disjoint():
    split = tuning.case_split(50, 16, 16)
    assert split["held_out"] == range(50)  # the cases a sweep of the study solves
    parts = [set(r) for r in split.values()]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 82
    with pytest.raises(InputError, match="2\\^31"):
        tuning.case_split(2**31 - 10, 16, 16)


def test_training_cases_shrink_with_trades():
    assert [tuning.cases_for(n, 25, 16) for n in (25, 50, 100, 300)] == [16, 4, 2, 2]


# admm_pairwise at the symmetric rule: at its default stiffening (3) the 30-iteration
# surrogate has kinks (rule clips, bounds) within 1e-5 of the start, where central
# differences at h = 1e-5 and 1e-6 differ by 10 % and agree with the gradient only at 1e-7
# (measured); the rule's code is the same at any factor.
@pytest.mark.parametrize("algorithm, overrides", [
    ("rci", ()), ("admm_relaxed", ()), ("admm_pairwise", ("solver.pair_rho_stiffen=1.5",))])
def test_gradient_matches_finite_differences(tmp_path, cases, algorithm, overrides):
    base, (train, _) = base_algorithm(tmp_path, algorithm, *overrides), cases
    chosen = tuning.knobs(base)
    loss, value_and_grad = tuning.loss_function(base, chosen, UNROLL)
    x = jnp.asarray(tuning.start(base, chosen))
    value, gradient = value_and_grad(x, train)
    assert value == pytest.approx(float(loss(x, train)), rel=1e-12)
    h = 1e-5
    for j in range(len(chosen)):
        e = jnp.zeros(len(chosen)).at[j].set(h)
        slope = (float(loss(x + e, train)) - float(loss(x - e, train))) / (2 * h)
        assert float(gradient[j]) == pytest.approx(slope, rel=1e-4, abs=1e-6), chosen[j].name


def test_pairwise_rule_factors_are_knobs(tmp_path):
    knobs = tuning.knobs(base_algorithm(tmp_path, "admm_pairwise"))
    assert [k.name for k in knobs] == ["rho", "relaxation", "pair_rho_stiffen", "pair_rho_soften"]
    assert [(k.log, k.box) for k in knobs[2:]] == [(False, (1.05, 10.0))] * 2


@pytest.mark.parametrize("algorithm, knob_names", [
    ("rci", ["alpha_c", "alpha_p", "beta_c", "beta_p", "eta_c", "eta_p", "delta_c", "delta_p"]),
    ("admm", ["rho"])])
def test_tuner_improves_the_surrogate(tmp_path, cases, algorithm, knob_names):
    base, (train, validate) = base_algorithm(tmp_path, algorithm), cases
    assert [k.name for k in tuning.knobs(base)] == knob_names
    result = tuning.tune(base, train, validate, unroll=UNROLL, n_draws=4, steps=8, learning_rate=0.1,
                         seed=0)
    assert result.history[0] == pytest.approx(result.training["start"])  # Adam starts there
    assert min(h for h in result.history if np.isfinite(h)) < result.history[0] - 0.1
    assert result.validation[result.source] < result.validation["start"] - 0.1
    # The chosen values, as written, give the validation surrogate reported for them.
    chosen = tuning.knobs(base)
    loss, _ = tuning.loss_function(base, chosen, UNROLL)
    assert float(loss(jnp.asarray(tuning.encoded(chosen, result.values)), validate)) == pytest.approx(
        result.validation[result.source], rel=1e-12)


def test_constant_sequences(tmp_path, cases):
    base, (train, validate) = base_algorithm(tmp_path, "rci"), cases
    chosen = tuning.knobs(base, constant=True)
    assert [k.name for k in chosen] == ["alpha_c", "beta_c", "eta_c", "delta_c"]
    # The start holds the thesis scales constant.
    assert tuning.rounded(chosen, tuning.start(base, chosen)) == {
        "alpha": (0.01, 0.0), "beta": (0.1, 0.0), "eta": (0.005, 0.0), "delta": (1.0, 0.0)}
    result = tuning.tune(base, train, validate, unroll=UNROLL, n_draws=4, steps=0, learning_rate=0.1,
                         seed=0, rounds=3, constant=True)
    assert result.source == "random search"
    assert all(p == 0.0 for _, p in result.values.values())
    assert result.validation["random search"] < result.validation["start"] - 0.1
    with pytest.raises(InputError, match="no sequences"):
        tuning.knobs(base_algorithm(tmp_path, "admm"), constant=True)


def test_later_rounds_draw_around_the_best_point(tmp_path):
    base = base_algorithm(tmp_path, "rci")
    chosen = tuning.knobs(base)
    centre = tuning.start(base, chosen)
    first = tuning.draws(chosen, centre, 200, 0)
    assert np.array_equal(first, tuning.draws(chosen, centre, 200, 0, narrowing=0))
    third = tuning.draws(chosen, centre, 200, 0, narrowing=2)
    for j, knob in enumerate(chosen):
        low, high = knob.box
        width = (2 * np.log(10) if knob.log else (high - low) / 2) / 4
        assert np.all(np.abs(third[:, j] - centre[j]) <= width + 1e-12), knob.name
        assert np.all((third[:, j] >= low) & (third[:, j] <= high)), knob.name
    # Exponents: the whole box in the first round, around the centre afterwards.
    exponents = [j for j, knob in enumerate(chosen) if not knob.log]
    assert first[:, exponents].max() > 0.9 and first[:, exponents].min() < 0.1


def test_no_knob_is_an_input_error(tmp_path):
    base = base_algorithm(tmp_path, "exact")
    with pytest.raises(InputError, match="no continuous parameter"):
        tuning.knobs(base)


def test_snippet_round_trips_into_a_study(tmp_path):
    values = {"alpha": (0.1372, 0.0), "beta": (0.1, 0.1), "eta": (0.01244, 0.205),
              "delta": (5.653, 0.01163)}
    text = tuning.snippet("rci", values, ["a header"])
    solver = tomllib.loads(text)["solver"]
    assert {k: tuple(v) for k, v in solver.items()} == values
    path = study_file(tmp_path)
    by_set = load_study(path, tuning.overrides(values))
    copied = STUDY + "".join(line + "\n" for line in text.splitlines()
                             if line and not line.startswith(("#", "[")))
    (tmp_path / "copy").mkdir()
    by_copy = load_study(study_file(tmp_path / "copy", copied))
    assert by_set.config_hash == by_copy.config_hash
    algorithm = by_set.cells[0].algorithm
    assert {name: getattr(algorithm, name) for name in values} == values
    result = CliRunner().invoke(app, ["validate", str(path),
                                      *[a for s in tuning.overrides(values) for a in ("--set", s)]])
    assert result.exit_code == 0, result.output


def test_tune_command_end_to_end(tmp_path):
    path = study_file(tmp_path)
    out = tmp_path / "tuned"
    result = CliRunner().invoke(app, ["tune", str(path), "--algorithm", "rci", "--out", str(out),
                                      "--unroll", str(UNROLL), "--steps", "3", "--draws", "2",
                                      "--train-cases", str(TRAIN_CASES)])
    assert result.exit_code == 0, result.output
    values = {k: tuple(v) for k, v in tomllib.loads((out / "solver.toml").read_text())["solver"].items()}
    report = (out / "report.md").read_text()
    assert "| 6 | 3 |" in report
    # The tuned held-out rows are the sweep of the study with the snippet's keys.
    sweep = load_study(path, ["solver.algorithm=rci", *tuning.overrides(values)], out / "tuned")
    assert read_manifest(out / "tuned")["config_hash"] == sweep.config_hash
    # Every held-out case's reference against Clarabel, and the gap it gives.
    community = sweep.cells[0].communities(sweep.seed, list(range(3)), "float64")
    for name in ("default", "tuned"):
        rows = read_parts(out / name).sort_values("case_index")
        assert list(rows["case_index"]) == [0, 1, 2]
        for k, row in enumerate(rows.itertuples()):
            exact = clarabel_p2p(community, k)["objective"]
            assert row.reference_objective == pytest.approx(exact, rel=1e-7, abs=1e-6)
            assert row.optimality_gap == pytest.approx(
                abs(row.objective - exact) / max(1.0, abs(exact)), rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["--algorithm", "exact"], "error: --algorithm: exact has no continuous parameter to tune"),
    (["--algorithm", "nope"], "error: --algorithm: expected one of"),
    (["--algorithm", "rci", "--steps", "0", "--draws", "0"], "error: --steps: nothing to fit"),
    (["--algorithm", "rci", "--set", "solver.trace_every=0"], "error: solver.trace_every: "),
    (["--algorithm", "admm", "--constant"], "error: --constant: admm has no sequences"),
    (["--algorithm", "rci", "--rounds", "0"], "error: --rounds: "),
    (["--algorithm", "admm", "--set", "solver.rho=[1.0,2.0]"], "error: solver.rho: tune fits one tuning"),
])
def test_bad_input_is_one_line(tmp_path, args, message):
    result = CliRunner().invoke(app, ["tune", str(study_file(tmp_path)), "--out",
                                      str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out").exists()
