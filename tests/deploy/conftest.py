"""Shared fixtures of the deploy tests: the built tcpie binary on free loopback ports, a
real Prometheus (Debian package) scraping it, and a real Redis (Debian package). Every process started here is stopped by
the fixture that started it."""

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from harness import ROOT, Tcpie, free_port, http, loopback_env  # noqa: E402,F401

BINARY = ROOT / "target" / "debug" / "tcpie"


def starter(make):
    """A fixture's body: a function that starts what `make` makes, each stopped at the
    fixture's end, whatever the test did."""
    started = []

    def start(*args):
        made = make(*args)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


@pytest.fixture
def start_tcpie():
    yield from starter(Tcpie)


class Daemon:
    """A server process with a scratch directory, both gone at `stop`."""

    proc: subprocess.Popen
    dir: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Prometheus(Daemon):
    def __init__(self, config: dict, rule_files: list[Path]):
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        for f in rule_files:
            shutil.copy(f, self.dir / f.name)
        (self.dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "prometheus.log", "w"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if http(f"{self.url}/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, (self.dir / "prometheus.log").read_text()
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        status, body = http(f"{self.url}/api/v1/{path}?{query}")
        assert status == 200, body
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]


@pytest.fixture
def start_prometheus():
    yield from starter(Prometheus)


class Redis(Daemon):
    """Debian's redis-server on a free loopback port, saving nothing, with a password."""

    def __init__(self, password: str):
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.port = free_port()
        self.password = password
        self.proc = subprocess.Popen(
            [
                "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--requirepass", password,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                    if b"+PONG" in s.recv(100):
                        return
            except OSError:
                pass
            assert self.proc.poll() is None, "redis-server exited"
            time.sleep(0.1)
        raise AssertionError("redis-server did not answer")


@pytest.fixture
def start_redis():
    yield from starter(Redis)
