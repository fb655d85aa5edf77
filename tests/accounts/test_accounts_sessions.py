"""Session timeouts and password reset: what ends a session, and what a reset link can do."""

from __future__ import annotations

from datetime import timedelta

import httpx
from litestar import Litestar
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session, utcnow
from tenants.models import WebSession
from tenants.settings import Settings
from tests.accounts.conftest import (
    HTML,
    audit_actions,
    link_in,
    mails_to,
    new_client,
    seed_login_failures,
    token_of,
)
from tests.factories import ensure_csrf, make_user, sign_in

NEW_PASSWORD = "marble otter juggles lanterns"


async def test_idle_session_expires(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession],
                                    settings: Settings) -> None:
    user = await make_user(db)
    await ensure_csrf(client)
    login = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code == 200
    assert (await client.get("/api/v1/me")).status_code == 200
    idle = timedelta(minutes=settings.session_idle_minutes + 1)
    async with unscoped_session(db, reason="test ages the session") as s:
        await s.execute(update(WebSession).values(last_seen_at=utcnow() - idle))
    assert (await client.get("/api/v1/me")).status_code == 401
    page = await client.get("/orgs", headers=HTML)
    assert page.status_code == 302 and page.headers["location"].startswith("/login?next=")


async def test_session_ends_at_the_absolute_timeout_even_when_active(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    await ensure_csrf(client)
    await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    async with unscoped_session(db, reason="test ages the session") as s:
        await s.execute(update(WebSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_password_reset_signs_out_every_other_session(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db, "reset-me@example.com")
    async with new_client(app) as laptop:
        await sign_in(laptop, db, user, settings)
        assert (await laptop.get("/api/v1/me")).status_code == 200
        csrf = await ensure_csrf(client)
        asked = await client.post("/reset", headers=HTML, data={"_csrf_token": csrf, "email": user.email})
        assert asked.status_code == 200 and "Check your inbox" in asked.text
        [mail] = await mails_to(db, user.email, "reset_password")
        link = link_in(mail, "/reset/confirm")
        form = await client.get(link, headers=HTML)
        assert form.status_code == 200 and "Choose a new password" in form.text
        weak = await client.post("/reset/confirm", headers=HTML,
                                 data={"_csrf_token": csrf, "token": token_of(link), "password": "short"})
        assert weak.status_code == 422 and "at least 12 characters" in weak.text
        done = await client.post("/reset/confirm", headers=HTML,
                                 data={"_csrf_token": csrf, "token": token_of(link), "password": NEW_PASSWORD})
        assert done.status_code == 303 and done.headers["location"].startswith("/login")
        assert (await laptop.get("/api/v1/me")).status_code == 401
    reused = await client.post("/reset/confirm", headers=HTML,
                               data={"_csrf_token": csrf, "token": token_of(link), "password": NEW_PASSWORD + "!"})
    assert reused.status_code == 400, "a reset link works once"
    old = await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
    assert old.status_code == 401
    new = await client.post("/api/v1/auth/login", json={"email": user.email, "password": NEW_PASSWORD})
    assert new.status_code == 200
    assert "user.password_reset" in await audit_actions(db)


async def test_reset_request_answers_the_same_for_an_unknown_email(client: httpx.AsyncClient,
                                                                   db: async_sessionmaker[AsyncSession]) -> None:
    csrf = await ensure_csrf(client)
    user = await make_user(db)
    known = await client.post("/reset", headers=HTML, data={"_csrf_token": csrf, "email": user.email})
    unknown = await client.post("/reset", headers=HTML, data={"_csrf_token": csrf, "email": "ghost@example.com"})
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace(user.email, "X") == unknown.text.replace("ghost@example.com", "X")
    assert await mails_to(db, "ghost@example.com") == []


async def test_expired_reset_link_is_refused(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> None:
    from tenants.models import OneTimeToken

    csrf = await ensure_csrf(client)
    user = await make_user(db)
    await client.post("/reset", headers=HTML, data={"_csrf_token": csrf, "email": user.email})
    [mail] = await mails_to(db, user.email, "reset_password")
    async with unscoped_session(db, reason="test ages the token") as s:
        await s.execute(update(OneTimeToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = await client.get(link_in(mail, "/reset/confirm"), headers=HTML)
    assert page.status_code == 400 and "This link does not work" in page.text


async def test_reset_unlocks_a_locked_account(client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession]) -> None:
    csrf = await ensure_csrf(client)
    user = await make_user(db)
    await seed_login_failures(db, user.email)
    await client.post("/api/v1/auth/login", json={"email": user.email, "password": "wrong password!"})
    assert (await client.post("/api/v1/auth/login", json={"email": user.email, "password": user.password})
            ).status_code == 429
    await client.post("/reset", headers=HTML, data={"_csrf_token": csrf, "email": user.email})
    [mail] = await mails_to(db, user.email, "reset_password")
    await client.post("/reset/confirm", headers=HTML, data={"_csrf_token": csrf, "password": NEW_PASSWORD,
                                                            "token": token_of(link_in(mail, "/reset/confirm"))})
    ok = await client.post("/api/v1/auth/login", json={"email": user.email, "password": NEW_PASSWORD})
    assert ok.status_code == 200


async def test_logout_page_clears_the_cookie_and_ends_the_session(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    user = await make_user(db)
    await sign_in(client, db, user, settings)
    token = client.cookies.get("mc_session")
    out = await client.post("/logout", headers=HTML)
    assert out.status_code == 303
    cleared = [c for c in out.headers.get_list("set-cookie") if c.startswith("mc_session=")]
    assert cleared and ("max-age=0" in cleared[0].lower() or "expires=thu, 01 jan 1970" in cleared[0].lower())
    client.cookies.clear()
    client.cookies.set("mc_session", token or "")
    assert (await client.get("/api/v1/me")).status_code == 401
