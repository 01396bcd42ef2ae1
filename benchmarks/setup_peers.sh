#!/usr/bin/env bash
# Create the peers' virtualenvs: benchmarks/.venv-parsl (Parsl + numpy) and
# benchmarks/.venv-peers (Ray, Dask distributed, numpy).
#
# The peers are systems we measure against, never dependencies of celeriac, so
# they live in their own virtualenvs (gitignored); run.py runs each peer's
# children with its venv's python and celeriac's children with the interpreter
# that runs run.py (which needs numpy for the bigdata workload: a benchmark
# dependency only, `pip install numpy` there). Re-running is safe: it reuses
# the venvs. PARSL_SPEC, RAY_SPEC and DASK_SPEC pick versions (default: the
# newest); run.py prints the versions it measured. `setup_peers.sh parsl` or
# `setup_peers.sh peers` sets up one venv only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
which="${1:-all}"

make_venv() {  # make_venv DIR PACKAGE...
    local venv="$1"
    shift
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "$@"
}

if [ "$which" = all ] || [ "$which" = parsl ]; then
    make_venv "$here/.venv-parsl" "${PARSL_SPEC:-parsl}" numpy
    "$here/.venv-parsl/bin/python" -c 'import parsl; print("parsl", parsl.__version__, "in", "'"$here/.venv-parsl"'")'
fi
if [ "$which" = all ] || [ "$which" = peers ]; then
    make_venv "$here/.venv-peers" "${RAY_SPEC:-ray}" "${DASK_SPEC:-dask[distributed]}" numpy
    "$here/.venv-peers/bin/python" -c 'import ray, dask, distributed; print("ray", ray.__version__, "dask", dask.__version__, "distributed", distributed.__version__, "in", "'"$here/.venv-peers"'")'
fi
