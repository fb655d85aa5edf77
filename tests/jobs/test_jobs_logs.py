"""Logs through the agent's fetch_logs commands: a tail, and a follow stream that ends with the job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server.jobs import lifecycle
from connectors.server.jobs.scheduler import run_pass
from tenants.db import unscoped_session
from tests.jobs.conftest import Member, cpu_nodes, make_cluster
from workflows.jobs.activities import plan_caps


@contextlib.asynccontextmanager
async def agent_answering_logs(owner_conn: asyncpg.Connection, logs: Callable[[], str]) -> AsyncIterator[list[dict]]:  # type: ignore[type-arg]
    """Completes every fetch_logs command with ``logs()``, as the agent would; yields the payloads seen."""
    seen: list[dict] = []  # type: ignore[type-arg]

    async def serve() -> None:
        while True:
            rows = await owner_conn.fetch("SELECT id, payload::text AS payload FROM agent_commands "
                                          "WHERE kind = 'fetch_logs' AND state = 'pending'")
            for row in rows:
                seen.append(json.loads(row["payload"]))
                await owner_conn.execute("UPDATE agent_commands SET state = 'succeeded', completed_at = now(), "
                                         "result = $2::jsonb WHERE id = $1", row["id"],
                                         json.dumps({"logs": logs(), "truncated": False}))
            await asyncio.sleep(0.02)

    task = asyncio.create_task(serve())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def running_job(http: httpx.AsyncClient, member: Member, db: async_sessionmaker[AsyncSession]) -> str:
    await make_cluster(db, member.org.id, "c", cpu_nodes())
    resp = await http.post(member.url(), headers=member.headers,
                           json={"name": "print", "image": "busybox", "command": ["echo"]})
    job_id: str = resp.json()["id"]
    await run_pass(db, caps_provider=plan_caps)
    async with unscoped_session(db, reason="test") as s:
        await lifecycle.dispatch(s, uuid.UUID(job_id))
    return job_id


async def test_logs_tail_comes_from_the_agent(http: httpx.AsyncClient, member: Member, running_job: str,
                                              owner_conn: asyncpg.Connection) -> None:
    async with agent_answering_logs(owner_conn, lambda: "one\ntwo\nthree\n") as seen:
        resp = await http.get(member.url(f"/{running_job}/logs"), params={"tail": 2}, headers=member.headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"lines": ["two", "three"], "complete": False}
    assert seen == [{"job_id": running_job, "tail_lines": 2}]


async def test_a_queued_job_has_no_logs_yet(http: httpx.AsyncClient, member: Member) -> None:
    resp = await http.post(member.url(), headers=member.headers, json={"name": "q", "command": ["true"]})
    logs = await http.get(member.url(f"/{resp.json()['id']}/logs"), headers=member.headers)
    assert logs.json() == {"lines": [], "complete": False}


async def test_follow_streams_new_lines_and_ends_when_the_job_finishes(
    http: httpx.AsyncClient, member: Member, running_job: str, owner_conn: asyncpg.Connection,
    db: async_sessionmaker[AsyncSession]
) -> None:
    text = {"now": "epoch 1\n"}

    async def progress() -> None:
        await asyncio.sleep(0.3)
        text["now"] = "epoch 1\nepoch 2\n"
        await asyncio.sleep(1.2)
        text["now"] = "epoch 1\nepoch 2\ndone\n"
        async with unscoped_session(db, reason="test") as s:
            await lifecycle.finish(s, uuid.UUID(running_job), "succeeded", "finished (exit code 0)", exit_code=0)

    async with agent_answering_logs(owner_conn, lambda: text["now"]):
        mover = asyncio.create_task(progress())
        async with http.stream("GET", member.url(f"/{running_job}/logs"), params={"follow": "true"},
                               headers=member.headers, timeout=20) as resp:
            assert resp.headers["content-type"].startswith("text/event-stream"), (resp.status_code, await resp.aread())
            body = "".join([chunk async for chunk in resp.aiter_text()])
        await mover
    data = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    assert data[:3] == ["epoch 1", "epoch 2", "done"]
    assert "event: end" in body
