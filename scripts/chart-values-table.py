#!/usr/bin/env python3
"""Prints the Helm chart's values table (key, default, the sentence above the key in
values.yaml), or with --write puts it into helm/tcpie/README.md between its markers. The
deploy tests check the README's table is this one."""

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "helm" / "tcpie"
START, END = "<!-- values-table:start -->\n", "<!-- values-table:end -->"


def rows() -> list[tuple[str, str, str]]:
    lines = (CHART / "values.yaml").read_text().splitlines()
    values = yaml.safe_load("\n".join(lines))
    out, path, comment = [], [], []
    for line in lines:
        if line.strip().startswith("#"):
            comment.append(line.strip().lstrip("#").strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z0-9_]+):", line)
        if not m:
            if not line.strip():
                comment = []
            continue
        depth = len(m.group(1)) // 2
        path = path[:depth] + [m.group(2)]
        value = values
        for key in path:
            value = value[key]
        if not isinstance(value, dict) or not value:
            default = json.dumps(value) if not isinstance(value, str) or value == "" else value
            if isinstance(value, str) and value and re.fullmatch(r"[0-9.]+", value):
                default = json.dumps(value)
            out.append((".".join(path), default, " ".join(comment)))
        comment = []
    return out


def table() -> str:
    text = "| key | default | description |\n|---|---|---|\n"
    for key, default, doc in rows():
        text += f"| `{key}` | `{default}` | {doc} |\n"
    return text


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        readme = (CHART / "README.md").read_text()
        a = readme.index(START) + len(START)
        b = readme.index(END)
        (CHART / "README.md").write_text(readme[:a] + table() + readme[b:])
    else:
        print(table(), end="")
