"""Plumbing for the Kubernetes runtime: building the client, and calls that return dicts or one plain error."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from connectors.runtimes.base import RuntimeFailure

__all__ = ["KubeApiError", "KubeCalls", "in_kubernetes", "kube_api_client"]

_PAGE = 500


def in_kubernetes() -> bool:
    """True inside a pod (the kubelet sets this variable in every container)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def kube_api_client(
    *, host: str | None = None, kubeconfig: str | None = None, context: str | None = None, verify_ssl: bool = True
) -> client.ApiClient:
    """A client from an explicit host (tests), the pod's service account, or a kubeconfig."""
    cfg = client.Configuration()
    try:
        if host:
            cfg.host = host.rstrip("/")
            cfg.verify_ssl = verify_ssl
        elif in_kubernetes() and not kubeconfig:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
    except (config.ConfigException, OSError) as exc:
        raise RuntimeFailure(
            f"no Kubernetes configuration: run the agent in a pod, or pass a kubeconfig ({exc})"
        ) from exc
    return client.ApiClient(cfg)


class KubeApiError(RuntimeFailure):
    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.status = status


def _explain(what: str, exc: ApiException) -> KubeApiError:
    status = int(exc.status or 0)
    detail = ""
    try:
        detail = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        detail = ""
    if status == 403:
        text = "permission denied (the agent's RBAC role must allow this)" + (f": {detail}" if detail else "")
    elif status == 401:
        text = "the Kubernetes API rejected the agent's service-account token"
    else:
        text = f"HTTP {status} {exc.reason or ''}".strip() + (f": {detail}" if detail else "")
    return KubeApiError(what, status, text)


class KubeCalls:
    """Synchronous client calls run in a thread with a timeout; answers as raw JSON dicts."""

    def __init__(self, api: client.ApiClient, timeout: float) -> None:
        self.api = api
        self.timeout = timeout


    def _raw_sync(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        try:
            response = fn(*args, _request_timeout=self.timeout, _preload_content=False, **kwargs)
            try:
                return bytes(response.data or b"")
            finally:
                response.release_conn()
        except ApiException as exc:
            raise _explain(what, exc) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RuntimeFailure(f"{what}: cannot reach the Kubernetes API at {self.api.configuration.host} ({exc})") from exc

    async def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = await asyncio.to_thread(self._raw_sync, what, fn, *args, **kwargs)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    async def _list(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a list call, page by page."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self._call(what, fn, *args, limit=_PAGE, _continue=token, **kwargs)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    async def _create(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        """Create an object; False when it already exists (409), so provisioning is idempotent."""
        try:
            await self._call(f"create {what}", fn, *args)
        except KubeApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def _delete(self, what: str, fn: Callable[..., Any], *args: Any) -> bool:
        try:
            await self._call(f"delete {what}", fn, *args, propagation_policy="Background")
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _version_sync(self) -> dict[str, Any]:
        # Not VersionApi.get_code(): it asks for "/version/", which some API fronts (and kmock) 404.
        request = self.api.param_serialize(
            "GET", "/version", header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(*request, _request_timeout=self.timeout)
        data = response.read()  # type: ignore[no-untyped-call]
        if not 200 <= response.status < 300:
            raise RuntimeFailure(f"GET /version answered HTTP {response.status}")
        result: dict[str, Any] = json.loads(data or b"{}")
        return result
