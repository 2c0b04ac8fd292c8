"""The image, built from the repository by a real Docker engine and run as the chart runs
it: its user and healthcheck, its size, the probes, PID 1 and signals, bad configuration."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import tomllib
import time
import uuid

import pytest
import yaml

from conftest import ROOT, http, step, wait_for

MB = 1_000_000


def chart_user() -> str:
    values = yaml.safe_load((ROOT / "helm" / "tcpie" / "values.yaml").read_text())
    ctx = values["podSecurityContext"]
    return f"{ctx['runAsUser']}:{ctx['runAsGroup']}"


@pytest.fixture
def container(docker, image):
    """Starts the image as the chart runs it (read-only, no capabilities, no privilege
    gains, the chart's user), ports published on 127.0.0.1; removed afterwards."""
    names = []

    def start(*env: str, name_hint: str = "t") -> str:
        name = f"tcpie-citest-{name_hint}-{uuid.uuid4().hex[:6]}"
        args = ["run", "-d", "--name", name, "--read-only", "--cap-drop", "ALL"]
        args += ["--security-opt", "no-new-privileges", "--user", chart_user()]
        args += ["-p", "127.0.0.1::8080", "-p", "127.0.0.1::9090"]
        for e in env:
            args += ["-e", e]
        docker.run(*args, image)
        names.append(name)
        wait_for(f"{name} answering /readyz", lambda: ready(docker, name), timeout=20, every=0.2)
        return name

    yield start
    for name in names:
        docker.run("rm", "-f", name, check=False)


def ready(docker, name: str) -> bool:
    state = docker.inspect(name)["State"]
    assert state["Status"] in ("created", "running"), docker.run("logs", name).stderr
    return http(f"http://{docker.published(name, 9090)}/readyz", timeout=1)[0] == 200


def summary(docker, name: str) -> dict[str, int]:
    """The final counters TCPie logs at exit."""
    logs = docker.run("logs", name).stderr + docker.run("logs", name).stdout
    line = next(l for l in logs.splitlines() if "shutdown: complete" in l)
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def test_the_image_is_non_root_has_a_healthcheck_and_adds_little(docker, image):
    config = docker.inspect(image)["Config"]
    user = config["User"]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"the image's user must be numeric, not {user!r}"
    assert int(user.split(":")[0]) != 0
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "/usr/local/bin/tcpie"]
    version = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    assert config["Labels"]["org.opencontainers.image.version"] == version
    base = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    added = docker.inspect(image)["Size"] - docker.inspect(base)["Size"]
    print(f"the image adds {added / MB:.2f} MB to {base}")
    assert added <= 12 * MB, f"the image adds {added / MB:.1f} MB to its base (at most 12 MB)"


