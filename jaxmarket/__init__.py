"""jaxmarket: batched Monte Carlo studies of peer-to-peer electricity markets in JAX.

    import jaxmarket as jm
    community = jm.generate(n_agents=25, cases=range(100), seed=0, sparsity=0.5)
    result = jm.solve(community, jm.algorithms.ConsensusADMM(rho=1.0))
    rows = result.frame()

Importing the package imports no JAX and changes no JAX setting (``jaxmarket.api``).
"""

from jaxmarket.version import __version__

_API = ("generate", "load_case", "algorithm", "solve", "run_study", "read_dataset")
__all__ = ["__version__", "algorithms", *_API]


def __getattr__(name: str):
    if name in _API:
        from jaxmarket import api

        return getattr(api, name)
    if name == "algorithms":
        import importlib

        return importlib.import_module("jaxmarket.algorithms")
    raise AttributeError(f"module 'jaxmarket' has no attribute {name!r}")
