"""The local stack's artifacts, proven by the real tools: Prometheus scrapes a real tcpie
with the stack's own configuration and answers every dashboard query; promtool checks the
configuration, rules and metrics; the compose file's environment starts the binary; the
Dockerfile, compose file, YAML and dashboards pass their linters and schemas."""

import concurrent.futures
import copy
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BINARY, ROOT, free_port, http, loopback_env

PROMETHEUS_DIR = ROOT / "prometheus"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
VENV_BIN = Path(os.environ.get("TCPIE_VENV_BIN", ROOT / ".venv" / "bin"))


def run(*cmd: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input, capture_output=True, cwd=ROOT)


# --- promtool -------------------------------------------------------------------------


def test_promtool_checks_the_config_and_rules():
    for cmd in (
        ("promtool", "check", "config", "prometheus/prometheus.yml"),
        ("promtool", "check", "rules", "prometheus/rules.yml", "prometheus/alerts.yml"),
        ("promtool", "test", "rules", "prometheus/alerts_test.yml"),
    ):
        r = run(*cmd)
        assert r.returncode == 0, (cmd, r.stdout.decode(), r.stderr.decode())


def test_promtool_accepts_tcpies_metrics(start_tcpie):
    tcpie = start_tcpie(loopback_env(TCPIE_BURST="0"))
    assert tcpie.get() == 200
    text = tcpie.metrics()
    # promtool passes empty input, so make sure there is something to check.
    assert "tcpie_requests_total" in text and len(text) > 1000
    r = run("promtool", "check", "metrics", input=text.encode())
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


# --- Prometheus and the dashboards -----------------------------------------------------


def panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def substitute(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "15s")
        .replace("$job", "tcpie")
        .replace("$instance", ".*")
        .replace("${datasource}", "")
    )


