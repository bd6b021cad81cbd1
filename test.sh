#!/usr/bin/env bash
# Install temlearn with its dev extras into a virtual environment (.venv, or $TEMLEARN_VENV) and run the
# whole test suite: library/notebook sync, nbdev-test on every notebook, pytest, docs smoke check.
# Ends with a line "N passed, N failed". Extra arguments go to tools/run_tests.py (e.g. --flags "gpu slow").
set -uo pipefail
cd "$(dirname "$0")"
VENV="${TEMLEARN_VENV:-.venv}"
echo "== 0. install into $VENV"
if [ ! -x "$VENV/bin/python" ]; then python3 -m venv "$VENV" || { echo "0 passed, 1 failed"; exit 1; }; fi
. "$VENV/bin/activate"
if ! { python -m pip install -q --upgrade pip && python -m pip install -q -e ".[dev]"; }; then
  echo "install failed"; echo "0 passed, 1 failed"; exit 1
fi
export MPLBACKEND=Agg
python tools/run_tests.py "$@"
