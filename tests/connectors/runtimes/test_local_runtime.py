"""The local runtime runs jobs as processes on this host."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from connectors.protocol import JobSpec
from connectors.runtimes import LocalRuntime, Runtime, RuntimeFailure, make_runtime


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached in time")


async def _wait_done(rt: Runtime, job_id: str) -> None:
    async def finished() -> bool:
        return (await rt.job_status(job_id)).phase != "running"

    await _eventually(finished)


def _is_gone_or_zombie(pid_file: Path) -> bool:
    status = Path(f"/proc/{pid_file.read_text().strip()}/status")
    return not status.exists() or "State:\tZ" in status.read_text()  # a zombie waiting for its reaper is dead too


async def test_a_failing_command_reports_its_exit_code_and_output(tmp_path: Path) -> None:
    rt = make_runtime("local", state_dir=tmp_path)
    await rt.start_job(JobSpec(job_id="j1", name="x", command=["sh", "-c", "echo hi; echo oops >&2; exit 3"]))
    await _wait_done(rt, "j1")
    status = await rt.job_status("j1")
    assert (status.phase, status.exit_code, status.reason) == ("failed", 3, "exited with code 3")
    assert status.started_at is not None and status.finished_at is not None
    assert await rt.logs("j1") == "hi\noops\n"
    assert await rt.logs("j1", tail_lines=1) == "oops\n"


async def test_cancel_stops_a_long_job_and_its_children(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path)
    await rt.start_job(JobSpec(job_id="j2", name="x", command=["sh", "-c", "sleep 60 & echo $! > child.pid; wait"]))
    child_pid_file = rt.jobs_dir / "j2" / "child.pid"

    async def child_started() -> bool:
        return child_pid_file.exists() and bool(child_pid_file.read_text().strip())

    await _eventually(child_started)
    assert (await rt.job_status("j2")).phase == "running"

    started = time.monotonic()
    await rt.cancel_job("j2")
    assert time.monotonic() - started < 5
    status = await rt.job_status("j2")
    assert (status.phase, status.reason) == ("failed", "cancelled")
    async def child_gone() -> bool:  # the signal reaches the grandchild a moment later on a busy machine
        return _is_gone_or_zombie(child_pid_file)

    await _eventually(child_gone)
    await rt.cancel_job("j2")  # a second cancel is harmless


async def test_a_job_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path, kill_grace_s=0.2)
    await rt.start_job(JobSpec(job_id="j3", name="x", command=["sh", "-c", "trap '' TERM; echo ready; sleep 60"]))

    async def ready() -> bool:
        return "ready" in await rt.logs("j3")

    await _eventually(ready)
    await rt.cancel_job("j3")
    assert (await rt.job_status("j3")).exit_code == -9


async def test_max_runtime_stops_the_job_with_a_reason(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path, kill_grace_s=1)
    await rt.start_job(JobSpec(job_id="j4", name="x", command=["sleep", "30"], max_runtime_s=1))
    await _wait_done(rt, "j4")
    status = await rt.job_status("j4")
    assert status.phase == "failed" and status.reason == "ran longer than its max runtime (1 s)"


async def test_status_survives_an_agent_restart(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path)
    await rt.start_job(JobSpec(job_id="j5", name="x", command=["true"]))
    await _wait_done(rt, "j5")
    restarted = LocalRuntime(tmp_path)
    status = await restarted.job_status("j5")
    assert (status.phase, status.exit_code) == ("succeeded", 0)
    assert (await restarted.start_job(JobSpec(job_id="j5", name="x", command=["true"])))["existing"] is True
    assert (await restarted.job_status("nope")).phase == "unknown"


async def test_inventory_describes_this_host(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path)
    await rt.start_job(JobSpec(job_id="j6", name="x", command=["sleep", "30"], cpu_millis=500, memory_bytes=2**20))
    inventory = await rt.inventory()
    [node] = inventory.nodes
    assert node.cpu_allocatable_millis >= 1000 and node.memory_allocatable_bytes > 2**27
    assert (node.cpu_allocated_millis, node.memory_allocated_bytes) == (500, 2**20)
    assert node.labels["metacloud.io/runtime"] == "local"
    assert inventory.storage_total_bytes > 0
    facts = await rt.facts()
    assert facts.runtime == "local" and facts.platform.startswith("linux/")
    await rt.cancel_job("j6")


async def test_jobs_without_a_command_or_with_gpus_on_a_gpu_less_host_are_refused(tmp_path: Path) -> None:
    rt = LocalRuntime(tmp_path)
    rt._gpu_names = []  # this machine has no nvidia-smi; pin it so the test means the same everywhere
    with pytest.raises(RuntimeFailure, match="needs a command"):
        await rt.start_job(JobSpec(job_id="j7", name="x", image="img"))
    with pytest.raises(RuntimeFailure, match="0 free GPU"):
        await rt.start_job(JobSpec(job_id="j8", name="x", command=["true"], gpus=1))
    report = await rt.validate()
    assert report["ok"] is True and report["gpus"] == {}
