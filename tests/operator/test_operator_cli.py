"""``metacloud create-operator``: the only way an operator comes to be."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.cli import main
from tenants.db import unscoped_session
from tenants.models import AuditEvent, User
from tenants.security import verify_password
from tenants.settings import Settings
from tests.factories import MadeUser, make_user, sign_in

NEW_PASSWORD = "operator password of some length"


async def _run(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str, stdin: str = "") -> int:
    monkeypatch.setenv("DATABASE_URL", settings.owner_database_url)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    # main() runs its own event loop, as it does from a shell
    return await asyncio.to_thread(main, ["create-operator", *args])


async def _user(db: async_sessionmaker[AsyncSession], email: str) -> User | None:
    async with unscoped_session(db, reason="test") as s:
        return (await s.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def test_create_operator_makes_a_verified_operator_who_can_open_the_console(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, db: async_sessionmaker[AsyncSession],
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str],
) -> None:
    rc = await _run(monkeypatch, settings, "Ops@Metacloud.test", "--password-stdin", stdin=NEW_PASSWORD + "\n")

    assert rc == 0
    assert "operator ops@metacloud.test created" in capsys.readouterr().out
    user = await _user(db, "ops@metacloud.test")
    assert user is not None and user.is_operator and user.email_verified_at is not None
    assert verify_password(user.password_hash, NEW_PASSWORD)
    async with unscoped_session(db, reason="test") as s:
        [event] = (await s.execute(select(AuditEvent).where(AuditEvent.action == "operator.granted"))).scalars()
    assert event.actor_kind == "system" and event.target_id == str(user.id)
    await sign_in(client, db, MadeUser(id=user.id, email=user.email, password=NEW_PASSWORD), settings)
    assert (await client.get("/api/v1/operator/orgs")).status_code == 200


async def test_create_operator_promotes_an_existing_user_and_keeps_their_password(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, db: async_sessionmaker[AsyncSession]
) -> None:
    existing = await make_user(db, "already@customer.test")

    assert await _run(monkeypatch, settings, existing.email) == 0  # no prompt: the account has a password

    user = await _user(db, existing.email)
    assert user is not None and user.is_operator
    assert verify_password(user.password_hash, existing.password)


async def test_create_operator_refuses_a_short_password(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, db: async_sessionmaker[AsyncSession],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc = await _run(monkeypatch, settings, "short@metacloud.test", "--password-stdin", stdin="short\n")

    assert rc == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert await _user(db, "short@metacloud.test") is None
