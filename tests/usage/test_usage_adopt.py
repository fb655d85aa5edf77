"""The meter adopts the runtime's jobs it does not know (an agent that lost its spool): from their start,
never a job it already meters or metered to its end, and a runtime that cannot list them stops nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from billing.usage.ids import record_id_text
from connectors.agent.spool import Spool
from connectors.agent.usage import UsageMeter, UsageRecord
from connectors.protocol import JobSpec
from connectors.runtimes.base import JobStatus, RunningJob, RuntimeFailure, Volume

T0 = 1_780_000_000 - 1_780_000_000 % 3600  # an hour boundary
GiB = 1 << 30


def _at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class Clock:
    def __init__(self, at: int) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return _at(self.at)


class Runtime:
    """The jobs it lists (or the error it raises) and their status; no volumes."""

    kind = "fake"

    def __init__(self) -> None:
        self.listed: list[RunningJob] | Exception = []
        self.status: dict[str, JobStatus] = {}

    async def jobs(self) -> list[RunningJob]:
        if isinstance(self.listed, Exception):
            raise self.listed
        return list(self.listed)

    async def job_status(self, job_id: str) -> JobStatus:
        return self.status.get(job_id, JobStatus(job_id=job_id, phase="unknown"))

    async def volumes(self) -> list[Volume]:
        return []


def _running(job_id: str, *, started: int | None, created: int = T0, cpu_millis: int = 1000, gpus: int = 0) -> RunningJob:
    return RunningJob(job_id=job_id, cpu_millis=cpu_millis, memory_bytes=GiB, gpus=gpus,
                      node_selector={"nvidia.com/gpu.product": "A100"} if gpus else {},
                      started_at=_at(started) if started is not None else None, created_at=_at(created))


async def test_unknown_jobs_are_metered_from_their_start_and_known_or_finished_ones_are_left_alone(
        tmp_path: Path) -> None:
    clock, runtime = Clock(T0 + 10), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    await meter.job_started(JobSpec(job_id="known", name="x", cpu_millis=2000, memory_bytes=GiB))
    await meter.job_started(JobSpec(job_id="done", name="x", cpu_millis=500, memory_bytes=GiB))
    runtime.status["done"] = JobStatus(job_id="done", phase="succeeded", started_at=_at(T0), finished_at=_at(T0 + 60))
    runtime.status["known"] = JobStatus(job_id="known", phase="running", started_at=_at(T0))
    clock.at = T0 + 120
    await meter.tick()  # "done" is metered to its end and forgotten
    assert [s.subject for s in spool.subjects()] == ["known"]

    runtime.listed = [_running("known", started=T0, cpu_millis=9999), _running("done", started=T0),
                      _running("lost", started=T0 + 30, gpus=1), _running("waiting", started=None, created=T0 + 50)]
    assert await meter.adopt() is True
    subjects = {s.subject: s for s in spool.subjects()}
    assert set(subjects) == {"known", "lost", "waiting"}
    assert subjects["known"].spec["cpu_millis"] == 2000  # the agent's own record stands
    assert (subjects["lost"].started_at, subjects["lost"].metered_until) == (T0 + 30, None)
    assert subjects["lost"].spec == {"cpu_millis": 1000, "memory_bytes": GiB, "gpus": 1, "gpu_type": "A100"}
    assert subjects["waiting"].started_at == T0 + 50  # not started: its creation
    assert await meter.adopt() is True and len(spool.subjects()) == 3  # adopting again changes nothing

    runtime.status["lost"] = JobStatus(job_id="lost", phase="running", started_at=_at(T0 + 30))
    runtime.status["waiting"] = JobStatus(job_id="waiting", phase="pending")
    spool.remove([r.id for r in spool.oldest(1000)])
    clock.at = T0 + 150
    await meter.tick()
    lost = [msgspec.json.decode(r.body, type=UsageRecord) for r in spool.oldest(1000)]
    lost = [r for r in lost if r.job_id == "lost"]
    assert sorted({(int(r.window_start.timestamp()) - T0, int(r.window_end.timestamp()) - T0) for r in lost}) == [
        (30, 60), (60, 120)]  # from the runtime's start, not from when it was adopted
    assert all(r.id == record_id_text("lost", r.resource, r.gpu_type, int(r.window_start.timestamp())) for r in lost)
    spool.close()


async def test_a_metered_job_is_forgotten_for_good_once_the_runtime_no_longer_lists_it(tmp_path: Path) -> None:
    clock, runtime = Clock(T0), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    runtime.listed = [_running("j", started=T0)]
    await meter.adopt()
    runtime.status["j"] = JobStatus(job_id="j", phase="succeeded", started_at=_at(T0), finished_at=_at(T0 + 30))
    clock.at = T0 + 60
    await meter.tick()
    assert spool.subjects() == []
    await meter.adopt()
    assert spool.subjects() == []  # still listed (a finished Job stays a while): not metered twice
    runtime.listed = []
    await meter.adopt()  # gone from the runtime: nothing left to remember it by
    runtime.listed = [_running("j", started=T0)]
    await meter.adopt()
    assert [s.subject for s in spool.subjects()] == ["j"]
    spool.close()


async def test_a_runtime_that_cannot_list_its_jobs_is_logged_once_and_stops_no_metering(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock, runtime = Clock(T0), Runtime()
    spool = Spool(tmp_path / "spool.sqlite3")
    meter = UsageMeter(spool, runtime, window_s=60, clock=clock)
    await meter.job_started(JobSpec(job_id="mine", name="x", cpu_millis=1000, memory_bytes=GiB))
    runtime.status["mine"] = JobStatus(job_id="mine", phase="running", started_at=_at(T0))
    runtime.listed = RuntimeFailure("list jobs: permission denied (the agent's RBAC role must allow this)")
    with caplog.at_level(logging.INFO, "metacloud.agent"):
        for at in (T0 + 60, T0 + 120, T0 + 180):
            clock.at = at
            assert await meter.adopt() is False
            await meter.tick()
        runtime.listed = [_running("lost", started=T0)]
        assert await meter.adopt() is True
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "runtime's jobs" in r.getMessage()]
    assert len(lines) == 2
    assert lines[0][0] == logging.WARNING and "permission denied" in lines[0][1] and "trying again" in lines[0][1]
    assert lines[1] == (logging.INFO, "usage: listing the runtime's jobs works again")
    assert spool.count == 3 * 2  # "mine" was metered all along: three windows of vCPU and memory
    assert [s.subject for s in spool.subjects()] == ["lost", "mine"]
    spool.close()
