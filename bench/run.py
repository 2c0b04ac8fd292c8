#!/usr/bin/env python3
"""TCPie's benchmark suite: TCPie beside a bare tokio server, nginx and HAProxy,
interleaved round by round, medians reported. Run it through bench/run.sh (which installs wrk and nginx and
builds the release binaries). Loopback only; every run is bounded in time.

The primary figure is the server's CPU time per request (user + system time from
/proc/PID/stat, for nginx summed over its workers, divided by the requests answered): the
load generator shares the machine's cores, so requests per second mostly measure the
machine.
"""

import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import harness  # noqa: E402
from harness import ROOT, free_port  # noqa: E402

TCPIE = harness.binary("release")
BARE = ROOT / "target" / "release" / "examples" / "bare"
BARE_PROXY = ROOT / "target" / "release" / "examples" / "bare_proxy"
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "8"))
# wrk's threads: 2 shares both cores with the server; 1 leaves the server a core of its
# own, where differences in server CPU show most.
WRK_THREADS = [int(t) for t in os.environ.get("WRK_THREADS", "1 2").split()]
# Another tcpie binary (an earlier build, say) to run beside this one in A and D.
BEFORE = os.environ.get("BEFORE")


class Server(harness.Process):
    """A server under test, on `port`; nginx stops gracefully on SIGQUIT."""

    def __init__(self, name: str, argv: list[str], env: dict | None, port: int, workers_of_master=False):
        super().__init__(name, argv, {**os.environ, **(env or {})}, port, workers_of_master)
        if name == "nginx":
            self.stop_signal = signal.SIGQUIT


def start_tcpie(extra: dict, binary: Path = TCPIE) -> harness.Tcpie:
    env = harness.loopback_env(**{
        "TCPIE_BURST": "0", "TCPIE_WORKERS": "4", "TCPIE_QUEUE_SIZE": "4096", "TCPIE_MAX_CONNECTIONS": "20000",
        **extra,
    })
    return harness.Tcpie(env, binary)


def start_bare(keepalive: bool = False) -> Server:
    port = free_port()
    return Server("bare", [str(BARE), str(port)] + (["keepalive"] if keepalive else []), None, port)


def start_haproxy(keepalive: bool) -> Server:
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    conf = (ROOT / "bench" / "haproxy.cfg.in").read_text()
    conf = conf.replace("@PORT@", str(port)).replace("@KEEPALIVE@", "75s" if keepalive else "1s")
    conf = conf.replace("@CLOSEMODE@", "http-keep-alive" if keepalive else "httpclose")
    (prefix / "haproxy.cfg").write_text(conf)
    return Server("haproxy", ["haproxy", "-W", "-db", "-f", str(prefix / "haproxy.cfg")], None, port, True)


def start_nginx(keepalive: bool) -> Server:
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
    conf = (ROOT / "bench" / "nginx.conf.in").read_text()
    conf = conf.replace("@PORT@", str(port)).replace("@PREFIX@", str(prefix))
    conf = conf.replace("@KEEPALIVE@", "75s" if keepalive else "0")
    (prefix / "nginx.conf").write_text(conf)
    return Server("nginx", ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)], None, port, True)


def wrk(port: int, connections: int, close: bool, duration: int = DURATION, pace_ms: int | None = None, threads: int = 2) -> dict:
    script = ROOT / "bench" / "pace.lua" if pace_ms is not None else None
    env = {"PACE_MS": str(pace_ms)} if pace_ms is not None else None
    return harness.wrk(f"http://127.0.0.1:{port}/", connections, duration, threads, close, script, env)


def measure(server: Server, **wrk_args) -> dict:
    cpu0 = server.cpu_seconds()
    result = wrk(server.port, **wrk_args)
    cpu = server.cpu_seconds() - cpu0
    result["cpu_us_per_req"] = cpu / max(result["requests"], 1) * 1e6
    result["cpu_s"] = cpu
    result["peak_rss_kib"] = server.rss_kib("VmHWM")
    return result


def median(rows: list[dict], key: str) -> float:
    return harness.median(r[key] for r in rows)


