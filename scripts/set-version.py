#!/usr/bin/env python3
"""Sets TCPie's version, one fact kept in several files: the crate (Cargo.toml and the
lock files), the chart's version and appVersion (the default image tag), the image's label
(Dockerfile), the plain manifests' image tag (k8s/), and the image tags the README's
commands build and load. `tests/deploy/test_version.py` fails when any of them differs
from the crate's version. Usage: scripts/set-version.py 0.3.0 (then run
scripts/generate-k8s.py to regenerate k8s/tcpie.yaml, and date the CHANGELOG section)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def replace(path: str, pattern: str, repl: str, count: int = 0) -> None:
    file = ROOT / path
    text = file.read_text()
    new, n = re.subn(pattern, repl, text, count=count, flags=re.M)
    if n == 0:
        raise SystemExit(f"{path}: nothing matches {pattern!r}")
    file.write_text(new)


def main() -> int:
    if len(sys.argv) != 2 or not re.fullmatch(r"\d+\.\d+\.\d+", sys.argv[1]):
        print(__doc__)
        return 64
    v = sys.argv[1]
    replace("Cargo.toml", r'^version = "[^"]+"', f'version = "{v}"', count=1)
    for lock in ("Cargo.lock", "fuzz/Cargo.lock"):
        replace(lock, r'(name = "tcpie"\nversion = )"[^"]+"', rf'\g<1>"{v}"')
    replace("helm/tcpie/Chart.yaml", r"^version: .*$", f"version: {v}")
    replace("helm/tcpie/Chart.yaml", r"^appVersion: .*$", f'appVersion: "{v}"')
    replace("Dockerfile", r"^ARG VERSION=.*$", f"ARG VERSION={v}")
    replace("k8s/kustomization.yaml", r"newTag: .*$", f"newTag: {v}")
    replace("k8s/kustomization.yaml", r"tcpie:\d+\.\d+\.\d+", f"tcpie:{v}")
    replace("README.md", r"tcpie:\d+\.\d+\.\d+", f"tcpie:{v}")
    subprocess.run(["cargo", "metadata", "--offline", "--format-version", "1"], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    print(f"version {v}; now run .venv/bin/python scripts/generate-k8s.py and date CHANGELOG.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
