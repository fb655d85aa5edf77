"""The Kubernetes runtime: the official (synchronous) client, always off the event loop, always with a timeout.

Reads use ``_preload_content=False`` and ``json.loads``: raw dicts are cheaper than the generated
models for large pod lists and do not fail on fields a newer API server adds. Every call passes
``_request_timeout``. Client exceptions become ``RuntimeFailure`` with one plain line (``_kube_api``).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from connectors.protocol import AGENT_VERSION, AgentFacts, Inventory, JobSpec
from connectors.runtimes._kube_api import KubeApiError, KubeCalls, in_kubernetes, kube_api_client
from connectors.runtimes._kube_inventory import bound_volumes, node_inventory, requests_by_node
from connectors.runtimes._kube_jobs import (
    DEFAULT_PRIORITY_CLASSES,
    JOB_ID_LABEL,
    JOB_SERVICE_ACCOUNT,
    MANAGED_BY,
    job_manifest,
    job_name,
    job_status_from,
    running_job_from,
)
from connectors.runtimes.base import JobPhase, JobStatus, RunningJob, RuntimeFailure, Volume, job_label_value

__all__ = ["DEFAULT_JOBS_NAMESPACE", "KubeApiError", "KubernetesRuntime", "in_kubernetes", "kube_api_client"]

DEFAULT_JOBS_NAMESPACE = "metacloud-jobs"
QUOTA_NAME = "metacloud-quota"
MERGE_PATCH = "application/merge-patch+json"


class KubernetesRuntime(KubeCalls):
    """Runs jobs as batch/v1 Jobs in one namespace (default ``metacloud-jobs``)."""

    kind = "kubernetes"

    def __init__(
        self,
        *,
        host: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        namespace: str = DEFAULT_JOBS_NAMESPACE,
        request_timeout_s: float = 15.0,
        verify_ssl: bool = True,
        api_client: client.ApiClient | None = None,
    ) -> None:
        super().__init__(
            api_client or kube_api_client(host=host, kubeconfig=kubeconfig, context=context, verify_ssl=verify_ssl),
            request_timeout_s,
        )
        self.namespace = namespace
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.storage = client.StorageV1Api(self.api)
        self.scheduling = client.SchedulingV1Api(self.api)
        self.authz = client.AuthorizationV1Api(self.api)
        self._version: dict[str, Any] | None = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.api.close)

    # --- facts and inventory --------------------------------------------------------------------

    async def _server_version(self) -> dict[str, Any]:
        if self._version is None:
            try:
                self._version = await asyncio.to_thread(self._version_sync)
            except (RuntimeFailure, ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
                return {}  # an unknown version never blocks registration or heartbeats
        return self._version

    async def facts(self) -> AgentFacts:
        version = await self._server_version()
        git_version = version.get("gitVersion") or None
        return AgentFacts(
            runtime=self.kind,
            agent_version=AGENT_VERSION,
            kubernetes_version=git_version,
            hostname=socket.gethostname(),
            platform=" ".join(p for p in (_distribution(git_version or ""), version.get("platform", "")) if p),
        )

    async def inventory(self) -> Inventory:
        nodes, pods = await asyncio.gather(
            self._list("list nodes", self.core.list_node),
            # The field selector spares the API server; the filter in requests_by_node stays for servers that ignore it.
            self._list(
                "list pods", self.core.list_pod_for_all_namespaces,
                field_selector="status.phase!=Succeeded,status.phase!=Failed",
            ),
        )
        allocated = requests_by_node(pods)
        try:
            classes = await self._list("list storage classes", self.storage.list_storage_class)
        except RuntimeFailure:
            classes = []  # optional: RBAC may not grant it, and jobs run without it
        version = await self._server_version()
        empty: dict[str, Decimal] = {}
        return Inventory(
            nodes=[node_inventory(node, allocated.get(_name(node), empty)) for node in nodes],
            storage_classes=sorted(_name(sc) for sc in classes),
            kubernetes_version=version.get("gitVersion") or None,
        )

    async def volumes(self) -> list[Volume]:
        """The Bound PersistentVolumeClaims in the jobs namespace: the storage the org's work holds here.

        Only that namespace: the agent manages it for the org, and claims elsewhere in the cluster are
        not the platform's to bill. Identity is the claim's uid (a claim deleted and made again under
        the same name is a new volume).
        """
        claims = await self._list(f"list persistent volume claims in {self.namespace}",
                                  self.core.list_namespaced_persistent_volume_claim, self.namespace)
        return bound_volumes(claims)

    # --- provisioning ---------------------------------------------------------------------------

    async def provision(self, payload: dict[str, Any]) -> dict[str, Any]:
        ns = self.namespace
        created: list[str] = []
        existing: list[str] = []

        def note(what: str, made: bool) -> None:
            (created if made else existing).append(what)

        note(f"namespace/{ns}", await self._create(f"namespace {ns}", self.core.create_namespace, {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": dict(MANAGED_BY)},
        }))
        note(f"serviceaccount/{JOB_SERVICE_ACCOUNT}", await self._create(
            f"service account {ns}/{JOB_SERVICE_ACCOUNT}", self.core.create_namespaced_service_account, ns, {
                "apiVersion": "v1", "kind": "ServiceAccount", "automountServiceAccountToken": False,
                "metadata": {"name": JOB_SERVICE_ACCOUNT, "namespace": ns, "labels": dict(MANAGED_BY)},
            },
        ))
        hard = {str(k): str(v) for k, v in (payload.get("quota") or {}).items()}
        if hard:
            made = await self._create(f"resource quota {ns}/{QUOTA_NAME}", self.core.create_namespaced_resource_quota, ns, {
                "apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": QUOTA_NAME, "namespace": ns, "labels": dict(MANAGED_BY)},
                "spec": {"hard": hard},
            })
            if not made:  # exists: bring it to the limits asked for now
                await self._call(
                    f"update resource quota {ns}/{QUOTA_NAME}", self.core.patch_namespaced_resource_quota,
                    QUOTA_NAME, ns, {"spec": {"hard": hard}}, _content_type=MERGE_PATCH,
                )
            note(f"resourcequota/{QUOTA_NAME}", made)
        for name, value, description in _priority_classes(payload):
            note(f"priorityclass/{name}", await self._create(
                f"priority class {name}", self.scheduling.create_priority_class, {
                    "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name, "labels": dict(MANAGED_BY)},
                    "value": value, "globalDefault": False, "description": description,
                },
            ))
        return {"namespace": ns, "created": created, "existing": existing}

    async def _allowed(self, verb: str, resource: str, *, group: str = "", namespace: str | None = None,
                       subresource: str | None = None) -> bool | None:
        attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
        if namespace:
            attributes["namespace"] = namespace
        if subresource:
            attributes["subresource"] = subresource
        review = await self._call(f"check permission to {verb} {resource}", self.authz.create_self_subject_access_review, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            # The API server ignores the name; a unique one keeps strict emulators from reporting a conflict.
            "metadata": {"name": f"metacloud-check-{uuid.uuid4().hex[:12]}"},
            "spec": {"resourceAttributes": attributes},
        })
        allowed = (review.get("status") or {}).get("allowed")
        return bool(allowed) if allowed is not None else None

    async def validate(self) -> dict[str, Any]:
        ns = self.namespace
        checks: list[tuple[str, dict[str, Any]]] = [
            ("list nodes", {"verb": "list", "resource": "nodes"}),
            ("list pods", {"verb": "list", "resource": "pods"}),
            (f"create jobs in {ns}", {"verb": "create", "resource": "jobs", "group": "batch", "namespace": ns}),
            (f"delete jobs in {ns}", {"verb": "delete", "resource": "jobs", "group": "batch", "namespace": ns}),
            (f"read pod logs in {ns}", {"verb": "get", "resource": "pods", "subresource": "log", "namespace": ns}),
            ("list storage classes", {"verb": "list", "resource": "storageclasses", "group": "storage.k8s.io"}),
            (f"list persistent volume claims in {ns}",
             {"verb": "list", "resource": "persistentvolumeclaims", "namespace": ns}),
        ]
        permissions: dict[str, bool] = {}
        problems: list[str] = []
        for label, check in checks:
            try:
                allowed = await self._allowed(check.pop("verb"), check.pop("resource"), **check)
            except RuntimeFailure as exc:
                allowed, problem = False, str(exc)
            else:
                problem = f"missing permission: {label}" if allowed is False else f"could not check permission: {label}"
            permissions[label] = bool(allowed)
            if not allowed:
                problems.append(problem)
        try:
            await self._call(f"read namespace {ns}", self.core.read_namespace, ns)
        except RuntimeFailure as exc:
            problems.append(f"{exc} (provision creates it)")
        gpus: dict[str, int] = {}
        try:
            inventory = await self.inventory()
        except RuntimeFailure as exc:
            problems.append(str(exc))
        else:
            for node in inventory.nodes:
                for gpu in node.gpus:
                    key = f"{gpu.resource}|{gpu.model}" if gpu.model else gpu.resource
                    gpus[key] = gpus.get(key, 0) + gpu.allocatable
        return {"ok": not problems, "permissions": permissions, "gpus": gpus, "problems": problems}

    async def cleanup(self, payload: dict[str, Any]) -> dict[str, Any]:
        ns = self.namespace
        deleted: list[str] = []
        if payload.get("delete_jobs", True):
            for job in await self._jobs():
                if await self._delete(f"job {_name(job)}", self.batch.delete_namespaced_job, _name(job), ns):
                    deleted.append(f"job/{_name(job)}")
        if payload.get("delete_namespace", True) and await self._delete(
            f"namespace {ns}", self.core.delete_namespace, ns
        ):
            deleted.append(f"namespace/{ns}")
        if payload.get("delete_priority_classes", True):
            for name, _, _ in _priority_classes(payload):
                if await self._delete(f"priority class {name}", self.scheduling.delete_priority_class, name):
                    deleted.append(f"priorityclass/{name}")
        return {"namespace": ns, "deleted": deleted}

    # --- jobs -----------------------------------------------------------------------------------

    async def _jobs(self) -> list[dict[str, Any]]:
        try:
            jobs = await self._list(
                "list jobs", self.batch.list_namespaced_job, self.namespace,
                label_selector="app.kubernetes.io/managed-by=metacloud",
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return []
            raise
        return [j for j in jobs if _labels(j).get("app.kubernetes.io/managed-by") == "metacloud"]

    async def jobs(self) -> list[RunningJob]:
        """Our Jobs in the jobs namespace (a finished one stays ``FINISHED_JOB_TTL_S``), read back into
        their job id and allocation: what an agent that lost its usage spool meters again."""
        found = (running_job_from(job) for job in await self._jobs())
        return [job for job in found if job is not None]

    async def _pods(self, job_id: str) -> list[dict[str, Any]]:
        label = job_label_value(job_id)
        pods = await self._list(
            f"list pods of job {job_id}", self.core.list_namespaced_pod, self.namespace,
            label_selector=f"{JOB_ID_LABEL}={label}",
        )
        mine = [p for p in pods if _labels(p).get(JOB_ID_LABEL) == label]
        # Newest first: a retried job's latest pod says the most.
        return sorted(mine, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""), reverse=True)

    async def start_job(self, spec: JobSpec) -> dict[str, Any]:
        body = job_manifest(spec, namespace=self.namespace)
        name = body["metadata"]["name"]
        made = await self._create(f"job {name}", self.batch.create_namespaced_job, self.namespace, body)
        return {"job_id": spec.job_id, "name": name, "namespace": self.namespace, "existing": not made}

    async def job_status(self, job_id: str) -> JobStatus:
        name = job_name(job_id)
        try:
            job = await self._call(f"read job {name}", self.batch.read_namespaced_job, name, self.namespace)
        except KubeApiError as exc:
            if exc.status == 404:
                return JobStatus(job_id=job_id, phase=JobPhase.UNKNOWN, reason="no such job in the cluster (never started or deleted)")
            raise
        return job_status_from(job_id, job, await self._pods(job_id))

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Our Jobs and their pods read with one list call each, whatever the number of jobs."""
        jobs = {found.job_id: job for job in await self._jobs() if (found := running_job_from(job)) is not None}
        pods = await self._list("list pods of our jobs", self.core.list_namespaced_pod, self.namespace,
                                label_selector=JOB_ID_LABEL)  # the pods that have the label, as _pods reads them
        by_label: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            by_label.setdefault(_labels(pod).get(JOB_ID_LABEL, ""), []).append(pod)
        out = {}
        for job_id in job_ids:
            job = jobs.get(job_id)
            if job is None:
                out[job_id] = JobStatus(job_id=job_id, phase=JobPhase.UNKNOWN,
                                        reason="no such job in the cluster (never started or deleted)")
                continue
            mine = sorted(by_label.get(job_label_value(job_id), []), reverse=True,  # newest first, as _pods
                          key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
            out[job_id] = job_status_from(job_id, job, mine)
        return out

    async def cancel_job(self, job_id: str) -> None:
        name = job_name(job_id)
        await self._delete(f"job {name}", self.batch.delete_namespaced_job, name, self.namespace)

    async def logs(self, job_id: str, tail_lines: int | None = None) -> str:
        pods = await self._pods(job_id)
        if not pods:
            return ""
        pod = _name(pods[0])
        kwargs: dict[str, Any] = {"container": "main"}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        data = await asyncio.to_thread(
            self._raw_sync, f"read logs of pod {pod}", self.core.read_namespaced_pod_log, pod, self.namespace, **kwargs
        )
        return data.decode("utf-8", errors="replace")


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _priority_classes(payload: Mapping[str, Any]) -> list[tuple[str, int, str]]:
    given = payload.get("priority_classes")
    if not given:
        return list(DEFAULT_PRIORITY_CLASSES)
    try:
        return [(str(pc["name"]), int(pc["value"]), str(pc.get("description", "Metacloud"))) for pc in given]
    except (KeyError, TypeError, ValueError) as exc:
        raise RuntimeFailure("priority_classes must be a list of {name, value}") from exc


def _distribution(git_version: str) -> str:
    """Best guess of the distribution from the server's version string (e.g. ``v1.29.3-eks-adc7111``)."""
    lowered = git_version.lower()
    for marker, name in (("-eks-", "EKS"), ("-gke.", "GKE"), ("+k3s", "k3s"), ("+rke2", "RKE2"), ("+vmware", "Tanzu")):
        if marker in lowered:
            return name
    return ""
