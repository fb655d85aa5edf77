"""The install manifest, the Helm chart and the Dockerfile: valid, least-privilege, and in step with each other."""

from __future__ import annotations

import asyncio
import re
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml
from kubernetes import utils

from connectors.install_manifest import install_manifest_documents, render_install_manifest
from connectors.runtimes.kubernetes import kube_api_client
from tests.connectors.kube_emulator import kube_emulator

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "infra" / "agent" / "helm" / "metacloud-agent"
TOKEN = 'mct_s3cr3t:"{not:yaml}"#&*'


def _manifest() -> list[dict[str, Any]]:
    text = render_install_manifest(server_url="https://metacloud.example.com", token=TOKEN, image="registry.example.com/agent:0.1.0")
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _chart_docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    rendered = helm_python.Chart.load(str(CHART)).render(values, name="mc", namespace="metacloud-agent")
    return [doc for path, text in rendered.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_every_rendered_manifest_object_passes_the_kubernetes_schema() -> None:
    docs = _manifest()
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    assert [d["kind"] for d in docs][:2] == ["Namespace", "Namespace"]  # namespaces before what lives in them
    assert docs[-1]["kind"] == "Deployment"


def test_the_token_lands_verbatim_in_the_secret_and_nowhere_else() -> None:
    text = render_install_manifest(server_url="https://metacloud.example.com", token=TOKEN, image="img:1")
    docs = _manifest()
    [token_secret] = [d for d in _by_kind(docs, "Secret") if d["metadata"]["name"] == "metacloud-agent-token"]
    assert token_secret["stringData"]["token"] == TOKEN
    assert text.count("s3cr3t") == 1
    [deployment] = _by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["METACLOUD_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "metacloud-agent-token", "key": "token"}
    assert env["METACLOUD_SERVER"]["value"] == "https://metacloud.example.com"


def test_rbac_is_least_privilege() -> None:
    docs = _manifest()
    [cluster_role] = _by_kind(docs, "ClusterRole")
    verbs_by_resource: dict[str, set[str]] = {}
    for rule in cluster_role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for resource in rule["resources"]:
            verbs_by_resource.setdefault(resource, set()).update(rule["verbs"])
        if "delete" in rule["verbs"]:
            assert rule.get("resourceNames"), f"cluster-wide delete must name its objects: {rule}"
    assert "secrets" not in verbs_by_resource and "jobs" not in verbs_by_resource
    assert verbs_by_resource["nodes"] == {"get", "list", "watch"}
    jobs_role = next(r for r in _by_kind(docs, "Role") if r["metadata"]["namespace"] == "metacloud-jobs")
    assert {"create", "delete", "get", "list", "watch"} <= set(jobs_role["rules"][0]["verbs"])
    secret_role = next(r for r in _by_kind(docs, "Role") if r["metadata"]["namespace"] == "metacloud-agent")
    assert secret_role["rules"] == [{"apiGroups": [""], "resources": ["secrets"],
                                     "resourceNames": ["metacloud-agent-credential"], "verbs": ["get", "patch"]}]


def test_the_agent_pod_runs_unprivileged() -> None:
    [deployment] = _by_kind(_manifest(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["image"] == "registry.example.com/agent:0.1.0"


@pytest.mark.parametrize("bad", [
    {"namespace": "Not_A_Namespace"},
    {"server_url": "metacloud.example.com"},
    {"token": "two words"},
    {"jobs_namespace": "metacloud-agent"},
])
def test_unusable_values_are_refused_before_rendering(bad: dict[str, str]) -> None:
    values = {"server_url": "https://x.example.com", "token": "t", "image": "img", **bad}
    with pytest.raises(ValueError):
        install_manifest_documents(**values)


def test_the_helm_chart_lints_and_renders_valid_objects() -> None:
    report = helm_python.lint(str(CHART), {"server": "https://metacloud.example.com", "token": "t"}, strict=True)
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] >= 2]
    docs = _chart_docs({"server": "https://metacloud.example.com", "token": "t", "caConfigMap": "corp-ca",
                        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]})
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30", strict=True)
    [deployment] = _by_kind(docs, "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"METACLOUD_CA_FILE", "HTTPS_PROXY", "METACLOUD_TOKEN"} <= env


def test_the_chart_and_the_manifest_create_the_same_objects() -> None:
    def identity(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        # The chart leaves the release namespace to `helm install --create-namespace`.
        return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs
                if not (d["kind"] == "Namespace" and d["metadata"]["name"] == "metacloud-agent")}

    chart = _chart_docs({"server": "https://metacloud.example.com", "token": "t"})
    assert identity(chart) == identity(_manifest())
    manifest_roles = {r["metadata"]["name"]: r["rules"] for r in _by_kind(_manifest(), "ClusterRole")}
    chart_roles = {r["metadata"]["name"]: r["rules"] for r in _by_kind(chart, "ClusterRole")}
    assert manifest_roles == chart_roles


def test_the_chart_can_use_an_existing_token_secret() -> None:
    docs = _chart_docs({"server": "https://metacloud.example.com", "existingSecret": "my-token"})
    assert [d["metadata"]["name"] for d in _by_kind(docs, "Secret")] == ["metacloud-agent-credential"]
    [deployment] = _by_kind(docs, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["METACLOUD_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-token"


def test_the_chart_refuses_to_render_without_a_server() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="set server"):
        _chart_docs({"token": "t"})


async def test_the_install_manifest_applies_to_a_kubernetes_api_with_the_official_client() -> None:
    async with kube_emulator(nodes=False) as kube:
        api = kube_api_client(host=kube.url)
        try:
            for doc in _manifest():
                await asyncio.to_thread(utils.create_from_dict, api, doc)
        finally:
            await asyncio.to_thread(api.close)
        assert kube.get("apps/v1/deployments", "metacloud-agent", "metacloud-agent") is not None
        assert kube.names("v1/secrets", "metacloud-agent") == {"metacloud-agent-token", "metacloud-agent-credential"}
        assert kube.names("v1/namespaces") == {"metacloud-agent", "metacloud-jobs"}
        assert kube.names("rbac.authorization.k8s.io/v1/clusterrolebindings") == {"metacloud-agent"}
        assert kube.names("rbac.authorization.k8s.io/v1/rolebindings") == {"metacloud-agent", "metacloud-agent-credential"}


def test_the_agent_image_pins_the_same_versions_as_the_project() -> None:
    dockerfile = (ROOT / "infra" / "agent" / "Dockerfile").read_text()
    pins = dict(re.findall(r'"([a-z0-9-]+)==([^"]+)"', dockerfile))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    declared = dict(dep.split("[")[0].split("==") if "[" not in dep.split("==")[0] else
                    (dep.split("[")[0], dep.split("==")[1]) for dep in project)
    for name in ("httpx", "kubernetes", "pyyaml"):
        assert pins[name] == declared[name], name
    assert pins["msgspec"] == version("msgspec")  # msgspec comes in through litestar
    assert "USER 10001" in dockerfile and 'ENTRYPOINT ["metacloud-agent"]' in dockerfile
