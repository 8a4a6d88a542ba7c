#!/usr/bin/env bash
# The GPU benchmark in one command, on a fresh GPU machine holding only this repository:
#
#   bench/gpu.sh               # installs the package and a CUDA jax, then python -m bench.gpu
#   JAXMARKET_BENCH_TINY=1 JAXMARKET_BENCH_NO_INSTALL=1 bench/gpu.sh   # a check on a CPU
#
# Measures the ADMM kernel in float32 and float64 at N = 25, 50, 100, 200, the full
# sparsity study (sweeps/sparsity.toml, 20 000 cases) end to end with its lane
# utilisation, within 10 minutes (a hard limit: whatever ran is kept). Writes its section
# of bench/RESULTS.md, and $OUT/RESULTS-gpu.md plus the updated RESULTS.md when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${JAXMARKET_BENCH_NO_INSTALL:-0}" != 1 ]]; then
    python3 -m pip install --quiet -e . "jax[cuda12]"
fi
python3 - <<'EOF'
import jax
print("jax", jax.__version__, "devices:", jax.devices())
EOF
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${JAXMARKET_BENCH_LIMIT_S:-570}" python3 -m bench.gpu
