"""The chart on first contact, proven by running what users run: values files (every
number at its schema maximum too) rendered by Helm and started as the real binary; the
`helm test` pod's own script run by a real busybox against TCPie answering 200, 429 and
503; every rendered manifest validated against every Kubernetes minor version the chart
claims; the packaged chart rendering like the folder; and the settings that cannot work
together refused with a message."""

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from helm_python import chart

from conftest import BINARY, ROOT, Tcpie, http, loopback_env
from test_helm import CHART, CRD_KINDS, NAMESPACE, SCENARIOS, VENV_BIN, by_kind, container_env, documents, render, values


def kube_minors() -> list[str]:
    """Every minor version from Chart.yaml's kubeVersion lower bound to the newest schema."""
    constraint = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    low = int(re.match(r">=\s*1\.(\d+)", constraint).group(1))
    schemas = (VENV_BIN.parent / "lib").glob("python*/site-packages/kubernetes_validate/kubernetes-json-schema/v1.*-local")
    high = max(int(re.search(r"v1\.(\d+)\.", p.name).group(1)) for p in schemas)
    assert high >= 37, high
    return [f"1.{m}.0" for m in range(low, high + 1)]


# --- values files, Kubernetes versions ---------------------------------------------------


@pytest.fixture(params=SCENARIOS, ids=lambda p: p.stem)
def scenario(request) -> Path:
    return request.param


def test_every_values_file_starts_the_binary(scenario, tmp_path):
    docs = documents(render(values(scenario)))
    env = container_env(docs, {"K8S_POD_NAME": "tcpie-abc", "K8S_NAMESPACE": NAMESPACE})
    if "TCPIE_REDIS_PASSWORD_FILE" in env:
        # The Secret's key, where the kubelet would mount it.
        (tmp_path / "password").write_text("from-the-secret\n")
        env["TCPIE_REDIS_PASSWORD_FILE"] = str(tmp_path / "password")
    # Helm reads YAML numbers as float64: an integer must not come out as "1e+06".
    for name, value in env.items():
        # Rates are fractions: "1e+09" is a float the binary reads as such.
        if name.startswith("TCPIE_") and name not in ("TCPIE_RATE_PER_SECOND", "TCPIE_CLIENT_RATE_PER_SECOND"):
            assert "e+" not in value, (name, value)
    tcpie = Tcpie({**env, "TCPIE_HOST": "127.0.0.1", "TCPIE_PORT": "0", "TCPIE_ADMIN_PORT": "0"})
    try:
        assert http(f"http://{tcpie.admin}/livez")[0] == 200
    finally:
        tcpie.proc.kill()
        tcpie.proc.wait()


def test_the_largest_values_render_as_plain_integers():
    cm = by_kind(documents(render(values(CHART / "ci" / "max-values.yaml"))), "ConfigMap")[0]["data"]
    assert cm["TCPIE_QUEUE_SIZE"] == "1000000"
    assert cm["TCPIE_MAX_CONNECTIONS"] == "1000000"
    assert cm["TCPIE_BURST"] == "1000000000"
    assert cm["TCPIE_LIVENESS_STALL_MS"] == "86400000"


def test_every_scenario_validates_against_every_kubernetes_minor(tmp_path):
    paths = []
    for scenario in SCENARIOS:
        docs = [d for d in documents(render(values(scenario))) if d["kind"] not in CRD_KINDS]
        path = tmp_path / f"{scenario.stem}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        paths.append(path)
    for version in kube_minors():
        r = subprocess.run(
            [str(VENV_BIN / "kubernetes-validate"), "--strict", "-k", version, *map(str, paths)],
            capture_output=True,
        )
        assert r.returncode == 0, (version, r.stdout.decode()[-3000:], r.stderr.decode()[-2000:])


