"""Shared fixtures. Test data are the package's own cases (``jaxmarket.cases``)."""

import os

import pytest
from hypothesis import settings

import jaxmarket  # noqa: F401  (enables float64 before any test builds arrays)
from jaxmarket.cases import locate

DATA = locate("new_england").parent  # the packaged cases

# CI replays the same examples on every run (a red build is then reproducible); local runs
# keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def new_england_path():
    return DATA / "new_england.json"


@pytest.fixture(scope="session")
def new_england(new_england_path):
    from jaxmarket.case import load_case

    return load_case(new_england_path).community