def interleaved(servers: list, **wrk_args) -> dict[str, list[dict]]:
    """Each (name, start) server measured ROUNDS times, the servers interleaved within a
    round, so that a noisy stretch of the machine falls on all of them."""
    results: dict[str, list[dict]] = {name: [] for name, _ in servers}
    for _ in range(ROUNDS):
        for name, start in servers:
            server = start()
            try:
                results[name].append(measure(server, **wrk_args))
            finally:
                server.stop()
    return results


def medians(results: dict[str, list[dict]], keys=("cpu_us_per_req", "rps", "p99_ms")) -> dict:
    return {n: {k: median(r, k) for k in keys} for n, r in results.items()}


def table(title: str, results: dict[str, list[dict]], keys: list[tuple[str, str, str]]) -> str:
    lines = [f"\n### {title}\n", "| server | " + " | ".join(k[1] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, rows in results.items():
        cells = [k[2].format(median(rows, k[0])) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = [
    ("cpu_us_per_req", "server CPU µs/request", "{:.1f}"),
    ("rps", "req/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.2f}"),
    ("p99_ms", "p99 ms", "{:.2f}"),
    ("peak_rss_kib", "peak RSS KiB", "{:.0f}"),
    ("errors", "socket errors", "{:.0f}"),
]


def connection_per_request_servers() -> list:
    """The servers of scenarios A and S, by name, with what starts each."""
    servers = [
        ("tcpie", lambda: start_tcpie({})),
        ("bare tokio", start_bare),
        ("nginx", lambda: start_nginx(False)),
        ("haproxy", lambda: start_haproxy(False)),
    ]
    if BEFORE:
        servers.insert(1, ("tcpie (before)", lambda: start_tcpie({}, Path(BEFORE))))
    return servers


def scenario_a(out: list[str]) -> dict:
    figures = {}
    servers = connection_per_request_servers()
    for threads in WRK_THREADS:
        for conns in (64, 256):
            results = interleaved(servers, connections=conns, close=True, threads=threads)
            out.append(table(f"A. Connection per request, {conns} connections, wrk -t{threads} (medians of {ROUNDS} interleaved rounds)", results, COLUMNS))
            figures[f"t{threads}-{conns}"] = medians(results)
    return figures


def scenario_b(out: list[str]) -> dict:
    # 2 workers × 5 ms of simulated work: capacity 400 requests/s. Offered: about 1×
    # (8 connections pacing 20 ms) and about 4× (32 connections pacing 20 ms).
    env = {"TCPIE_WORKERS": "2", "TCPIE_QUEUE_SIZE": "8", "TCPIE_SIMULATED_WORK_MS": "5"}
    runs = {"at capacity": [], "4× overload": []}
    for _ in range(ROUNDS):
        for label, conns in (("at capacity", 8), ("4× overload", 32)):
            server = start_tcpie(env)
            try:
                r = measure(server, connections=conns, close=True, pace_ms=20)
            finally:
                server.stop()
            r["goodput"] = (r["requests"] - r["non2xx"]) / DURATION
            r["rejected"] = r["non2xx"]
            runs[label].append(r)
    cap, over = runs["at capacity"], runs["4× overload"]
    served_cost = statistics.median(r["cpu_s"] / max(r["requests"], 1) for r in cap)
    rejected_cost = statistics.median(
        max(r["cpu_s"] - (r["requests"] - r["rejected"]) * served_cost, 0) / max(r["rejected"], 1) for r in over
    )
    g_cap, g_over = median(cap, "goodput"), median(over, "goodput")
    out.append(f"\n### B. Overload (2 workers × 5 ms work, queue 8: capacity 400 req/s; medians of {ROUNDS} rounds)\n")
    out.append("| run | offered req/s | goodput req/s | rejected (503) | server CPU µs/request | p99 ms |")
    out.append("|---|---|---|---|---|---|")
    for label, rows in runs.items():
        out.append(
            f"| {label} | {median(rows, 'rps'):.0f} | {median(rows, 'goodput'):.0f} | {median(rows, 'rejected'):.0f} | "
            f"{median(rows, 'cpu_us_per_req'):.1f} | {median(rows, 'p99_ms'):.1f} |"
        )
    out.append(
        f"\nCPU per served request (at capacity): {served_cost * 1e6:.1f} µs; per rejected request (overload, "
        f"after subtracting the served ones): {rejected_cost * 1e6:.1f} µs. Goodput under overload: "
        f"{g_over / g_cap * 100:.1f} % of goodput at capacity."
    )
    return {"served_us": served_cost * 1e6, "rejected_us": rejected_cost * 1e6, "goodput_ratio": g_over / g_cap}


def scenario_c(out: list[str]) -> dict:
    n = int(os.environ.get("IDLE_CONNECTIONS", "10000"))
    results = {}
    servers = [("tcpie", lambda: start_tcpie({"TCPIE_READ_TIMEOUT_MS": "120000"})), ("nginx", lambda: start_nginx(True))]
    if BEFORE:
        servers.insert(1, ("tcpie (before)", lambda: start_tcpie({"TCPIE_READ_TIMEOUT_MS": "120000"}, Path(BEFORE))))
    for name, start in servers:
        per = []
        for _ in range(ROUNDS):
            server = start()
            socks = []
            try:
                time.sleep(0.3)
                before = server.rss_kib()
                for _ in range(n):
                    socks.append(socket.create_connection(("127.0.0.1", server.port)))
                time.sleep(1.0)
                after = server.rss_kib()
                per.append((after - before) * 1024 / n)
            finally:
                for s in socks:
                    s.close()
                server.stop()
        results[name] = statistics.median(per)
    out.append(f"\n### C. {n} idle open connections (medians of {ROUNDS} rounds)\n")
    out.append("| server | RSS growth per idle connection |")
    out.append("|---|---|")
    for name, v in results.items():
        out.append(f"| {name} | {v:.0f} bytes |")
    return results


def scenario_d(out: list[str]) -> dict:
    keep = {"TCPIE_KEEP_ALIVE": "true", "TCPIE_MAX_REQUESTS_PER_CONNECTION": "1000000"}
    servers = [
        ("tcpie (keep-alive)", lambda: start_tcpie(keep)),
        ("bare tokio (keep-alive)", lambda: start_bare(True)),
        ("nginx (keep-alive)", lambda: start_nginx(True)),
        ("haproxy (keep-alive)", lambda: start_haproxy(True)),
    ]
    if BEFORE:
        servers.insert(1, ("tcpie before (keep-alive)", lambda: start_tcpie(keep, Path(BEFORE))))
    figures = {}
    for threads in WRK_THREADS:
        results = interleaved(servers, connections=64, close=False, threads=threads)
        out.append(table(f"D. Keep-alive, 64 connections, wrk -t{threads} (medians of {ROUNDS} interleaved rounds)", results, COLUMNS))
        figures[f"t{threads}"] = medians(results)
    return figures


class Fronted:
    """A proxy and the backend behind it: measured as the proxy alone (its CPU, its
    memory), stopped together."""

    def __init__(self, proxy, backend):
        self.proxy, self.backend, self.port = proxy, backend, proxy.port

    def cpu_seconds(self) -> float:
        return self.proxy.cpu_seconds()

    def rss_kib(self, field: str = "VmRSS") -> int:
        return self.proxy.rss_kib(field)

    def stop(self) -> None:
        self.proxy.stop()
        self.backend.stop()


def proxies(keepalive: bool) -> list:
    """TCPie (upstream mode), nginx (proxy_pass, an upstream keepalive pool) and HAProxy in
    front of the same fast backend (bare tokio, keep-alive), each proxy started with its
    own backend."""

    def tcpie():
        backend = start_bare(True)
        env = {"TCPIE_UPSTREAM": f"http://127.0.0.1:{backend.port}", "TCPIE_WORKERS": "512",
               "TCPIE_MAX_REQUESTS_PER_CONNECTION": "1000000"}
        if keepalive:
            env["TCPIE_KEEP_ALIVE"] = "true"
        return Fronted(start_tcpie(env), backend)

    def configured(name, template, argv):
        backend = start_bare(True)
        port = free_port()
        prefix = Path(tempfile.mkdtemp(prefix=f"bench-proxy-{name}-"))
        conf = (ROOT / "bench" / template).read_text()
        conf = conf.replace("@PORT@", str(port)).replace("@BACKEND@", str(backend.port)).replace("@PREFIX@", str(prefix))
        conf = conf.replace("@KEEPALIVE@", ("75s" if keepalive else "0") if name == "nginx" else ("75s" if keepalive else "1s"))
        conf = conf.replace("@CLOSEMODE@", "http-keep-alive" if keepalive else "httpclose")
        (prefix / template.replace(".in", "")).write_text(conf)
        return Fronted(Server(name, argv(prefix / template.replace(".in", ""), prefix), None, port, True), backend)

    def bare(kind):
        # The floors: bare tokio passing requests on through hyper's client connection,
        # and with no HTTP library at all (bench/tools/bare_proxy.rs). Keep-alive only:
        # they keep one backend connection per client connection.
        backend = start_bare(True)
        port = free_port()
        proxy = Server(f"bare {kind}", [str(BARE_PROXY), str(port), str(backend.port), kind], None, port)
        return Fronted(proxy, backend)

    servers = [
        ("tcpie → backend", tcpie),
        ("nginx → backend", lambda: configured("nginx", "proxy-nginx.conf.in", lambda c, p: ["nginx", "-c", str(c), "-p", str(p)])),
        ("haproxy → backend", lambda: configured("haproxy", "proxy-haproxy.cfg.in", lambda c, p: ["haproxy", "-W", "-db", "-f", str(c)])),
    ]
    if keepalive:
        servers += [
            ("bare tokio + hyper client → backend", lambda: bare("hyper")),
            ("bare tokio, no HTTP library → backend", lambda: bare("raw")),
        ]
    return servers


def scenario_p(out: list[str]) -> dict:
    """Proxying: TCPie in upstream mode beside nginx and HAProxy in front of one fast
    backend; the CPU figure is the proxy's alone."""
    figures = {}
    for keepalive, label in ((True, "keep-alive"), (False, "connection per request")):
        for threads in WRK_THREADS:
            results = interleaved(proxies(keepalive), connections=64, close=not keepalive, threads=threads)
            out.append(table(f"P. Proxying to a fast backend, {label}, 64 connections, wrk -t{threads} "
                             f"(medians of {ROUNDS} interleaved rounds; CPU of the proxy alone)", results, COLUMNS))
            figures[f"{'ka' if keepalive else 'close'}-t{threads}"] = medians(results)
    return figures


def scenario_s(out: list[str]) -> dict:
    """System calls per request, connection per request, from a short strace -c -f run of
    its own (tracing slows the server down, so it is kept out of the timed runs)."""
    servers = connection_per_request_servers()
    per: dict[str, dict[str, float]] = {}
    for name, start in servers:
        server = start()
        try:
            pids = server.pids()
            trace = subprocess.Popen(
                ["strace", "-c", "-f", "-qq"] + [a for p in pids for a in ("-p", str(p))],
                stderr=subprocess.PIPE, text=True,
            )
            time.sleep(0.5)
            result = wrk(server.port, connections=16, close=True, duration=3, threads=1)
            trace.send_signal(signal.SIGINT)
            report = trace.communicate(timeout=30)[1]
        finally:
            server.stop()
        calls = {}
        for line in report.splitlines():
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
        per[name] = {k: v / max(result["requests"], 1) for k, v in calls.items()}
    names = sorted({k for v in per.values() for k, x in v.items() if x >= 0.05})
    out.append("\n### S. System calls per request, connection per request (strace -c -f, 3 s, 16 connections, wrk -t1)\n")
    out.append("| syscall | " + " | ".join(per) + " |")
    out.append("|---" * (len(per) + 1) + "|")
    for call in names:
        out.append(f"| {call} | " + " | ".join(f"{per[s].get(call, 0):.2f}" for s in per) + " |")
    out.append("| **total** | " + " | ".join(f"{sum(v for v in per[s].values()):.2f}" for s in per) + " |")
    return per


def scenario_tracing(out: list[str]) -> dict:
    # Tracing compiled in but idle (RUST_LOG=off: no subscriber interest at all) against
    # switched on with no exporter endpoint (RUST_LOG=info, the default).
    results = interleaved(
        [(name, lambda level=level: start_tcpie({"RUST_LOG": level}))
         for name, level in (("RUST_LOG=off (idle)", "off"), ("RUST_LOG=info (on, no endpoint)", "info"))],
        connections=64, close=True,
    )
    out.append(table(f"Logging and tracing on against idle, 64 connections (medians of {ROUNDS} rounds)", results, COLUMNS[:4]))
    idle = median(results["RUST_LOG=off (idle)"], "cpu_us_per_req")
    on = median(results["RUST_LOG=info (on, no endpoint)"], "cpu_us_per_req")
    return {"idle_us": idle, "on_us": on, "overhead": on / idle - 1}


def scenario_k(out: list[str]) -> dict:
    """Per-client rate limits: their cost with TCPIE_CLIENT_KEY=none (the default: it must
    be nothing) and with peer (every request hashes its client and takes a token from its
    bucket; limits high enough that nothing is refused). wrk connects from one address, so
    this is one client: the table's cost for many clients is the criterion benchmark's."""
    peer = {"TCPIE_CLIENT_KEY": "peer", "TCPIE_CLIENT_RATE_PER_SECOND": "1000000000", "TCPIE_CLIENT_BURST": "1000000000"}
    keep = {"TCPIE_KEEP_ALIVE": "true", "TCPIE_MAX_REQUESTS_PER_CONNECTION": "1000000"}
    figures = {}
    for mode, close, extra in (("connection per request", True, {}), ("keep-alive", False, keep)):
        servers = [
            ("tcpie, client key none", lambda extra=extra: start_tcpie(dict(extra))),
            ("tcpie, client key peer", lambda extra=extra: start_tcpie({**extra, **peer})),
        ]
        if BEFORE:
            servers.insert(1, ("tcpie (before)", lambda extra=extra: start_tcpie(dict(extra), Path(BEFORE))))
        for threads in WRK_THREADS:
            results = interleaved(servers, connections=64, close=close, threads=threads)
            out.append(table(f"K. Per-client limits, {mode}, 64 connections, wrk -t{threads} (medians of {ROUNDS} interleaved rounds)", results, COLUMNS[:4]))
            figures[f"{mode}-t{threads}"] = medians(results)
    return figures


class Redis(Server):
    """Debian's redis-server on a loopback port, saving nothing."""

    def __init__(self):
        port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        super().__init__("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                   "--appendonly", "no", "--dir", str(self.dir)], None, port)

    def command(self, *words: str) -> bytes:
        """One command's answer: a bulk string's bytes, or the status line."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(("*%d\r\n" % len(words) + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)).encode())
            answer = s.makefile("rb")
            head = answer.readline()
            return answer.read(int(head[1:])) if head.startswith(b"$") else head

    def commands(self) -> int:
        """Commands Redis has processed (INFO's own call included)."""
        return int(re.search(rb"total_commands_processed:(\d+)", self.command("INFO", "stats")).group(1))


def metric(text: str, line: str) -> float:
    m = re.search(rf"^{re.escape(line)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def scenario_r(out: list[str]) -> dict:
    """Fleet limits (issue 23). Cost: TCPie with the global bucket (and then a client key)
    kept in Redis against the same limits kept in the pod, keep-alive at the same offered
    rate (64 connections paced 6 ms apart: about 10,000 requests/s), limits that refuse
    nothing; Redis's own CPU apart. Commands per 1,000 requests at that rate, from Redis's
    INFO. Over-admission: N processes sharing one limit, each flooded by its own wrk for
    10 s: admitted in total against burst + rate x t."""
    figures: dict = {}
    keep = {"TCPIE_KEEP_ALIVE": "true", "TCPIE_MAX_REQUESTS_PER_CONNECTION": "1000000"}
    limits = {"TCPIE_RATE_PER_SECOND": "20000", "TCPIE_BURST": "2000"}
    clients = {"TCPIE_CLIENT_KEY": "peer", "TCPIE_CLIENT_RATE_PER_SECOND": "20000", "TCPIE_CLIENT_BURST": "2000"}
    redis = Redis()
    try:
        url = {"TCPIE_REDIS_URL": f"redis://127.0.0.1:{redis.port}", "TCPIE_RATE_LIMIT_NAME": "bench"}
        cases = [
            ("global bucket in the pod", {**keep, **limits}),
            ("global bucket in Redis", {**keep, **limits, **url}),
            ("global + client buckets in the pod", {**keep, **limits, **clients}),
            ("global + client buckets in Redis", {**keep, **limits, **clients, **url}),
        ]
        for threads in WRK_THREADS:
            results: dict[str, list[dict]] = {name: [] for name, _ in cases}
            for _ in range(ROUNDS):
                for name, env in cases:
                    server = start_tcpie(env)
                    try:
                        time.sleep(0.5)  # the first lease, or the fallback, settled
                        redis_cpu0, commands0 = redis.cpu_seconds(), redis.commands()
                        text = server.metrics()
                        calls0 = metric(text, 'tcpie_redis_calls_total{call="lease"}') + metric(
                            text, 'tcpie_redis_calls_total{call="client"}')
                        row = measure(server, connections=64, close=False, pace_ms=6, threads=threads)
                        row["redis_cpu_us_per_req"] = (redis.cpu_seconds() - redis_cpu0) / max(row["requests"], 1) * 1e6
                        row["commands_per_1000"] = (redis.commands() - commands0 - 1) / max(row["requests"], 1) * 1000
                        text = server.metrics()
                        calls = metric(text, 'tcpie_redis_calls_total{call="lease"}') + metric(
                            text, 'tcpie_redis_calls_total{call="client"}')
                        row["calls_per_1000"] = (calls - calls0) / max(row["requests"], 1) * 1000
                        row["shared"] = metric(text, 'tcpie_rate_limit_mode{mode="shared"}')
                        row["refused"] = metric(text, 'tcpie_requests_total{outcome="rate_limited"}') + metric(
                            text, 'tcpie_requests_total{outcome="client_rate_limited"}')
                        results[name].append(row)
                    finally:
                        server.stop()
            out.append(table(
                f"R. Limits in the pod and in Redis, keep-alive at about 10,000 requests/s, 64 connections, wrk -t{threads} (medians of {ROUNDS} interleaved rounds)",
                results,
                COLUMNS[:4] + [("redis_cpu_us_per_req", "Redis CPU µs/request", "{:.1f}"),
                               ("calls_per_1000", "TCPie's Redis calls / 1000 requests", "{:.2f}"),
                               ("commands_per_1000", "commands Redis ran / 1000 requests (script steps too)", "{:.1f}"),
                               ("refused", "refused", "{:.0f}")]))
            figures[f"cost-t{threads}"] = medians(results, ("cpu_us_per_req", "rps", "p99_ms", "calls_per_1000", "commands_per_1000", "redis_cpu_us_per_req", "refused"))
        for pods in (3, 10):
            figures[f"over-admission-{pods}"] = over_admission(out, redis, pods)
    finally:
        redis.stop()
    return figures


def over_admission(out: list[str], redis: Redis, pods: int, rate: int = 2000, burst: int = 200, seconds: int = 10) -> dict:
    name = f"bench-flood-{pods}-{time.monotonic_ns()}"
    env = {"TCPIE_KEEP_ALIVE": "true", "TCPIE_MAX_REQUESTS_PER_CONNECTION": "1000000",
           "TCPIE_RATE_PER_SECOND": str(rate), "TCPIE_BURST": str(burst),
           "TCPIE_REDIS_URL": f"redis://127.0.0.1:{redis.port}", "TCPIE_RATE_LIMIT_NAME": name,
           "TCPIE_REDIS_EXPECTED_PODS": str(pods)}
    rows = []
    for _ in range(ROUNDS):
        servers = [start_tcpie(env) for _ in range(pods)]
        try:
            time.sleep(1.0)  # every pod registered and shared
            shared = sum(metric(s.metrics(), 'tcpie_rate_limit_mode{mode="shared"}') for s in servers)
            before = sum(metric(s.metrics(), 'tcpie_requests_total{outcome="processed"}') for s in servers)
            started = time.monotonic()
            loads = [subprocess.Popen(harness.wrk_argv(f"http://127.0.0.1:{s.port}/", 4, seconds, 1),
                                      stdout=subprocess.PIPE, text=True) for s in servers]
            answered = sum(harness.parse_wrk(p.communicate(timeout=seconds + 30)[0])["requests"] for p in loads)
            elapsed = time.monotonic() - started
            admitted = sum(metric(s.metrics(), 'tcpie_requests_total{outcome="processed"}') for s in servers) - before
        finally:
            for s in servers:
                s.stop()
        # The bucket was full at the start (burst), then refilled for the whole window.
        allowed = burst + rate * elapsed
        rows.append({"admitted": admitted, "allowed": allowed, "over": admitted / allowed - 1,
                     "answered": answered, "shared": shared})
    out.append(f"\n### R. Over-admission: {pods} processes sharing {rate}/s (burst {burst}), each flooded by wrk -t1 -c4 for {seconds} s ({ROUNDS} rounds)\n")
    out.append("| round | pods shared | answered | admitted | burst + rate × t | over |")
    out.append("|---|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        out.append(f"| {i} | {r['shared']:.0f}/{pods} | {r['answered']} | {r['admitted']:.0f} | {r['allowed']:.0f} | {r['over'] * 100:+.2f} % |")
    over = harness.median(r["over"] for r in rows)
    out.append(f"| median | | | | | {over * 100:+.2f} % |")
    return {"over": over, "rows": rows}


def scenario_e(out: list[str]) -> None:
    r = subprocess.run(
        ["cargo", "bench", "--bench", "admission", "--", "--warm-up-time", "1", "--measurement-time", "3"],
        capture_output=True, text=True, cwd=ROOT,
    )
    out.append("\n### E. Microbenchmarks (criterion, median ns per operation)\n")
    out.append("| operation | time |")
    out.append("|---|---|")
    for name, value in re.findall(r"^(.+?)\s+time:\s+\[[\d.]+ \S+ ([\d.]+ \S+) [\d.]+ \S+\]", r.stdout, re.M):
        out.append(f"| {name.strip()} | {value} |")


def main() -> int:
    only = set(sys.argv[1:]) or {"A", "B", "C", "D", "P", "S", "T", "K", "R", "E"}
    out = [f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    out.append(f"\nMachine: {os.cpu_count()} cores, {open('/proc/meminfo').readline().split()[1]} kB memory; "
               f"{harness.wrk_version()}; "
               f"{subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip()}; "
               f"{subprocess.run(['rustc', '--version'], capture_output=True, text=True).stdout.strip()}. "
               f"Each load run: {DURATION} s; wrk -t2 unless a table says -t1.")
    figures = {}
    if "A" in only:
        figures["A"] = scenario_a(out)
    if "B" in only:
        figures["B"] = scenario_b(out)
    if "C" in only:
        figures["C"] = scenario_c(out)
    if "D" in only:
        figures["D"] = scenario_d(out)
    if "P" in only:
        figures["P"] = scenario_p(out)
    if "S" in only:
        figures["S"] = scenario_s(out)
    if "T" in only:
        figures["T"] = scenario_tracing(out)
    if "K" in only:
        figures["K"] = scenario_k(out)
    if "R" in only:
        figures["R"] = scenario_r(out)
    if "E" in only:
        scenario_e(out)
    text = "\n".join(out)
    print(text)
    (ROOT / "target" / "bench-figures.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