def traffic(tcpie) -> None:
    """One round of requests that produces every outcome the stack can show here."""
    host, port = tcpie.tcp.rsplit(":", 1)

    def raw(payload: bytes, wait: float = 5.0) -> bytes:
        with socket.create_connection((host, int(port)), timeout=wait) as s:
            s.sendall(payload)
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            return data

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        # More at once than workers + queue: processed, queue_full, rate_limited.
        list(pool.map(lambda _: tcpie.get(), range(8)))
    assert raw(b"BROKEN\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = b"GET / HTTP/1.1\r\nHost: t\r\nX-Fill: " + b"a" * 600 + b"\r\n\r\n"
    assert raw(big).startswith(b"HTTP/1.1 431")
    assert raw(b"GET / HTT").startswith(b"HTTP/1.1 408")


def test_prometheus_scrapes_tcpie_and_answers_every_dashboard_query(start_tcpie, start_prometheus):
    tcpie = start_tcpie(
        loopback_env(
            TCPIE_WORKERS="1",
            TCPIE_QUEUE_SIZE="1",
            TCPIE_SIMULATED_WORK_MS="100",
            TCPIE_BURST="5",
            TCPIE_RATE_PER_SECOND="3",
            TCPIE_READ_TIMEOUT_MS="300",
            TCPIE_MAX_HEADER_BYTES="256",
        )
    )
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    for job in config["scrape_configs"]:
        if job["job_name"] == "tcpie":
            job["static_configs"] = [{"targets": [tcpie.admin]}]
    config["scrape_configs"] = [j for j in config["scrape_configs"] if j["job_name"] == "tcpie"]
    config.pop("alerting")  # no Alertmanager here; the rules are evaluated all the same
    prometheus = start_prometheus(config, [PROMETHEUS_DIR / "rules.yml", PROMETHEUS_DIR / "alerts.yml"])

    # Traffic over several scrapes, so that rates and quantiles have data.
    deadline = time.monotonic() + 40
    while True:
        traffic(tcpie)
        up = prometheus.query('up{job="tcpie"}')
        outcomes = prometheus.query('tcpie_requests_total{job="tcpie"} > 0')
        if up and up[0]["value"][1] == "1" and len(outcomes) >= 6:
            samples = prometheus.query('count_over_time(tcpie_requests_total{job="tcpie",outcome="processed"}[30s])')
            if samples and float(samples[0]["value"][1]) >= 6:
                break
        assert time.monotonic() < deadline, f"not scraped enough: up={up} outcomes={outcomes}"
        time.sleep(0.5)
    seen = {r["metric"]["outcome"] for r in outcomes}
    assert {"processed", "rate_limited", "queue_full", "bad_request", "header_too_large", "read_timeout"} <= seen

    checked, expected = 0, 0
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"])
            assert m, variable["query"]
            values = prometheus.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
            assert values, f"variable {variable['name']} has no values"
        for panel in panels(dashboard):
            expected += len(panel.get("targets", []))
            for target in panel.get("targets", []):
                expr = substitute(target["expr"])
                result = prometheus.query(expr)
                assert result, f"{path.name}: panel {panel['title']!r} returned no data for {expr}"
                checked += 1
    assert checked == expected > 0

    rules = prometheus.api("rules")["groups"]
    declared = sum(
        len(g["rules"])
        for f in ("rules.yml", "alerts.yml")
        for g in yaml.safe_load((PROMETHEUS_DIR / f).read_text())["groups"]
    )
    assert sum(len(g["rules"]) for g in rules) == declared == 15
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


# --- compose ---------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_compose_environment_starts_tcpie_and_passes_its_healthcheck(start_tcpie):
    service = compose()["services"]["tcpie"]
    env = {k: str(v) for k, v in service["environment"].items()}
    assert any(k.startswith("TCPIE_") for k in env)
    # Ports remapped to free loopback ports, and the app (the compose file's own, busybox's
    # httpd serving compose/app) started here where compose would name it; everything else
    # exactly as compose sets it.
    app = compose()["services"]["app"]
    assert env["TCPIE_UPSTREAM"] == "http://app:8000" and "8000" in app["command"]
    app_port = free_port()
    root = ROOT / app["volumes"][0].split(":")[0]
    httpd = subprocess.Popen(["busybox", "httpd", "-f", "-p", f"127.0.0.1:{app_port}", "-h", str(root)])
    try:
        overrides = {
            "TCPIE_HOST": "127.0.0.1",
            "TCPIE_PORT": "0",
            "TCPIE_ADMIN_PORT": "0",
            "TCPIE_UPSTREAM": f"http://127.0.0.1:{app_port}",
        }
        tcpie = start_tcpie({**env, **overrides})
        status, body = http(f"http://{tcpie.tcp}/")
        assert (status, body) == (200, b"hello from the app behind TCPie\n")
    finally:
        httpd.terminate()
        httpd.wait()
    # The compose healthcheck, with the image's path replaced by the local binary; it
    # reads the admin port from the same environment as the server.
    admin_port = tcpie.admin.rsplit(":", 1)[1]
    test = service["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] == "/usr/local/bin/tcpie"
    r = subprocess.run(
        [str(BINARY), *test[2:]],
        env={**tcpie.env, "TCPIE_ADMIN_PORT": admin_port},
        capture_output=True,
    )
    assert r.returncode == 0, r.stderr.decode()
    # The Dockerfile's HEALTHCHECK runs the same command.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["/usr/local/bin/tcpie", "healthcheck"]' in dockerfile
    # Every port the service publishes is one the binary listens on by default.
    published = {int(p.rsplit(":", 1)[1]) for p in service["ports"]}
    assert published == {8080, 9090}


def test_an_unknown_tcpie_variable_in_compose_would_fail(start_tcpie):
    # The same path as above with a typo: the binary refuses it, so the test above
    # would fail for a compose file naming a variable the binary does not know.
    env = {k: str(v) for k, v in compose()["services"]["tcpie"]["environment"].items()}
    env.update({"TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0", "TCPIE_WORKRS": "2"})
    r = subprocess.run([str(BINARY)], env=env, capture_output=True, timeout=20)
    assert r.returncode == 64
    assert b"TCPIE_WORKRS" in r.stderr


def test_the_monitoring_does_not_wait_for_tcpie():
    # A TCPie that crash-loops is when Prometheus, its alerts and Grafana are needed.
    services = compose()["services"]
    for name in ("prometheus", "grafana", "alertmanager", "jaeger"):
        assert "tcpie" not in services[name].get("depends_on", {}), name
        for dependency in services[name].get("depends_on", {}).values():
            assert dependency["condition"] != "service_healthy", name
    # Firing alerts have somewhere to go.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
    assert "127.0.0.1:9093:9093" in services["alertmanager"]["ports"]
    mount = services["alertmanager"]["volumes"][0].split(":")
    assert (ROOT / mount[0]).exists()
    r = run("amtool", "check-config", str(ROOT / mount[0]))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_panels_and_alerts_share_their_expressions():
    """Where a panel and an alert mean the same thing, both use the same recording rule
    (prometheus/rules.yml), so they cannot count different outcomes."""
    recorded = {
        r["record"]: r["expr"]
        for g in yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())["groups"]
        for r in g["rules"]
    }
    alerts = {
        r["alert"]: r["expr"]
        for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    dashboard = json.loads((ROOT / "grafana" / "dashboards" / "tcpie-overview.json").read_text())
    rejection = next(p for p in panels(dashboard) if p.get("title") == "Rejection ratio")
    shared = "tcpie:capacity_rejections:ratio_rate5m"
    assert any(t["expr"].startswith(shared + "{") for t in rejection["targets"])
    assert alerts["TCPieHighRejectionRatio"].lstrip().startswith(shared)
    assert 'outcome=~"queue_full|queue_timeout|shutting_down"' in recorded[shared]
    # The queue-fill alert and the autoscalers' ratio are recording rules too.
    assert alerts["TCPieQueueSaturated"].startswith("tcpie:queue_fill:ratio")
    assert "tcpie:workers_busy:ratio" in recorded


def test_every_alert_has_a_severity_and_a_runbook():
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^## (.+)$", runbooks, re.M)
    }
    for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]:
        for rule in g["rules"]:
            assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
            url = rule["annotations"]["runbook_url"]
            assert url.startswith("https://example.invalid/tcpie/blob/main/docs/runbooks.md#"), url
            assert url.rsplit("#", 1)[1] in anchors, f"no runbook section for {rule['alert']}"


