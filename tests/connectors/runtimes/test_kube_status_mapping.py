"""Reasons people understand, from raw Job and Pod objects (pure functions, no API)."""

from __future__ import annotations

from typing import Any

from connectors.runtimes._kube_inventory import pod_requests, requests_by_node
from connectors.runtimes._kube_jobs import job_name, job_status_from


def _pod(*, status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {}, "status": status}


def test_unschedulable_pod_says_why_it_waits() -> None:
    pod = _pod(status={"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]})
    status = job_status_from("j", {"status": {"active": 1}}, [pod])
    assert status.phase == "pending"
    assert status.reason == "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."


def test_evicted_pod_fails_the_job_with_the_eviction_message() -> None:
    pod = _pod(status={"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."})
    status = job_status_from("j", {"status": {}}, [pod])
    assert (status.phase, status.reason) == ("failed", "evicted: The node was low on resource: memory.")


def test_deadline_exceeded_is_reported_as_max_runtime() -> None:
    job = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    status = job_status_from("j", job, [])
    assert status.phase == "failed" and "max runtime" in status.reason


def test_nonzero_exit_carries_the_code() -> None:
    pod = _pod(status={"phase": "Failed", "containerStatuses": [
        {"name": "main", "state": {"terminated": {"reason": "Error", "exitCode": 3}}}]})
    job = {"status": {"failed": 1}}
    status = job_status_from("j", job, [pod])
    assert (status.phase, status.exit_code, status.reason) == ("failed", 3, "exited with code 3")


def test_running_pod_means_running() -> None:
    status = job_status_from("j", {"status": {"active": 1}}, [_pod(status={"phase": "Running"})])
    assert status.phase == "running" and status.reason == ""


def test_scheduler_counts_the_larger_of_init_and_main_containers() -> None:
    pod = {"spec": {
        "nodeName": "n1",
        "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
        "containers": [{"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                       {"resources": {"limits": {"nvidia.com/gpu": "1"}}}],
    }, "status": {"phase": "Running"}}
    requests = pod_requests(pod)
    assert requests["cpu"] == 4 and requests["memory"] == 2**30 and requests["nvidia.com/gpu"] == 1
    finished = {**pod, "status": {"phase": "Succeeded"}}
    assert requests_by_node([pod, finished])["n1"]["cpu"] == 4


def test_job_names_are_valid_and_stable_for_any_job_id() -> None:
    assert job_name("abc-123") == "mcj-abc-123"
    odd = job_name("Org/Job_ID with spaces" * 5)
    assert len(odd) <= 52 and odd == job_name("Org/Job_ID with spaces" * 5)
    assert odd.replace("-", "").isalnum() and odd == odd.lower()
    assert job_name("A") != job_name("a")
