#!/usr/bin/env python3
"""Soak test (not part of the test run): TCPie under sustained load at about 80 % of its
capacity, with a burst of about 4× every minute, for SOAK_MINUTES (default 20). Every 10 s
it samples RSS, open file descriptors and the latency percentiles of the steady load;
at the end it checks the counters balance. Loopback only; it stops by itself.

    bench/soak.sh            # or: SOAK_MINUTES=5 bench/soak.sh
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import harness  # noqa: E402
from run import ROOT, start_tcpie  # noqa: E402

MINUTES = float(os.environ.get("SOAK_MINUTES", "20"))
SAMPLE_S = 10


def rss_and_fds(pid: int) -> tuple[int, int]:
    rss = next(int(l.split()[1]) for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def wrk(port: int, conns: int, seconds: int, pace_ms: int) -> subprocess.Popen:
    """wrk in the background (its summary is read with harness.parse_wrk once it ends)."""
    argv = harness.wrk_argv(f"http://127.0.0.1:{port}/", conns, seconds, threads=1, close=True,
                            script=ROOT / "bench" / "pace.lua")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PACE_MS": str(pace_ms)})


def parse(out: str) -> dict:
    w = harness.parse_wrk(out)
    return {"requests": w["requests"], "non2xx": w["non2xx"], "p50": w["p50_ms"], "p99": w["p99_ms"]}


def main() -> int:
    # 4 workers × 10 ms: capacity 400 req/s. Steady: 32 connections pacing 90 ms ≈ 320/s
    # (80 %). Bursts: 10 s of 128 more connections pacing 80 ms ≈ +1,600/s (about 4×).
    server = start_tcpie({"TCPIE_WORKERS": "4", "TCPIE_QUEUE_SIZE": "64", "TCPIE_SIMULATED_WORK_MS": "10"})
    pid = server.proc.pid
    print(f"soak: {MINUTES} minutes against pid {pid}; sampling every {SAMPLE_S} s", flush=True)
    print("minute | RSS KiB | fds | steady p50 ms | steady p99 ms | steady req | 503s", flush=True)
    samples = []
    started = time.monotonic()
    end = started + MINUTES * 60
    next_burst = started + 30
    burst = None
    while time.monotonic() < end:
        steady = wrk(server.port, 32, SAMPLE_S, 90)
        if time.monotonic() >= next_burst and burst is None:
            burst = wrk(server.port, 128, 10, 80)
            next_burst += 60
        out, _ = steady.communicate()
        bursting = burst is not None
        if burst is not None and burst.poll() is not None:
            burst.communicate()
            burst = None
        r = parse(out)
        time.sleep(0.5)  # let the last connections of the window close
        rss, fds = rss_and_fds(pid)
        minute = (time.monotonic() - started) / 60
        samples.append({"minute": minute, "rss": rss, "fds": fds, "burst": bursting, **r})
        print(f"{minute:6.1f} | {rss:7d} | {fds:3d} | {r['p50']:.2f} | {r['p99']:.2f} | {r['requests']} | {r['non2xx']}", flush=True)
    if burst is not None:
        burst.wait()
    time.sleep(3)
    import urllib.request
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.admin_port}/metrics", timeout=5).read().decode()
    value = lambda name: sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", metrics, re.M))
    accepted = value("tcpie_connections_accepted_total")
    requests = value("tcpie_requests_total")
    before = value("tcpie_connections_closed_before_request_total")
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    print(f"\ncounters: accepted {accepted:.0f} = requests {requests:.0f} + closed before a request {before:.0f}: "
          f"{'balanced' if accepted == requests + before else 'NOT BALANCED'}")
    print("outcomes: " + ", ".join(f"{o} {v}" for o, v in re.findall(r'^tcpie_requests_total{outcome="(\w+)"} (\S+)$', metrics, re.M)))
    # Judge after a two-minute warm-up, on the windows without a burst.
    warm = [s for s in samples if s["minute"] >= 2 and not s["burst"]] or samples
    rss = [s["rss"] for s in warm]
    fds = [s["fds"] for s in warm if s["fds"]]
    quiet = warm
    print(f"\nRSS after warm-up: min {min(rss)} KiB, max {max(rss)} KiB, spread {(max(rss) - min(rss)) / min(rss) * 100:.1f} %")
    print(f"fds after warm-up: min {min(fds)}, max {max(fds)}")
    print(f"steady p50 median {statistics.median(s['p50'] for s in quiet):.2f} ms, "
          f"p99 median {statistics.median(s['p99'] for s in quiet):.2f} ms, "
          f"p99 max {max(s['p99'] for s in quiet):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
