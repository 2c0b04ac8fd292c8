#!/usr/bin/env bash
# Shedding curves (not part of the test run): TCPie beside HAProxy and nginx protecting the
# same slow backend, and the backend alone, from half to eight times a fixed capacity
# (bench/overload.py says how). Installs nginx-light and HAProxy from Debian when missing,
# matplotlib into target/venv-plot, builds the release binaries, runs about 15 minutes,
# prints the table and writes docs/overload-goodput.png and docs/overload-p99.png.
# STEPS, STEP_S, ROUNDS, WORKERS, WORK_MS, QUEUE, QUEUE_TIMEOUT_MS tune it; SERVERS="tcpie,nginx"
# runs a subset (and leaves the plots).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -x target/venv-plot/bin/python ]; then
  python3 -m venv target/venv-plot
  target/venv-plot/bin/pip install -q --disable-pip-version-check matplotlib==3.11.2
fi
cargo build --release --locked --example paced --example slow_backend
cargo build --release --locked --bin tcpie
ulimit -n 30000 2>/dev/null || true
exec target/venv-plot/bin/python bench/overload.py "$@"
