"""Helpers for the org admin console tests: read the outbox and the audit log as the product wrote them."""

from __future__ import annotations

import re
from typing import Any, cast

import httpx
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session
from tenants.models import AuditEvent, EmailMessage

__all__ = ["actions", "browser", "csrf_form", "invite_token_from_outbox", "json_headers"]

json_headers = {"accept": "application/json"}


def browser(app: Litestar) -> httpx.AsyncClient:
    """A second client of the same app, with its own cookies (another person, or a bot with a key)."""
    transport = httpx.ASGITransport(app=cast(Any, app))  # httpx's ASGI type is narrower than Litestar's
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def invite_token_from_outbox(db: async_sessionmaker[AsyncSession], email: str) -> str:
    """The token of the newest invitation mailed to ``email``, read from its link as a person would."""
    async with unscoped_session(db, reason="test reads the outbox") as s:
        mail = (await s.execute(
            select(EmailMessage).where(EmailMessage.to_address == email, EmailMessage.kind == "invite")
            .order_by(EmailMessage.created_at.desc())
        )).scalars().first()
    assert mail is not None, f"no invitation mailed to {email}"
    match = re.search(r"/invites/accept\?token=([\w\-%]+)", mail.body_text)
    assert match, mail.body_text
    return match.group(1)

async def actions(db: async_sessionmaker[AsyncSession], **where: Any) -> list[str]:
    """Audit actions recorded so far, oldest first."""
    async with unscoped_session(db, reason="test reads the audit log") as s:
        query = select(AuditEvent.action).order_by(AuditEvent.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEvent, key) == value)
        return list((await s.execute(query)).scalars())

async def csrf_form(client: httpx.AsyncClient) -> dict[str, str]:
    """The hidden field a browser form carries (tests post forms with it, not the header)."""
    token = client.headers.get("x-csrftoken") or client.cookies.get("csrftoken") or ""
    return {"_csrf_token": token}