def test_a_zero_pre_stop_sleep_renders_no_hook():
    # Kubernetes 1.30 to 1.32 refuse a sleep action of 0 seconds (1.33 allows it), and the
    # schemas do not say so: the chart leaves the hook out instead.
    pod = by_kind(documents(render({"preStopSleepSeconds": 0})), "Deployment")[0]["spec"]["template"]["spec"]
    assert "lifecycle" not in pod["containers"][0]
    pod = by_kind(documents(render({})), "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 5


# --- the helm test pod, run by a real busybox ----------------------------------------------


def helm_test_script(rendered: dict[str, str]) -> tuple[str, dict]:
    (pod,) = [d for d in documents(rendered) if d["kind"] == "Pod"]
    command = pod["spec"]["containers"][0]["command"]
    assert command[:2] == ["sh", "-c"]
    return command[2], pod


def run_test_pod(script: str, tcp: str, admin: str, bin_dir: Path) -> subprocess.CompletedProcess:
    # The Service's names become the local addresses; nothing else in the script changes.
    script = script.replace("http://tcpie:8080", f"http://{tcp}").replace("http://tcpie:9090", f"http://{admin}")
    return subprocess.run(
        [str(bin_dir / "sh"), "-c", script],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def busybox(tmp_path_factory) -> Path:
    """A folder of busybox applets, the test pod's whole userland."""
    path = shutil.which("busybox")
    assert path, "busybox is missing (scripts/setup.sh installs busybox-static)"
    bin_dir = tmp_path_factory.mktemp("busybox")
    subprocess.run([path, "--install", "-s", str(bin_dir)], check=True)
    return bin_dir


def test_the_helm_test_script_accepts_200_429_and_503_and_fails_when_nothing_answers(busybox, start_tcpie):
    script, pod = helm_test_script(render({}))
    assert pod["spec"]["containers"][0]["image"].startswith("busybox")
    assert "http://tcpie:8080" in script and "http://tcpie:9090" in script

    ok = start_tcpie(loopback_env(TCPIE_BURST="0"))
    limited = start_tcpie(loopback_env(TCPIE_BURST="1", TCPIE_RATE_PER_SECOND="0.001"))
    assert limited.get() == 200
    full = start_tcpie(
        loopback_env(
            TCPIE_BURST="0", TCPIE_WORKERS="1", TCPIE_QUEUE_SIZE="0",
            TCPIE_SIMULATED_WORK_MS="20000", TCPIE_SHUTDOWN_TIMEOUT_MS="100",
        )
    )
    host, port = full.tcp.rsplit(":", 1)
    busy = socket.create_connection((host, int(port)))
    busy.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
    deadline = time.monotonic() + 5
    while '"workers_busy":1' not in full.probe("/livez"):
        assert time.monotonic() < deadline
        time.sleep(0.02)

    for server, expected in ((ok, "200"), (limited, "429"), (full, "503")):
        r = run_test_pod(script, server.tcp, server.admin, busybox)
        assert r.returncode == 0, (expected, r.stdout, r.stderr)
        assert f"status={expected}" in r.stdout, (expected, r.stdout)
    busy.close()

    # Nothing listening: the test fails.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_test_pod(script, f"127.0.0.1:{port}", f"127.0.0.1:{port}", busybox)
    assert r.returncode != 0, r.stdout


# --- settings that cannot work together, and what a Helm user expects ---------------------


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ({"autoscaling": {"keda": {"enabled": True}}}, "serviceMonitor"),
        ({"autoscaling": {"hpa": {"enabled": True, "saturation": {"enabled": True}}}}, "prometheusRule"),
        ({"autoscaling": {"keda": {"enabled": True, "minReplicas": 0}}, "metrics": {"serviceMonitor": {"enabled": True}}}, "minReplicas"),
        ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "podDisruptionBudget"),
        ({"image": {"digest": "latest"}}, "digest"),
        ({"metrics": {"prometheusRule": {"disabledAlerts": ["TCPieTypo"]}}}, "disabledAlerts"),
    ],
)
def test_settings_that_cannot_work_are_refused(bad, complaint):
    with pytest.raises(Exception) as e:
        render(bad)
    assert complaint in str(e.value), str(e.value)


