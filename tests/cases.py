"""Small random P2P cases for tests, built with NumPy independently of the package's
generator so that solver tests do not depend on it."""

from __future__ import annotations

import numpy as np

from jaxmarket.community import Community, concatenate, make_community


def random_case(rng: np.random.Generator, n: int, sparsity: float = 0.0,
                charges: bool = False, prosumers: bool = False) -> Community:
    """One case (batch of 1): producers, consumers and optionally prosumers with quadratic
    costs, a random symmetric graph with a fraction ``sparsity`` of pairs removed (at least
    one producer-consumer edge kept) and optional distance-based charges."""
    n_prod = max(1, n // 3)
    n_cons = max(1, n // 3)
    role = np.array(["p"] * n_prod + ["c"] * n_cons + ["x" if prosumers else "p"] * (n - n_prod - n_cons))
    if n - n_prod - n_cons > 0 and not prosumers:
        role[n_prod + n_cons:] = rng.choice(["p", "c"], size=n - n_prod - n_cons)
    rng.shuffle(role)
    cap = rng.uniform(20.0, 200.0, n)
    p_min = np.where(role == "p", 0.0, -cap)
    p_max = np.where(role == "c", 0.0, cap)
    p_max = np.where(role == "x", rng.uniform(0.2, 1.0, n) * cap, p_max)
    b = np.where(role == "p", rng.uniform(10, 40, n), rng.uniform(50, 90, n))
    b = np.where(role == "x", rng.uniform(30, 60, n), b)
    a = rng.uniform(10, 40, n) / cap
    if n >= 4:
        a[rng.integers(n)] = 0.0  # a linear agent exercises the a = 0 branch
    upper = np.triu(rng.uniform(size=(n, n)) >= sparsity, 1)
    i, j = np.flatnonzero(role != "c")[0], np.flatnonzero(role != "p")[0]
    upper[min(i, j), max(i, j)] = True
    edges = upper | upper.T
    np.fill_diagonal(edges, False)
    x, y = rng.uniform(size=(2, n))
    charge = None
    if charges:
        dist = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
        seller = (b[:, None] < b[None, :]) | ((b[:, None] == b[None, :]) & (np.arange(n)[:, None] < np.arange(n)))
        charge = np.where(seller, 1.0, -1.0) * rng.uniform(0.5, 5.0) * dist / 2
    return make_community(a[None], b[None], p_min[None], p_max[None], edges[None],
                          None if charge is None else charge[None], x[None], y[None])


def random_batch(seed: int, count: int, sizes=(3, 40), **kwargs) -> Community:
    """``count`` random cases of mixed sizes padded into one batch."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        n = int(rng.integers(sizes[0], sizes[1] + 1))
        options = dict(sparsity=float(rng.choice([0.0, 0.3, 0.6])), charges=bool(k % 2),
                       prosumers=bool(k % 3 == 0))
        options.update(kwargs)
        cases.append(random_case(rng, n, **options))
    return concatenate(cases)


def assert_padded_case_unchanged(alone, together, position: int, n: int):
    """Driver results of a case solved alone and at ``position`` of a batch padded to more
    agents: same iterations, same trades and prices, nothing on the padding."""
    assert int(together.iterations[position]) == int(alone.iterations[0])
    assert bool(together.converged[position]) == bool(alone.converged[0])
    for field in ("trades", "prices"):
        padded = np.asarray(getattr(together.state, field)[position])
        np.testing.assert_allclose(padded[:n, :n], np.asarray(getattr(alone.state, field)[0]),
                                   rtol=0, atol=1e-9)
        assert np.all(padded[n:] == 0) and np.all(padded[:, n:] == 0)
