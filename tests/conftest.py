"""Shared fixtures. Test data are the package's own cases (``jaxmarket.cases``)."""

import ctypes
import gc
import os

# Tests (and the commands they start) never touch the user's persistent compilation cache.
# The suite is bound by XLA compilation, so it keeps a compilation cache of its own, shared
# by the workers of a run and kept for the next run: JAXMARKET_TEST_CACHE names its folder
# (default ~/.cache/jaxmarket/test-xla); set empty, the tests use no cache.
_cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
_test_cache = os.environ.get("JAXMARKET_TEST_CACHE",
                             os.path.join(_cache_home, "jaxmarket", "test-xla"))
if _test_cache:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _test_cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    # By default JAX also points XLA's GPU autotuning cache into the cache folder, and that
    # path enters every program's key: a cache moved or copied elsewhere would never hit.
    os.environ["JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES"] = "none"
else:
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

from jaxmarket.cases import locate  # noqa: E402

# The tests build float64 arrays: 64-bit mode before any of them runs (importing jaxmarket
# changes no JAX setting).
jax.config.update("jax_enable_x64", True)
# One CPU device per worker, fixed before any computation: otherwise an in-process sweep
# that happens to run first splits the CPU (`use_cpu_devices`), and every program of that
# worker compiles for another device assignment (new cache keys). Several devices are
# tested in their own processes.
jax.config.update("jax_num_cpu_devices", 1)
jax.devices()

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
    _release_memory()


@pytest.fixture
def released_memory():
    """For a test that starts several JAX processes at once: the worker releases its
    programs and free heap first (the two processes of a distributed run and the worker
    that waits for them were the suite's peak of memory)."""
    _release_memory()


def _release_memory():
    """Drop the compiled programs and hand the freed heap back to the system (glibc keeps
    it otherwise): a worker's resident memory then stays that of its current module."""
    jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


@pytest.fixture(scope="session")
def new_england_path():
    return DATA / "new_england.json"


@pytest.fixture(scope="session")
def new_england(new_england_path):
    from jaxmarket.case import load_case

    return load_case(new_england_path).community
