#!/usr/bin/env bash
# Create benchmarks/.venv-parsl with Parsl installed.
#
# Parsl is a peer we measure against, never a dependency of celeriac, so it
# lives in its own virtualenv; run.py runs the Parsl children with this venv's
# python and celeriac's children with the interpreter that runs run.py.
# Re-running is safe: it reuses the venv. PARSL_SPEC picks the version
# (default: the newest parsl); run.py prints the version it measured.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-parsl"
python="${PYTHON:-python3}"
spec="${PARSL_SPEC:-parsl}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec"
"$venv/bin/python" -c 'import parsl; print("parsl", parsl.__version__, "in", "'"$venv"'")'
