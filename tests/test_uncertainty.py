"""Forecast distributions, allocations, the joint reference and Monte Carlo coverage."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_cli import invoke
from test_sweep import read_rows, tiny_study

from jaxmarket import reserve, uncertainty
from jaxmarket.generator import generate
from jaxmarket.markets.reserve import ReserveStudyParams, build_market
from jaxmarket.renewables import RenewableParams
from jaxmarket.study import plan as planner, run as runner
from jaxmarket.uncertainty import Forecast
from tests.reserve_cases import TINY_CASE, clarabel_joint


def _forecast(rng, beta, shape=(3, 6)):
    cap = rng.uniform(50, 150, shape)
    mean = rng.uniform(0.15, 0.35, shape) * cap
    sd = rng.uniform(0.1, 0.2, shape) * cap
    return Forecast(*(jnp.asarray(v) for v in (mean, sd, np.zeros(shape), cap)),
                    jnp.full(shape, beta))


@pytest.mark.parametrize("beta", [False, True], ids=["gaussian", "beta"])
def test_quantile_matches_scipy(beta):
    rng = np.random.default_rng(0)
    f = _forecast(rng, beta)
    u = rng.uniform(1e-3, 1 - 1e-3, f.mean.shape)
    got = np.asarray(uncertainty.quantile(f, jnp.asarray(u)))
    mean, sd, cap = (np.asarray(v) for v in (f.mean, f.sd, f.high))
    if beta:
        m, v = mean / cap, (sd / cap) ** 2
        k = m * (1 - m) / v - 1
        expected = scipy.stats.beta.ppf(u, m * k, (1 - m) * k, scale=cap)
    else:
        expected = scipy.stats.norm.ppf(u, mean, sd)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * cap.max())
    np.testing.assert_allclose(np.asarray(uncertainty.cdf(f, jnp.asarray(got))), u, atol=1e-12)


def _keys(n):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(0), i))(jnp.arange(n))


@pytest.mark.parametrize("delta", [0.9, 0.95, 0.99])
def test_abs_sigma_equals_rel_1_for_gaussians_only(delta):
    rng = np.random.default_rng(1)
    uncertain = jnp.asarray(rng.uniform(size=(3, 6)) < 0.6).at[:, 0].set(True)
    deltas = jnp.full(3, delta)
    gaussian = _forecast(rng, False)
    for f, equal in ((gaussian, True), (gaussian._replace(beta=jnp.ones_like(gaussian.beta)), False)):
        rel_1, abs_sigma = (np.asarray(uncertainty.allocate(a, deltas, f, uncertain, _keys(3)))
                            for a in ("rel_1", "abs_sigma"))
        mask = np.asarray(uncertain)
        assert np.all(rel_1[mask] == delta) and np.all(rel_1[~mask] == 0)
        if equal:
            np.testing.assert_allclose(abs_sigma[mask], delta, rtol=0, atol=1e-12)
        else:  # skewed Beta forecasts: the allocations differ by more than MC noise
            assert np.abs(abs_sigma[mask] - delta).max() > 5e-3


def test_relative_allocations_follow_table_5_1():
    rng = np.random.default_rng(2)
    f = _forecast(rng, False)
    uncertain = jnp.ones(f.mean.shape, bool)
    keys = _keys(3)
    rel_mu = np.asarray(uncertainty.allocate("rel_mu", jnp.full(3, 0.9), f, uncertain, keys))
    rel_sigma = np.asarray(uncertainty.allocate("rel_sigma", jnp.full(3, 0.9), f, uncertain, keys))
    mean, sd = np.asarray(f.mean), np.asarray(f.sd)
    np.testing.assert_allclose(rel_mu, 0.9 * mean / mean.sum(1, keepdims=True))
    np.testing.assert_allclose(rel_sigma, 0.9 * sd / np.sqrt((sd**2).sum(1, keepdims=True)))


def _monte_carlo_error(p, n):
    return 4 * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("distribution", ["gaussian", "beta"])
def test_joint_reference_meets_delta_and_rel_1_covers_globally(distribution):
    """The joint reference covers delta within Monte Carlo error (it may over-cover: free
    spill makes downward reserve cheap); Rel-1 covers at least delta globally and locally."""
    indices = np.arange(3)
    community = generate(5, indices, 10)
    delta = 0.95
    params = ReserveStudyParams("rel_1", delta, RenewableParams(distribution=distribution))
    market, forecast, keys, local = build_market(community, 5, indices, params)
    levels = uncertainty.global_levels(jnp.full(3, delta))
    low, high = uncertainty.sum_quantile(forecast, market.uncertain, levels, keys).T
    joint = reserve.solve_joint(market, low, high)
    assert bool(joint.converged.all())
    # Both aggregate requirements hold at the solution.
    p_nc = jnp.where(market.uncertain, joint.power, 0.0).sum(-1)
    assert np.all(np.asarray(joint.up.sum(-1) - (p_nc - low)) >= -1e-6)
    assert np.all(np.asarray(joint.down.sum(-1) - (high - p_nc)) >= -1e-6)
    cover = uncertainty.coverage(forecast, market.uncertain, joint.power, joint.up, joint.down,
                                 joint.up.sum(-1), joint.down.sum(-1), keys)
    n = uncertainty.COVERAGE_SAMPLES
    # Sampling error of the coverage plus that of the empirical quantiles (Beta).
    slack = _monte_carlo_error(delta, n) + _monte_carlo_error(0.025, uncertainty.SUM_SAMPLES)
    assert np.all(np.asarray(cover.global_) >= delta - slack)

    import dataclasses

    from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
    from jaxmarket.driver import DriverOptions, iterate
    algorithm = dataclasses.replace(ConsensusADMM(), local=reserve.ReserveUpdate()).static()
    solver = ADMMParams(*(jnp.full(3, v) for v in (1.0, 1e-5, 1e-5)))
    state = iterate(algorithm, market, solver, DriverOptions(max_iter=5000)).state
    up, down = reserve.reserve_totals(state.trades, state.local)
    u = market.uncertain
    rel_1 = uncertainty.coverage(forecast, u, state.local.power, up, down,
                                 jnp.where(u, up, 0.0).sum(-1), jnp.where(u, down, 0.0).sum(-1), keys)
    assert np.all(np.asarray(rel_1.global_) >= delta - _monte_carlo_error(delta, n))
    local_cov = np.asarray(rel_1.local)[np.asarray(u)]
    assert np.all(local_cov >= delta - _monte_carlo_error(delta, n))


@pytest.mark.parametrize("distribution", ["gaussian", "beta"])
def test_joint_reference_matches_clarabel(distribution):
    """``solve_joint`` against the joint market stated in cvxpy, on generated communities.
    Gaussian requirement quantiles are stated here from the moments of the sum (exact);
    Beta ones are the package's Monte Carlo quantiles (data of the problem, not its answer)."""
    indices = np.arange(3)
    delta = 0.95
    params = ReserveStudyParams("rel_1", delta, RenewableParams(distribution=distribution))
    market, forecast, keys, _ = build_market(generate(11, indices, 10), 11, indices, params)
    levels = uncertainty.global_levels(jnp.full(3, delta))
    low, high = uncertainty.sum_quantile(forecast, market.uncertain, levels, keys).T
    joint = reserve.solve_joint(market, low, high)
    assert bool(joint.converged.all())
    bands = np.asarray([low, high])
    if distribution == "gaussian":
        u = np.asarray(market.uncertain)
        mean = np.where(u, np.asarray(forecast.mean), 0.0).sum(-1)
        sd = np.sqrt(np.where(u, np.asarray(forecast.sd) ** 2, 0.0).sum(-1))
        bands = scipy.stats.norm.ppf([[1 - (1 + delta) / 2], [(1 + delta) / 2]], mean, sd)
        np.testing.assert_allclose(np.asarray([low, high]), bands, rtol=1e-14)  # seen 1.5e-16
    for k in range(3):
        expected = clarabel_joint(market, *bands[:, k], index=k)
        scale = np.abs(np.r_[expected["p"], expected["up"], expected["down"]]).max()
        # The upward requirement binds: the reserves are priced, not left at their bounds.
        u_k = np.asarray(market.uncertain[k])
        p_nc = expected["p"][u_k].sum()
        assert expected["up"].sum() - (p_nc - bands[0, k]) <= 1e-12 * scale  # seen 2.6e-16
        # Seen: cost 2.1e-12, price 1e-13 relative.
        cost = expected["objective"]
        assert abs(float(joint.cost[k]) - cost) <= 1e-10 * abs(cost)
        assert abs(float(joint.price[k]) - expected["price"]) <= 1e-11 * abs(expected["price"])
        # Unique where strictly convex (not the renewables' energy and spill). Powers and
        # upward reserves agree to 9e-13 of the largest; downward reserves to 9e-7 only: the
        # downward requirement is slack and a costly r-_n sits at 0 with a zero multiplier,
        # where both interior points stop about sqrt(mu) away (up to 5e-4 MW seen).
        for name, got, curvature, tol in (("p", joint.power, market.community.a, 1e-10),
                                          ("up", joint.up, market.up_a, 1e-10),
                                          ("down", joint.down, market.down_a, 1e-5)):
            strict = np.asarray(curvature[k]) > 0
            np.testing.assert_allclose(np.asarray(got[k])[strict], expected[name][strict],
                                       rtol=0, atol=tol * scale, err_msg=name)


