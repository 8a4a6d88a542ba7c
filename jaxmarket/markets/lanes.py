"""How a batch is laid out on the device: driver blocks and lanes, and which cases run on
neighbour lists. Only speed depends on these choices, never a row (tested)."""

from __future__ import annotations

import jax
import numpy as np

from jaxmarket import neighbours
from jaxmarket.algorithms import Algorithm
from jaxmarket.community import Community
from jaxmarket.driver import DriverOptions
from jaxmarket.errors import InputError

# Trades per block on a CPU: measured best near 1e4 (N = 25: blocks of 10-25 cases ran
# 2-3x faster than one batch of 1000, bench/RESULTS.md); one batch is the GPU pattern.
CPU_TRADES_PER_BLOCK = 8_192
# Lanes per accelerator: enough trades to fill it (not yet measured on a GPU).
GPU_TRADES_PER_DEVICE = 2**22
DRIVERS = ("continuous", "blocked", "plain")
MIN_LANES = 8
CASES_PER_LANE = 16

# ADMM runs a case on neighbour lists when it has at least NEIGHBOUR_LIST_AGENTS agents and
# their width, its largest degree rounded up to a multiple of WIDTH_MULTIPLE (few compiled
# shapes), is at most NEIGHBOUR_LIST_SHARE of N: measured 1.3-3x faster per iteration there
# on a CPU (bench/RESULTS.md). Below, the dense kernel is about as fast and a batch split
# into one queue per layout loses more to draining lanes and compiling than it gains.
NEIGHBOUR_LIST_AGENTS = 50
NEIGHBOUR_LIST_SHARE = 0.5
WIDTH_MULTIPLE = 8


def check_driver(driver: str, field: str = "--driver") -> None:
    if driver not in DRIVERS:
        raise InputError(field, f"unknown driver {driver!r}; choose one of {list(DRIVERS)}")


def default_block_size(community: Community, width: int = 0) -> int:
    """Cases per driver block: cache-sized on a CPU, the whole batch elsewhere. ``width``:
    trade slots per agent on neighbour lists (0: the dense N)."""
    if jax.default_backend() != "cpu":
        return 0
    return max(1, CPU_TRADES_PER_BLOCK // (community.n_max * (width or community.n_max)))


def neighbour_widths(community: Community, algorithm: Algorithm) -> np.ndarray:
    """(B,) trade slots per agent of each case's kernel on neighbour lists
    (``jaxmarket.neighbours``), 0 for the dense (B, N, N) layout. A function of the case
    alone (its largest degree and N), so a row does not depend on the other cases of its
    batch: the width changes the last bits of the arithmetic."""
    if not algorithm.on_neighbour_lists() or community.n_max < NEIGHBOUR_LIST_AGENTS:
        return np.zeros(community.n_cases, int)
    width = -(-np.maximum(1, neighbours.degrees(community)) // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    return np.where(width <= NEIGHBOUR_LIST_SHARE * community.n_max, width, 0)


def driver_options(community: Community, algorithm: Algorithm, driver: str,
                   width: int = 0) -> DriverOptions:
    """The driver's settings: the blocked loop, or continuous batching on every local device
    the batch can keep busy, with enough cases queued per lane (``CASES_PER_LANE``) for the
    lanes to drain late, at most as many lanes as a block has cases (cache-sized on a CPU)
    and at least ``MIN_LANES``: XLA vectorises a loop over fewer than about 8 cases
    differently, which changes the last bits of a row (rows are bit-identical for every
    lane count from 8 on, and for every device count)."""
    check_driver(driver, "driver")
    n_cases = community.n_cases
    limits = (algorithm.max_iter, algorithm.check_every, algorithm.trace_every)
    if algorithm.steps:  # a direct solver: its steps, checked at the end, no trace
        limits = (algorithm.steps, algorithm.steps, 0)
    base = DriverOptions(*limits, block_size=default_block_size(community, width))
    if driver == "blocked":
        return base
    if driver == "plain":
        return base._replace(block_size=0)
    most = base.block_size or max(1, GPU_TRADES_PER_DEVICE // (community.n_max * (width or community.n_max)))
    devices = min(jax.local_device_count(), max(1, n_cases // MIN_LANES))
    per_device = -(-n_cases // devices)
    lanes = min(per_device, most, max(MIN_LANES, -(-per_device // CASES_PER_LANE)))
    return base._replace(lanes=lanes, devices=devices)
