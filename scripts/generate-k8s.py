#!/usr/bin/env python3
"""Renders the Helm chart with its default values into k8s/tcpie.yaml, so the plain
manifests never drift from the chart. Run with the deploy tests' venv:

    .venv/bin/python scripts/generate-k8s.py          # rewrite k8s/tcpie.yaml
    .venv/bin/python scripts/generate-k8s.py --check  # exit 1 if it is out of date
"""

import sys
from pathlib import Path

from helm_python import chart

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "k8s" / "tcpie.yaml"
HEADER = """\
# GENERATED FILE: do not edit. These are the manifests of the Helm chart helm/tcpie
# rendered with its default values (release "tcpie", namespace "tcpie"), without the
# `helm test` hook.
# Regenerate with:  .venv/bin/python scripts/generate-k8s.py
# (./scripts/test.sh fails when this file drifts from the chart.)
"""


def render() -> str:
    rendered = chart.Chart.load(str(ROOT / "helm" / "tcpie")).render({}, name="tcpie", namespace="tcpie")
    parts = []
    for path in sorted(rendered):
        body = rendered[path].strip()
        if not path.endswith(".yaml") or "/tests/" in path or not body:
            continue
        parts.append(f"# Source: {path}\n{body}\n")
    return HEADER + "---\n" + "---\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run .venv/bin/python scripts/generate-k8s.py")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
