#!/usr/bin/env python3
"""Checks the fleet simulation against one point run for real (not part of the test run):
two TCPie processes behind HAProxy, which health-checks each one's /readyz the way the
kubelet does (every 5 s, out after 2 failures, back after 1 success) and balances over the
ones that pass, answering 503 itself when none does (kube-proxy would refuse). An
open-loop client offers three times the pair's capacity for a minute; the same point is
simulated, and both are printed side by side, for the readiness policy of today (fail
while the queue is full) and for readiness that ignores saturation.

    sim/validate.sh      # builds the release binary, needs haproxy (Debian)

Loopback only; every process is stopped at the end.
"""

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fleet  # noqa: E402
from harness import free_port, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TCPIE = ROOT / "target" / "release" / "tcpie"
WORKERS, QUEUE, WORK_MS = 2, 5, 100
LOAD, SECONDS = 3.0, 60


def start_pods(threshold: str) -> list[tuple[subprocess.Popen, int, int]]:
    pods = []
    for _ in range(2):
        port, admin = free_port(), free_port()
        env = {
            **os.environ, "TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": str(port), "TCPIE_ADMIN_PORT": str(admin),
            "TCPIE_BURST": "0", "TCPIE_WORKERS": str(WORKERS), "TCPIE_QUEUE_SIZE": str(QUEUE),
            "TCPIE_SIMULATED_WORK_MS": str(WORK_MS), "TCPIE_READY_QUEUE_THRESHOLD": threshold,
            "RUST_LOG": "warn",
        }
        proc = subprocess.Popen([str(TCPIE)], env=env, stderr=subprocess.DEVNULL)
        wait_port(port)
        pods.append((proc, port, admin))
    return pods


def start_haproxy(pods) -> tuple[subprocess.Popen, int]:
    port = free_port()
    servers = "\n".join(
        f"    server pod{i} 127.0.0.1:{p} check port {a} inter 5s fall 2 rise 1"
        for i, (_, p, a) in enumerate(pods)
    )
    conf = f"""global
    maxconn 4000
defaults
    mode http
    timeout client 30s
    timeout connect 5s
    timeout server 30s
    option httpclose
frontend fleet
    bind 127.0.0.1:{port}
    default_backend pods
backend pods
    balance random
    option httpchk GET /readyz
{servers}
"""
    path = Path(tempfile.mkdtemp(prefix="sim-haproxy-")) / "haproxy.cfg"
    path.write_text(conf)
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(path)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


async def one(port: int, results: dict) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.read(64), 30)
        writer.close()
        status = head[9:12].decode() if head.startswith(b"HTTP/1.1 ") else "???"
    except (OSError, asyncio.TimeoutError):
        status = "error"
    results[status] = results.get(status, 0) + 1


async def offer(port: int, rate: float, seconds: float, pods) -> tuple[dict, float]:
    results: dict = {}
    tasks = []
    unready_samples = []
    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) - start < seconds:
        due = start + n / rate
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.create_task(one(port, results)))
        n += 1
        if n % int(rate / 2) == 0:
            unready_samples.append(sum(not ready(a) for _, _, a in pods) / len(pods))
    await asyncio.gather(*tasks)
    return results, sum(unready_samples) / max(len(unready_samples), 1)


def ready(admin: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", admin), timeout=1) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def main() -> int:
    capacity = 2 * WORKERS * 1000 / WORK_MS
    print(f"2 pods x {WORKERS} workers x {WORK_MS} ms, queue {QUEUE}: capacity {capacity:.0f}/s; "
          f"offered {LOAD}x for {SECONDS} s; no client retries")
    print("| policy | run | goodput / capacity | no backend (HAProxy 503) | pods out |")
    print("|---|---|---|---|---|")
    for policy, threshold in (("saturation", "1"), ("never", "0")):
        pods = start_pods(threshold)
        proxy, port = start_haproxy(pods)
        try:
            time.sleep(6)  # the first health checks
            results, unready = asyncio.run(offer(port, LOAD * capacity, SECONDS, pods))
        finally:
            proxy.terminate()
            for proc, _, _ in pods:
                proc.terminate()
            proxy.wait()
            for proc, _, _ in pods:
                proc.wait()
        goodput = results.get("200", 0) / SECONDS / capacity
        # Both TCPie's queue-full answers and HAProxy's "no server" are 503s; TCPie's carry
        # Retry-After, HAProxy's do not, but the client here only sees the status: count
        # HAProxy's by the time no pod was ready instead.
        print(f"| {policy} | real | {goodput:.2f} | - | {unready:.0%} |")
        sim = fleet.simulate(fleet.Settings(
            pods=2, workers=WORKERS, queue=QUEUE, service_s=WORK_MS / 1000, load=LOAD, policy=policy,
            max_retries=0, duration=SECONDS + 20, warmup=20, service_fixed=True,
        ))
        print(f"| {policy} | simulated | {sim.goodput_ratio:.2f} | {sim.refusals / max(sim.offered, 1):.1%} | "
              f"{sim.unready_share:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
