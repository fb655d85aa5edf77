"""PostgreSQL stopped and started again under load, on a server of this test's own (the session's
server is shared with every other test): the API answers 200 or 503 with a retry hint, never 500,
and serves again once the database is back, on the same pool (a disconnect invalidates it)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from infra.dev.postgres import EmbeddedPostgres, start_embedded
from infra.migrate import upgrade_async
from tenants.db import create_app_engine, create_sessionmaker
from tenants.settings import Settings
from tests.factories import make_api_key, make_org, make_user

MEMBERS = 3
WORKERS = 8


@pytest.fixture
async def own_postgres() -> AsyncIterator[list[EmbeddedPostgres]]:
    """A one-element list: the test swaps in the restarted server, which teardown stops."""
    home = Path(tempfile.mkdtemp(prefix="metacloud-fault-pg-"))
    holder = [await asyncio.to_thread(start_embedded, home / "data")]
    yield holder
    await asyncio.to_thread(holder[0].stop)
    shutil.rmtree(home, ignore_errors=True)


async def test_postgres_restart_under_load_answers_503_with_retry_hint_then_recovers(
        own_postgres: list[EmbeddedPostgres], temporal_client: Client) -> None:
    server = own_postgres[0]
    settings = Settings(environment="test", database_url=server.url, db_pool_size=5,
                        temporal_address=temporal_client.service_client.config.target_host)
    await upgrade_async(settings)
    engine = create_app_engine(settings)
    sessions = create_sessionmaker(engine)
    owner = await make_user(sessions)
    others = {(await make_user(sessions)).id: "member" for _ in range(MEMBERS - 1)}
    org = await make_org(sessions, members={owner.id: "owner", **others})
    key = await make_api_key(sessions, org, role="admin")
    app = create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))
    path = f"/api/v1/orgs/{org.slug}/members"

    statuses: Counter[int] = Counter()
    bad: list[str] = []
    sent = 0
    stop = asyncio.Event()

    async def hammer(c: httpx.AsyncClient) -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            resp = await c.get(path)
            statuses[resp.status_code] += 1
            if resp.status_code == 200:
                if len(resp.json()) != MEMBERS:
                    bad.append(f"200 with {len(resp.json())} members")
            elif resp.status_code == 503:
                if not resp.headers.get("retry-after"):
                    bad.append("503 without Retry-After")
            else:
                bad.append(f"{resp.status_code}: {resp.text[:200]}")
            await asyncio.sleep(0.005)

    invited: dict[str, int] = {}

    async def invite(c: httpx.AsyncClient, n: int) -> None:
        # One writer: each address is tried once, so a row seen twice would be a request done twice.
        while not stop.is_set():
            email = f"w{n}-{len(invited)}@example.com"
            resp = await c.post(f"/api/v1/orgs/{org.slug}/invites", json={"email": email, "role": "member"})
            invited[email] = resp.status_code
            if resp.status_code not in (201, 503) or (resp.status_code == 503 and not resp.headers.get("retry-after")):
                bad.append(f"invite {resp.status_code}: {resp.text[:200]}")
            await asyncio.sleep(0.01)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                                 base_url="http://testserver",
                                 headers={"Authorization": f"Bearer {key}"}) as c:
        assert (await c.get(path)).status_code == 200
        load = [asyncio.create_task(hammer(c)) for _ in range(WORKERS)] + [asyncio.create_task(invite(c, 0))]
        await asyncio.sleep(0.3)
        before = statuses[200]
        await asyncio.to_thread(server.stop)  # pg_ctl stop: fast mode, live connections are cut
        await asyncio.sleep(0.5)
        own_postgres[0] = await asyncio.to_thread(start_embedded, server.data_dir)
        restarted = time.monotonic()
        # Recovery: the same pool serves again within a few seconds of the restart.
        while statuses[200] == before or time.monotonic() - restarted < 1.0:
            assert time.monotonic() - restarted < 15, f"no 200 after the restart: {statuses}"
            await asyncio.sleep(0.1)
        after_restart = statuses[200]
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*load)
        final = await c.get(path)
    await engine.dispose()
    # the owner's view (superuser), RLS not in the way
    owner_db = await asyncpg.connect(server.url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        stored = [r["email"] for r in await owner_db.fetch("SELECT email FROM invites WHERE org_id = $1", org.id)]
    finally:
        await owner_db.close()
    assert own_postgres[0].url == settings.database_url  # the same server folder and socket came back

    assert bad == []
    assert set(statuses) <= {200, 503}
    assert statuses[503] > 0, f"the outage was seen by no request: {statuses}"
    assert statuses[200] > after_restart  # still serving after recovery
    assert final.status_code == 200 and len(final.json()) == MEMBERS
    # Nothing lost, nothing twice: every request sent got exactly one answer; every invitation answered 201 is
    # stored, each address at most once, and nothing is stored that was not asked for (a 503 may still have
    # committed if the link broke after COMMIT reached the server: the caller's retry then answers 409).
    assert sum(statuses.values()) == sent
    created = {e for e, st in invited.items() if st == 201}
    assert len(stored) == len(set(stored))
    assert created <= set(stored) <= set(invited)
    assert Counter(invited.values())[503] > 0 and len(created) > 0
