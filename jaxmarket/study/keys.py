"""Every key of a study file, declared once: default, checker, unit and description.

The ``[community]`` keys are the generator's fields, the ``[reserve]`` keys the renewables'
fields and the ``[solver]`` keys the fields of every registered algorithm; the rest are
declared here. The study-file reference (``docs/study-file.md``) and the label columns'
Parquet metadata are rendered from these declarations.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from functools import partial
from typing import Any, NamedTuple

from jaxmarket.algorithms import check_algorithm, solver_schema
from jaxmarket.asynchrony import AsynchronyParams
from jaxmarket.charges import NETWORK_POLICIES, POLICIES
from jaxmarket.errors import InputError
from jaxmarket.generator import CHARGES, LAYOUTS, GeneratorParams, generate
from jaxmarket.markets.reserve import ReserveStudyParams
from jaxmarket.renewables import RenewableParams
from jaxmarket.schema import child, integer, number, show, text
from jaxmarket.study.cell import pair_suffixes
from jaxmarket.uncertainty import ALLOCATIONS

DTYPES = ("float64", "float32")
FEE_POLICIES = tuple(p for p in POLICIES if p != "none")  # the policies a fee table may name


def name_check(value, field):
    value = text(value, field)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise InputError(field, f"expected letters, digits, '.', '_' or '-', got {show(value)}")
    return value


def _range(value, field):
    """A ``[low, high]`` pair of numbers; order checks belong to GeneratorParams.validate."""
    if not isinstance(value, list) or len(value) != 2:
        raise InputError(field, f"expected [low, high], got {show(value)}")
    return tuple(number(v, child(field, k)) for k, v in enumerate(value))


class Key(NamedTuple):
    """A study key, declared once: default (None: filled in from the context), checker
    ``check(value, field) -> value``, unit and description (the label columns' metadata);
    ``pair``: its value is a pair (a range, an RCI sequence), two label columns."""
    default: Any
    check: Any
    unit: str
    description: str
    pair: bool = False


def _generator_schema() -> dict[str, Key]:
    """GeneratorParams fields: tuples are ranges, the charge family a name, the rest numbers."""
    def check(default):
        if isinstance(default, tuple):
            return _range
        return partial(text, choices=CHARGES) if isinstance(default, str) else number

    return {f.name: Key(f.default, check(f.default), f.metadata["unit"], f.metadata["description"],
                        isinstance(f.default, tuple))
            for f in dataclasses.fields(GeneratorParams)}


def _solver_schema() -> dict[str, Key]:
    return {"algorithm": Key("admm", check_algorithm, "n/a", "market algorithm (registry name)"),
            **{key: Key(f.default, f.metadata["check"], f.metadata["unit"], f.metadata["description"],
                        isinstance(f.default, tuple) or f.metadata["suffixes"] is not None)
               for key, f in solver_schema().items()}}


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def _flag(value, field):
    if not isinstance(value, bool):
        raise InputError(field, f"expected true or false, got {show(value)}")
    return value


def fee_check(value, field):
    """A fee u, or a table ``policy -> u`` for the policies that charge one (the fee of a
    cell is then its policy's: ``jaxmarket.study.config.fee_of_policy``)."""
    if not isinstance(value, dict):
        return number(value, field, ge=0)
    if not value:
        raise InputError(field, "empty fee table: give policy = fee pairs")
    for policy in value:
        if policy not in FEE_POLICIES:
            raise InputError(child(field, policy), f"not a policy that charges a fee (one of "
                                                   f"{', '.join(FEE_POLICIES)})")
    return {policy: number(fee, child(field, policy), ge=0) for policy, fee in value.items()}


# section -> key -> Key.
SCHEMA: dict[str, dict[str, Key]] = {
    "run": {
        "name": Key(None, name_check, "n/a", "study name (default: the file's stem)"),
        "seed": Key(0, partial(integer, ge=0), "n/a", "seed of every case's random stream"),
        "out": Key(None, text, "n/a", "output folder (default outputs/<name>)"),
        "chunk_size": Key(256, partial(integer, gt=0), "cases", "cases solved and written together"),
        "dtype": Key("float64", partial(text, choices=DTYPES), "n/a", "precision of the algorithm"),
        # Below 2^31: case k's stream is fold_in(PRNGKey(seed), k), a 32-bit index.
        "cases_per_cell": Key(100, partial(integer, gt=0, lt=2**31), "cases", "random cases of every cell"),
    },
    "community": {"n_agents": Key(25, partial(integer, ge=2), "count",
                                  "producers, consumers and prosumers per community"),
                  **_generator_schema()},
    "graph": {
        "layout": Key("full", partial(text, choices=LAYOUTS), "n/a",
                      "trade layout: full, bipartite, centralized or community"),
        "sparsity": Key(0.0, partial(number, ge=0, lt=1), "1",
                        "share of the layout's edges deleted at random"),
        "n_communities": Key(_default(generate, "n_communities"), partial(integer, ge=1), "count",
                             "communities (managers) of the community layout"),
        "charges_between_communities_only": Key(
            _default(generate, "charges_between_communities_only"), _flag, "n/a",
            "only trades between two communities pay the charge"),
    },
    "network": {
        "case": Key(None, text, "n/a", "case file with a grid: a packaged name or a path"),
        "policy": Key("none", partial(text, choices=NETWORK_POLICIES), "n/a",
                      "network charge policy: none, unique, distance_ptd, distance_thevenin, zonal "
                      "(exogenous, at the fee; adds to the case file's own charges), endogenous_dc "
                      "or endogenous_dc_decentralized (the system operator prices congestion in "
                      "the negotiation; the fee is ignored)"),
        "fee": Key(0.0, fee_check, "EUR/MWh",
                   "unit network fee u (per unit of the policy's distance); or a table "
                   "policy -> u, each swept policy at its own fee (e.g. {zonal = 17.0, "
                   "unique = 16.0}; none and the endogenous policies take 0)"),
        "cost_perturbation": Key(0.0, partial(number, ge=0, lt=1), "1",
                                 "relative perturbation of every agent's a and b (case k > 0)"),
    },
    # Energy and reserve market (jaxmarket.markets.reserve); absent: the plain P2P market.
    "reserve": {
        "allocation": Key(ReserveStudyParams.allocation, partial(text, choices=ALLOCATIONS), "n/a",
                          "allocation of the confidence level: rel_1, rel_mu, rel_sigma, abs_sigma"),
        # delta of the thesis ("delta" names the RCI sequence of [solver]).
        "confidence": Key(ReserveStudyParams.delta, partial(number, gt=0, lt=1), "1",
                          "global confidence level delta of the reserve requirement"),
        **{f.name: Key(f.default, f.metadata["check"], f.metadata["unit"], f.metadata["description"])
           for f in dataclasses.fields(RenewableParams) if "check" in f.metadata},
    },
    # Derived from the fields of every registered algorithm (jaxmarket.algorithms).
    "solver": _solver_schema(),
    # Asynchronous negotiation (jaxmarket.asynchrony); absent: none simulated.
    "asynchrony": {f.name: Key(f.default, f.metadata["check"], f.metadata["unit"],
                               f.metadata["description"])
                   for f in dataclasses.fields(AsynchronyParams)},
}
def label_units() -> dict[str, tuple[str, str]]:
    """Unit and description of every label column a key of a swept section can give (a
    pair-valued key gives two columns, ``_lo``/``_hi`` or ``_c``/``_p``)."""
    labels = {}
    for section in SWEPT_SECTIONS:
        for key, entry in SCHEMA[section].items():
            if entry.pair:
                for suffix, end in zip(pair_suffixes(f"{section}.{key}"), ("first", "second")):
                    labels[key + suffix] = (entry.unit, f"{entry.description} ({end} value)")
            else:
                labels[key] = (entry.unit, entry.description)
    return labels


# Keys whose value is a pair: a list of numbers is that pair, a list of lists a sweep.
RANGES = tuple(key for table in SCHEMA.values() for key, entry in table.items() if entry.pair)
SWEPT_SECTIONS = ("community", "graph", "network", "reserve", "solver", "asynchrony")



# Keys added after the first studies: left out of the resolved config unless given, so that
# the studies written before them keep their config hash (and can be resumed).
OPTIONAL_KEYS = {"community": ("charge", "charge_per_trade"),
                 "graph": ("n_communities", "charges_between_communities_only"),
                 "solver": tuple(key for key, f in solver_schema().items() if f.metadata["optional"])}


