"""The Kubernetes runtime against the API emulator over HTTP, with the official client."""

from __future__ import annotations

import kmock
import pytest

from connectors.protocol import JobSpec, Taint
from connectors.runtimes import RuntimeFailure, make_runtime
from connectors.runtimes._kube_jobs import job_name
from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.connectors.kube_emulator import GPU_MODEL, KubeEmulator, cpu_node

NS = "metacloud-jobs"


async def test_inventory_counts_gpus_by_model_and_subtracts_running_pods(kube: KubeEmulator,
                                                                         runtime: KubernetesRuntime) -> None:
    kube.add_pod("team-a", "train-1", node="gpu-a", requests={"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"})
    kube.add_pod("team-a", "done-1", node="gpu-a", requests={"nvidia.com/gpu": "4"}, phase="Succeeded")
    kube.add_pod("team-a", "unbound", requests={"nvidia.com/gpu": "1"}, phase="Pending")
    kube.add_node(cpu_node("cpu-down", ready=False))
    kube.add("storage.k8s.io/v1/storageclasses", {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                                                   "metadata": {"name": "fast-ssd"}, "provisioner": "x"})

    inventory = await runtime.inventory()

    nodes = {n.name: n for n in inventory.nodes}
    assert set(nodes) == {"gpu-a", "gpu-b", "cpu-a", "cpu-down"}
    gpu_a = nodes["gpu-a"]
    assert [(g.resource, g.model, g.allocatable, g.allocated) for g in gpu_a.gpus] == [
        ("nvidia.com/gpu", GPU_MODEL, 8, 2)
    ]
    assert gpu_a.cpu_allocatable_millis == 96_000 and gpu_a.cpu_allocated_millis == 8_000
    assert gpu_a.memory_allocated_bytes == 64 * 2**30
    assert [(t.key, t.value, t.effect) for t in gpu_a.taints] == [("nvidia.com/gpu", "present", "NoSchedule")]
    assert gpu_a.labels["nvidia.com/gpu.product"] == GPU_MODEL
    assert nodes["cpu-a"].gpus == [] and nodes["cpu-a"].memory_allocatable_bytes == 64 * 2**30
    assert nodes["cpu-down"].ready is False and nodes["cpu-a"].ready is True
    assert sum(g.allocatable for n in inventory.nodes for g in n.gpus) == 16
    assert inventory.storage_classes == ["fast-ssd"]
    assert inventory.kubernetes_version == "v1.26.4+k3s1"


async def test_inventory_reports_mig_slices_as_their_own_gpu_type(kube: KubeEmulator,
                                                                  runtime: KubernetesRuntime) -> None:
    from tests.connectors.kube_emulator import gpu_node

    kube.add_node(gpu_node("mig-a", gpus=0, extra={"nvidia.com/mig-1g.10gb": "7"}))
    inventory = await runtime.inventory()
    mig = next(n for n in inventory.nodes if n.name == "mig-a")
    assert [(g.resource, g.model, g.allocatable) for g in mig.gpus] == [
        ("nvidia.com/mig-1g.10gb", f"{GPU_MODEL} MIG 1g.10gb", 7)
    ]


async def test_facts_name_the_kubernetes_version_and_distribution(runtime: KubernetesRuntime) -> None:
    facts = await runtime.facts()
    assert facts.runtime == "kubernetes"
    assert facts.kubernetes_version == "v1.26.4+k3s1"
    assert "k3s" in facts.platform and "linux/amd64" in facts.platform


async def test_an_unreachable_version_endpoint_does_not_block_facts(kube: KubeEmulator,
                                                                    runtime: KubernetesRuntime) -> None:
    kube.k8s["get /version"] << kmock.KubernetesError(status=500, message="boom")
    facts = await runtime.facts()
    assert facts.kubernetes_version is None


