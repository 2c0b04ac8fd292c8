#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what it needs (scripts/setup.sh),
# then runs the format and lint checks, every Rust test, and the deploy checks (the local
# stack and the Helm chart, proven by the real tools). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
tier() { echo "== $* (at $((SECONDS - started)) s)"; }

tier "setup"
./scripts/setup.sh

tier "cargo fmt --check"
cargo fmt --all -- --check
tier "cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
tier "cargo doc (the library's front page, no broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
tier "cargo deny check licenses bans (the advisory database cannot be fetched here)"
cargo deny --log-level error check licenses bans
tier "cargo test (unit, integration, deterministic)"
cargo test --locked
tier "cargo test --release --test load --test attacks (load, fault and attack tests, apart and one at a time)"
# Release, as users run it: their latency bounds held for the debug build on a fast machine
# and failed it on a slower one (probes under a flood, 2026-12-03), the old code as well.
cargo test --release --locked --test load --test attacks -- --ignored --test-threads=1
tier "deploy checks, third-party clients, and the fleet simulation"
cargo build --locked
TCPIE_GRAFANA_SCHEMA="$PWD/target/grafana-schema/dashboard.schema.json" \
  .venv/bin/pytest -q -p no:cacheprovider tests/deploy sim
tier "container tier: the image and the compose stack, on a Docker engine of its own"
.venv/bin/pytest -q -p no:cacheprovider tests/containers
echo "== all tiers passed in $((SECONDS - started)) s"