def test_compose_ports_do_not_clash_and_stay_on_loopback():
    published = []
    for name, service in compose()["services"].items():
        published += [p.rsplit(":", 1)[0] for p in service.get("ports", [])]
    assert len(published) == len(set(published)), published
    # Nothing of the stack (the admin port, Prometheus, Grafana: no authentication) is
    # offered to the host's network.
    assert all(p.startswith("127.0.0.1:") for p in published), published


# --- dashboards ------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_conventions(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"job", "instance"} <= variables.keys()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title} has no unit"
        assert panel["targets"], f"{title} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            expr = target["expr"]
            if re.match(r"tcpie:\w+:\w+\{", expr):
                # A recording rule, shared with the alerts: aggregated per job over its
                # own window, so it is selected by $job only.
                assert "$job" in expr, f"{title}: {expr}"
                continue
            assert "$job" in expr and "$instance" in expr, f"{title}: {expr}"
            for window in re.findall(r"\[([^\]]+)\]", expr):
                assert window == "$__rate_interval", f"{title}: {expr}"


def grafana_schema() -> Path:
    schema = os.environ.get("TCPIE_GRAFANA_SCHEMA")
    if not schema or not Path(schema).exists():
        pytest.fail("TCPIE_GRAFANA_SCHEMA is not set: run the suite with scripts/test.sh, which generates it")
    return Path(schema)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_the_grafana_schema(path):
    r = run(str(VENV_BIN / "check-jsonschema"), "--schemafile", str(grafana_schema()), str(path))
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_the_grafana_schema_rejects_a_broken_dashboard(tmp_path):
    dashboard = json.loads(DASHBOARDS[0].read_text())
    broken = copy.deepcopy(dashboard)
    broken["panels"][1]["gridPos"] = {"h": "tall"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    r = run(str(VENV_BIN / "check-jsonschema"), "--schemafile", str(grafana_schema()), str(tmp_path / "broken.json"))
    assert r.returncode != 0


def test_grafana_provisioning_points_at_the_dashboards():
    ds = yaml.safe_load((ROOT / "grafana/provisioning/datasources/datasources.yml").read_text())
    types = {d["type"] for d in ds["datasources"]}
    assert {"prometheus", "jaeger"} <= types
    services = compose()["services"]
    for d in ds["datasources"]:
        host = re.match(r"http://([^:/]+)", d["url"]).group(1)
        assert host in services, d
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/dashboards.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    mounts = services["grafana"]["volumes"]
    assert any(m.startswith("./grafana/dashboards:" + path) for m in mounts), mounts
    trace_endpoint = services["tcpie"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert trace_endpoint == "http://jaeger:4317"


# --- linters ---------------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    r = run(str(VENV_BIN / "hadolint"), "Dockerfile")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_the_compose_file_matches_the_compose_spec():
    r = run(str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_yamllint_passes_all_yaml():
    # The repository's own YAML (tracked or new, not ignored), Helm templates excepted.
    listed = run("git", "ls-files", "--cached", "--others", "--exclude-standard", "*.yml", "*.yaml")
    files = [f for f in listed.stdout.decode().split() if not f.startswith("helm/tcpie/templates/")]
    assert "docker-compose.yml" in files and "prometheus/alerts.yml" in files
    r = run("yamllint", "--strict", *files)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