async def test_provision_creates_namespace_account_quota_and_priority_classes_once(
    kube: KubeEmulator, runtime: KubernetesRuntime
) -> None:
    first = await runtime.provision({"quota": {"requests.nvidia.com/gpu": "8", "requests.cpu": "64"}})
    assert set(first["created"]) == {
        f"namespace/{NS}", "serviceaccount/metacloud-jobs", "resourcequota/metacloud-quota",
        "priorityclass/metacloud-low", "priorityclass/metacloud-normal", "priorityclass/metacloud-high",
    }
    assert NS in kube.names("v1/namespaces")
    assert kube.names("scheduling.k8s.io/v1/priorityclasses") == {"metacloud-low", "metacloud-normal", "metacloud-high"}

    again = await runtime.provision({"quota": {"requests.nvidia.com/gpu": "16"}})
    assert again["created"] == [] and len(again["existing"]) == 6
    quota = kube.get("v1/resourcequotas", NS, "metacloud-quota")
    assert quota is not None and quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "16"


async def test_start_job_creates_a_guaranteed_gpu_job_that_tolerates_the_gpu_taint(
    kube: KubeEmulator, runtime: KubernetesRuntime
) -> None:
    spec = JobSpec(job_id="job-42", name="train", image="pytorch:2.4", command=["python", "train.py"],
                   cpu_millis=4000, memory_bytes=32 * 2**30, gpus=2, node_selector={"nvidia.com/gpu.product": GPU_MODEL},
                   tolerations=[Taint(key="dedicated", value="ml", effect="NoSchedule")], labels={"team": "vision"},
                   max_runtime_s=3600, env={"EPOCHS": "3"})
    started = await runtime.start_job(spec)
    assert started == {"job_id": "job-42", "name": "mcj-job-42", "namespace": NS, "existing": False}

    job = kube.get("batch/v1/jobs", NS, "mcj-job-42")
    assert job is not None
    assert job["metadata"]["labels"]["metacloud.io/job-id"] == "job-42"
    assert job["spec"]["activeDeadlineSeconds"] == 3600 and job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    expected = {"cpu": "4000m", "memory": str(32 * 2**30), "nvidia.com/gpu": "2"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": GPU_MODEL}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "EPOCHS", "value": "3"} in container["env"]
    assert job["spec"]["template"]["metadata"]["labels"]["team"] == "vision"

    again = await runtime.start_job(spec)
    assert again["existing"] is True


async def test_job_status_explains_image_pull_failures_from_the_pod(kube: KubeEmulator,
                                                                     runtime: KubernetesRuntime) -> None:
    await runtime.start_job(JobSpec(job_id="j1", name="x", image="nope:latest"))
    kube.add_pod(NS, "mcj-j1-abcde", labels={"metacloud.io/job-id": "j1"}, phase="Pending")
    kube.patch("v1/pods", NS, "mcj-j1-abcde", {"status": {"containerStatuses": [{"name": "main", "state": {
        "waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:latest"'}}}]}})

    status = await runtime.job_status("j1")
    assert status.phase == "pending"
    assert status.reason == 'image pull failed: Back-off pulling image "nope:latest"'


async def test_job_status_reports_oom_kill_and_success(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    await runtime.start_job(JobSpec(job_id="j2", name="x", image="img"))
    kube.add_pod(NS, "mcj-j2-aaaaa", labels={"metacloud.io/job-id": "j2"}, phase="Failed")
    kube.patch("v1/pods", NS, "mcj-j2-aaaaa", {"status": {"containerStatuses": [{"name": "main", "state": {
        "terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}})
    kube.patch("batch/v1/jobs", NS, job_name("j2"), {"status": {"failed": 1, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
         "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    failed = await runtime.job_status("j2")
    assert (failed.phase, failed.exit_code) == ("failed", 137)
    assert failed.reason.startswith("OOMKilled")

    await runtime.start_job(JobSpec(job_id="j3", name="x", image="img"))
    kube.patch("batch/v1/jobs", NS, job_name("j3"), {"status": {
        "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:05:00Z"}})
    done = await runtime.job_status("j3")
    assert done.phase == "succeeded" and done.finished_at is not None and done.started_at is not None


async def test_status_of_an_unknown_job_is_unknown_not_an_error(runtime: KubernetesRuntime) -> None:
    status = await runtime.job_status("never-started")
    assert status.phase == "unknown" and "no such job" in status.reason


async def test_logs_come_from_the_jobs_pod_with_a_tail(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    await runtime.start_job(JobSpec(job_id="j4", name="x", image="img"))
    assert await runtime.logs("j4") == ""  # no pod yet
    kube.add_pod(NS, "mcj-j4-bbbbb", labels={"metacloud.io/job-id": "j4"})
    kube.logs[(NS, "mcj-j4-bbbbb")] = "epoch 1\nepoch 2\nepoch 3\n"
    assert await runtime.logs("j4", tail_lines=2) == "epoch 2\nepoch 3\n"


async def test_cancel_deletes_the_job_and_tolerates_a_second_cancel(kube: KubeEmulator,
                                                                     runtime: KubernetesRuntime) -> None:
    await runtime.start_job(JobSpec(job_id="j5", name="x", image="img"))
    await runtime.cancel_job("j5")
    assert kube.get("batch/v1/jobs", NS, "mcj-j5") is None
    await runtime.cancel_job("j5")
    delete = next(r for r in kube.k8s if r.method == kmock.method.DELETE)
    assert delete.params["propagationPolicy"] == "Background"


async def test_validate_reports_permissions_and_detected_gpus(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    await runtime.provision({})
    report = await runtime.validate()
    assert report["ok"] is True and report["problems"] == []
    assert all(report["permissions"].values())
    assert report["gpus"] == {f"nvidia.com/gpu|{GPU_MODEL}": 16}

    kube.denied.add(("create", "jobs"))
    report = await runtime.validate()
    assert report["ok"] is False
    assert report["permissions"][f"create jobs in {NS}"] is False
    assert f"missing permission: create jobs in {NS}" in report["problems"]


async def test_cleanup_removes_what_provision_created(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    await runtime.provision({})
    await runtime.start_job(JobSpec(job_id="j6", name="x", image="img"))
    result = await runtime.cleanup({})
    assert "job/mcj-j6" in result["deleted"] and f"namespace/{NS}" in result["deleted"]
    assert kube.names("scheduling.k8s.io/v1/priorityclasses") == set()
    assert (await runtime.cleanup({}))["deleted"] == []  # idempotent


async def test_forbidden_calls_become_one_plain_line(kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    kube.k8s["get", kmock.resource("", "v1", "nodes")] << kmock.KubernetesError(
        status=403, reason="Forbidden", message='nodes is forbidden: User "system:serviceaccount:x:y" cannot list')
    with pytest.raises(RuntimeFailure, match=r"^list nodes: permission denied .*nodes is forbidden"):
        await runtime.inventory()


async def test_an_unreachable_api_server_is_named_in_the_failure() -> None:
    rt = make_runtime("kubernetes", host="http://127.0.0.1:9", request_timeout_s=2)
    rt.api.configuration.retries = 0  # type: ignore[attr-defined]
    with pytest.raises(RuntimeFailure, match=r"cannot reach the Kubernetes API at http://127\.0\.0\.1:9"):
        await rt.inventory()


async def test_a_job_without_an_image_is_refused_before_reaching_the_cluster(runtime: KubernetesRuntime) -> None:
    with pytest.raises(RuntimeFailure, match="needs an image"):
        await runtime.start_job(JobSpec(job_id="j7", name="x"))


async def test_statuses_of_many_jobs_at_once_equal_each_jobs_own_status(kube: KubeEmulator,
                                                                       runtime: KubernetesRuntime) -> None:
    """What the agent's job reports read every few seconds: one list of Jobs and one of pods for all."""
    for job_id in ("p1", "p2", "p3"):
        await runtime.start_job(JobSpec(job_id=job_id, name="x", image="img"))
    kube.add_pod(NS, "mcj-p1-aaaaa", labels={"metacloud.io/job-id": "p1"}, phase="Running")
    kube.add_pod(NS, "mcj-p2-bbbbb", labels={"metacloud.io/job-id": "p2"}, phase="Pending")
    kube.patch("v1/pods", NS, "mcj-p2-bbbbb", {"status": {"containerStatuses": [{"name": "main", "state": {
        "waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}})
    kube.patch("batch/v1/jobs", NS, job_name("p3"), {"status": {
        "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:05:00Z"}})
    wanted = ["p1", "p2", "p3", "gone"]

    together = await runtime.job_statuses(wanted)

    assert together == {job_id: await runtime.job_status(job_id) for job_id in wanted}
    assert [together[j].phase for j in wanted] == ["running", "pending", "succeeded", "unknown"]
