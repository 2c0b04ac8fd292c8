#!/usr/bin/env bash
# TCPie's benchmark suite (not part of the test run): installs wrk and nginx-light from
# Debian when missing (and HAProxy and strace), builds the release binaries, then runs
# bench/run.py and prints the tables. Scenarios: A B C D P S T K R E (all by default), for
# example `bench/run.sh A D`. ROUNDS (default 3), DURATION (seconds per load run, default
# 8), WRK_THREADS (default "1 2": A and D with each) tune it; BEFORE=path/to/an/earlier/tcpie runs that binary beside this one in A and D.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v pgrep >/dev/null 2>&1 || missing+=(procps)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's and haproxy's packages may start system services; the suite runs its own.
# The examples first and the binary on its own: built together, the binary would get the
# features the examples' dev-dependencies enable (regex's unicode tables, say), and not be
# the binary users run.
cargo build --release --locked --example bare --example bare_proxy
cargo build --release --locked --bin tcpie
ulimit -n 30000 2>/dev/null || true
exec python3 bench/run.py "$@"
