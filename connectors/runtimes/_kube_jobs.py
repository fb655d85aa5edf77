"""Kubernetes objects the runtime creates, and a job's status in plain words: pure functions over dicts."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from connectors.protocol import JobSpec
from connectors.runtimes._kube_inventory import is_gpu_resource, pod_requests
from connectors.runtimes.base import JobPhase, JobStatus, RunningJob, RuntimeFailure, job_label_value

__all__ = [
    "DEFAULT_PRIORITY_CLASSES",
    "JOB_ID_LABEL",
    "JOB_SERVICE_ACCOUNT",
    "MANAGED_BY",
    "job_manifest",
    "job_name",
    "job_status_from",
    "running_job_from",
]

JOB_ID_LABEL = "metacloud.io/job-id"
JOB_ID_ANNOTATION = "metacloud.io/job-id"
MANAGED_BY = {"app.kubernetes.io/managed-by": "metacloud"}
JOB_SERVICE_ACCOUNT = "metacloud-jobs"
DEFAULT_PRIORITY_CLASSES: tuple[tuple[str, int, str], ...] = (
    ("metacloud-low", 1000, "Metacloud: preemptible and batch work"),
    ("metacloud-normal", 10000, "Metacloud: default for jobs"),
    ("metacloud-high", 100000, "Metacloud: urgent jobs"),
)
# A finished Job (and its pod, hence its logs) stays this long unless the control plane deletes it first.
FINISHED_JOB_TTL_S = 7 * 24 * 3600
_NAME_UNSAFE = re.compile(r"[^a-z0-9-]+")
_NAME_MAX = 52  # pods are named "<job>-<5 chars>" and must stay <= 63


def job_name(job_id: str) -> str:
    """A stable DNS-1123 name for a job id, so a redelivered start finds the Job it made."""
    cleaned = _NAME_UNSAFE.sub("-", job_id.lower()).strip("-")
    name = f"mcj-{cleaned}"
    if len(name) > _NAME_MAX or cleaned != job_id:
        digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
        name = f"{name[: _NAME_MAX - 9].rstrip('-')}-{digest}"
    return name


def _tolerations(spec: JobSpec) -> list[dict[str, Any]]:
    tolerations: list[dict[str, Any]] = []
    for taint in spec.tolerations:
        toleration: dict[str, Any] = {"key": taint.key, "effect": taint.effect}
        if taint.value is None:
            toleration["operator"] = "Exists"
        else:
            toleration.update(operator="Equal", value=taint.value)
        tolerations.append(toleration)
    # GPU nodes are commonly tainted with their resource name; a GPU job must be able to land there.
    if spec.gpus > 0 and not any(t.key == spec.gpu_resource for t in spec.tolerations):
        tolerations.append({"key": spec.gpu_resource, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def job_manifest(spec: JobSpec, *, namespace: str) -> dict[str, Any]:
    """The batch/v1 Job for a spec: Guaranteed QoS (limits = requests), no retries, a deadline."""
    if not spec.image:
        raise RuntimeFailure("a Kubernetes job needs an image")
    if spec.gpus and not is_gpu_resource(spec.gpu_resource):
        raise RuntimeFailure(f"{spec.gpu_resource!r} is not a GPU resource name")
    labels = {**spec.labels, **MANAGED_BY, JOB_ID_LABEL: job_label_value(spec.job_id)}
    amounts: dict[str, str] = {"cpu": f"{spec.cpu_millis}m", "memory": str(spec.memory_bytes)}
    if spec.gpus:
        amounts[spec.gpu_resource] = str(spec.gpus)
    container: dict[str, Any] = {
        "name": "main",
        "image": spec.image,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env = {**spec.env, "METACLOUD_JOB_ID": spec.job_id}
    container["env"] = [{"name": key, "value": value} for key, value in sorted(env.items())]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": JOB_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    tolerations = _tolerations(spec)
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if spec.priority_class:
        pod_spec["priorityClassName"] = spec.priority_class
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,  # retries are the control plane's decision, not the cluster's
        "ttlSecondsAfterFinished": FINISHED_JOB_TTL_S,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if spec.max_runtime_s:
        job_spec["activeDeadlineSeconds"] = spec.max_runtime_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(spec.job_id),
            "namespace": namespace,
            "labels": labels,
            "annotations": {JOB_ID_ANNOTATION: spec.job_id},
        },
        "spec": job_spec,
    }


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def running_job_from(job: Mapping[str, Any]) -> RunningJob | None:
    """A Job made by ``job_manifest`` read back into its job id and allocation; None if it is not one.

    The allocation is what the pod template holds (requests, else limits, as the scheduler counts
    them), and the GPU resource and node selector are the ones ``job_manifest`` copied from the spec,
    so the GPU type the meter derives from them is the one it derived from the spec: the records an
    agent makes from this carry the ids the agent that started the job made.
    """
    meta = job.get("metadata") or {}
    labels = meta.get("labels") or {}
    if JOB_ID_LABEL not in labels:
        return None
    # The annotation holds the id as sent; the label is cut to what a label value may be.
    job_id = (meta.get("annotations") or {}).get(JOB_ID_ANNOTATION) or labels[JOB_ID_LABEL]
    template = (job.get("spec") or {}).get("template") or {}
    held = pod_requests(template)
    gpu = min((name for name, amount in held.items() if is_gpu_resource(name) and amount > 0), default=None)
    selector = (template.get("spec") or {}).get("nodeSelector") or {}
    return RunningJob(
        job_id=str(job_id),
        cpu_millis=math.ceil(held.get("cpu", 0) * 1000),
        memory_bytes=math.ceil(held.get("memory", 0)),
        gpus=int(held[gpu]) if gpu else 0,
        gpu_resource=gpu or "nvidia.com/gpu",  # without GPUs the name is never used
        node_selector={str(k): str(v) for k, v in selector.items()},
        started_at=_time((job.get("status") or {}).get("startTime")),
        created_at=_time(meta.get("creationTimestamp")),
    )


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return condition  # type: ignore[no-any-return]
    return None


def _with_message(reason: str, message: Any) -> str:
    return f"{reason}: {message}" if message else reason


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


_IMAGE_PULL = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_ERROR = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


def _pod_problem(pod: Mapping[str, Any]) -> tuple[str, int | None] | None:
    """The most telling thing about one pod, in words, with its exit code when it ended."""
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return _with_message("evicted", status.get("message")), None
    for container in _container_statuses(pod):
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in _IMAGE_PULL:
            return _with_message("image pull failed", waiting.get("message") or waiting.get("reason")), None
        if waiting.get("reason") in _CONFIG_ERROR:
            return _with_message("container could not start", waiting.get("message") or waiting.get("reason")), None
        if waiting.get("reason") == "CrashLoopBackOff":
            return _with_message("crash looping", waiting.get("message")), None
        terminated = state.get("terminated") or {}
        if terminated.get("reason") == "OOMKilled":
            return "OOMKilled: the job used more memory than its limit", terminated.get("exitCode")
        if terminated and terminated.get("exitCode") not in (None, 0):
            code = terminated.get("exitCode")
            return _with_message(f"exited with code {code}", terminated.get("message")), code
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            return _with_message("unschedulable", condition.get("message")), None
    return None


def _exit_code(pods: Sequence[Mapping[str, Any]]) -> int | None:
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if "exitCode" in terminated:
                return int(terminated["exitCode"])
    return None


def job_status_from(job_id: str, job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> JobStatus:
    """Combine a Job and its pods (newest first) into one status with a reason people understand."""
    status = job.get("status") or {}
    started = _time(status.get("startTime"))
    problem = next((p for p in (_pod_problem(pod) for pod in pods) if p is not None), None)
    exit_code = problem[1] if problem and problem[1] is not None else _exit_code(pods)
    complete = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
    if complete or (status.get("succeeded") or 0) > 0:
        finished = _time(status.get("completionTime")) or _time((complete or {}).get("lastTransitionTime"))
        return JobStatus(
            job_id=job_id, phase=JobPhase.SUCCEEDED, exit_code=exit_code if exit_code is not None else 0,
            started_at=started, finished_at=finished,
        )
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    if failed or (status.get("failed") or 0) > 0:
        reason = (failed or {}).get("reason")
        if reason == "DeadlineExceeded":
            text = "ran longer than its max runtime (activeDeadlineSeconds)"
        elif problem:
            text = problem[0]
        else:
            text = _with_message(str(reason or "failed"), (failed or {}).get("message"))
        return JobStatus(
            job_id=job_id, phase=JobPhase.FAILED, reason=text, exit_code=exit_code,
            started_at=started, finished_at=_time((failed or {}).get("lastTransitionTime")),
        )
    if problem:
        # An evicted or OOM-killed pod means the job failed even before the Job controller says so.
        ended = problem[0].startswith(("evicted", "OOMKilled", "exited with code"))
        return JobStatus(
            job_id=job_id, phase=JobPhase.FAILED if ended else JobPhase.PENDING, reason=problem[0],
            exit_code=exit_code, started_at=started,
        )
    if any((pod.get("status") or {}).get("phase") == "Running" for pod in pods):
        return JobStatus(job_id=job_id, phase=JobPhase.RUNNING, started_at=started)
    reason = "waiting for a pod to be created" if not pods else "waiting to be scheduled and started"
    return JobStatus(job_id=job_id, phase=JobPhase.PENDING, reason=reason, started_at=started)
