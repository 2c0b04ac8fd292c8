#!/usr/bin/env bash
# The simulation against one real point: two TCPie processes behind HAProxy (see
# sim/validate.py). Not part of the test run; installs haproxy from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v haproxy >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; }
cargo build --release --locked --bin tcpie
exec python3 sim/validate.py
