"""Login rate limits: ten failed sign-ins lock the account, so the 11th attempt is refused with 429 and a
Retry-After, even with the right password; through the API and through the sign-in form alike."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants import ratelimit
from tenants.db import unscoped_session, utcnow
from tests.factories import ensure_csrf, make_org, make_user

FAILURES_ALLOWED = 10


async def _seed_failures(db: async_sessionmaker[AsyncSession], email: str, n: int = FAILURES_ALLOWED) -> None:
    """Failed sign-ins as the limiter records them: the full ten over HTTP run once (each costs an Argon2
    verification), the other paths start from the same state."""
    async with unscoped_session(db, reason="test seeds login failures") as s:
        for _ in range(n):
            await ratelimit.hit(s, ratelimit.LOGIN_FAILURES_PER_ACCOUNT, email, now=utcnow())


async def test_the_11th_api_login_after_ten_failures_is_429_even_with_the_right_password(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})
    await ensure_csrf(client)
    statuses = []
    for _ in range(FAILURES_ALLOWED):
        resp = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "wrong password 123"})
        statuses.append(resp.status_code)
    assert statuses == [401] * FAILURES_ALLOWED

    locked = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert locked.status_code == 429, locked.text
    assert int(locked.headers["retry-after"]) > 0
    assert locked.headers["content-type"].startswith("application/problem+json")
    assert "mc_session" not in locked.headers.get("set-cookie", "")


async def test_the_sign_in_form_is_locked_the_same_way(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    user = await make_user(db)
    await make_org(db, members={user.id: "owner"})
    token = await ensure_csrf(client)
    await _seed_failures(db, user.email, FAILURES_ALLOWED - 1)
    last = await client.post("/login", data={"email": user.email, "password": "nope nope nope", "_csrf_token": token})
    assert last.status_code == 422  # the 10th failure: still the form with its message
    locked = await client.post("/login", data={"email": user.email, "password": user.password, "_csrf_token": token})
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 0
    assert "<form" in locked.text  # the form again, with the message, not a bare error
    assert client.cookies.get("mc_session") is None


async def test_an_unknown_email_is_limited_like_a_known_one(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]
) -> None:
    # Otherwise the limit itself would tell an attacker which emails have accounts.
    await ensure_csrf(client)
    await _seed_failures(db, "nobody@example.com", FAILURES_ALLOWED - 1)
    last = await client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever 12345"})
    assert last.status_code == 401
    resp = await client.post("/api/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever 12345"})
    assert resp.status_code == 429
