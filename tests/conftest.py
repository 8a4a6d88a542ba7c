"""Shared fixtures. Test data are the package's own cases (``jaxmarket.cases``)."""

import os

import pytest
from hypothesis import settings

import jax
import jaxmarket  # noqa: F401

# float64 before any test builds arrays (importing jaxmarket changes no global setting).
jax.config.update("jax_enable_x64", True)
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
