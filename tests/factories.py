"""Test data made through the same models and credential code the product uses."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.credentials import SessionPolicy, create_web_session, format_api_key
from tenants.db import unscoped_session, utcnow
from tenants.models import ApiKey, Membership, Org, User
from tenants.security import hash_password, hash_token, new_token
from tenants.settings import Settings

PASSWORD = "correct horse battery staple"
_hash_cache: dict[str, str] = {}


def password_hash() -> str:
    """Argon2id costs ~0.1 s by design; tests hash the shared password once."""
    if PASSWORD not in _hash_cache:
        _hash_cache[PASSWORD] = hash_password(PASSWORD)
    return _hash_cache[PASSWORD]


@dataclass
class MadeUser:
    id: uuid.UUID
    email: str
    password: str


@dataclass
class MadeOrg:
    id: uuid.UUID
    slug: str
    name: str


async def make_user(
    db: async_sessionmaker[AsyncSession], email: str | None = None, *, operator: bool = False, verified: bool = True
) -> MadeUser:
    email = (email or f"user-{secrets.token_hex(4)}@example.com").lower()
    async with unscoped_session(db, reason="test factory") as s:
        user = User(email=email, name=email.split("@")[0], password_hash=password_hash(),
                    is_operator=operator, email_verified_at=utcnow() if verified else None)
        s.add(user)
        await s.flush()
        return MadeUser(id=user.id, email=email, password=PASSWORD)


async def make_org(
    db: async_sessionmaker[AsyncSession], *, members: dict[uuid.UUID, str] | None = None, slug: str | None = None
) -> MadeOrg:
    slug = slug or f"org-{secrets.token_hex(4)}"
    async with unscoped_session(db, reason="test factory") as s:
        org = Org(slug=slug, name=slug.replace("-", " ").title())
        s.add(org)
        await s.flush()
        for user_id, role in (members or {}).items():
            s.add(Membership(org_id=org.id, user_id=user_id, role=role))
        return MadeOrg(id=org.id, slug=slug, name=org.name)


async def add_member(db: async_sessionmaker[AsyncSession], org: MadeOrg, user: MadeUser, role: str) -> None:
    async with unscoped_session(db, reason="test factory") as s:
        s.add(Membership(org_id=org.id, user_id=user.id, role=role))


async def make_api_key(db: async_sessionmaker[AsyncSession], org: MadeOrg, role: str = "member") -> str:
    prefix_id = secrets.token_hex(4)
    raw = format_api_key(prefix_id, new_token())
    async with unscoped_session(db, reason="test factory") as s:
        s.add(ApiKey(org_id=org.id, name="test key", prefix="mc_" + prefix_id, secret_hash=hash_token(raw), role=role))
    return raw


async def sign_in(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], user: MadeUser, settings: Settings
) -> None:
    """Give ``client`` a session cookie for ``user`` and a CSRF token header, as a browser would have."""
    from gateway.auth import session_cookie_name

    async with unscoped_session(db, reason="test factory") as s:
        row = await s.get(User, user.id)
        assert row is not None
        token = await create_web_session(s, row, policy=SessionPolicy(), ip="127.0.0.1", user_agent="pytest")
    client.cookies.set(session_cookie_name(settings), token)
    await ensure_csrf(client)


async def ensure_csrf(client: httpx.AsyncClient) -> str:
    """Fetch a page to receive the CSRF cookie, and send it back as the x-csrftoken header."""
    resp = await client.get("/healthz")
    token = client.cookies.get("csrftoken") or resp.cookies.get("csrftoken")
    assert token, "the gateway sets a csrftoken cookie on safe requests"
    client.headers["x-csrftoken"] = token
    return token
