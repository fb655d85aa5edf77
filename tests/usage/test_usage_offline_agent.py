"""The Done-when test: an agent offline for a simulated 10 minutes with 50,000 spooled records loses none
and double-counts none after it reconnects (the real spool and uploader against the real gateway)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import msgspec
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from billing.usage.rollups import compare_rollups
from connectors.agent.client import AgentClient
from connectors.agent.config import AgentConfig
from connectors.agent.spool import Spool
from connectors.agent.usage import UsageUploader, client_sender
from tenants.db import unscoped_session
from tests.usage.helpers import AgentCluster, hour_ago, job_subject, make_jobs, records

OFFLINE_S = 600.0


class FlakyGateway(httpx.AsyncBaseTransport):
    """The real app behind a network that is down until the simulated clock passes ``OFFLINE_S``, and
    that then loses the answers of a few uploads the gateway did store (so the agent sends them again)."""

    def __init__(self, app: Litestar) -> None:
        self.inner = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        self.clock = 0.0
        self.refused = 0
        self.lose_answers = 3
        self.answers_lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.clock < OFFLINE_S:
            self.refused += 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if self.answers_lost < self.lose_answers:
            await response.aread()
            self.answers_lost += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


async def test_an_agent_offline_for_ten_minutes_loses_no_usage_and_counts_none_twice(
        app: Litestar, cluster: AgentCluster, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        tmp_path: Path) -> None:
    jobs = await make_jobs(db, cluster, 50)
    subjects = [job_subject(j) for j in jobs]
    start = hour_ago(10)
    spooled = records(subjects, start, 500)  # 50 jobs x 500 windows x (vCPU, memory) = 50,000
    assert len(spooled) == 50_000
    spool = Spool(tmp_path / "usage-spool.sqlite3")
    first, later = spooled[:40_000], spooled[40_000:]
    spool.append([(r.id, _encode(r)) for r in first])

    net = FlakyGateway(app)
    config = AgentConfig(server_url="http://testserver", state_dir=tmp_path)
    client = AgentClient(config, httpx.AsyncClient(transport=net, timeout=60), credential=cluster.credential)

    async def simulated_sleep(seconds: float) -> None:
        net.clock += seconds  # time passes only in the simulation; the metering keeps adding records meanwhile
        if later and net.clock > OFFLINE_S / 2:
            chunk = [later.pop() for _ in range(min(2_500, len(later)))]
            spool.append([(r.id, _encode(r)) for r in chunk])
        await asyncio.sleep(0)

    lines: list[str | None] = []
    uploader = UsageUploader(spool, client_sender(client), batch_size=5_000, backoff_cap_s=60, idle_s=0.05,
                             rand=lambda: 1.0, sleep=simulated_sleep, on_problem=lines.append)
    runner = asyncio.create_task(uploader.run())
    try:
        async with asyncio.timeout(60):
            while spool.count or later:  # noqa: ASYNC110 - the uploader drains it
                await asyncio.sleep(0.05)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await client.http.aclose()

    assert net.refused >= 5 and net.clock >= OFFLINE_S  # it really was offline, and backed off
    assert any(line and "records wait in the spool" in line for line in lines) and lines[-1] is None
    assert net.answers_lost == 3  # three stored batches were sent again
    stored = await owner_conn.fetchrow(
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(quantity) AS q FROM usage_records WHERE org_id = $1",
        cluster.org_id)
    assert (stored["n"], stored["ids"]) == (50_000, 50_000)
    assert stored["q"] == sum(r.quantity for r in spooled)
    rolled = await owner_conn.fetchval("SELECT sum(quantity) FROM usage_hourly WHERE org_id = $1", cluster.org_id)
    assert rolled == stored["q"]
    async with unscoped_session(db, reason="test: compare rollups") as s:
        assert await compare_rollups(s) == []
    assert spool.count == 0 and spool.rejected() == []
    spool.close()


def _encode(record: object) -> bytes:
    return msgspec.json.encode(record)
