#!/usr/bin/env bash
# The whole test suite, from a fresh checkout: installs what it needs, then runs the
# format and lint checks and every test. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
command -v kill >/dev/null 2>&1 || need_apt+=(procps)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
command -v rustfmt >/dev/null 2>&1 || rustup component add rustfmt
command -v cargo-clippy >/dev/null 2>&1 || rustup component add clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked
