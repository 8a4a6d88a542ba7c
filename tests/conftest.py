"""Shared fixtures. Test data live in ../shared/data next to the repository root."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

import jaxmarket  # noqa: F401  (enables float64 before any test builds arrays)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# CI replays the same examples on every run (a red build is then reproducible); local runs
# keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def new_england_path():
    return DATA / "new_england_31.json"


@pytest.fixture(scope="session")
def new_england(new_england_path):
    from jaxmarket.case import load_case

    return load_case(new_england_path).community