def test_it_runs_as_the_chart_runs_it_and_turns_healthy(docker, container):
    name = container(name_hint="run")
    tcp, admin = docker.published(name, 8080), docker.published(name, 9090)
    status, body = http(f"http://{tcp}/")
    assert (status, body) == (200, b"Hello world !\n")
    status, body = http(f"http://{admin}/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    health = docker.inspect(name)["Config"]["Healthcheck"]
    within = (health["StartPeriod"] + 2 * health["Interval"]) / 1e9
    started = time.monotonic()
    with step("image: healthy"):
        wait_for(
            "docker inspect says healthy",
            lambda: docker.inspect(name)["State"]["Health"]["Status"] == "healthy",
            timeout=within,
        )
    print(f"healthy after {time.monotonic() - started:.1f} s (allowed {within:.0f} s)")


def test_docker_stop_answers_the_request_in_flight_and_exits_0(docker, container):
    name = container("TCPIE_SIMULATED_WORK_MS=2000", "TCPIE_BURST=0", name_hint="inflight")
    tcp, admin = docker.published(name, 8080), docker.published(name, 9090)
    answer: list = []
    client = threading.Thread(target=lambda: answer.append(http(f"http://{tcp}/", timeout=15)))
    client.start()
    wait_for(
        "the request being processed",
        lambda: re.search(r"^tcpie_workers_busy 1$", http(f"http://{admin}/metrics")[1].decode(), re.M),
        timeout=5,
        every=0.05,
    )
    started = time.monotonic()
    with step("image: docker stop with a request in flight"):
        docker.run("stop", "-t", "10", name)
    took = time.monotonic() - started
    client.join(timeout=15)
    assert answer and answer[0] == (200, b"Hello world !\n"), answer
    assert docker.inspect(name)["State"]["ExitCode"] == 0
    assert took < 5, f"docker stop took {took:.1f} s of its 10 s grace"
    counts = summary(docker, name)
    assert counts["processed"] == 1 and counts["accepted"] == 1, counts


@pytest.mark.parametrize("how", ["stop", "kill -s INT"])
def test_a_stop_under_load_loses_no_accepted_request(docker, container, how):
    name = container(
        "TCPIE_BURST=0",
        "TCPIE_WORKERS=4",
        "TCPIE_QUEUE_SIZE=16",
        "TCPIE_SIMULATED_WORK_MS=5",
        name_hint="load",
    )
    tcp = docker.published(name, 8080)
    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c32", "-d8s", "--timeout", "5s", "-s", str(ROOT / "tests/containers/statuses.lua"), f"http://{tcp}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    with step(f"image: docker {how} under load"):
        docker.run(*how.split(), name)
        code = int(docker.run("wait", name, timeout=30).stdout.strip())
    out, _ = wrk.communicate(timeout=30)
    assert code == 0, f"exit code {code} after docker {how}"
    line = next(l for l in out.splitlines() if l.startswith("STATUSES "))
    seen = json.loads(line.removeprefix("STATUSES "))
    statuses = {int(k): v for k, v in seen["statuses"].items()}
    counts = summary(docker, name)
    print(f"docker {how}: wrk saw {statuses}, errors {seen}; tcpie counted {counts}")
    assert statuses.get(200, 0) > 100, statuses
    assert set(statuses) <= {200, 503}, f"answers other than 200 and 503: {statuses}"
    # Every request TCPie accepted was answered, and every answer reached the client whole.
    assert sum(statuses.values()) == counts["requests"], (statuses, counts)
    assert counts["accepted"] == counts["requests"] + counts["closed_before_request"], counts
    assert seen["timeout"] == 0, seen


def test_a_bad_configuration_exits_64_naming_both_problems(docker, image):
    name = f"tcpie-citest-config-{uuid.uuid4().hex[:6]}"
    try:
        r = docker.run("run", "--name", name, "-e", "TCPIE_WORKERS=0", "-e", "TCPIE_WORKRS=3", image, check=False)
        assert r.returncode == 64, (r.returncode, r.stderr)
        logs = docker.run("logs", name).stderr
        assert 'TCPIE_WORKERS="0" is invalid' in logs, logs
        assert "unknown variable TCPIE_WORKRS: did you mean TCPIE_WORKERS?" in logs, logs
    finally:
        docker.run("rm", "-f", name, check=False)


def test_the_build_context_is_a_crate_cargo_can_read(docker, base_images, tmp_path):
    """What `.dockerignore` lets into the build context must still be a crate whose
    manifest cargo accepts as it is (a `[[bench]]` whose file was left out broke every
    build: issue 18). Docker's own context rules decide what is copied. A build of a target
    that does not exist reads every target of the manifest, then stops without compiling."""
    dockerfile = tmp_path / "Dockerfile.context"
    dockerfile.write_text(
        "FROM rust:1.95.0-slim-bookworm\n"
        "COPY . /context\n"
        "RUN cd /context && (cargo build --locked --bin no-such-target > /cargo.out 2>&1 || true)\n"
    )
    tag = f"tcpie-citest-context-{uuid.uuid4().hex[:6]}"
    with step("docker build of the bare build context, cargo reading its manifest"):
        docker.run("build", "-f", str(dockerfile), "-t", tag, ".", timeout=1800)
    try:
        out = docker.run("run", "--rm", "--entrypoint", "cat", tag, "/cargo.out").stdout
    finally:
        docker.run("rmi", "-f", tag, check=False)
    assert "failed to parse manifest" not in out, out
    assert "no bin target named `no-such-target`" in out, out
