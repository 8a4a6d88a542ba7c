"""What a study needs before it runs: its chunk count and the memory of its largest queue,
checked when the study is resolved (``jaxmarket validate`` and ``sweep`` refuse a study that
cannot fit, with the estimate, before anything is generated, compiled or written)."""

from __future__ import annotations

import os

import jax

from jaxmarket.errors import InputError

# The manifest lists every chunk and is rewritten after each one: beyond this many chunks
# its size and rewrite time dominate (raise run.chunk_size instead).
MAX_CHUNKS = 100_000
# N x N float64 arrays per case held while a queue is solved: the case (trade bounds, costs,
# charges: 3), the solver's trades and prices (2), an iteration's temporaries and the
# result (about 3). An estimate, to refuse a study that cannot fit before it starts.
ARRAYS_PER_CASE = 8


def queue_cases(n_agents: int) -> int:
    """Cases a group may hold: about 2^20 trades on a CPU (some 100 MB of communities,
    results and traces at N = 25, 1677 cases), 2^26 on an accelerator (16 queues of lanes)."""
    trades = 2**20 if jax.default_backend() == "cpu" else 2**26
    return max(1, trades // n_agents**2)


def check_resources(n_cells: int, n_agents: int, cases_per_cell: int, chunk_size: int) -> dict:
    """Refuse a study whose chunk list or largest queue (``n_agents``: the largest agent
    count of its cells) cannot fit; returns the estimates (``chunks``, ``queue_cases``,
    ``queue_bytes``, ``memory_bytes``)."""
    size = min(chunk_size, cases_per_cell)
    count = n_cells * -(-cases_per_cell // size)
    if count > MAX_CHUNKS:
        raise InputError("run.cases_per_cell", f"{n_cells} cells x {cases_per_cell} cases in chunks "
                                               f"of {size} make {count:.3g} chunks, more than "
                                               f"{MAX_CHUNKS}; raise run.chunk_size or lower "
                                               f"run.cases_per_cell")
    queue = max(size, queue_cases(n_agents) // size * size)
    need, have = queue * n_agents**2 * 8 * ARRAYS_PER_CASE, memory_bytes()
    if need > have:
        raise InputError("community.n_agents", f"a queue of {queue} cases of {n_agents} agents needs "
                                               f"about {need / 2**30:.3g} GiB, this "
                                               f"{jax.default_backend()} has {have / 2**30:.3g} GiB; "
                                               f"lower run.chunk_size or the agent count")
    return {"chunks": count, "queue_cases": queue, "queue_bytes": need, "memory_bytes": have}


def memory_bytes() -> int:
    """Memory of the first device: an accelerator's allocator limit, else the host's RAM."""
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
