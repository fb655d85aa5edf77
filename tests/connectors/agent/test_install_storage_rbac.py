"""Storage metering needs the agent to read the jobs namespace's claims: granted read-only, there only,
the same in the install manifest and the Helm chart."""

from __future__ import annotations

from typing import Any

from tests.connectors.agent.test_install_artifacts import _by_kind, _chart_docs, _manifest


def _rules_for(docs: list[dict[str, Any]], kind: str, resource: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(role name, namespace, verbs) of every rule of ``kind`` roles that names ``resource``."""
    return [(role["metadata"]["name"], role["metadata"].get("namespace", ""), tuple(rule["verbs"]))
            for role in _by_kind(docs, kind) for rule in role["rules"] if resource in rule["resources"]]


def test_the_agent_may_only_read_claims_and_only_in_the_jobs_namespace() -> None:
    docs = _manifest()
    assert _rules_for(docs, "Role", "persistentvolumeclaims") == [
        ("metacloud-agent", "metacloud-jobs", ("get", "list", "watch"))]
    assert _rules_for(docs, "ClusterRole", "persistentvolumeclaims") == []
    assert _rules_for(docs, "ClusterRole", "persistentvolumes") == []


def test_the_chart_grants_the_same_namespaced_rights_as_the_manifest() -> None:
    chart = _chart_docs({"server": "https://metacloud.example.com", "token": "t"})

    def roles(docs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
        return {(r["metadata"]["name"], r["metadata"]["namespace"]): r["rules"] for r in _by_kind(docs, "Role")}

    assert roles(chart) == roles(_manifest())
