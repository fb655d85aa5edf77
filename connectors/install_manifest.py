"""The Kubernetes manifests that install the agent (``kubectl apply -f .../agent/v1/install/<token>.yaml``).

The template (``connectors/agent_install.yaml``, shipped in the wheel) is parsed first and the values
are put into the parsed strings, then dumped: a token or URL can never inject YAML. Imports nothing
of the control plane.
"""

from __future__ import annotations

import re
import string
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import yaml

__all__ = ["DEFAULT_IMAGE", "install_manifest_documents", "render_install_manifest"]

DEFAULT_IMAGE = "ghcr.io/metacloud/metacloud-agent:0.1.0"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@cache
def _template() -> tuple[dict[str, Any], ...]:
    text = resources.files("connectors").joinpath("agent_install.yaml").read_text(encoding="utf-8")
    return tuple(doc for doc in yaml.safe_load_all(text) if doc)


def _fill(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, str):
        return string.Template(node).substitute(values)
    if isinstance(node, list):
        return [_fill(item, values) for item in node]
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    return node


def install_manifest_documents(
    *, server_url: str, token: str, image: str, namespace: str = "metacloud-agent", jobs_namespace: str = "metacloud-jobs"
) -> list[dict[str, Any]]:
    """The install objects as dicts, in apply order (namespaces and RBAC before the Deployment)."""
    for label, value in (("namespace", namespace), ("jobs_namespace", jobs_namespace)):
        if not _DNS_LABEL.match(value):
            raise ValueError(f"{label} {value!r} is not a valid Kubernetes namespace name")
    if namespace == jobs_namespace:
        raise ValueError("the agent and its jobs need two different namespaces")
    parts = urlsplit(server_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server_url must be an http(s) URL, got {server_url!r}")
    if not token or any(c.isspace() for c in token):
        raise ValueError("token must be a non-empty string without spaces")
    if not image or any(c.isspace() for c in image):
        raise ValueError("image must be a non-empty image reference")
    values = {
        "NAMESPACE": namespace,
        "JOBS_NAMESPACE": jobs_namespace,
        "SERVER_URL": server_url.rstrip("/"),
        "TOKEN": token,
        "IMAGE": image,
    }
    filled: list[dict[str, Any]] = [_fill(doc, values) for doc in _template()]
    return filled


def render_install_manifest(
    *, server_url: str, token: str, image: str, namespace: str = "metacloud-agent", jobs_namespace: str = "metacloud-jobs"
) -> str:
    """Multi-document YAML: namespaces, service account, least-privilege RBAC, the token Secret, the Deployment."""
    documents = install_manifest_documents(
        server_url=server_url, token=token, image=image, namespace=namespace, jobs_namespace=jobs_namespace
    )
    header = "# metacloud-agent: apply with `kubectl apply -f <this file>`; the token inside is single use.\n"
    return header + yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False)
