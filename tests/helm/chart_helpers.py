"""Rendering helm/cutover offline with Helm's own library (the `helm-python-sdk` wheel embeds
Helm's Go SDK; no helm binary, no cluster), once per values file; validating what it renders
as the API server would; checking the config it renders as the pod's init container does."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cutover"
RELEASE, NAMESPACE = "alert-history", "monitoring"
KUBE_VERSION = "1.34"  # the Kubernetes schemas every object is validated against

# The matrix: the chart's defaults and one values file per way of running it.
CASES = {
    "defaults": None,
    "gateway-sqlite": "gateway-sqlite-values.yaml",
    "gateway-ha": "gateway-ha-values.yaml",
    "sidecar": "sidecar-values.yaml",
    "discovery": "discovery-values.yaml",
}


def case_values(case: str) -> dict[str, Any]:
    name = CASES[case]
    return {} if name is None else helm.values_from_yaml((CHART / "ci" / name).read_text())


@dataclass
class Rendered:
    values: dict[str, Any]
    manifests: dict[str, str]  # template path -> rendered text
    objects: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for path, text in sorted(self.manifests.items()):
            if path.endswith(".txt"):
                continue
            self.objects += [doc for doc in yaml.safe_load_all(text) if doc]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if name is None or o["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} objects named {name}"
        return found[0]

    @property
    def notes(self) -> str:
        return self.manifests.get("cutover/templates/NOTES.txt", "")

    def config_text(self) -> str:
        """The cutover config the pods read (the ConfigMap holding `cutover.yaml`)."""
        (config,) = [c for c in self.of_kind("ConfigMap") if "cutover.yaml" in c.get("data", {})]
        return config["data"]["cutover.yaml"]

    def secret_env(self) -> dict[str, str]:
        """What the chart's Secret puts in the cutover container's environment."""
        secrets = self.of_kind("Secret")
        if not secrets:
            return {}
        (secret,) = secrets
        return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}

    def pod_env(self) -> dict[str, str]:
        """The cutover container's environment as far as the render shows it: the chart's
        Secret and the literal `env` entries (`extraEnv`); not a Secret made outside it."""
        env = self.secret_env()
        (cutover,) = [c for c in self.pod_spec()["containers"] if c["name"] == "cutover"]
        env.update({e["name"]: str(e["value"]) for e in cutover.get("env", []) if "value" in e})
        return env

    def pod_spec(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]


def render(
    values: dict[str, Any] | None = None,
    chart: Path = CHART,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
) -> Rendered:
    manifests = helm.Chart.load(chart).render(values or {}, name=name, namespace=namespace)
    return Rendered(values or {}, manifests)


def render_error(values: dict[str, Any]) -> str:
    """The message a render of `values` fails with (fails the test when it renders)."""
    try:
        render(values)
    except helm.HelmError as exc:
        return str(exc)
    raise AssertionError(f"rendered without an error: {values}")


def strict(schema: Any) -> Any:
    """A CRD's structural schema that, like `kubectl apply --validate=strict`, refuses unknown
    fields (the API server would prune them silently)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


# The Prometheus Operator's CRDs (tests/helm/crds: their openAPIV3Schema, v1).
CRDS = {
    kind: jsonschema.Draft7Validator(
        strict(json.loads((Path(__file__).parent / "crds" / f"{kind.lower()}.json").read_text()))
    )
    for kind in ("ServiceMonitor", "PrometheusRule")
}


def validate_object(obj: dict[str, Any]) -> None:
    """One rendered object against the Kubernetes schemas of KUBE_VERSION, or its CRD's, with
    no unknown field (raises the validator's error)."""
    crd = CRDS.get(obj["kind"])
    if crd is not None:  # Prometheus Operator CRDs: their own schema, no unknown field
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        crd.validate({k: v for k, v in obj.items() if k != "metadata"})
        return
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def check_config(text: str, env: dict[str, str], folder: Path) -> subprocess.CompletedProcess[str]:
    """`python -m cutover check-config` on `text`, with `env` added as the pod would have it."""
    path = folder / "cutover.yaml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "cutover", "check-config", str(path)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
