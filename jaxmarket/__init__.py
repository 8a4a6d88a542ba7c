"""jaxmarket: batched Monte Carlo studies of peer-to-peer electricity markets in JAX."""

import jax

# float64 is the default for correctness (float32 is an explicit, measured option), so the
# package needs JAX's 64-bit mode; arrays are still created with explicit dtypes.
jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
