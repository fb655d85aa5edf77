"""The jobs runtimes read back for usage metering: each job's id and allocation, as the spec that started it gave them.

An agent with an empty usage spool meters these jobs again from their start; the records only get the ids
the first agent gave them if the allocation read back makes the same ``job_spec_record`` as the spec did.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.agent.usage import GPU_PRODUCT_LABEL, job_spec_record
from connectors.protocol import JobSpec
from connectors.runtimes import LocalRuntime
from connectors.runtimes._kube_jobs import MANAGED_BY, job_manifest, job_name, running_job_from
from connectors.runtimes.kubernetes import KubernetesRuntime
from tests.connectors.kube_emulator import GPU_MODEL, KubeEmulator

NS = "metacloud-jobs"
GiB = 1 << 30

SPECS = [
    JobSpec(job_id="9b2f6c1e-4d7a-4f3b-8e21-5c6d7e8f9a0b", name="train", image="pytorch:2.4", cpu_millis=4000,
            memory_bytes=32 * GiB, gpus=2, node_selector={GPU_PRODUCT_LABEL: GPU_MODEL, "pool": "a100"},
            labels={"team": "vision"}, env={"EPOCHS": "3"}, max_runtime_s=3600),
    JobSpec(job_id="mig-job", name="notebook", image="jupyter", cpu_millis=250, memory_bytes=5 * 10**9, gpus=1,
            gpu_resource="nvidia.com/mig-1g.5gb", node_selector={"kubernetes.io/hostname": "gpu-a"}),
    JobSpec(job_id="Odd/Job id with spaces and more characters than a label value may hold, surely", name="x",
            image="busybox", cpu_millis=1, memory_bytes=123_456_789, gpu_resource="amd.com/gpu"),
]


@pytest.mark.parametrize("spec", SPECS, ids=["gpu-with-node-selector", "mig-slice", "cpu-only-odd-id"])
def test_a_job_manifest_reads_back_into_the_allocation_record_of_its_spec(spec: JobSpec) -> None:
    manifest = json.loads(json.dumps(job_manifest(spec, namespace=NS)))  # as the API server sends it back
    running = running_job_from(manifest)
    assert running is not None and running.job_id == spec.job_id
    assert job_spec_record(running) == job_spec_record(spec)


def test_the_gpu_type_read_back_is_the_placed_model_or_the_mig_profile() -> None:
    types = [job_spec_record(r)["gpu_type"] for r in (running_job_from(job_manifest(s, namespace=NS)) for s in SPECS)
             if r is not None]
    assert types == [GPU_MODEL, "mig-1g.5gb", ""]


def test_a_job_without_the_job_id_label_is_not_one_of_ours() -> None:
    manifest = job_manifest(SPECS[0], namespace=NS)
    del manifest["metadata"]["labels"]["metacloud.io/job-id"]
    assert running_job_from(manifest) is None


async def test_the_kubernetes_runtime_lists_the_jobs_it_started_with_their_start(
        kube: KubeEmulator, runtime: KubernetesRuntime) -> None:
    for spec in SPECS:
        await runtime.start_job(spec)
    kube.patch("batch/v1/jobs", NS, job_name(SPECS[0].job_id), {"status": {"startTime": "2026-03-01T10:00:05Z"}})
    foreign = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "theirs", "namespace": NS},
               "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    kube.add("batch/v1/jobs", foreign)  # not managed by us
    unlabelled = {**foreign, "metadata": {"name": "ours-but-no-id", "namespace": NS, "labels": dict(MANAGED_BY)}}
    kube.add("batch/v1/jobs", unlabelled)

    listed = {job.job_id: job for job in await runtime.jobs()}

    assert set(listed) == {spec.job_id for spec in SPECS}
    for spec in SPECS:
        assert job_spec_record(listed[spec.job_id]) == job_spec_record(spec)
    assert listed[SPECS[0].job_id].started_at == datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)
    assert listed[SPECS[1].job_id].started_at is None  # not started yet


LOCAL_SPECS = [
    JobSpec(job_id="local-gpu", name="x", command=["sleep", "30"], cpu_millis=1500, memory_bytes=3 * GiB, gpus=2,
            node_selector={GPU_PRODUCT_LABEL: "NVIDIA A100-SXM4-80GB"}, env={"HF_TOKEN": "hf_s3cret"}),
    JobSpec(job_id="local-mig", name="x", command=["sleep", "30"], cpu_millis=500, memory_bytes=GiB, gpus=1,
            gpu_resource="nvidia.com/mig-1g.5gb"),
    JobSpec(job_id="local/cpu job", name="x", command=["true"], cpu_millis=250, memory_bytes=12_345),
]


async def test_the_local_runtime_reads_back_its_jobs_allocation_after_an_agent_restart(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path)
    rt._gpu_names = ["NVIDIA A100-SXM4-80GB"] * 3  # pin the host's GPUs as nvidia-smi would list them
    for spec in LOCAL_SPECS:
        await rt.start_job(spec)
    try:
        older = tmp_path / "jobs" / "from-an-older-agent"  # no allocation written: nothing to meter it by
        older.mkdir()
        (older / "status.json").write_text('{"phase": "succeeded"}')
        cut = tmp_path / "jobs" / "cut-short"
        cut.mkdir()
        (cut / "allocation.json").write_text('{"job_id": "cut-sh')

        listed = {job.job_id: job for job in await LocalRuntime(tmp_path).jobs()}  # a new agent, same folder

        assert set(listed) == {spec.job_id for spec in LOCAL_SPECS}
        for spec in LOCAL_SPECS:
            assert job_spec_record(listed[spec.job_id]) == job_spec_record(spec)
            assert listed[spec.job_id].started_at == (await rt.job_status(spec.job_id)).started_at
        assert [job_spec_record(listed[s.job_id])["gpu_type"] for s in LOCAL_SPECS] == [
            "NVIDIA A100-SXM4-80GB", "mig-1g.5gb", ""]
        assert not any(b"hf_s3cret" in p.read_bytes() for p in (tmp_path / "jobs").glob("*/allocation.json"))
    finally:
        for spec in LOCAL_SPECS:
            await rt.cancel_job(spec.job_id)
