"""The agent's job reporter against the scripted gateway: what it sends, when, and when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import msgspec
import pytest

from connectors.agent.client import AgentClient, Transient
from connectors.agent.config import AgentConfig
from connectors.agent.job_reports import JobReporter
from connectors.protocol import JobReportAccepted, JobReportAnswer, JobReportRejected
from connectors.runtimes import JobStatus, RunningJob, RuntimeFailure
from tests.connectors.agent.fakes import SERVER, FakeGateway, problem


class ScriptedRuntime:
    """Each job's status is what the test set last; ``held`` is what ``jobs()`` lists."""

    def __init__(self) -> None:
        self.status: dict[str, JobStatus] = {}
        self.held: list[RunningJob] = []
        self.asked: list[str] = []

    def set(self, job_id: str, phase: str, **extra: object) -> None:
        self.status[job_id] = JobStatus(job_id=job_id, phase=phase, **extra)  # type: ignore[arg-type]

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        self.asked += job_ids
        if any(job_id not in self.status for job_id in job_ids):
            raise RuntimeFailure("runtime down")
        return {job_id: self.status[job_id] for job_id in job_ids}

    async def jobs(self) -> list[RunningJob]:
        return self.held


def _client(gw: FakeGateway) -> AgentClient:
    return AgentClient(AgentConfig(server_url=SERVER), gw.client(), credential="mca_first")


def _sent(gw: FakeGateway) -> list[tuple[str, str]]:
    return [(r.job_id, r.phase) for batch in gw.job_reports for r in batch.reports]


async def test_a_change_is_sent_once_then_refreshed_and_a_final_one_ends_the_watch() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    reporter, client = JobReporter(rt, refresh_s=5.0), _client(gw)
    rt.set("j1", "running")
    reporter.watch("j1")
    assert await reporter.round(client, now=0.0) == 1
    assert await reporter.round(client, now=2.0) == 0  # unchanged, not yet due for a refresh
    assert await reporter.round(client, now=5.0) == 1  # the refresh: the gateway's record stays fresh
    rt.set("j1", "succeeded", exit_code=0)
    assert await reporter.round(client, now=6.0) == 1
    assert _sent(gw) == [("j1", "running"), ("j1", "running"), ("j1", "succeeded")]
    assert reporter.watched == {}
    assert await reporter.round(client, now=60.0) == 0 and rt.asked.count("j1") == 4


async def test_a_report_the_gateway_did_not_acknowledge_is_sent_again() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    reporter, client = JobReporter(rt), _client(gw)
    rt.set("j1", "failed", exit_code=3, reason="exited with code 3")
    reporter.watch("j1")
    gw.intercept = lambda request: problem(503, "unavailable")
    with pytest.raises(Transient, match="503"):
        await reporter.round(client, now=0.0)
    assert "j1" in reporter.watched
    gw.intercept = None
    assert await reporter.round(client, now=1.0) == 1
    assert reporter.watched == {} and reporter.sent == 1


async def test_a_refused_report_is_not_sent_again_and_a_done_job_leaves_the_watch() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    reporter, client = JobReporter(rt), _client(gw)
    for job in ("mine", "cancelled", "theirs"):
        rt.set(job, "running")
        reporter.watch(job)
    answer = JobReportAnswer(accepted=[JobReportAccepted(job_id="mine", state="running", applied=True),
                                       JobReportAccepted(job_id="cancelled", state="cancelled", applied=True, done=True)],
                             rejected=[JobReportRejected(job_id="theirs", code="unknown_job", reason="not here")])
    gw.intercept = lambda request: httpx.Response(200, json=msgspec.to_builtins(answer))
    await reporter.round(client, now=0.0)
    assert list(reporter.watched) == ["mine"]


async def test_jobs_the_runtime_holds_are_watched_from_the_start_and_the_watch_is_bounded() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    rt.held = [RunningJob(job_id=f"old-{i}", cpu_millis=100, memory_bytes=1) for i in range(3)]
    for job in rt.held:
        rt.set(job.job_id, "running")
    reporter, client = JobReporter(rt, max_watched=3), _client(gw)
    await reporter.round(client, now=0.0)
    assert sorted(j for j, _ in _sent(gw)) == ["old-0", "old-1", "old-2"]
    reporter.watch("new")
    assert "new" not in reporter.watched  # full: the gateway asks about it with job_status instead


async def test_a_runtime_failure_skips_the_job_this_round_only() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    reporter, client = JobReporter(rt), _client(gw)
    reporter.watch("j1")
    assert await reporter.round(client, now=0.0) == 0
    rt.set("j1", "running")
    assert await reporter.round(client, now=1.0) == 1


async def test_the_loop_stops_quietly_against_a_gateway_without_job_reports() -> None:
    gw, rt = FakeGateway(), ScriptedRuntime()
    rt.set("j1", "running")
    reporter = JobReporter(rt, interval_s=0.01)
    reporter.watch("j1")
    gw.intercept = lambda request: httpx.Response(404, json={"status": 404, "code": "not_found"})
    problems: list[str | None] = []
    await asyncio.wait_for(reporter.run(_client(gw), on_problem=problems.append), timeout=5)
    assert problems == []
