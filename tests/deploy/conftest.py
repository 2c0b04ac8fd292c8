"""Shared fixtures of the deploy tests: the built tcpie binary on free loopback ports, and
a real Prometheus (Debian package) scraping it. Every process started here is stopped by
the fixture that started it."""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "target" / "debug" / "tcpie"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Tcpie:
    """The binary, started with exactly the environment given (plus PATH)."""

    def __init__(self, env: dict[str, str]):
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        self.log = tempfile.NamedTemporaryFile("w+", prefix="tcpie-", suffix=".log")
        self.proc = subprocess.Popen([str(BINARY)], env=self.env, stdout=self.log, stderr=self.log)
        self.tcp, self.admin = self._wait_listening()

    def _wait_listening(self) -> tuple[str, str]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tcpie exited with {self.proc.returncode}:\n{self.text()}")
            for line in self.text().splitlines():
                if "listening" not in line:
                    continue
                if line.startswith("{"):
                    fields = json.loads(line)["fields"]
                    return fields["tcp"], fields["admin"]
                tcp = re.search(r"tcp=(\S+)", line).group(1)
                admin = re.search(r"admin=(\S+)", line).group(1)
                return tcp, admin
            time.sleep(0.05)
        raise AssertionError(f"tcpie did not start:\n{self.text()}")

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def get(self, path: str = "/") -> int:
        return http(f"http://{self.tcp}{path}")[0]

    def probe(self, path: str) -> str:
        return http(f"http://{self.admin}{path}")[1].decode()

    def metrics(self) -> str:
        status, body = http(f"http://{self.admin}/metrics")
        assert status == 200
        return body.decode()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def start_tcpie():
    started: list[Tcpie] = []

    def start(env: dict[str, str]) -> Tcpie:
        t = Tcpie(env)
        started.append(t)
        return t

    yield start
    for t in started:
        t.stop()


def loopback_env(**overrides: str) -> dict[str, str]:
    return {
        "TCPIE_HOST": "127.0.0.1",
        "TCPIE_PORT": "0",
        "TCPIE_ADMIN_PORT": "0",
        "RUST_LOG": "info",
        **overrides,
    }


class Prometheus:
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

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def start_prometheus():
    started: list[Prometheus] = []

    def start(config: dict, rule_files: list[Path]) -> Prometheus:
        p = Prometheus(config, rule_files)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
