#!/usr/bin/env python3
"""Shedding curves (issue 14, part 1): goodput and latency from half to eight times a
fixed capacity, TCPie beside what a user would otherwise deploy to protect the same slow
backend. Run it through bench/overload.sh (it installs what it needs and builds the
binaries); loopback only, every run bounded.

The capacity is the same for everyone: WORKERS workers, each request taking WORK_MS.
- tcpie: TCPIE_WORKERS=WORKERS, queue QUEUE, TCPIE_UPSTREAM to bench/tools/slow_backend.rs
  (upstream mode, issue 22: the same backend the others protect, not work simulated in
  process, so the curves compare like with like);
- tcpie + queue timeout: the same with TCPIE_QUEUE_TIMEOUT_MS=QUEUE_TIMEOUT_MS;
- haproxy: maxconn WORKERS to bench/tools/slow_backend.rs, queue, `timeout queue`;
- nginx: limit_conn (WORKERS + QUEUE) and limit_req (the capacity) proxying to it;
- backend alone: bench/tools/slow_backend.rs with nothing in front.

The load is open-loop at a constant rate (bench/tools/paced.rs: each request starts when it
is due whatever the server does, and its latency counts from then, so a slow server cannot
hide behind a slowed generator); a request unanswered after CLIENT_TIMEOUT_MS counts as
timed out. Every step of every server runs ROUNDS times, servers interleaved within a step;
figures are medians. Plots go to docs/overload-goodput.png and docs/overload-p99.png
(only when every server ran: SERVERS="tcpie" runs a subset and leaves them). For TCPie,
its own histogram of the time to refuse (accept to answer written) is read after each
run: the client's figure also holds the connection setup and the generator's scheduling.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import harness  # noqa: E402
from run import ROOT, TCPIE, Server, free_port  # noqa: E402

EXAMPLES = ROOT / "target" / "release" / "examples"
WORKERS = int(os.environ.get("WORKERS", "4"))
WORK_MS = int(os.environ.get("WORK_MS", "10"))
QUEUE = int(os.environ.get("QUEUE", "16"))
QUEUE_TIMEOUT_MS = int(os.environ.get("QUEUE_TIMEOUT_MS", "10"))
CLIENT_TIMEOUT_MS = int(os.environ.get("CLIENT_TIMEOUT_MS", "2000"))
STEPS = [float(x) for x in os.environ.get("STEPS", "0.5 1 2 4 8").split()]
STEP_S = float(os.environ.get("STEP_S", "8"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CAPACITY = WORKERS * 1000 / WORK_MS


class Backed:
    """A proxy and the slow backend behind it, stopped together."""

    def __init__(self, proxy: Server, backend: Server):
        self.proxy, self.backend, self.port = proxy, backend, proxy.port
        if hasattr(proxy, "admin_port"):
            self.admin_port = proxy.admin_port

    def stop(self) -> None:
        self.proxy.stop()
        self.backend.stop()


def start_backend() -> Server:
    port = free_port()
    return Server("backend", [str(EXAMPLES / "slow_backend"), str(port), str(WORKERS), str(WORK_MS)], None, port)


def start_tcpie(queue_timeout_ms: int = 0) -> Backed:
    backend = start_backend()
    env = harness.loopback_env(
        TCPIE_BURST="0", TCPIE_WORKERS=str(WORKERS), TCPIE_QUEUE_SIZE=str(QUEUE),
        TCPIE_UPSTREAM=f"http://127.0.0.1:{backend.port}", TCPIE_QUEUE_TIMEOUT_MS=str(queue_timeout_ms),
        TCPIE_MAX_CONNECTIONS="20000", TCPIE_READ_TIMEOUT_MS="10000",
    )
    return Backed(harness.Tcpie(env, TCPIE), backend)


def server_side_rejections(admin_port: int) -> dict:
    """TCPie's own measure of a refusal (tcpie_rejection_duration_seconds: accept to the
    answer written), from its histogram: the share answered within 1 ms, and the p99 as
    the upper bound of the bucket that holds it."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).read().decode()
    buckets = [(float(le), float(v)) for le, v in
               re.findall(r'^tcpie_rejection_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M)]
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return {"server_within_1ms": float("nan"), "server_p99_le_ms": float("nan")}
    within = next(v for le, v in buckets if le == 0.001)
    p99 = next(le for le, v in buckets if v >= 0.99 * total)
    return {"server_within_1ms": within / total, "server_p99_le_ms": p99 * 1000}


def start_haproxy() -> Backed:
    backend = start_backend()
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="overload-haproxy-"))
    conf = (ROOT / "bench" / "overload-haproxy.cfg.in").read_text()
    for k, v in {"PORT": port, "BACKEND": backend.port, "WORKERS": WORKERS,
                 "QUEUE_TIMEOUT": f"{QUEUE_TIMEOUT_MS}ms"}.items():
        conf = conf.replace(f"@{k}@", str(v))
    (prefix / "haproxy.cfg").write_text(conf)
    proxy = Server("haproxy", ["haproxy", "-W", "-db", "-f", str(prefix / "haproxy.cfg")], None, port, True)
    return Backed(proxy, backend)


def start_nginx() -> Backed:
    backend = start_backend()
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="overload-nginx-"))
    conf = (ROOT / "bench" / "overload-nginx.conf.in").read_text()
    for k, v in {"PORT": port, "BACKEND": backend.port, "PREFIX": prefix, "RATE": int(CAPACITY),
                 "INFLIGHT": WORKERS + QUEUE}.items():
        conf = conf.replace(f"@{k}@", str(v))
    (prefix / "nginx.conf").write_text(conf)
    proxy = Server("nginx", ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)], None, port, True)
    return Backed(proxy, backend)


