"""Schemathesis against the gateway's own OpenAPI schema, served in-process.

The schema is read at import (schemathesis parametrizes tests at collection) from an app built without a
database: serving ``/schema/openapi.json`` needs none. The calls go to a second app, built per module on the
suite's database with its own engine, Temporal client and task queue: schemathesis drives ASGI apps from an
event-loop thread of its own, and pooled asyncpg connections must stay on the loop that opened them; no worker
polls that task queue, so the jobs the fuzzer submits wait harmlessly instead of reaching another test's worker.

The callers' users, orgs and keys are made once per module through the suite's engine, and every table is
emptied when the module ends (as the ``db`` fixture does per test).

``FUZZ_MAX_EXAMPLES`` sets the generated examples per operation and caller (default 3 in ``make test``, with a
fixed seed; ``make fuzz`` runs more, with a new seed each time).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import schemathesis
from litestar import Litestar
from litestar.middleware.csrf import generate_csrf_token
from schemathesis.python import asgi as schemathesis_asgi
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.app import create_app
from gateway.auth import session_cookie_name
from tenants.credentials import SessionPolicy, create_web_session
from tenants.db import unscoped_session
from tenants.models import User
from tenants.settings import Settings
from tests.factories import make_api_key, make_org, make_user

MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "3"))
# `make test` draws the same examples every run, so it fails only when the code changes; `make fuzz` draws new ones
# each time (FUZZ_SEED=N replays a run: schemathesis prints the seed of a failure).
SEED = int(os.environ["FUZZ_SEED"]) if os.environ.get("FUZZ_SEED") else (0 if "FUZZ_MAX_EXAMPLES" not in os.environ else None)
SCHEMA_PATH = "/schema/openapi.json"
Case = schemathesis.Case[Any]  # generic over the operation's definition; ours are OpenAPI operations


def schema_app() -> Litestar:
    """The gateway as configured for tests, only to serve its schema (it never touches the database)."""
    return create_app(Settings(environment="test", database_url="postgresql://nobody@/none?host=/nonexistent"))


def load_schema() -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi(SCHEMA_PATH, schema_app(), config=schemathesis.Config.from_dict({
        **({"seed": SEED} if SEED is not None else {}),
        # with-security-parameters off: the schema declares its credentials, and left on schemathesis would send
        # made-up ones beside the callers' real ones (the signed-in runs would mostly test that a bad bearer gets 401).
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none",
                       "no-shrink": MAX_EXAMPLES <= 5,  # shrinking pays off in the long run only
                       "with-security-parameters": False},
        "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
    }))


@dataclass(frozen=True)
class Caller:
    """How one kind of caller authenticates: the headers and cookies it sends, and the org it works in."""

    name: str
    org: str
    headers: dict[str, str]
    cookies: dict[str, str]


@dataclass(frozen=True)
class World:
    session: Caller  # a browser: session cookie + CSRF token; owner of its org and a platform operator
    api_key: Caller  # a script: Authorization: Bearer <admin API key of its own org>
    csrf: str  # a CSRF token as any visitor has one, for the anonymous calls


async def _browser(db: async_sessionmaker[AsyncSession], settings: Settings, csrf: str) -> Caller:
    user = await make_user(db, operator=True)
    org = await make_org(db, members={user.id: "owner"})
    async with unscoped_session(db, reason="test factory") as s:
        row = await s.get(User, user.id)
        assert row is not None
        token = await create_web_session(s, row, policy=SessionPolicy(), ip="127.0.0.1", user_agent="schemathesis")
    return Caller("session", org.slug, {"x-csrftoken": csrf}, {session_cookie_name(settings): token, "csrftoken": csrf})


async def _script(db: async_sessionmaker[AsyncSession]) -> Caller:
    owner = await make_user(db)
    org = await make_org(db, members={owner.id: "owner"})
    key = await make_api_key(db, org, role="admin")
    return Caller("api_key", org.slug, {"Authorization": f"Bearer {key}"}, {})


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                owner_conn: asyncpg.Connection) -> AsyncIterator[World]:
    csrf = generate_csrf_token(settings.secret_key)  # double submit: the same value as cookie and header
    yield World(session=await _browser(sessions, settings, csrf), api_key=await _script(sessions), csrf=csrf)
    tables = await owner_conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
    await owner_conn.execute("TRUNCATE " + ", ".join(f'"{t["tablename"]}"' for t in tables)
                             + " RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def fuzz_app(settings: Settings, world: World) -> Iterator[Litestar]:
    app = create_app(settings.with_(db_pool_size=2, temporal_task_queue=f"fuzz-{uuid.uuid4().hex[:8]}"))
    yield app
    schemathesis_asgi.shutdown_lifespans()  # the apps' shutdown (engine disposal) on schemathesis' own loop
