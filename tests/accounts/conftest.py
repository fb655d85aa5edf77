"""The real app for account tests, and helpers that read the outbox the way a person reads mail."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.db import unscoped_session
from tenants.models import AuditEvent, EmailMessage
from tenants.settings import Settings

HTML = {"accept": "text/html"}


@pytest.fixture
def app(settings: Settings, engine: AsyncEngine, temporal_client: Client,
        db: async_sessionmaker[AsyncSession]) -> Litestar:
    return create_app(settings, engine=engine, temporal=TemporalHandle(settings, client=temporal_client))


def new_client(app: Litestar) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    async with new_client(app) as c:
        yield c


async def mails_to(db: async_sessionmaker[AsyncSession], address: str, kind: str | None = None) -> list[EmailMessage]:
    async with unscoped_session(db, reason="test reads the outbox") as s:
        query = select(EmailMessage).where(EmailMessage.to_address == address).order_by(EmailMessage.created_at)
        if kind:
            query = query.where(EmailMessage.kind == kind)
        return list((await s.execute(query)).scalars().all())


def link_in(mail: EmailMessage, path: str) -> str:
    """The link to ``path`` in a mail, as a relative URL the test client can follow."""
    for url in re.findall(r"https?://\S+", mail.body_text):
        parts = urlsplit(url)
        if parts.path == path:
            return f"{parts.path}?{parts.query}"
    raise AssertionError(f"no {path} link in {mail.body_text!r}")


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["token"][0]


async def audit_actions(db: async_sessionmaker[AsyncSession]) -> list[str]:
    async with unscoped_session(db, reason="test reads the audit log") as s:
        return list((await s.execute(select(AuditEvent.action).order_by(AuditEvent.id))).scalars().all())


async def seed_login_failures(db: async_sessionmaker[AsyncSession], email: str, n: int = 9) -> None:
    """``n`` failed sign-ins as the rate limiter records them (the full ten over HTTP are tested once;
    each costs an Argon2 verification)."""
    from tenants import ratelimit
    from tenants.db import utcnow

    async with unscoped_session(db, reason="test seeds failures") as s:
        for _ in range(n):
            await ratelimit.hit(s, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email, now=utcnow())
