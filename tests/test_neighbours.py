"""Neighbour lists (``jaxmarket.neighbours``): the slot structure, ADMM on them against the
dense kernel (to 1e-12), and the runner's per-case choice of layout."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cases import random_batch, random_case
from jaxmarket import neighbours
from jaxmarket.algorithms.admm import ADMMParams, ConsensusADMM
from jaxmarket.algorithms.rci import RCI
from jaxmarket.community import concatenate
from jaxmarket.driver import DriverOptions, iterate
from jaxmarket.markets import p2p
from jaxmarket.markets.lanes import NEIGHBOUR_LIST_AGENTS, NEIGHBOUR_LIST_SHARE, neighbour_widths


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 12),
       sparsity=st.sampled_from([0.0, 0.4, 0.8]), extra=st.integers(0, 3))
def test_slots_hold_the_graph_and_mirror_each_other(seed, n, sparsity, extra):
    case = random_case(np.random.default_rng(seed), n, sparsity=sparsity, charges=True)
    degree = int(neighbours.degrees(case)[0])
    lists = neighbours.neighbour_lists(case, min(n, degree + extra))
    partner, mirror = np.asarray(lists.partner[0]), np.asarray(lists.mirror[0])
    edges = np.asarray(lists.community.edges[0])
    width = partner.shape[1]
    agent, slot = np.nonzero(edges)
    # Every edge once per side, partners increasing; the mirror slot holds the reverse trade.
    np.testing.assert_array_equal(edges.sum(1), np.asarray(case.edges[0]).sum(1))
    assert all(np.all(np.diff(partner[a][edges[a]]) > 0) for a in range(n))
    back = mirror[agent, slot]
    np.testing.assert_array_equal(partner.reshape(-1)[back], agent)
    np.testing.assert_array_equal(mirror.reshape(-1)[back], agent * width + slot)
    # Padding slots point at themselves and hold nothing.
    pad_agent, pad_slot = np.nonzero(~edges)
    np.testing.assert_array_equal(mirror[pad_agent, pad_slot], pad_agent * width + pad_slot)
    for field in ("charge", "trade_min", "trade_max"):
        dense = neighbours.to_dense(lists.partner, getattr(lists.community, field))
        np.testing.assert_array_equal(np.asarray(dense), np.asarray(getattr(case, field)))


def test_admm_on_neighbour_lists_matches_the_dense_kernel():
    """Same iterations and flags, trades and prices within 1e-12 of their scale, with fixed
    and balanced rho, on mixed sizes, sparsity, charges and prosumers (some cases stop at
    max_iter)."""
    batch = random_batch(3, 12, sizes=(3, 30))
    params = ADMMParams(*(jnp.full(batch.n_cases, v) for v in (1.0, 1e-6, 1e-6)))
    options = DriverOptions(3000, 1, 10)
    width = int(neighbours.degrees(batch).max()) + 3
    lists = neighbours.neighbour_lists(batch, width)
    for algorithm in (ConsensusADMM().static(), ConsensusADMM(rho_balance=3.0).static()):
        dense = iterate(algorithm, batch, params, options)
        sparse = iterate(algorithm, lists, params, options)
        np.testing.assert_array_equal(np.asarray(sparse.iterations), np.asarray(dense.iterations))
        np.testing.assert_array_equal(np.asarray(sparse.converged), np.asarray(dense.converged))
        for field in ("trades", "prices"):
            want = np.asarray(getattr(dense.state, field))
            got = np.asarray(neighbours.to_dense(lists.partner, getattr(sparse.state, field)))
            scale = np.abs(want).max(axis=(1, 2), keepdims=True)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * float(scale.max()))
        np.testing.assert_allclose(np.asarray(sparse.trace.primal), np.asarray(dense.trace.primal),
                                   rtol=1e-9, atol=1e-12)


def test_each_case_gets_its_own_layout_and_the_same_row_in_any_batch():
    """The runner splits a batch by layout; a case's result is the same, bit for bit, in
    another batch with other cases, in another order (8 cases or more: fewer lanes change
    the last bits, ``lanes.driver_options``)."""
    rng = np.random.default_rng(7)
    n = NEIGHBOUR_LIST_AGENTS
    cases = [random_case(rng, n, sparsity=s, charges=True) for s in [0.0, 0.8, 0.9] * 4]
    options = ConsensusADMM(max_iter=2000, rho_balance=3.0)
    batch = concatenate(cases)
    widths = neighbour_widths(batch, options)
    assert len(set(widths)) >= 3 and 0 in widths
    assert all(w <= NEIGHBOUR_LIST_SHARE * n for w in widths)
    others = [random_case(rng, n, sparsity=0.9, charges=True) for _ in range(4)]
    first = p2p.run(batch, options)
    second = p2p.run(concatenate(others + cases[::-1]), options)
    for field in ("trades", "prices"):
        np.testing.assert_array_equal(np.asarray(getattr(second.state, field))[:3:-1],
                                      np.asarray(getattr(first.state, field)))
    np.testing.assert_array_equal(np.asarray(second.iterations)[:3:-1], np.asarray(first.iterations))
    assert not neighbour_widths(batch, RCI(max_iter=2000)).any()
    smaller = concatenate([random_case(rng, n - 1, sparsity=0.9) for _ in range(2)])
    assert not neighbour_widths(smaller, options).any()  # dense below NEIGHBOUR_LIST_AGENTS
