#!/usr/bin/env bash
# Soak test (not part of the test run): SOAK_MINUTES (default 20) of load at about 80 % of
# capacity with a 4x burst every minute; prints RSS, fds and latency over time.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --locked --example bare
cargo build --release --locked --bin tcpie
exec python3 bench/soak.py
