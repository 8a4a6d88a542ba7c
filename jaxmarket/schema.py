"""Checkers for typed values read from user files (case JSON, study TOML).

Each checker takes a value and the field name used in messages, and returns the value
normalized (integers stay ``int``, numbers become ``float``) or raises a one-line
``InputError``. ``bool`` is never a number, and numbers must be finite.

Every real number of a case file, a study file or a solver flag is also a market quantity
in its declared unit (MW, EUR/MWh, EUR/MW^2h, 1, ...) and must be 0 or of a magnitude
within ``SMALLEST`` to ``LARGEST`` (``quantity``, ``magnitude``; docs/study-file.md,
"Magnitudes"). The Python API takes any finite number.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

from jaxmarket.errors import InputError

Checker = Callable[[Any, str], Any]

# The magnitudes of a market quantity in its unit. float64 carries 16 significant digits:
# beyond 1e12 of its unit a value leaves fewer than 4 of them to the unit-order terms it
# is summed with (bounds, prices, rho, tolerances of 1e-4), its squares and products with
# rho or a grow to 1e36 and more and, past about 1e150, overflow; a nonzero value below
# 1e-12 is lost against them (a curvature a of 1e-18 EUR/MW^2h moves an injection across
# 100 MW within one float of a price of 20 EUR/MWh). No market is 1e12 MW or 1e12 EUR/MWh,
# and the scaled cases the solvers are tested on (costs x 1e-9 to x 1e6, bounds x 1e9) fit.
SMALLEST, LARGEST = 1e-12, 1e12


def show(value) -> str:
    """A value as the user spelled it in JSON/TOML: "x", true, [1, 2], 0.5."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def child(parent: str, key) -> str:
    """Field name of ``key`` under ``parent``: ``agents[3].a``, ``solver.rho``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _describe(noun: str, gt, ge, lt) -> str:
    article = "an" if noun[0] in "aeiou" else "a"
    if lt is not None:
        low = f"[{ge}" if ge is not None else f"({gt}"
        return f"{article} {noun} in {low}, {lt})"
    if gt == 0:
        return f"a positive {noun}"
    if ge == 0:
        return f"a non-negative {noun}"
    bound = f" > {gt}" if gt is not None else f" >= {ge}" if ge is not None else ""
    return f"{article} {noun}{bound}"


def _check_range(value, field, gt, ge, lt):
    if gt is not None and not value > gt:
        raise InputError(field, f"must be > {gt}, got {show(value)}")
    if ge is not None and not value >= ge:
        raise InputError(field, f"must be >= {ge}, got {show(value)}")
    if lt is not None and not value < lt:
        raise InputError(field, f"must be < {lt}, got {show(value)}")
    return value


def number(value, field: str, *, gt=None, ge=None, lt=None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(field, f"expected {_describe('number', gt, ge, lt)}, got {show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(field, f"must be finite, got {value}")
    return _check_range(value, field, gt, ge, lt)


def magnitude(value, field: str):
    """``value`` (a checked number, or a pair, list or table of them) when every float in it
    is 0 or of a magnitude within ``SMALLEST`` to ``LARGEST``; integers (counts, ids,
    iterations) and text pass as they are."""
    if isinstance(value, float):
        if value != 0 and not SMALLEST <= abs(value) <= LARGEST:
            raise InputError(field, f"must be 0 or of magnitude 1e{math.log10(SMALLEST):.0f} to "
                                    f"1e{math.log10(LARGEST):.0f} (a market quantity in its unit), "
                                    f"got {show(value)}")
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            magnitude(v, child(field, k))
    elif isinstance(value, dict):
        for key, v in value.items():
            magnitude(v, child(field, key))
    return value


def quantity(value, field: str, *, gt=None, ge=None, lt=None) -> float:
    """A number read from a user file: finite, in range, and of a market's magnitude."""
    return magnitude(number(value, field, gt=gt, ge=ge, lt=lt), field)


def integer(value, field: str, *, gt=None, ge=None, lt=None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(field, f"expected {_describe('integer', gt, ge, lt)}, got {show(value)}")
    return _check_range(value, field, gt, ge, lt)


def text(value, field: str, *, choices=None) -> str:
    if choices is not None and value not in choices:
        options = ", ".join(show(c) for c in choices)
        raise InputError(field, f"expected one of {options}, got {show(value)}")
    if not isinstance(value, str) or not value:
        raise InputError(field, f"expected a non-empty string, got {show(value)}")
    return value


def array(value, field: str) -> list:
    if not isinstance(value, list):
        raise InputError(field, f"expected a list, got {show(value)}")
    return value


def record(value, field: str, schema: Mapping[str, Checker], required=(), what="an object") -> dict:
    """Check a mapping against ``schema`` (key -> checker); any other key is an error."""
    if not isinstance(value, dict):
        raise InputError(field or "top level", f"expected {what}, got {show(value)}")
    for key in value:
        if key not in schema:
            raise InputError(child(field, key), f"unknown key (expected one of: {', '.join(schema)})")
    for key in required:
        if key not in value:
            raise InputError(child(field, key), "missing")
    return {key: schema[key](v, child(field, key)) for key, v in value.items()}
