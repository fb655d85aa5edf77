"""A scripted ``/agent/v1`` gateway for ``httpx.MockTransport`` and a runtime that records its calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec

from connectors.agent import Agent
from connectors.protocol import (
    AGENT_VERSION,
    AgentFacts,
    Command,
    CommandBatch,
    CommandResult,
    Heartbeat,
    HeartbeatResponse,
    Inventory,
    JobReportAccepted,
    JobReportAnswer,
    JobReportBatch,
    JobSpec,
    NodeInventory,
    RegisterRequest,
    RegisterResponse,
)
from connectors.runtimes import JobStatus, RunningJob, RuntimeFailure

SERVER = "https://gw.example.com"


def problem(status: int, code: str, detail: str = "") -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": detail, "title": code},
                          headers={"content-type": "application/problem+json"})


class FakeGateway:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.events: list[str] = []
        self.pending: list[Command] = []
        self.results: dict[str, list[CommandResult]] = {}
        self.heartbeats: list[Heartbeat] = []
        self.registrations: list[RegisterRequest] = []
        self.job_reports: list[JobReportBatch] = []
        self.credentials = {"mca_first"}
        self.issue = "mca_first"
        self.revoked = False
        self.new_credential: str | None = None
        self.clock_offset = timedelta(0)
        # Return a response (or raise) to replace the normal answer; None lets the call through.
        self.intercept: Callable[[httpx.Request], httpx.Response | None] | None = None

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport())

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r.url.path == f"/agent/v1{path}")

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.intercept is not None:
            answer = self.intercept(request)
            if answer is not None:
                return answer
        now = datetime.now(UTC) + self.clock_offset
        path = request.url.path.removeprefix("/agent/v1")
        if path == "/register":
            body = msgspec.json.decode(request.content, type=RegisterRequest)
            self.registrations.append(body)
            return httpx.Response(200, content=msgspec.json.encode(RegisterResponse(
                cluster_id="cl_1", credential=self.issue, heartbeat_interval_s=1, command_wait_s=1, server_time=now)))
        auth = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.revoked:
            return problem(401, "credential_revoked", "the cluster was detached")
        if auth not in self.credentials:
            return problem(401, "credential_invalid")
        if path == "/heartbeat":
            self.heartbeats.append(msgspec.json.decode(request.content, type=Heartbeat))
            answer = HeartbeatResponse(server_time=now, heartbeat_interval_s=1, new_credential=self.new_credential)
            if self.new_credential:
                self.credentials.add(self.new_credential)
            return httpx.Response(200, content=msgspec.json.encode(answer))
        if path == "/commands":
            if not self.pending:
                await asyncio.sleep(0.01)  # a short long-poll keeps tests fast
            batch, self.pending = CommandBatch(commands=self.pending), []
            return httpx.Response(200, content=msgspec.json.encode(batch))
        if path == "/job-reports":
            batch = msgspec.json.decode(request.content, type=JobReportBatch)
            self.job_reports.append(batch)
            answer = JobReportAnswer(accepted=[JobReportAccepted(job_id=r.job_id, state=r.phase, applied=True)
                                               for r in batch.reports])
            return httpx.Response(200, content=msgspec.json.encode(answer))
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "commands":
            command_id, action = parts[1], parts[2]
            self.events.append(f"{action}:{command_id}")
            if action == "result":
                result = msgspec.json.decode(request.content, type=CommandResult)
                self.results.setdefault(command_id, []).append(result)
            return httpx.Response(204)
        return httpx.Response(404, text="<html>not found</html>", headers={"content-type": "text/html"})


class FakeRuntime:
    kind = "fake"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def facts(self) -> AgentFacts:
        return AgentFacts(runtime="fake", agent_version=AGENT_VERSION, hostname="h1")

    async def inventory(self) -> Inventory:
        return Inventory(nodes=[NodeInventory(name="n1", cpu_allocatable_millis=4000)])

    async def provision(self, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("provision", payload))
        if payload.get("fail"):
            raise RuntimeFailure("create namespace metacloud-jobs: permission denied")
        return {"created": ["namespace/metacloud-jobs"]}

    async def validate(self) -> dict[str, Any]:
        self.calls.append(("validate", None))
        return {"ok": True, "permissions": {}, "gpus": {}, "problems": []}

    async def start_job(self, spec: JobSpec) -> dict[str, Any]:
        self.calls.append(("start_job", spec))
        return {"job_id": spec.job_id}

    async def job_status(self, job_id: str) -> JobStatus:
        return JobStatus(job_id=job_id, phase="running")

    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {job_id: await self.job_status(job_id) for job_id in job_ids}

    async def cancel_job(self, job_id: str) -> None:
        self.calls.append(("cancel_job", job_id))

    async def logs(self, job_id: str, tail_lines: int | None = None) -> str:
        return "line\n" * 3

    async def jobs(self) -> list[RunningJob]:
        return []

    async def cleanup(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {}


async def run_until(agent: Agent, done: Callable[[], bool], *, timeout: float = 5.0) -> int:
    """Run the agent until ``done()`` holds (then stop it), or until it exits by itself."""
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    deadline = time.monotonic() + timeout
    while not task.done() and not done():
        assert time.monotonic() < deadline, "the agent did not get there in time"
        await asyncio.sleep(0.005)
    stop.set()
    return await asyncio.wait_for(task, timeout)
