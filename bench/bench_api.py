"""API requests per second: an authenticated request through the whole gateway against a bare
Litestar endpoint, in the same run.

Authenticated: ``GET /api/v1/orgs/{org}/members`` with ``Authorization: Bearer mc_...`` on the app
``create_app`` builds — every middleware, the API key check, the guard resolving the org and role,
and the members query under RLS (real PostgreSQL round trips). Bare: a Litestar app with one handler
returning a small dict. Both are driven in-process by the same httpx driver (8 concurrent workers,
after a warm-up), so the ratio bare / full is how many times slower a request through our stack is.
"""

from __future__ import annotations

import secrets
import uuid

from litestar import Litestar, get
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.context import BenchContext
from bench.load import LoadResult, drive
from bench.report import Figure
from gateway.app import create_app
from tenants.credentials import API_KEY_PREFIX, format_api_key
from tenants.db import create_app_engine, create_sessionmaker, unscoped_session
from tenants.models import ApiKey, Membership, Org, User
from tenants.security import hash_token, new_token
from tenants.settings import Settings

CONCURRENCY = 8
ROUNDS = 4
WARMUP = 200


@get("/ping", sync_to_thread=False)
def ping() -> dict[str, str]:
    return {"status": "ok"}


async def _full_stack(settings: Settings, engine: AsyncEngine) -> tuple[Litestar, str, dict[str, str]]:
    """The app, the path and the headers measured as "full stack": an API-key request to a real endpoint."""
    org_id, user_id = uuid.uuid4(), uuid.uuid4()
    prefix_id = secrets.token_hex(4)
    key = format_api_key(prefix_id, new_token())
    slug = f"bench-{org_id.hex[:8]}"
    async with unscoped_session(create_sessionmaker(engine), reason="bench setup") as session:
        session.add(Org(id=org_id, slug=slug, name="Bench"))
        session.add(User(id=user_id, email=f"bench-{prefix_id}@example.com", name="Bench"))
        await session.flush()
        session.add(Membership(org_id=org_id, user_id=user_id, role="owner"))
        session.add(ApiKey(org_id=org_id, name="bench", prefix=API_KEY_PREFIX + prefix_id,
                           secret_hash=hash_token(key), role="admin", created_by=user_id))
    app = create_app(settings, engine=engine)
    return app, f"/api/v1/orgs/{slug}/members", {"Authorization": f"Bearer {key}"}


async def run(ctx: BenchContext) -> list[Figure]:
    settings = await ctx.settings()
    engine = create_app_engine(settings)
    try:
        full, full_path, headers = await _full_stack(settings, engine)
        bare = Litestar([ping], logging_config=None)  # as create_app: no logging setup
        per_round = ctx.scale(full=1000, quick=200)
        bare_runs: list[LoadResult] = []
        full_runs: list[LoadResult] = []
        async with full.lifespan(), bare.lifespan():
            await drive(bare, "/ping", requests=WARMUP, concurrency=CONCURRENCY)
            await drive(full, full_path, requests=WARMUP, concurrency=CONCURRENCY, headers=headers)
            # Alternate short rounds so a change in background load hits both sides alike.
            for _ in range(ROUNDS):
                bare_runs.append(await drive(bare, "/ping", requests=per_round, concurrency=CONCURRENCY))
                full_runs.append(await drive(full, full_path, requests=per_round, concurrency=CONCURRENCY,
                                             headers=headers))
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
