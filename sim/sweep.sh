#!/usr/bin/env bash
# The readiness sweep (sim/sweep.py) with matplotlib for its plot, in target/venv-plot
# (shared with bench/overload.sh). Not part of the test run: about 10 minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x target/venv-plot/bin/python ]; then
  python3 -m venv target/venv-plot
  target/venv-plot/bin/pip install -q --disable-pip-version-check matplotlib==3.11.2
fi
exec target/venv-plot/bin/python sim/sweep.py "$@"
