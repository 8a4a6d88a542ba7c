"""Market kinds: each builds its batch, runs an algorithm on the driver and tabulates rows.

``p2p`` (bilateral trades, T3.9), ``pool`` (community-based dispatch, T3.1, cleared by
community ADMM) and ``reserve`` (energy and reserve, T ch. 5). The market of a run
follows from the algorithm (a pool algorithm clears the pool) and from the study (a
``[reserve]`` section). Every kind's columns are declared in ``columns``.
"""

from __future__ import annotations

from jaxmarket.algorithms import Algorithm
from jaxmarket.community import Community
from jaxmarket.errors import InputError
from jaxmarket.congestion import LineLimits
from jaxmarket.markets import endogenous, p2p, pool
from jaxmarket.markets.rows import BatchResult, tabulate_in_blocks


def kind(algorithm: Algorithm, reserve: bool = False) -> str:
    """The market an algorithm clears: ``reserve`` in an energy and reserve study, else
    ``pool`` for a pool algorithm and ``p2p`` for one with trades."""
    if reserve:
        return "reserve"
    return "pool" if "pool" in algorithm.markets else "p2p"


def solve(community: Community, algorithm: Algorithm, driver: str = "continuous",
          limits: LineLimits | None = None) -> BatchResult:
    """Run ``algorithm`` on every case of the batch and tabulate one row per case (the P2P
    market, or the pool market for a pool algorithm); an endogenous-charge algorithm
    (``markets = {"endogenous"}``) needs the grid's line ``limits``."""
    if "endogenous" in algorithm.markets:
        if limits is None:
            raise InputError("solver.algorithm", f"{algorithm.name} needs a case with a grid "
                                                 f"(network policy {algorithm.name})")
        return endogenous.tabulate(community, limits, algorithm,
                                   endogenous.run(community, limits, algorithm, driver))
    if not algorithm.markets & {"p2p", "pool"}:
        raise InputError("solver.algorithm", f"{algorithm.name} does not clear a P2P or pool market")
    market = pool if kind(algorithm) == "pool" else p2p
    result = market.run(community, algorithm, driver)
    return tabulate_in_blocks(lambda block: market.tabulate(block[0], algorithm, block[1]),
                              (community, result), community.n_cases)
