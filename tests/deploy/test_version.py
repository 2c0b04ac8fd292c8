"""The version is one fact, the crate's: `tcpie --version`, `tcpie_build_info`, the chart's
version and appVersion (its default image tag), the image's label, the plain manifests'
image tag, the README's image tags and a CHANGELOG section all say it
(scripts/set-version.py changes them together)."""

import re
import subprocess
import tomllib

import yaml

from conftest import BINARY, ROOT, loopback_env

VERSION = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]


def test_the_binary_says_the_crates_version(start_tcpie):
    out = subprocess.run([str(BINARY), "--version"], capture_output=True, text=True)
    assert out.stdout == f"tcpie {VERSION}\n"
    tcpie = start_tcpie(loopback_env())
    assert f'tcpie_build_info{{version="{VERSION}"}} 1' in tcpie.metrics()


def test_the_chart_image_manifests_readme_and_changelog_say_it_too():
    chart = yaml.safe_load((ROOT / "helm" / "tcpie" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.M) == [VERSION]
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    kustomization = yaml.safe_load((ROOT / "k8s" / "kustomization.yaml").read_text())
    assert [i["newTag"] for i in kustomization["images"]] == [VERSION]
    manifests = (ROOT / "k8s" / "tcpie.yaml").read_text()
    assert set(re.findall(r"app\.kubernetes\.io/version: \"([^\"]+)\"", manifests)) == {VERSION}
    readme = (ROOT / "README.md").read_text()
    tags = set(re.findall(r"\btcpie:(\d+\.\d+\.\d+)\b", readme))
    assert tags == {VERSION}, f"README image tags {tags}, crate {VERSION}"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(VERSION)}\]", changelog, re.M), f"no CHANGELOG section for {VERSION}"
