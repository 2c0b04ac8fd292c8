"""The container tier's fixtures: a Docker engine of its own, the base-image stand-ins, the
image built from this repository, and the time each step took.

The engine is Debian's `dockerd`, started on its own socket and data root (fixed paths, so
the layer cache survives between runs on this machine) unless one already answers on that
socket; only what this tier started is stopped. No other engine is ever used: stand-ins
are tagged with the names of real images, which must not overwrite someone's real ones.
Containers publish their ports on 127.0.0.1 only, and the tests send traffic only there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

import standins

ROOT = standins.ROOT
STATE = Path(os.environ.get("TCPIE_DOCKER_STATE", "/var/lib/tcpie-containers"))
RUN = Path("/run/tcpie-containers")
SOCKET = RUN / "docker.sock"
# The image the tests build and run, apart from the compose file's own `tcpie:local`.
IMAGE = "tcpie:citest"

_steps: list[tuple[str, float]] = []


@contextmanager
def step(name: str):
    """Times one step of the tier; every step's time is printed at the end of the run."""
    started = time.monotonic()
    try:
        yield
    finally:
        _steps.append((name, time.monotonic() - started))


def pytest_terminal_summary(terminalreporter):
    if not _steps:
        return
    terminalreporter.section("container tier: time of each step")
    for name, seconds in _steps:
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
    terminalreporter.write_line(f"{sum(s for _, s in _steps):7.1f} s  in all")


class Docker:
    """The `docker` and `docker-compose` command lines, pointed at the tier's engine."""

    def __init__(self, host: str):
        self.env = {
            **os.environ,
            "DOCKER_HOST": host,
            # BuildKit would pull its frontend image (the Dockerfile's `# syntax=` line)
            # from a registry; the classic builder ignores the line and needs nothing.
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
        }
        self.cli = ["docker"]

    def run(self, *args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [*self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def compose(self, project: str, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        r = subprocess.run(
            ["docker-compose", "-p", project, "-f", str(ROOT / "docker-compose.yml"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        return r

    def inspect(self, what: str) -> dict:
        return json.loads(self.run("inspect", what).stdout)[0]

    def published(self, container: str, port: int) -> str:
        """The 127.0.0.1 address a container port is published on."""
        out = self.run("port", container, f"{port}/tcp").stdout.split()
        addrs = [a for a in out if a.startswith("127.0.0.1:")]
        assert addrs, f"{container}:{port} is not published on 127.0.0.1: {out}"
        return addrs[0]


def answers(host: str) -> bool:
    r = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        env={**os.environ, "DOCKER_HOST": host},
        capture_output=True,
        timeout=30,
    )
    return r.returncode == 0


@pytest.fixture(scope="session")
def docker():
    host = f"unix://{SOCKET}"
    started = None
    with step("engine: dockerd answering"):
        if not answers(host):
            RUN.mkdir(parents=True, exist_ok=True)
            STATE.mkdir(parents=True, exist_ok=True)
            log = open(STATE / "dockerd.log", "ab")
            started = subprocess.Popen(
                [
                    "dockerd",
                    f"--data-root={STATE / 'docker'}",
                    f"--exec-root={RUN / 'exec'}",
                    f"--pidfile={RUN / 'docker.pid'}",
                    f"--host={host}",
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            deadline = time.monotonic() + 60
            while not answers(host):
                if started.poll() is not None or time.monotonic() > deadline:
                    tail = (STATE / "dockerd.log").read_text(errors="replace")[-3000:]
                    raise AssertionError(f"dockerd did not start (exit {started.poll()}):\n{tail}")
                time.sleep(0.5)
    d = Docker(host)
    yield d
    if started is not None:
        with step("engine: dockerd stopped"):
            started.send_signal(signal.SIGTERM)
            try:
                started.wait(timeout=60)
            except subprocess.TimeoutExpired:
                started.kill()
                started.wait()


@pytest.fixture(scope="session")
def base_images(docker):
    """Every stand-in the Dockerfile and the services the tier runs need, up to date."""
    names = standins.base_images()
    made = []
    with step("stand-ins: " + ", ".join(n for n in names if standins.has_recipe(n))):
        for name in names:
            if standins.has_recipe(name) and standins.build(docker.cli, name, env=docker.env):
                made.append(name)
        if made:
            # Images replaced by a newer stand-in are left untagged: nothing refers to them.
            docker.run("image", "prune", "-f")
    return names


@pytest.fixture(scope="session")
def image(docker, base_images):
    """The image, built from the repository exactly as a user builds it."""
    with step(f"docker build -t {IMAGE} ."):
        docker.run("build", "-t", IMAGE, ".", timeout=3600)
    return IMAGE


def http(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what: str, check, timeout: float, every: float = 0.5):
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, AssertionError, ValueError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")
