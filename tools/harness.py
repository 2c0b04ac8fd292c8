"""What the benchmark scripts (bench/), the simulation's validation (sim/) and the Python
tests (tests/deploy, tests/containers) share: free loopback ports, a server process whose
CPU and memory can be read, a TCPie started with exactly the environment given, medians,
and wrk run and read.

Import it with `sys.path.insert(0, str(ROOT / "tools"))`, then `import harness`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def binary(profile: str = "debug") -> Path:
    """The built `tcpie` of a cargo profile."""
    return ROOT / "target" / profile / "tcpie"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def http(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """One request with urllib; the status and the body, errors included."""
    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Process:
    """A server process: started, its CPU time and memory read from /proc (summed over its
    workers when it is a master, as nginx and HAProxy are), stopped."""

    stop_signal = signal.SIGTERM

    def __init__(self, name: str, argv: list[str], env: dict | None = None, port: int | None = None,
                 workers_of_master: bool = False, log: Path | None = None):
        self.name, self.port, self.workers_of_master = name, port, workers_of_master
        self.log = log
        out = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, env=env if env is not None else dict(os.environ), stdout=out, stderr=out)
        if port is not None:
            wait_port(port)
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        if not self.workers_of_master:
            return [self.proc.pid]
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / TICK

    def rss_kib(self, field: str = "VmRSS") -> int:
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        return total

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def loopback_env(**overrides: str) -> dict[str, str]:
    """TCPie on 127.0.0.1 with ports the kernel picks, logging at info."""
    return {"TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0", "RUST_LOG": "info", **overrides}


class Tcpie(Process):
    """The binary, started with exactly the environment given (plus PATH); its addresses
    are read from its "listening" log line, so ports may be 0."""

    def __init__(self, env: dict[str, str], path: Path | None = None, wrapper: list[str] = (), start_timeout: float = 20):
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
        log = Path(tempfile.mkstemp(prefix="tcpie-", suffix=".log")[1])
        super().__init__("tcpie", [*wrapper, str(path or binary())], self.env, None, log=log)
        self.tcp, self.admin = self._wait_listening(start_timeout)
        self.port = int(self.tcp.rsplit(":", 1)[1])
        self.admin_port = int(self.admin.rsplit(":", 1)[1])

    def _wait_listening(self, timeout: float) -> tuple[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"tcpie exited with {self.proc.returncode}:\n{self.text()}")
            for line in self.text().splitlines():
                if "listening" not in line:
                    continue
                if line.startswith("{"):
                    fields = json.loads(line)["fields"]
                    return fields["tcp"], fields["admin"]
                return re.search(r"tcp=(\S+)", line).group(1), re.search(r"admin=(\S+)", line).group(1)
            time.sleep(0.05)
        raise AssertionError(f"tcpie did not start:\n{self.text()}")

    def text(self) -> str:
        return self.log.read_text()

    def get(self, path: str = "/") -> int:
        return http(f"http://{self.tcp}{path}")[0]

    def probe(self, path: str) -> str:
        return http(f"http://{self.admin}{path}")[1].decode()

    def metrics(self) -> str:
        status, body = http(f"http://{self.admin}/metrics")
        assert status == 200
        return body.decode()


def median(values) -> float:
    """The median of the values that are numbers (NaN, from a run that measured nothing,
    is left out); NaN when none is."""
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def medians(rows: list[dict], keys) -> dict:
    return {k: median(r[k] for r in rows) for k in keys}


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (out.stdout or out.stderr).splitlines()[0].split(" [")[0]


def parse_wrk(out: str) -> dict:
    """wrk's summary (with --latency): requests, rates, errors and percentiles in ms."""
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    pct = {int(p): ms(v, u) for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "errors": sum(map(int, errors.groups())) if errors else 0,
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_ms": pct.get(50, float("nan")),
        "p99_ms": pct.get(99, float("nan")),
    }


def wrk_argv(url: str, connections: int, seconds: float, threads: int = 2, close: bool = False,
             script: Path | None = None) -> list[str]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    if script:
        argv += ["-s", str(script)]
    return [*argv, url]


def wrk(url: str, connections: int, seconds: float, threads: int = 2, close: bool = False,
        script: Path | None = None, env: dict | None = None) -> dict:
    """Runs wrk to the end and reads its summary."""
    argv = wrk_argv(url, connections, seconds, threads, close, script)
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **(env or {})},
                         timeout=seconds + 30).stdout
    return parse_wrk(out)
