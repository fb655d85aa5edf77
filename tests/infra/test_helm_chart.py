"""The control plane's Helm chart renders to valid Kubernetes objects, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).parents[2] / "infra" / "helm" / "metacloud"
VALUES: dict[str, Any] = {
    "publicUrl": "https://metacloud.example.com",
    "temporal": {"address": "ns.tmprl.cloud:7233", "namespace": "ns", "tls": True, "mtlsSecretName": "temporal-tls"},
    "otel": {"exporter": "otlp", "endpoint": "http://otel-collector:4318/v1/traces"},
    "existingSecret": "metacloud-secrets",
}


def _render(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm_python.Chart.load(str(CHART)).render(values, name="prod", namespace="metacloud")
    docs: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def test_chart_renders_valid_kubernetes_objects() -> None:
    docs = _render(VALUES)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "Deployment/prod-metacloud-gateway",
        "Deployment/prod-metacloud-worker",
        "HorizontalPodAutoscaler/prod-metacloud-gateway",
        "Job/prod-metacloud-migrate",
        "Service/prod-metacloud-gateway",
    ]


def test_gateway_has_probes_and_migrations_run_as_a_hook() -> None:
    docs = {f"{d['kind']}/{d['metadata']['name']}": d for d in _render(VALUES)}
    gateway = docs["Deployment/prod-metacloud-gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e for e in gateway["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4318/v1/traces"
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "metacloud-secrets"
    job = docs["Job/prod-metacloud-migrate"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    worker = docs["Deployment/prod-metacloud-worker"]["spec"]["template"]["spec"]
    assert {"name": "temporal-tls", "secret": {"secretName": "temporal-tls"}} in worker["volumes"]


def test_chart_can_create_its_secret_from_values() -> None:
    values = {**VALUES, "existingSecret": "", "secrets": {"secretKey": "x" * 40, "databaseUrl": "postgresql://o@db/mc"}}
    docs = _render(values)
    secret = next(d for d in docs if d["kind"] == "Secret")
    kubernetes_validate.validate(secret, "1.30", strict=True)
    assert secret["stringData"]["database-url"] == "postgresql://o@db/mc"


def test_missing_public_url_is_a_clear_error() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="set publicUrl"):
        _render({**VALUES, "publicUrl": ""})


def test_chart_lints_clean() -> None:
    report = helm_python.lint(str(CHART), VALUES, strict=True)
    assert not getattr(report, "errors", None), report
