"""A bare-host cluster end to end: the real gateway, the Temporal dev server running the metascheduler and
the job lifecycle workflow, and the agent with its local runtime running jobs as processes on this machine.
Unlike the Kubernetes emulator (which runs no pods), here jobs really run and end, so the lifecycle is
followed all the way: queued -> placed -> dispatched -> running -> succeeded / failed, with the exit code.
The agent pushes its jobs' status (job reports); the gateway asks with ``job_status`` commands only for
an agent that does not."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.runtimes.local import LocalRuntime
from tests.clusters.helpers import eventually
from tests.jobs.conftest import Member, WorkerFactory, connected_agent, set_plan

FINISHED = ("succeeded", "failed", "cancelled", "timed_out", "lost")


@pytest.fixture(params=[True, False], ids=["job-reports", "no-job-reports"])
def job_reports(request: pytest.FixtureRequest) -> bool:
    """Whether the agent pushes job reports; without, the workflow asks with ``job_status`` commands."""
    return bool(request.param)


@pytest.fixture
async def bare_host(http: httpx.AsyncClient, owner: Member, start_worker: WorkerFactory,
                    db: async_sessionmaker[AsyncSession], tmp_path: Path, job_reports: bool) -> AsyncIterator[str]:
    """An attached bare-host cluster whose agent runs jobs on this machine; yields its id."""
    await start_worker()
    await set_plan(db, owner.org.id, "payg")
    runtime = LocalRuntime(tmp_path / "runtime", kill_grace_s=2)
    async with connected_agent(http, owner, runtime, tmp_path / "agent", name="this-host",
                               provider="bare_host", job_reports=job_reports) as cluster_id:
        yield cluster_id


async def _submit(http: httpx.AsyncClient, owner: Member, name: str, code: str) -> str:
    resp = await http.post(owner.url(), headers=owner.headers, json={
        "name": name, "image": "python:3.11", "command": [sys.executable, "-c", code],
        "resources": {"cpu": 0.5, "memory": "256Mi"}})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def _until_finished(http: httpx.AsyncClient, owner: Member, job_id: str) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    async def finished() -> bool:
        seen.append((await http.get(owner.url(f"/{job_id}"), headers=owner.headers)).json())
        return seen[-1]["state"] in FINISHED
    try:
        await eventually(finished, timeout=60, every=0.3)
    except TimeoutError:
        pytest.fail(f"the job never finished; last seen {seen[-1]['state']}: {seen[-1]['reason']}")
    return seen[-1]


async def _status_commands(owner_conn: asyncpg.Connection, *job_ids: str) -> int:
    return int(await owner_conn.fetchval(
        "SELECT count(*) FROM agent_commands WHERE kind = 'job_status' AND payload->>'job_id' = ANY($1::text[])",
        list(job_ids)))


async def test_a_job_that_exits_0_succeeds_and_one_that_exits_3_fails_with_its_exit_code(
    http: httpx.AsyncClient, owner: Member, bare_host: str, owner_conn: asyncpg.Connection, job_reports: bool,
) -> None:
    good = await _submit(http, owner, "hello", "print('hello from the job')")
    bad = await _submit(http, owner, "broken", "import sys; print('about to fail'); sys.exit(3)")

    done = await _until_finished(http, owner, good)
    assert done["state"] == "succeeded", done["reason"]
    assert done["exit_code"] == 0
    assert done["cluster"]["id"] == bare_host
    assert done["started_at"] and done["finished_at"] and done["started_at"] <= done["finished_at"]
    states = [e["state"] for e in done["events"]]
    assert states[:3] == ["queued", "placed", "dispatched"] and states[-1] == "succeeded", done["events"]
    logs = await http.get(owner.url(f"/{good}/logs"), headers=owner.headers)
    assert logs.status_code == 200 and "hello from the job" in logs.text, logs.text

    failed = await _until_finished(http, owner, bad)
    assert failed["state"] == "failed", failed["reason"]
    assert failed["exit_code"] == 3
    assert "3" in failed["reason"], failed["reason"]
    asked = await _status_commands(owner_conn, good, bad)
    if job_reports:
        assert asked == 0, "the agent pushed every change: the workflow never had to ask"
    else:
        assert asked > 0, "an agent that does not push is asked with job_status commands"
