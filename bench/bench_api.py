"""API requests per second: the full gateway stack against a bare Litestar endpoint, in the same run.

Full stack: ``create_app`` with all its middleware (request id, exception handlers, compression) and a
bench route that reads the org's own row through ``tenant_session`` (RLS scope set, one transaction,
a real PostgreSQL round trip). Bare: a Litestar app with one handler returning a small dict.
Both are driven in-process by the same httpx driver (8 concurrent workers, after a warm-up), so the
ratio bare / full is how many times slower a request through our stack is.

To measure a real endpoint instead (e.g. an authenticated request once API keys exist), change
``_full_stack`` to return that app and path (and pass headers to ``drive``).
"""

from __future__ import annotations

import uuid

from litestar import Litestar, get
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.context import BenchContext
from bench.load import LoadResult, drive
from bench.report import Figure
from gateway.app import create_app
from tenants.db import create_app_engine, create_sessionmaker, tenant_session, unscoped_session
from tenants.models import Org
from tenants.scope import TenantScope
from tenants.settings import Settings

CONCURRENCY = 8
ROUNDS = 4
WARMUP = 200


@get("/bench/orgs/{org_id:uuid}")
async def org_row(org_id: uuid.UUID, sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    async with tenant_session(sessions, TenantScope.for_system(org_id, "bench")) as session:
        org = (await session.execute(select(Org).where(Org.id == org_id))).scalar_one()
    return {"id": str(org.id), "slug": org.slug, "name": org.name, "plan": org.plan}


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"status": "ok"}


async def _full_stack(settings: Settings, engine: AsyncEngine) -> tuple[Litestar, str]:
    """The app and the path measured as "full stack"."""
    org_id = uuid.uuid4()
    async with unscoped_session(create_sessionmaker(engine), reason="bench setup") as session:
        session.add(Org(id=org_id, slug=f"bench-{org_id.hex[:8]}", name="Bench"))
    return create_app(settings, engine=engine, extra_route_handlers=[org_row]), f"/bench/orgs/{org_id}"


async def run(ctx: BenchContext) -> list[Figure]:
    settings = await ctx.settings()
    engine = create_app_engine(settings)
    try:
        full, full_path = await _full_stack(settings, engine)
        bare = Litestar([ping], logging_config=None)  # as create_app: no logging setup
        per_round = ctx.scale(full=1000, quick=200)
        bare_runs: list[LoadResult] = []
        full_runs: list[LoadResult] = []
        async with full.lifespan(), bare.lifespan():
            await drive(bare, "/ping", requests=WARMUP, concurrency=CONCURRENCY)
            await drive(full, full_path, requests=WARMUP, concurrency=CONCURRENCY)
            # Alternate short rounds so a change in background load hits both sides alike.
            for _ in range(ROUNDS):
                bare_runs.append(await drive(bare, "/ping", requests=per_round, concurrency=CONCURRENCY))
                full_runs.append(await drive(full, full_path, requests=per_round, concurrency=CONCURRENCY))
    finally:
        await engine.dispose()
    return _figures(full=LoadResult.combine(full_runs), bare=LoadResult.combine(bare_runs))


def _figures(*, full: LoadResult, bare: LoadResult) -> list[Figure]:
    # Latency has no baseline: in-process, a bare request finishes without yielding, so its workers never
    # queue behind each other, while full-stack latency at 8 concurrent is mostly waiting for the CPU.
    return [
        Figure("api.full_stack_rps", full.rps, "req/s", "api.bare_litestar_rps", bare.rps, goal="ratio <= 10"),
        Figure("api.full_stack_p50", full.latency_ms(50), "ms", higher_is_better=False),
        Figure("api.full_stack_p99", full.latency_ms(99), "ms", higher_is_better=False),
    ]
