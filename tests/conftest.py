"""Shared fixtures. Test data are the package's own cases (``jaxmarket.cases``)."""

import gc
import os

# Tests (and the commands they start) never touch the user's persistent compilation cache;
# JAXMARKET_TEST_CACHE names a folder of their own (CI: a fresh one per run), from which a
# program compiled again after a module released it is loaded instead.
TEST_CACHE = os.environ.get("JAXMARKET_TEST_CACHE")
if TEST_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = TEST_CACHE
else:
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from jaxmarket.cases import locate  # noqa: E402

# The tests build float64 arrays: 64-bit mode before any of them runs (importing jaxmarket
# changes no JAX setting).
jax.config.update("jax_enable_x64", True)
if TEST_CACHE:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

DATA = locate("new_england").parent  # the packaged cases

# CI replays the same examples on every run (a red build is then reproducible); local runs
# keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Free the programs a test module compiled once it is done: one process compiling the
    whole suite's programs kept thousands of executables (and their memory maps) alive and
    crashed inside XLA late in the run."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def new_england_path():
    return DATA / "new_england.json"


@pytest.fixture(scope="session")
def new_england(new_england_path):
    from jaxmarket.case import load_case

    return load_case(new_england_path).community
