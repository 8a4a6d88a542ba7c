"""The algorithms and their registry: a name maps to the module and class that implement it.

Adding an algorithm is one module in this package plus one line in ``REGISTRY``
(docs/adding-an-algorithm.md). Modules are imported on first use, so listing the names
costs nothing. The study schema's ``[solver]`` section is derived here from the fields of
every registered class (``solver_schema``).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from jaxmarket.algorithms.base import Algorithm
from jaxmarket.errors import InputError
from jaxmarket.schema import text

REGISTRY = {  # name -> "module:Class" in this package
    "admm": "admm:ConsensusADMM",
    "admm_relaxed": "admm_relaxed:RelaxedADMM",
    "admm_fast": "admm_fast:FastADMM",
    "admm_anderson": "admm_anderson:AndersonADMM",
    "admm_pairwise": "admm_pairwise:PairwiseADMM",
    "rci": "rci:RCI",
    "pcmbed": "rci:PCMBED",
    "ced": "ced:CED",
    "ced_mean": "ced:CEDMean",
    "exact": "exact:Exact",
    "endogenous_dc": "endogenous:EndogenousADMM",
    "endogenous_dc_decentralized": "endogenous:DecentralizedEndogenousADMM",
}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


@cache
def get(name: str) -> type[Algorithm]:
    """The class registered as ``name``."""
    if name not in REGISTRY:
        raise InputError("solver.algorithm", f"unknown algorithm {name!r}; choose one of "
                                             f"{', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    found = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
    assert found.name == name, f"{REGISTRY[name]} is registered as {name!r} but named {found.name!r}"
    return found


def build(values: dict[str, Any]) -> Algorithm:
    """The algorithm ``values["algorithm"]`` with the values of its own fields (keys of other
    algorithms are ignored: a study sweeping algorithms gives the union)."""
    cls = get(values.get("algorithm", "admm"))
    return cls(**{f.name: values[f.name] for f in cls.declarations() if f.name in values})


@cache
def solver_schema() -> dict[str, Any]:
    """The ``[solver]`` section: key -> field declaration, ``algorithm`` first, then the
    fields of every registered class in registry order (each key once; a key shared by
    several algorithms is declared once, in the base class or a shared helper)."""
    schema: dict[str, Any] = {}
    for name in REGISTRY:
        for field in get(name).declarations():
            schema.setdefault(field.name, field)
    return schema


def __getattr__(name: str):
    """Every registered class by its class name (``algorithms.ConsensusADMM``), imported on
    first use."""
    for key, target in REGISTRY.items():
        if target.split(":")[1] == name:
            return get(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def check_algorithm(value, field):
    return text(value, field, choices=names())


__all__ = ["Algorithm", "REGISTRY", "build", "get", "names", "solver_schema"]