SERVERS = {
    "tcpie": lambda: start_tcpie(),
    f"tcpie + queue timeout {QUEUE_TIMEOUT_MS} ms": lambda: start_tcpie(QUEUE_TIMEOUT_MS),
    "haproxy": start_haproxy,
    "nginx": start_nginx,
    "backend alone": start_backend,
}


# SERVERS="tcpie,haproxy" runs only those (names up to the first space).
if os.environ.get("SERVERS"):
    wanted = os.environ["SERVERS"].split(",")
    SERVERS = {k: v for k, v in SERVERS.items() if k.split(" ")[0] in wanted or k in wanted}


def offer(port: int, rate: float) -> dict:
    out = subprocess.run(
        [str(EXAMPLES / "paced"), f"127.0.0.1:{port}", str(rate), str(STEP_S), str(CLIENT_TIMEOUT_MS)],
        capture_output=True, text=True, timeout=STEP_S + CLIENT_TIMEOUT_MS / 1000 + 60,
    )
    r = json.loads(out.stdout)
    ok = r["statuses"].get("200", {"count": 0, "p50_ms": float("nan"), "p99_ms": float("nan")})
    rejected = {k: v for k, v in r["statuses"].items() if k != "200"}
    rejected_count = sum(v["count"] for v in rejected.values())
    return {
        "goodput": ok["count"] / STEP_S,
        "p50_ms": ok["p50_ms"],
        "p99_ms": ok["p99_ms"],
        "rejected_share": rejected_count / max(r["offered"], 1),
        "rejection_p99_ms": max((v["p99_ms"] for v in rejected.values()), default=float("nan")),
        "rejection_p50_ms": max((v["p50_ms"] for v in rejected.values()), default=float("nan")),
        "failed_share": (r["errors"] + r["timeouts"]) / max(r["offered"], 1),
    }


def median(rows: list[dict], key: str) -> float:
    return harness.median(r[key] for r in rows)


def plot(figures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    for key, label, name, log in (
        ("goodput", "goodput (successful answers per second)", "overload-goodput.png", False),
        ("p99_ms", "p99 latency of successful answers (ms)", "overload-p99.png", True),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for server, steps in figures.items():
            xs = [s for s in STEPS if s in steps]
            ax.plot(xs, [steps[s][key] for s in xs], marker="o", label=server)
        if key == "goodput":
            ax.axhline(CAPACITY, color="grey", linestyle=":", label=f"capacity ({CAPACITY:.0f}/s)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(STEPS, [f"{s:g}×" for s in STEPS])
        if log:
            ax.set_yscale("log")
        ax.set_xlabel(f"offered load (× capacity: {WORKERS} workers × {WORK_MS} ms)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Shedding under overload, medians of {ROUNDS} rounds (bench/overload.sh)", fontsize=9)
        fig.tight_layout()
        fig.savefig(docs / name)
        plt.close(fig)


def main() -> int:
    figures: dict[str, dict[float, dict]] = {name: {} for name in SERVERS}
    for step in STEPS:
        rows: dict[str, list[dict]] = {name: [] for name in SERVERS}
        for _ in range(ROUNDS):
            for name, start in SERVERS.items():
                server = start()
                try:
                    time.sleep(0.3)
                    row = offer(server.port, step * CAPACITY)
                    if hasattr(server, "admin_port"):
                        row.update(server_side_rejections(server.admin_port))
                    rows[name].append(row)
                finally:
                    server.stop()
        for name in SERVERS:
            figures[name][step] = {k: median(rows[name], k) for k in rows[name][0]}
    print(f"## Shedding curves ({WORKERS} workers × {WORK_MS} ms = {CAPACITY:.0f}/s, queue {QUEUE}, "
          f"client timeout {CLIENT_TIMEOUT_MS} ms, {STEP_S:g} s a step, medians of {ROUNDS} rounds)\n")
    print("| server | offered | goodput/s | p50 ms | p99 ms | rejected | rejection p50 / p99 ms | errors + timeouts |")
    print("|---|---|---|---|---|---|---|---|")
    for name, steps in figures.items():
        for step, f in steps.items():
            print(f"| {name} | {step:g}× | {f['goodput']:.0f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} | "
                  f"{f['rejected_share']:.0%} | {f['rejection_p50_ms']:.2f} / {f['rejection_p99_ms']:.2f} | "
                  f"{f['failed_share']:.1%} |")
    print("\nTCPie's own measure of a refusal (tcpie_rejection_duration_seconds: accept to answer written):\n")
    print("| server | offered | refusals answered within 1 ms | p99 at most (bucket bound) |")
    print("|---|---|---|---|")
    for name, steps in figures.items():
        for step, f in steps.items():
            if "server_within_1ms" in f and f["server_within_1ms"] == f["server_within_1ms"]:
                print(f"| {name} | {step:g}× | {f['server_within_1ms']:.1%} | {f['server_p99_le_ms']:g} ms |")
    (ROOT / "target" / "overload-figures.json").write_text(json.dumps(figures, indent=1))
    if not os.environ.get("SERVERS"):
        plot(figures)
        print("\nPlots: docs/overload-goodput.png, docs/overload-p99.png")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
