"""The entry points a notebook needs (re-exported by ``jaxmarket``).

Importing jaxmarket changes no global JAX setting. Every entry point asked for float64
(the default) switches on JAX's 64-bit mode itself (``jax_enable_x64``, which JAX keeps
process-wide); with ``dtype="float32"`` nothing is switched.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd


def _precision(dtype: str) -> None:
    if dtype not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def generate(n_agents: int = 25, cases: Sequence[int] | range = range(1), seed: int = 0,
             layout: str = "full", sparsity: float = 0.0, dtype: str = "float64", **settings):
    """Random communities (one per case index, each a function of ``(seed, index)`` alone)
    as one batch (``jaxmarket.community.Community``). ``settings``: any field of
    ``jaxmarket.generator.GeneratorParams`` (e.g. ``charge_per_distance=1.0``) and the hub
    layouts' ``n_communities``, ``charges_between_communities_only``."""
    _precision(dtype)
    import jax.numpy as jnp

    from jaxmarket.generator import GeneratorParams, generate as draw

    fields = {f.name for f in dataclasses.fields(GeneratorParams)}
    graph = set(inspect.signature(draw).parameters) - {"seed", "case_indices", "n_agents",
                                                          "params", "dtype"}
    unknown = set(settings) - fields - graph
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    params = GeneratorParams(**{k: v for k, v in settings.items() if k in fields})
    params.validate()
    return draw(seed, list(cases), n_agents, params, layout=layout, sparsity=sparsity,
                dtype=jnp.dtype(dtype), **{k: v for k, v in settings.items() if k in graph})


def load_case(name_or_path):
    """A case file (``jaxmarket.case.CaseFile``: ``.community`` is its batch of one), given
    as the name of a packaged case (``jaxmarket cases``) or a path."""
    _precision("float64")
    from jaxmarket.case import load_case as load

    return load(name_or_path)


def algorithm(name: str = "admm", **hyperparameters):
    """The registered algorithm ``name`` with the given hyperparameters."""
    from jaxmarket import algorithms

    return algorithms.get(name)(**hyperparameters)


def solve(community, algorithm=None, driver: str = "continuous"):
    """Solve every case of a batch: a ``BatchResult`` (``.frame()``: one row per case;
    ``.trades``, ``.prices``). ``algorithm``: an algorithm object or a registered name
    (default: consensus ADMM with its defaults)."""
    import jax

    from jaxmarket import algorithms
    from jaxmarket.markets import solve as solve_market

    if community.dtype == jax.numpy.float64:
        _precision("float64")
    if algorithm is None or isinstance(algorithm, str):
        algorithm = algorithms.get(algorithm or "admm")()
    return solve_market(community, algorithm, driver)


def run_study(path, overrides: Iterable[str] = (), out=None, resume: bool = False,
              overwrite: bool = False, driver: str = "continuous") -> Path:
    """Run a study file (``overrides`` as ``section.key=value``) and return its dataset
    folder; the same as ``jaxmarket sweep``."""
    _precision("float64")
    from jaxmarket.study import plan, run
    from jaxmarket.study.config import load_study

    study = load_study(path, overrides, out)
    for _ in run.run(plan.prepare(study, resume=resume, overwrite=overwrite), driver):
        pass
    return study.out


def read_dataset(out, traces: bool = False) -> pd.DataFrame:
    """The rows of a dataset (``traces``: its residual traces), read through its manifest:
    only complete, listed parts, their columns merged (a column a part lacks is null
    there)."""
    from jaxmarket.study.store import read_parts

    return read_parts(Path(out), "traces" if traces else "cases")
