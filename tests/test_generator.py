"""Random communities: reproducibility, the distribution's invariants, nested sparsity.

Compilation dominates the runtime, so the tests share a few shapes: batches of
``CASES`` cases of ``N`` agents, plus a handful of single-purpose shapes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxmarket.errors import InputError
from jaxmarket.agents import cap_shares, seller_side
from jaxmarket.generator import GeneratorParams, generate
from jaxmarket.layouts import delete_edges

jitted_cap_shares = jax.jit(cap_shares)  # one compilation for all examples

N = 12
CASES = range(10)
RICH = GeneratorParams(prosumer_fraction=0.25, charge_per_distance=4.0, dirichlet_alpha=0.7)
AGENT_FIELDS = ("a", "b", "p_min", "p_max", "x", "y")


def as_numpy(community):
    return {f: np.asarray(v) for f, v in community._asdict().items()}


def undirected_edges(edges):
    return np.triu(edges, 1).sum(axis=(-2, -1))


def expected_deleted(sparsity, n_edges):
    return np.floor(sparsity * n_edges + 0.5).astype(int)


def layout_graph(layout, p_min, p_max):
    n = p_min.shape[-1]
    if layout == "full":
        return np.broadcast_to(~np.eye(n, dtype=bool), p_min.shape + (n,))
    sells, buys = p_max > 0, p_min < 0
    return (sells[..., :, None] & buys[..., None, :]) | (buys[..., :, None] & sells[..., None, :])


def roles(p_min, p_max):
    """0 producer, 1 prosumer, 2 consumer, from the bounds alone."""
    return np.where(p_min >= 0, 0, np.where(p_max <= 0, 2, 1))


# --- reproducibility ---------------------------------------------------------------------

def test_case_depends_only_on_seed_and_index():
    # 300 agents: at this size XLA's CPU backend picks other reduction kernels for other
    # batch shapes, which a case must not feel; the batch spans two of the generator's blocks.
    from jaxmarket.generator import GENERATE_CASES

    args = (300, RICH, "bipartite", 0.3)
    batch = as_numpy(generate(3, range(GENERATE_CASES + 8), *args))
    alone = as_numpy(generate(3, [7], *args))
    pair = as_numpy(generate(3, [GENERATE_CASES + 3, 7], *args))
    for field, values in batch.items():
        assert np.array_equal(values[7], alone[field][0]), field
        assert np.array_equal(values[7], pair[field][1]), field
        assert np.array_equal(values[GENERATE_CASES + 3], pair[field][0]), field


@pytest.mark.parametrize("layout", ["centralized", "community", "full"])
def test_layout_case_depends_only_on_seed_and_index(layout):
    # Hub layouts (managers, communities, oriented manager trades) and charges restricted
    # to trades between communities keep every case a function of (seed, index).
    args = (N, RICH, layout, 0.3, 3, True)
    batch = as_numpy(generate(3, CASES, *args))
    alone = as_numpy(generate(3, [7], *args))
    for field, values in batch.items():
        assert np.array_equal(values[7], alone[field][0]), field


def test_restricting_charges_changes_only_charges():
    plain = as_numpy(generate(8, CASES, N, RICH, "full", 0.2))
    between = as_numpy(generate(8, CASES, N, RICH, "full", 0.2, 3, True))
    for field, values in plain.items():
        if field != "charge":
            assert np.array_equal(values, between[field]), field
    kept = between["charge"] != 0
    assert kept.any() and (between["charge"][kept] == plain["charge"][kept]).all()
    assert (plain["charge"][~kept & plain["edges"]] != 0).any()


def test_uniform_charges_change_only_charges():
    # Same agents and graph; every trade pays u/2 per side, the seller side +u/2 (SPEC 1).
    uniform = GeneratorParams(prosumer_fraction=0.25, dirichlet_alpha=0.7, charge="uniform",
                              charge_per_trade=3.0)
    plain = as_numpy(generate(8, CASES, N, RICH, "full", 0.2))
    flat = as_numpy(generate(8, CASES, N, uniform, "full", 0.2))
    for field, values in plain.items():
        if field != "charge":
            assert np.array_equal(values, flat[field]), field
    edges = flat["edges"]
    assert (np.abs(flat["charge"][edges]) == 1.5).all() and (flat["charge"][~edges] == 0).all()
    assert (np.sign(flat["charge"]) == np.sign(plain["charge"])).all()


def test_uniform_charges_on_the_community_layout_are_paid_in_the_trade_direction():
    # Managers' trades are oriented (module doc): gamma_nm p_nm >= 0 on every trade box.
    params = GeneratorParams(charge="uniform", charge_per_trade=2.0)
    c = as_numpy(generate(4, CASES, N, params, "community", 0.0))
    edges = c["edges"]
    assert (np.abs(c["charge"][edges]) == 1.0).all() and (c["charge"][~edges] == 0).all()
    assert (c["charge"] * c["trade_min"] >= 0).all() and (c["charge"] * c["trade_max"] >= 0).all()


# Digests of communities drawn before the uniform family existed (x86-64 CPU, float64):
# adding a charge family must leave every distance-charge community bit for bit as it was.
DISTANCE_DIGESTS = {
    (("layout", "full"), ("sparsity", 0.3)): "91799e969a3f7249",
    (("layout", "community"), ("n_communities", 2)): "67b8eb5381079830",
    (("layout", "full"), ("charges_between_communities_only", True)): "7c99ed044ee21936",
    (("layout", "centralized"),): "cefcf723e3d2b824",
}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="digests taken on the CPU backend")
@pytest.mark.parametrize("settings", DISTANCE_DIGESTS, ids=lambda s: "-".join(str(v) for _, v in s))
def test_distance_charges_are_bit_identical_to_before_the_uniform_family(settings):
    import hashlib

    jax.config.update("jax_enable_x64", True)  # the digests are of float64 draws
    community = generate(3, [0, 5, 17], 7, GeneratorParams(charge_per_distance=1.5,
                                                           prosumer_fraction=0.2), **dict(settings))
    digest = hashlib.sha256()
    for value in community:
        digest.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    assert digest.hexdigest()[:16] == DISTANCE_DIGESTS[settings]


def test_cases_and_seeds_differ():
    first = as_numpy(generate(3, CASES, N, RICH))
    other_seed = as_numpy(generate(4, CASES, N, RICH))
    assert not np.array_equal(first["b"][0], first["b"][1])
    assert not np.array_equal(first["b"], other_seed["b"])


def test_agents_do_not_depend_on_layout_or_sparsity():
    full = as_numpy(generate(5, CASES, N, RICH, "full", 0.0))
    for layout, sparsity in [("bipartite", 0.0), ("full", 0.4), ("bipartite", 0.7)]:
        other = as_numpy(generate(5, CASES, N, RICH, layout, sparsity))
        for field in AGENT_FIELDS:
            assert np.array_equal(full[field], other[field]), (layout, sparsity, field)


def test_parameter_values_and_batch_sizes_reuse_the_compiled_function():
    from jaxmarket.generator import GENERATE_CASES, _generate

    generate(1, CASES, N, GeneratorParams(), "full", 0.2)
    compiled = _generate._cache_size()
    generate(2, CASES, N, RICH, "full", 0.6)
    generate(2, range(2 * GENERATE_CASES + 1), N, RICH, "full", 0.6)
    assert _generate._cache_size() == compiled


# --- the distribution's invariants --------------------------------------------------------

def check_roles(c, n, params):
    role = roles(c["p_min"], c["p_max"])
    side = math.ceil(n / 3)
    prosumers = min(math.floor(params.prosumer_fraction * n + 0.5), n - 2 * side)
    assert ((role == 0).sum(-1) >= side).all()
    assert ((role == 2).sum(-1) >= side).all()
    assert ((role == 1).sum(-1) == prosumers).all()
    # Exact zero bounds, no -0.0: producers may sell only, consumers buy only.
    assert not np.signbit(c["p_min"][role == 0]).any()
    assert (c["p_max"][role == 2] == 0).all()
    return role


def check_capacity(c, n, params):
    total = params.capacity_per_agent * n
    np.testing.assert_allclose(c["p_max"].sum(-1), total, rtol=1e-12)
    np.testing.assert_allclose(-c["p_min"].sum(-1), total, rtol=1e-12)
    cap = params.max_share * total * (1 + 1e-12)
    assert (c["p_max"] <= cap).all() and (-c["p_min"] <= cap).all()
    assert (c["p_max"] - c["p_min"] > 0).all()


def check_costs(c, role, params):
    spread = c["a"] * (c["p_max"] - c["p_min"])
    assert (c["a"] > 0).all()
    low, high = params.marginal_spread
    assert (spread >= low * (1 - 1e-12)).all() and (spread <= high * (1 + 1e-12)).all()
    for code, (low, high) in enumerate([params.producer_b, params.prosumer_b, params.consumer_b]):
        b = c["b"][role == code]
        assert ((b >= low) & (b <= high)).all(), code
    for coordinate in ("x", "y"):
        assert ((c[coordinate] >= 0) & (c[coordinate] < 1)).all()


def check_graph(c, layout, sparsity):
    edges = c["edges"]
    assert (edges == np.swapaxes(edges, -1, -2)).all()
    assert not np.diagonal(edges, axis1=-2, axis2=-1).any()
    possible = layout_graph(layout, c["p_min"], c["p_max"])
    assert not (edges & ~possible).any()
    n_layout = undirected_edges(possible)
    assert (n_layout - undirected_edges(edges) == expected_deleted(sparsity, n_layout)).all()


def check_charges_and_trades(c, role, params):
    edges, charge = c["edges"], c["charge"]
    n = role.shape[-1]
    distance = np.hypot(c["x"][..., :, None] - c["x"][..., None, :],
                        c["y"][..., :, None] - c["y"][..., None, :])
    # Seller side, computed independently: (role, b, index) compared as tuples.
    seller = np.array([[[(r[i], b[i], i) < (r[j], b[j], j) for j in range(n)] for i in range(n)]
                       for r, b in zip(role, c["b"])])
    if params.charge == "uniform":  # the same fee on every trade, whatever the distance
        expected = np.where(seller, 1.0, -1.0) * params.charge_per_trade / 2
    else:
        expected = np.where(seller, 1.0, -1.0) * params.charge_per_distance * distance / 2
    np.testing.assert_allclose(charge, np.where(edges, expected, 0.0), rtol=1e-12, atol=0)
    assert (charge == -np.swapaxes(charge, -1, -2)).all()
    lo = np.where(role == 0, 0.0, c["p_min"])[..., :, None]
    hi = np.where(role == 2, 0.0, c["p_max"])[..., :, None]
    np.testing.assert_array_equal(c["trade_min"], np.where(edges, lo, 0.0))
    np.testing.assert_array_equal(c["trade_max"], np.where(edges, hi, 0.0))
    # gamma_nm * p_nm >= 0 over the whole trade box of a producer or consumer n trading
    # with another role (between equals only p_nm = 0 is feasible).
    fixed = (role != 1)[..., :, None] & (role[..., :, None] != role[..., None, :]) & edges
    assert (charge * c["trade_min"] >= 0)[fixed].all()
    assert (charge * c["trade_max"] >= 0)[fixed].all()


def check_all(c, n, params, layout, sparsity):
    c = as_numpy(c)
    assert c["active"].all()
    role = check_roles(c, n, params)
    check_capacity(c, n, params)
    check_costs(c, role, params)
    check_graph(c, layout, sparsity)
    check_charges_and_trades(c, role, params)


def price_range(low, high):
    return st.tuples(st.floats(low, high), st.floats(0, 30)).map(lambda t: (t[0], t[0] + t[1]))


params_strategy = st.builds(
    GeneratorParams,
    capacity_per_agent=st.floats(0.5, 1e4),
    max_share=st.floats(0.25, 1.0),
    dirichlet_alpha=st.floats(0.1, 20.0),
    producer_b=price_range(-10, 40),
    consumer_b=price_range(40, 100),
    prosumer_b=price_range(20, 60),
    marginal_spread=price_range(0.1, 50),
    prosumer_fraction=st.floats(0, 1 / 3),
    # Not subnormal: XLA flushes those to zero.
    charge_per_distance=st.one_of(st.just(0.0), st.floats(1e-6, 20)),
    charge=st.sampled_from(["distance", "uniform"]),
    charge_per_trade=st.one_of(st.just(0.0), st.floats(1e-6, 20)),
)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), params=params_strategy,
       layout=st.sampled_from(["full", "bipartite"]),
       sparsity=st.one_of(st.just(0.0), st.floats(0, 0.99)))
def test_invariants(seed, params, layout, sparsity):
    check_all(generate(seed, CASES, N, params, layout, sparsity), N, params, layout, sparsity)


def test_tight_small_community():
    # N = 5: round(5/3) = 2 prosumers are capped at the one agent left beyond 2 + 2.
    params = GeneratorParams(prosumer_fraction=1 / 3, charge_per_distance=1.0)
    check_all(generate(0, CASES, 5, params), 5, params, "full", 0.0)
    # Without prosumers one side has two members, and max_share 0.5 is just feasible:
    # both hold half of the side's 500.
    params = GeneratorParams()
    community = generate(0, CASES, 5, params)
    check_all(community, 5, params, "full", 0.0)
    for capacity in (np.asarray(community.p_max), -np.asarray(community.p_min)):
        pairs = capacity[(capacity > 0).sum(-1) == 2]
        assert len(pairs) > 0
        np.testing.assert_allclose(pairs[pairs > 0], 250.0, rtol=1e-14)


# --- sparsity ----------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["full", "bipartite"])
def test_sparser_graphs_are_nested(layout):
    levels = [0.0, 0.05, 0.1, 0.5, 0.95]
    graphs = [as_numpy(generate(9, CASES, N, RICH, layout, s))["edges"] for s in levels]
    n_layout = undirected_edges(graphs[0])
    for (s, denser), sparser in zip(zip(levels, graphs), graphs[1:]):
        assert not (sparser & ~denser).any(), s
    for s, graph in zip(levels, graphs):
        assert (n_layout - undirected_edges(graph) == expected_deleted(s, n_layout)).all()
    assert (graphs[-1].sum(-1) == 0).any()  # isolated agents are allowed


def test_deleted_pairs_are_uniform():
    # 400 cases at s = 0.5: every pair deleted about half the time (sd 0.025), which a
    # deterministic choice (lowest index, same pairs in every case) would not give.
    deleted = np.mean([~as_numpy(generate(seed, CASES, N, RICH, "full", 0.5))["edges"]
                       for seed in range(40)], axis=(0, 1))
    upper = deleted[np.triu_indices(N, 1)]
    assert np.abs(upper - 0.5).max() < 0.15


def test_delete_edges_removes_the_lowest_scores():
    edges = ~np.eye(5, dtype=bool)  # 10 pairs in np.triu_indices(5, 1) order
    scores = jnp.array([9, 0, 7, 3, 8, 1, 6, 2, 5, 4], jnp.uint64)
    delete = jax.jit(delete_edges)
    kept = np.asarray(delete(edges, scores, 0.25))  # 2.5 edges: half up, 3
    removed = {(i, j) for i, j in zip(*np.nonzero(edges & ~kept)) if i < j}
    assert removed == {(0, 2), (1, 3), (2, 3)}  # scores 0, 1, 2
    np.testing.assert_array_equal(np.asarray(delete(edges, scores, 0.0)), edges)
    assert not np.asarray(delete(edges, scores, 0.99)).any()


# --- building blocks ---------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.floats(1e-3, 1e3), min_size=8, max_size=8),
       members=st.integers(2, 8), data=st.data())
def test_cap_shares_is_water_filling(weights, members, data):
    w = np.array(weights) * (np.arange(8) < members)
    max_share = data.draw(st.floats(1 / members, 1.0))
    shares = np.asarray(jitted_cap_shares(jnp.asarray(w / w.sum()), max_share))
    assert shares.sum() == pytest.approx(1, rel=1e-12)
    assert (shares <= max_share).all()
    assert (shares[members:] == 0).all()
    # min(max_share, lam * w): the uncapped shares keep their proportions, and every
    # capped weight is at least as large as every uncapped one.
    free = (shares < max_share) & (w > 0)
    if free.any():
        ratio = shares[free] / w[free]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
        assert (w[shares == max_share].min(initial=np.inf) >= w[free].max() * (1 - 1e-12))


def test_seller_side_follows_role_then_b_then_index():
    # producer, consumer, prosumer, prosumer (cheaper), prosumer (same b as agent 3)
    role = jnp.array([0, 2, 1, 1, 1])
    b = jnp.array([50.0, 10.0, 40.0, 30.0, 30.0])
    first = np.asarray(jax.jit(seller_side)(role, b))
    expected_sellers = {(0, 1), (0, 2), (0, 3), (0, 4), (2, 1), (3, 1), (4, 1), (3, 2), (4, 2),
                        (3, 4)}
    sellers = {(i, j) for i, j in zip(*np.nonzero(first))}
    assert sellers == expected_sellers


# --- input validation --------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("capacity_per_agent", 0.0), ("capacity_per_agent", -5.0), ("capacity_per_agent", math.nan),
    ("max_share", 0.0), ("max_share", 1.5), ("max_share", math.nan),
    ("dirichlet_alpha", 0.0), ("dirichlet_alpha", -1.0), ("dirichlet_alpha", 0.05),
    ("producer_b", (40.0, 15.0)), ("producer_b", (math.nan, 1.0)), ("consumer_b", (60.0,)),
    ("prosumer_b", "cheap"), ("marginal_spread", (0.0, 10.0)), ("marginal_spread", (50.0, 20.0)),
    ("prosumer_fraction", 0.5), ("prosumer_fraction", -0.1),
    ("charge_per_distance", -1.0), ("charge_per_distance", math.inf), ("max_share", True),
    ("charge_per_trade", -1.0), ("charge_per_trade", math.nan), ("charge", "flat"),
])
def test_bad_params_name_the_field(field, value):
    params = GeneratorParams(**{field: value})
    with pytest.raises(InputError) as error:
        params.validate()
    assert error.value.field == f"community.{field}"
    with pytest.raises(InputError, match=f"community.{field}"):
        generate(0, CASES, N, params)


@pytest.mark.parametrize("kwargs, field", [
    (dict(layout="ring"), "graph.layout"),
    (dict(sparsity=1.0), "graph.sparsity"),
    (dict(sparsity=-0.1), "graph.sparsity"),
    (dict(sparsity=math.nan), "graph.sparsity"),
    (dict(sparsity="0.1"), "graph.sparsity"),
    (dict(n_agents=1), "community.n_agents"),
    (dict(n_agents=12.0), "community.n_agents"),
    (dict(n_agents=3), "community.max_share"),  # 0.5 x 1 producer cannot hold everything
    (dict(case_indices=[]), "community.case_indices"),
    (dict(case_indices=[-1]), "community.case_indices"),
    (dict(case_indices=[2**32]), "community.case_indices"),
    (dict(case_indices=[0.5]), "community.case_indices"),
    (dict(seed=-1), "community.seed"),
    (dict(dtype=jnp.int32), "community.dtype"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    arguments = dict(seed=0, case_indices=CASES, n_agents=N) | kwargs
    with pytest.raises(InputError) as error:
        generate(**arguments)
    assert error.value.field == field
