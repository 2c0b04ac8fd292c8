"""The local stack, `docker-compose.yml` unchanged, run by Debian's compose v1.29: two TCPie
replicas sharing their limits through Redis in front of the app (busybox's httpd),
Prometheus and Alertmanager up; requests reach the app through TCPie; one client spread
over both replicas gets its limit once; with Redis stopped both fall back to their share
and come back to the shared limits when it returns; Prometheus scrapes TCPie over the compose network, loads
the project's rules and finds its Alertmanager; the `load` profile makes TCPie shed (200s,
429s and 503s in the stack's own Prometheus) while the `calm` client is never rate-limited;
an alert fired by the shipped rules reaches Alertmanager.

Grafana and Jaeger have no package in any registry reachable here, so they are not started
(`--no-deps` keeps compose from starting Jaeger for TCPie); TCPie's spans, sent to a Jaeger
that is not there, are dropped and counted, which the stack tolerates by design."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse

import pytest
import yaml

from conftest import ROOT, http, step, wait_for

PROJECT = "tcpie-citest"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = ["tcpie", "tcpie-2", "redis", "app", "prometheus", "alertmanager"]
REPLICAS = {"tcpie": ("127.0.0.1:8080", "127.0.0.1:9091"), "tcpie-2": ("127.0.0.1:8081", "127.0.0.1:9092")}
PROMETHEUS = "http://127.0.0.1:9090"
ALERTMANAGER = "http://127.0.0.1:9093"


def published_ports() -> list[int]:
    ports = []
    for name in SERVICES:
        for p in COMPOSE["services"][name].get("ports", []):
            host, port, _ = p.split(":")
            assert host == "127.0.0.1", f"{name} publishes {p}: only 127.0.0.1 may be used"
            ports.append(int(port))
    return ports


def api(base: str, path: str, **params) -> dict | list:
    status, body = http(f"{base}{path}?{urllib.parse.urlencode(params)}")
    assert status == 200, (path, status, body[:300])
    answer = json.loads(body)
    return answer["data"] if isinstance(answer, dict) and "data" in answer else answer


def query(expr: str) -> list:
    return api(PROMETHEUS, "/api/v1/query", query=expr)["result"]


@pytest.fixture(scope="module")
def stack(docker, base_images):
    for port in published_ports():
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"127.0.0.1:{port} is in use: the stack publishes its ports there")
    docker.compose(PROJECT, "down", "-v", "--remove-orphans", check=False)
    with step("compose: build tcpie"):
        docker.compose(PROJECT, "build", "tcpie", timeout=3600)
    with step("compose: up " + ", ".join(SERVICES)):
        docker.compose(PROJECT, "up", "-d", "--no-deps", *SERVICES)
        for replica in REPLICAS:
            wait_for(f"{replica} healthy", lambda: health(docker, replica) == "healthy", timeout=60)
        wait_for("Prometheus ready", lambda: http(f"{PROMETHEUS}/-/ready", timeout=1)[0] == 200, timeout=60)
    yield docker
    with step("compose: down"):
        logs = docker.compose(PROJECT, "logs", "--no-color", check=False).stdout
        docker.compose(PROJECT, "--profile", "load", "down", "-v", "--remove-orphans", check=False)
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target" / "compose-citest.log").write_text(logs)


def container(docker, service: str) -> str:
    return docker.compose(PROJECT, "ps", "-q", service).stdout.strip()


def health(docker, service: str) -> str:
    cid = container(docker, service)
    return docker.inspect(cid)["State"].get("Health", {}).get("Status", "none") if cid else "absent"


def test_requests_reach_the_app_through_tcpie(stack):
    status, body = http("http://127.0.0.1:8080/")
    assert (status, body) == (200, b"hello from the app behind TCPie\n")
    status, text = http("http://127.0.0.1:9091/metrics")
    assert 'tcpie_upstream_requests_total{class="2xx"} 1' in text.decode()


def metrics(replica: str) -> dict[str, float]:
    """The replica's samples, by their line's name and labels."""
    status, text = http(f"http://{REPLICAS[replica][1]}/metrics")
    assert status == 200
    samples = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def modes() -> dict[str, str]:
    found = {}
    for replica in REPLICAS:
        for mode in ("local", "shared", "fallback"):
            if metrics(replica).get(f'tcpie_rate_limit_mode{{mode="{mode}"}}') == 1:
                found[replica] = mode
    return found


def passed_the_limits(replica: str) -> float:
    m = metrics(replica)
    total = sum(v for k, v in m.items() if k.startswith("tcpie_requests_total{"))
    refused = sum(m.get(f'tcpie_requests_total{{outcome="{o}"}}', 0) for o in ("rate_limited", "client_rate_limited"))
    return total - refused


def test_one_client_spread_over_both_replicas_gets_its_limit_once(stack):
    """The host is one client (the bridge's gateway address) to both replicas: its bucket of
    10/s with bursts of 20 is one bucket in Redis, not one per replica (which would admit 40
    of a flood of 60 at once)."""
    from concurrent.futures import ThreadPoolExecutor

    wait_for("both replicas on the shared limits", lambda: modes() == {r: "shared" for r in REPLICAS}, timeout=30)
    time.sleep(2.5)  # the client's bucket full again after the requests of the tests before
    before = {r: passed_the_limits(r) for r in REPLICAS}
    urls = [f"http://{REPLICAS[r][0]}/" for r in REPLICAS] * 30
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(lambda url: http(url, timeout=20)[0], urls))
    elapsed = time.monotonic() - started
    passed = {r: passed_the_limits(r) - before[r] for r in REPLICAS}
    allowed = 20 + 10 * elapsed
    print(f"one client, 60 requests over 2 replicas in {elapsed:.2f} s: {passed} passed the limits "
          f"(allowed {allowed:.1f}), statuses { {s: statuses.count(s) for s in set(statuses)} }")
    assert statuses.count(429) >= 60 - allowed - 1, statuses
    assert sum(passed.values()) <= allowed + 1, passed
    assert sum(passed.values()) >= 15, passed
    assert all(p > 0 for p in passed.values()), passed


def test_without_redis_both_replicas_fall_back_and_return(stack):
    docker = stack
    with step("compose: stop redis, the replicas fall back to their share"):
        docker.compose(PROJECT, "stop", "redis")
        try:
            wait_for("both replicas in fallback", lambda: modes() == {r: "fallback" for r in REPLICAS}, timeout=30)
            for replica, (tcp, admin) in REPLICAS.items():
                # Still serving, still ready: Redis is not a dependency of readiness.
                assert http(f"http://{tcp}/", timeout=5)[0] in (200, 429)
                assert http(f"http://{admin}/readyz")[0] == 200
                assert health(docker, replica) == "healthy"
        finally:
            docker.compose(PROJECT, "start", "redis")
    with step("compose: start redis, the replicas return to the shared limits"):
        wait_for("both replicas shared again", lambda: modes() == {r: "shared" for r in REPLICAS}, timeout=30)


def test_prometheus_scrapes_tcpie_loads_the_rules_and_finds_alertmanager(stack):
    def tcpie_up():
        targets = api(PROMETHEUS, "/api/v1/targets")["activeTargets"]
        return len([t for t in targets if t["labels"]["job"] == "tcpie" and t["health"] == "up"]) == len(REPLICAS)

    wait_for("Prometheus's targets for both TCPie replicas up", tcpie_up, timeout=30)
    loaded = {g["name"]: {r["name"] for r in g["rules"]} for g in api(PROMETHEUS, "/api/v1/rules")["groups"]}
    for path in ("rules.yml", "alerts.yml"):
        for group in yaml.safe_load((ROOT / "prometheus" / path).read_text())["groups"]:
            names = {r.get("alert") or r.get("record") for r in group["rules"]}
            assert loaded.get(group["name"]) == names, (path, group["name"], loaded)
    wait_for(
        "Prometheus's Alertmanager active",
        lambda: api(PROMETHEUS, "/api/v1/alertmanagers")["activeAlertmanagers"],
        timeout=30,
    )
    assert api(ALERTMANAGER, "/api/v2/status")["cluster"]["status"] in ("ready", "settling")


def test_the_load_profile_sheds_while_the_calm_client_is_served(stack):
    docker = stack
    with step("compose: load profile"):
        docker.compose(PROJECT, "--profile", "load", "up", "-d", "--no-deps", "load", "calm")
        try:

            def shedding():
                counts = {
                    r["metric"]["outcome"]: float(r["value"][1])
                    for r in query('sum by (outcome) (tcpie_requests_total{job="tcpie"})')
                }
                refused_429 = counts.get("client_rate_limited", 0) + counts.get("rate_limited", 0)
                if counts.get("processed", 0) > 0 and refused_429 > 0 and counts.get("queue_full", 0) > 0:
                    return counts
                return None

            counts = wait_for("200s, 429s and 503s in the stack's Prometheus", shedding, timeout=90, every=2)
            # Long enough for the calm client to meet the flood at its worst, a few times.
            time.sleep(10)
        finally:
            calm = docker.compose(PROJECT, "--profile", "load", "logs", "--no-color", "calm").stdout
            docker.compose(PROJECT, "--profile", "load", "rm", "-s", "-f", "load", "calm")
    print(f"the stack's Prometheus counted {counts}")
    statuses = [line.split("HTTP/1.1 ", 1)[1][:3] for line in calm.splitlines() if "HTTP/1.1 " in line]
    print(f"the calm client's answers: { {s: statuses.count(s) for s in set(statuses)} }")
    assert len(statuses) >= 10, calm[-2000:]
    assert "429" not in statuses, calm[-2000:]
    assert set(statuses) <= {"200", "503"}, statuses


def test_an_alert_of_the_shipped_rules_reaches_alertmanager(stack):
    """TCPieDown (`up == 0` for 1m, as shipped) once TCPie is stopped; it was up before."""
    docker = stack
    cid = container(docker, "tcpie")
    with step("compose: stop tcpie, TCPieDown reaches Alertmanager"):
        docker.compose(PROJECT, "stop", "tcpie")
        assert docker.inspect(cid)["State"]["ExitCode"] == 0

        def fired():
            alerts = api(ALERTMANAGER, "/api/v2/alerts", filter='alertname="TCPieDown"')
            return [a for a in alerts if a["status"]["state"] == "active"]

        alerts = wait_for("TCPieDown in Alertmanager", fired, timeout=150, every=2)
    assert alerts[0]["labels"]["severity"] == "critical", alerts
    assert alerts[0]["labels"]["job"] == "tcpie", alerts