def test_coverage_counts_samples_inside_the_band():
    """One Gaussian agent, band [p - r-, p + r+] around the forecast: coverage is the
    Gaussian probability of that band, within sampling error."""
    f = Forecast(*(jnp.asarray([[v]]) for v in (50.0, 10.0, 0.0, 100.0)), jnp.asarray([[False]]))
    u = jnp.asarray([[True]])
    p, up, down = (jnp.asarray([[v]]) for v in (55.0, 20.0, 5.0))
    cover = uncertainty.coverage(f, u, p, up, down, up[:, 0], down[:, 0], _keys(1))
    # p - p~ in [-r-, r+]  <=>  p~ in [p - r+, p + r-] = [35, 60]
    expected = scipy.stats.norm.cdf(60, 50, 10) - scipy.stats.norm.cdf(35, 50, 10)
    n = uncertainty.COVERAGE_SAMPLES
    assert abs(float(cover.local[0, 0]) - expected) <= _monte_carlo_error(expected, n)
    assert float(cover.global_[0]) == float(cover.local[0, 0])


def test_case_file_reserve_market():
    from jaxmarket.case import parse_case
    from jaxmarket.markets.reserve import case_market

    market, forecast, keys, local = case_market(parse_case(TINY_CASE, "tiny"))
    z = scipy.stats.norm.ppf(0.975)
    np.testing.assert_allclose(np.asarray(local[0]), [0, 0.95, 0], atol=1e-12)
    np.testing.assert_allclose(float(market.q_low[0, 1]), 30 - 10 * z, rtol=1e-12)
    np.testing.assert_allclose(float(market.q_high[0, 1]), 30 + 10 * z, rtol=1e-12)
    assert float(market.up_max[0, 0]) == 30 and float(market.down_a[0, 1]) == 0


