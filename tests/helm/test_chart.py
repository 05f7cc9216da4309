"""helm/cutover rendered offline for each way of running it: lint clean, every object valid for
Kubernetes, a config that `cutover check-config` accepts, no secret outside the Secret, pods
that drain and are hardened, and values that cannot work refused with the chart's message."""

from __future__ import annotations

import copy
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.helm.chart_helpers import (
    CASES,
    CHART,
    CRDS,
    KUBE_VERSION,
    NAMESPACE,
    RELEASE,
    ROOT,
    Rendered,
    case_values,
    check_config,
    render,
    render_error,
    validate_object,
)

FULLNAME = f"{RELEASE}-cutover"


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    """Every case of the matrix, rendered once for the whole module."""
    return {case: render(case_values(case)) for case in CASES}


@pytest.mark.parametrize("case", CASES)
def test_lint_strict_is_clean(case: str) -> None:
    report = helm.lint(CHART, case_values(case), strict=True, kube_version=f"v{KUBE_VERSION}.0")
    assert report["errors"] == []
    # severity 1 is information ("icon is recommended"); warnings and errors fail --strict
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", CASES)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Rendered], case: str
) -> None:
    objects = rendered[case].objects
    assert objects
    for obj in objects:
        validate_object(obj)


def test_the_crd_check_notices_an_unknown_field(rendered: dict[str, Rendered]) -> None:
    monitor = copy.deepcopy(rendered["gateway-ha"].one("ServiceMonitor"))
    del monitor["metadata"]
    monitor["spec"]["endpoints"][0]["scrapeEvery"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeEvery"):
        CRDS["ServiceMonitor"].validate(monitor)


@pytest.mark.parametrize("case", CASES)
def test_the_configmap_passes_check_config(
    rendered: dict[str, Rendered], case: str, tmp_path: Path
) -> None:
    r = rendered[case]
    result = check_config(r.config_text(), r.secret_env(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert ": ok — listen 0.0.0.0:8080" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_no_secret_reaches_the_configmap(rendered: dict[str, Rendered], case: str) -> None:
    r = rendered[case]
    text = r.config_text()
    for name, value in r.secret_env().items():
        assert value not in text, name
        if name not in ("CUTOVER_DATABASE_URL", "CUTOVER_REDIS_URL"):
            assert f"${{{name}}}" in text, f"{name} is never referenced"
    for container in r.pod_spec()["containers"] + r.pod_spec()["initContainers"]:
        if container["name"].startswith("cutover"):
            assert all("value" not in e or "TOKEN" not in e["name"] for e in container["env"])


@pytest.mark.parametrize("case", CASES)
def test_the_pod_checks_its_config_drains_and_is_hardened(
    rendered: dict[str, Rendered], case: str
) -> None:
    r = rendered[case]
    spec = r.pod_spec()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (init,) = spec["initContainers"]
    assert init["command"] == ["cutover", "check-config", "/etc/cutover/cutover.yaml"]
    cutover = next(c for c in spec["containers"] if c["name"] == "cutover")
    assert cutover["command"] == ["cutover", "serve", "-c", "/etc/cutover/cutover.yaml"]
    assert init["volumeMounts"] == cutover["volumeMounts"]
    assert init.get("envFrom") == cutover.get("envFrom")
    for c in (init, cutover):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert set(c["resources"]) == {"requests", "limits"}
    assert cutover["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert cutover["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert cutover["startupProbe"]["httpGet"]["path"] == "/healthz"
    # writable only where state lives: the state volume and /tmp, both emptyDir or a claim
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = [m for m in cutover["volumeMounts"] if not m.get("readOnly")]
    assert {m["mountPath"] for m in writable} == {"/var/lib/cutover", "/tmp"}
    for m in writable:
        assert {"emptyDir", "persistentVolumeClaim"} & set(volumes[m["name"]])
    # SIGTERM comes after the preStop pause; the drain fits in what is left of the grace
    pause = int(cutover["lifecycle"]["preStop"]["exec"]["command"][1])
    config = yaml.safe_load(r.config_text())
    drain = {"20s": 20, "1m30s": 90, "30s": 30}.get(
        config.get("limits", {}).get("drain_timeout", "25s"), 25
    )
    assert spec["terminationGracePeriodSeconds"] > pause + drain
    annotations = r.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


def test_a_config_change_rolls_the_pods() -> None:
    values = case_values("gateway-sqlite")
    before = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    values["config"] = values["config"].replace("drain_timeout: 20s", "drain_timeout: 21s")
    after = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    assert before["checksum/secret"] == after["checksum/secret"]
    values["secret"]["values"]["PAGERDUTY_ROUTING_KEY"] = "N3WKEY0123456789ABCD"
    rotated = render(values).one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert rotated["checksum/secret"] != after["checksum/secret"]


def test_one_replica_on_sqlite_keeps_its_file_on_a_claim(rendered: dict[str, Rendered]) -> None:
    r = rendered["gateway-sqlite"]
    assert 'storage: "sqlite:///var/lib/cutover/state.db"' in r.config_text()
    claim = r.one("PersistentVolumeClaim")
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    deployment = r.one("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one RWO volume
    (state,) = [v for v in r.pod_spec()["volumes"] if v["name"] == "cutover-state"]
    assert state["persistentVolumeClaim"]["claimName"] == FULLNAME
    assert not r.of_kind("HorizontalPodAutoscaler") and not r.of_kind("Role")


def test_three_replicas_on_postgresql_and_redis(rendered: dict[str, Rendered]) -> None:
    r = rendered["gateway-ha"]
    text = r.config_text()
    assert 'storage: "${CUTOVER_DATABASE_URL}"' in text and 'redis: "${CUTOVER_REDIS_URL}"' in text
    assert "replicas" not in r.one("Deployment")["spec"]  # the HPA owns the count
    hpa = r.one("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}
    assert r.one("PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    ingress = r.one("Ingress")
    path = ingress["spec"]["rules"][0]["http"]["paths"][0]
    assert path["backend"]["service"] == {"name": FULLNAME, "port": {"name": "http"}}
    spread = r.pod_spec()["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    service = r.one("Service")
    assert {p["name"]: p["targetPort"] for p in service["spec"]["ports"]} == {
        "http": "http",
        "admin": "admin",
    }
    monitor = r.one("ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    dashboard = r.one("ConfigMap", f"{FULLNAME}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["cutover.json"]) == json.loads(
        (CHART / "dashboards" / "cutover.json").read_text()
    )
    rules = r.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert all(rule["labels"]["team"] == "alert-history" for rule in rules)


def test_the_sidecar_runs_beside_the_application(rendered: dict[str, Rendered]) -> None:
    r = rendered["sidecar"]
    containers = {c["name"]: c for c in r.pod_spec()["containers"]}
    assert set(containers) == {"cutover", "alert-history"}
    assert containers["alert-history"]["image"] == "ghcr.io/example/alert-history-python:1.4.2"
    assert "http://127.0.0.1:8081" in r.config_text()  # the app, on localhost
    (port,) = r.one("Service")["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8080, "http")  # the Service reaches cutover
    assert r.pod_spec()["terminationGracePeriodSeconds"] == 60


def test_another_chart_adds_the_cutover_container_to_its_pods(tmp_path: Path) -> None:
    parent = tmp_path / "alert-history"
    (parent / "templates").mkdir(parents=True)
    shutil.copytree(CHART, parent / "charts" / "cutover", ignore=shutil.ignore_patterns("ci"))
    (parent / "Chart.yaml").write_text(
        "apiVersion: v2\nname: alert-history\nversion: 1.0.0\nappVersion: 1.4.2\n"
    )
    values = case_values("sidecar")
    values["sidecar"] = {"deployment": False}
    (parent / "values.yaml").write_text(yaml.safe_dump({"cutover": values}))
    (parent / "templates" / "deployment.yaml").write_text(
        """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-history
spec:
  selector:
    matchLabels: {app: history}
  template:
    metadata:
      labels: {app: history}
      annotations:
        {{- include "cutover.podAnnotations" .Subcharts.cutover | nindent 8 }}
    spec:
      initContainers:
        {{- include "cutover.initContainer" .Subcharts.cutover | nindent 8 }}
      containers:
        - name: history
          image: ghcr.io/example/alert-history-python:{{ .Chart.AppVersion }}
        {{- include "cutover.container" .Subcharts.cutover | nindent 8 }}
      volumes:
        {{- include "cutover.volumes" .Subcharts.cutover | nindent 8 }}
"""
    )
    r = render({}, chart=parent)
    deployments = r.of_kind("Deployment")
    assert [d["metadata"]["name"] for d in deployments] == [f"{RELEASE}-history"]
    assert not r.of_kind("Service")  # the including chart owns its workload and Service
    spec = deployments[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["history", "cutover"]
    assert spec["containers"][1]["image"] == "cutover:0.1.0"  # the subchart's appVersion
    (config,) = [v for v in spec["volumes"] if v["name"] == "cutover-config"]
    assert r.one("ConfigMap", config["configMap"]["name"])  # made by the subchart
    for obj in r.objects:
        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_discovery_gets_a_role_in_each_of_its_namespaces(rendered: dict[str, Rendered]) -> None:
    r = rendered["discovery"]
    roles = {o["metadata"]["namespace"]: o for o in r.of_kind("Role")}
    bindings = {o["metadata"]["namespace"]: o for o in r.of_kind("RoleBinding")}
    assert set(roles) == set(bindings) == {"monitoring", "alerting"}
    for role in roles.values():
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"]}
        ]
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
        ]
    assert not r.of_kind("ClusterRole") and not r.of_kind("ClusterRoleBinding")
    assert r.pod_spec()["automountServiceAccountToken"] is True
    for case in set(CASES) - {"discovery"}:  # no discovery: no permission, no token
        other = render(case_values(case))
        assert not other.of_kind("Role") and not other.of_kind("ClusterRole")
        assert other.pod_spec()["automountServiceAccountToken"] is False


def test_cluster_wide_discovery_only_when_asked() -> None:
    values = case_values("discovery")
    values["rbac"] = {"create": True, "clusterWide": True}
    r = render(values)
    assert not r.of_kind("Role")
    (role,) = r.of_kind("ClusterRole")
    assert role["rules"][0]["verbs"] == ["get", "list", "watch"]
    assert r.one("ClusterRoleBinding")["roleRef"]["name"] == role["metadata"]["name"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"replicaCount": 3},
            "cutover: replicaCount=3 needs storage.type=postgresql and redis.enabled=true "
            "(got storage.type=sqlite, redis.enabled=false): replicas on SQLite would each keep "
            "their own outbox and weights",
        ),
        (
            {"autoscaling": {"enabled": True}, "storage": {"type": "postgresql"}},
            "cutover: autoscaling needs storage.type=postgresql and redis.enabled=true",
        ),
        ({"mode": "daemonset"}, "at '/mode': value must be one of 'gateway', 'sidecar'"),
        (
            {"storage": {"type": "postgresql"}},
            "cutover: the config needs the secret CUTOVER_DATABASE_URL (it references "
            "${CUTOVER_DATABASE_URL}): set secret.values.CUTOVER_DATABASE_URL, or "
            "secret.existingSecret",
        ),
        (
            {"config": "admin: {token: plain-text-token}\nbackends: {go: http://go}\n"},
            "cutover: config.admin.token holds a literal credential: write ${NAME} and set "
            "secret.values.NAME (the ConfigMap never holds secrets)",
        ),
        (
            {"config": "alerts: {classification: {openai: {api_key: sk-live-123}}}\n"},
            "cutover: config.alerts.classification.openai.api_key holds a literal credential",
        ),
        (
            {"config": "redis: redis://r:6379\n"},
            "cutover: config.redis is set by the chart: use redis.enabled instead",
        ),
        ({"config": "routes: [a\n"}, "cutover: config is not valid YAML"),
        ({"mode": "sidecar"}, "cutover: mode=sidecar needs sidecar.app.image"),
        (
            {"terminationGracePeriodSeconds": 20},
            "cutover: terminationGracePeriodSeconds (20) must be longer than "
            "preStopSleepSeconds (5) + config.limits.drain_timeout (25s)",
        ),
        (
            {"service": {"admin": {"enabled": True}}},
            "cutover: service.admin.enabled needs config.admin.listen on a non-loopback address",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None,
)
def test_values_that_cannot_work_fail_with_the_charts_message(
    change: dict[str, Any], message: str
) -> None:
    assert message in render_error(change)


def test_a_missing_secret_is_named_and_an_existing_secret_is_trusted() -> None:
    values = case_values("gateway-sqlite")
    del values["secret"]["values"]["PAGERDUTY_ROUTING_KEY"]
    assert "cutover: the config needs the secret PAGERDUTY_ROUTING_KEY" in render_error(values)
    values["secret"] = {"existingSecret": "alert-history-credentials"}
    r = render(values)  # its keys cannot be seen offline: check-config sees them at start
    assert not r.of_kind("Secret")
    (source,) = r.pod_spec()["initContainers"][0]["envFrom"]
    assert source == {"secretRef": {"name": "alert-history-credentials"}}


def test_the_readme_lists_every_value_of_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = {}
    for line in (CHART / "README.md").read_text().splitlines():
        m = re.match(r"\| `([A-Za-z0-9_.]+)` \| ([^|]+) \| (.*) \| (.+) \|$", line)
        if m:
            documented[m.group(1)] = (m.group(2).strip(), m.group(3).strip())

    def leaves(node: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
        out = {}
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            if sub.get("type") == "object" and "properties" in sub:
                out.update(leaves(sub, path + "."))
            else:
                out[path] = sub
        return out

    expected = leaves(schema, "")
    assert set(documented) == set(expected)
    for path, sub in expected.items():
        kind, default = documented[path]
        types = sub["type"] if isinstance(sub["type"], list) else [sub["type"]]
        assert kind == " or ".join(types), path
        value: Any = defaults
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if path != "config":  # the example config is shown in full above the table
            assert default == f"`{json.dumps(value, ensure_ascii=False)}`", path


def test_the_dockerfile_runs_the_cli_on_the_charts_config_path() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    assert json.loads(cmd.group(1)) == ["cutover", "serve", "-c", "/etc/cutover/cutover.yaml"]
    from cutover.cli import _parser

    args = _parser().parse_args(json.loads(cmd.group(1))[1:])
    assert (args.command, args.config) == ("serve", "/etc/cutover/cutover.yaml")
    assert re.search(r"^USER 10001(:10001)?$", dockerfile, re.M)  # the chart's runAsUser
    copied = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
            copied.add(source.rstrip("/"))
    # the wheel built in the image holds every folder the package maps (pyproject package-dir)
    package_dir = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(package_dir["package-dir"].values()) <= copied
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "tests" in ignored and ".git" in ignored
    assert render().pod_spec()["securityContext"]["runAsUser"] == 10001
