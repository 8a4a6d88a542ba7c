"""Shared fixtures. Test data live in ../shared/data next to the repository root."""

from pathlib import Path

import pytest

import jaxmarket  # noqa: F401  (enables float64 before any test builds arrays)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def new_england_path():
    return DATA / "new_england_31.json"


@pytest.fixture(scope="session")
def new_england(new_england_path):
    from jaxmarket.case import load_case

    return load_case(new_england_path).community