def test_scrape_annotations_give_way_to_a_service_monitor():
    def annotations(vals):
        return by_kind(documents(render(vals)), "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]

    assert annotations({})["prometheus.io/scrape"] == "true"
    both = annotations({"metrics": {"serviceMonitor": {"enabled": True}}})
    assert "prometheus.io/scrape" not in both, "scraped twice"


def test_rules_can_be_dropped_labelled_and_pointed_at_your_runbooks():
    vals = {
        "metrics": {
            "prometheusRule": {
                "enabled": True,
                "disabledAlerts": ["TCPieHighLatency"],
                "extraAlertLabels": {"team": "edge", "severity": "page"},
                "runbookBaseUrl": "https://wiki.example.com/tcpie",
            }
        }
    }
    (rule,) = by_kind(documents(render(vals)), "PrometheusRule")
    recorded = yaml.safe_load((ROOT / "prometheus" / "rules.yml").read_text())["groups"]
    assert rule["spec"]["groups"][: len(recorded)] == recorded
    alerts = {r["alert"]: r for g in rule["spec"]["groups"][len(recorded):] for r in g["rules"]}
    assert "TCPieHighLatency" not in alerts and "TCPieDown" in alerts
    for alert in alerts.values():
        assert alert["labels"]["team"] == "edge"
        # The alert's own severity wins over an extra label.
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["runbook_url"].startswith("https://wiki.example.com/tcpie#")
    vals["metrics"]["prometheusRule"]["alerts"] = False
    (rule,) = by_kind(documents(render(vals)), "PrometheusRule")
    assert rule["spec"]["groups"] == recorded


def test_the_extension_points_reach_the_pod():
    docs = documents(render(values(CHART / "ci" / "min-values.yaml")))
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == (
        "registry.example.com/platform/tcpie@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert dep["metadata"]["name"] == "edge" and dep["metadata"]["labels"]["team"] == "edge"
    assert pod["priorityClassName"] == "edge-critical"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["revisionHistoryLimit"] == 10
    # OpenShift-style: no fixed UID when the values leave it out.
    assert "runAsUser" not in pod["securityContext"]
    assert {"configMapRef": {"name": "edge"}} in container["envFrom"]
    assert {"secretRef": {"name": "edge-otel-headers"}} in container["envFrom"]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert pod["volumes"] == [{"name": "tmp", "emptyDir": {}}]
    assert [c["name"] for c in pod["containers"]] == ["tcpie", "sidecar"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait"]
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    for d in docs:
        assert d["metadata"]["labels"]["team"] == "edge", d["kind"]


def test_defaults_spread_softly_and_never_block_a_drain():
    docs = documents(render({}))
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    spread = pod["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spread)
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": by_kind(docs, "Deployment")[0]["spec"]["selector"],
    }


def test_the_service_monitor_and_hpa_take_their_options():
    vals = {
        "autoscaling": {"hpa": {"enabled": True, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}},
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "scrapeTimeout": "5s",
                "jobLabel": "app.kubernetes.io/name",
                "relabelings": [{"action": "replace", "targetLabel": "cluster", "replacement": "eu-1"}],
                "metricRelabelings": [{"action": "drop", "sourceLabels": ["__name__"], "regex": "process_.*"}],
            }
        },
    }
    docs = documents(render(vals))
    (sm,) = by_kind(docs, "ServiceMonitor")
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["scrapeTimeout"] == "5s"
    assert endpoint["relabelings"][0]["targetLabel"] == "cluster"
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    assert sm["spec"]["jobLabel"] == "app.kubernetes.io/name"
    (hpa,) = by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300


# --- publishing ---------------------------------------------------------------------------


def test_the_packaged_chart_renders_like_the_folder(tmp_path):
    archive = chart.package(str(CHART), destination=str(tmp_path))
    assert Path(archive).exists()
    packaged = chart.Chart.load(archive)
    for scenario in SCENARIOS:
        vals = values(scenario)
        assert packaged.render(vals, name="tcpie", namespace=NAMESPACE) == render(vals), scenario.stem
    # The files behind the links travel inside the archive, not as links.
    listing = subprocess.run(["tar", "-tvzf", archive], capture_output=True, text=True, check=True).stdout
    assert "tcpie/files/alerts.yml" in listing and "tcpie/files/rules.yml" in listing
    assert not any(line.startswith("l") for line in listing.splitlines()), listing
    assert "tcpie/ci/" not in listing, ".helmignore keeps the CI scenarios out"


def test_the_readme_deploy_commands_agree_with_the_chart_and_compose():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploy to Kubernetes")
    deploy = readme[start: readme.index("\n## ", start)]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = f"tcpie:{app_version}"
    # kind: the image built is the image loaded is the chart's default image.
    assert f"docker build -t {image} ." in deploy
    assert f"kind load docker-image {image}" in deploy
    default = by_kind(documents(render({})), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert default == image
    # A real registry: tagged and pushed to where the chart is told to pull from.
    assert f'docker tag {image} "$REGISTRY/{image}"' in deploy
    assert f'docker push "$REGISTRY/{image}"' in deploy
    assert '--set image.registry="$REGISTRY"' in deploy
    # The plain manifests name the same image.
    manifests = (ROOT / "k8s" / "tcpie.yaml").read_text()
    assert f"image: {image}" in manifests or f'image: "{image}"' in manifests
    # The standalone Jaeger example runs the image compose runs.
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jaeger = compose["services"]["jaeger"]["image"]
    assert f"docker run -d --name jaeger -p 4317:4317 -p 16686:16686 {jaeger}" in readme