@pytest.mark.parametrize("change, message", [
    (lambda d: d["reserve"].update(delta=1.0), "reserve.delta: must be < 1, got 1.0"),
    (lambda d: d["reserve"].update(delta=0), "reserve.delta: must be > 0"),
    (lambda d: d["agents"][1]["forecast"].update(sd=-1), "agents[1].forecast.sd: must be >= 0"),
    (lambda d: d["agents"][1].pop("forecast"),
     "agents[1].forecast: an uncertain agent needs a forecast"),
    (lambda d: d.pop("reserve"), "reserve: missing: the case's agents carry reserve data"),
])
def test_bad_reserve_input_is_one_line_exit_2(tmp_path, change, message):
    import copy
    import json

    from typer.testing import CliRunner

    from jaxmarket.cli import app

    doc = copy.deepcopy(TINY_CASE)
    change(doc)
    path = tmp_path / "case.json"
    path.write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["solve", str(path)])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_study_rejects_confidence_outside_unit_interval():
    from jaxmarket.study.config import resolve
    from jaxmarket.errors import InputError

    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(InputError, match="reserve.confidence"):
            resolve({"reserve": {"confidence": bad}}, "x")
    study = resolve({"reserve": {"confidence": [0.9, 0.99]}}, "x")
    assert [cell.reserve.delta for cell in study.cells] == [0.9, 0.99]
    assert resolve({}, "x").config_hash == resolve({"reserve": {}}, "x").config_hash


RESERVE_STUDY = """
[run]
name = "tiny_reserve"
cases_per_cell = 5
chunk_size = 3
[community]
n_agents = 8
[reserve]
allocation = ["rel_1", "abs_sigma"]
confidence = 0.95
uncertain_fraction = 0.25
[solver]
eps_primal = 1e-3
eps_dual = 1e-3
max_iter = 3000
"""


def test_reserve_study_through_the_sweep_and_the_report(tmp_path):
    """A [reserve] study on the sweep runner: both drivers give the same rows (a padded
    last chunk included), Gaussian Abs-sigma rows equal Rel-1 rows case by case, and the
    report writes its uncertainty section."""
    outs = {}
    for driver in ("continuous", "blocked"):
        (tmp_path / driver).mkdir()
        study = tiny_study(tmp_path / driver, text=RESERVE_STUDY)
        list(runner.run(planner.prepare(study), driver=driver))
        outs[driver] = study.out
    rows = read_rows(outs["continuous"])
    pd.testing.assert_frame_equal(rows, read_rows(outs["blocked"]), check_exact=True)
    assert len(rows) == 10 and rows.converged.all()
    assert rows.coverage_global.between(0, 1).all() and (rows.n_uncertain == 2).all()
    by_allocation = {name: group.set_index("case_index").sort_index()
                     for name, group in rows.groupby("allocation")}
    # Equal in exact arithmetic; the two allocations compute the reserve shares differently,
    # so a last bit may differ.
    np.testing.assert_allclose(by_allocation["rel_1"].cost, by_allocation["abs_sigma"].cost,
                               rtol=1e-13)
    result = invoke("report", outs["continuous"])
    assert result.exit_code == 0, result.output
    assert (outs["continuous"] / "report" / "uncertainty.csv").stat().st_size > 0


def test_reserves_figure_names_net_purchases_and_the_forecast_family():
    # Renewables sell a little downward reserve (a negative net purchase): the legend says
    # "net", so a bar below zero reads as a sale, not as a negative reserve.
    from jaxmarket.report import style
    from jaxmarket.report.uncertainty import RESERVES, reserves_figure
    table = pd.DataFrame({"allocation": ["rel_mu", "rel_1"], "confidence": 0.95, "distribution": "gaussian",
                          **{f"{name}_mean": 100.0 for name in RESERVES}})
    table["down_bought_renewable_mean"] = -5.0
    with style():
        fig = reserves_figure(table)
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "down bought by renewables (net)" in labels and "up bought by renewables (net)" in labels
    assert fig.axes[0].get_title() == "Gaussian forecasts"
