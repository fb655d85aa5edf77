"""No secret we issue or receive reaches the logs.

One flow issues each kind of secret and uses it: a password (signup, sign-in, a failed sign-in with a
near-miss), the email verification token, a session token, an API key, a cluster's registration token (the
install manifest URL too), the agent credential it is redeemed for, and an invitation token. Everything logged
meanwhile, at DEBUG and in the production JSON format, plus whatever reached stdout/stderr, is then searched for
each secret.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.observability import JsonFormatter
from tenants.db import unscoped_session
from tenants.models import EmailMessage
from tenants.settings import Settings
from tests.clusters.helpers import FakeAgent
from tests.factories import ensure_csrf, make_user, sign_in
from tests.security.conftest import transport

PASSWORD = "tangerine orbit cactus 1987"
NEAR_MISS = "tangerine orbit cactus 1978"  # a typo of the real one is as secret as the real one


async def _mail_token(db: async_sessionmaker[AsyncSession], to: str, path: str) -> str:
    async with unscoped_session(db, reason="test reads the outbox") as s:
        bodies = (await s.execute(select(EmailMessage.body_text).where(EmailMessage.to_address == to)
                                  .order_by(EmailMessage.created_at))).scalars().all()
    for body in reversed(bodies):
        for url in re.findall(r"https?://\S+", body):
            if urlsplit(url).path == path:
                token: str = parse_qs(urlsplit(url).query)["token"][0]
                return token
    raise AssertionError(f"no {path} link in the mail to {to}")


def _ours(record: logging.LogRecord) -> bool:
    """The test's own HTTP client logs each URL it calls; those lines are the caller's, not the server's."""
    return record.name.startswith(("httpx", "httpcore")) and "://testserver/" in record.getMessage()


async def test_no_issued_secret_appears_in_any_log_line(
    app: Litestar, client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], settings: Settings,
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
) -> None:
    # Whatever an earlier test did to the logging tree (a dictConfig disabling loggers, logging.disable),
    # this test must see every line the code writes.
    logging.disable(logging.NOTSET)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            logger.disabled = False
    logging.getLogger("httpx").setLevel(logging.NOTSET)  # the agent's entry point quiets it to WARNING
    caplog.set_level(logging.DEBUG)
    secrets: dict[str, str] = {"password": PASSWORD, "mistyped password": NEAR_MISS}
    await ensure_csrf(client)

    # signup -> verification mail -> verify -> sign in (session token); a failed sign-in on the way
    email = "ada@secrets.example"
    signup = await client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD, "name": "Ada"})
    assert signup.status_code == 202, signup.text
    secrets["verification token"] = await _mail_token(db, email, "/verify")
    assert (await client.get("/verify", params={"token": secrets["verification token"]})).status_code == 200
    failed = await client.post("/api/v1/auth/login", json={"email": email, "password": NEAR_MISS})
    assert failed.status_code == 401
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    org = login.json()["orgs"][0]["slug"]
    secrets["session token"] = client.cookies["mc_session"]
    assert (await client.get("/api/v1/me")).status_code == 200

    # an API key, used
    made = await client.post(f"/api/v1/orgs/{org}/api-keys", json={"name": "ci", "role": "member"})
    assert made.status_code == 201, made.text
    secrets["API key"] = made.json()["key"]
    async with httpx.AsyncClient(transport=transport(app), base_url="http://testserver") as bare:
        used = await bare.get(f"/api/v1/orgs/{org}/clusters", headers={"Authorization": f"Bearer {secrets['API key']}"})
        assert used.status_code == 200, used.text

        # a cluster's registration token (also in the install manifest's URL), redeemed for the agent credential
        cluster = await client.post(f"/api/v1/orgs/{org}/clusters", json={"name": "edge-1", "provider": "bare_host"})
        assert cluster.status_code == 201, cluster.text
        secrets["registration token"] = cluster.json()["install"]["token"]
        manifest = await bare.get(f"/agent/v1/install/{secrets['registration token']}.yaml")
        assert manifest.status_code == 200
        agent = FakeAgent(bare, secrets["registration token"])
        assert (await agent.register()).status_code == 200
        assert agent.credential
        secrets["agent credential"] = agent.credential
        assert (await agent.heartbeat()).status_code == 200

        # an invitation, accepted by the person it was for
        invited = await make_user(db, "grace@secrets.example")
        assert (await client.post(f"/api/v1/orgs/{org}/invites", json={"email": invited.email})).status_code == 201
        secrets["invite token"] = await _mail_token(db, invited.email, "/invites/accept")
        await sign_in(bare, db, invited, settings)
        accepted = await bare.post("/api/v1/invites/accept", json={"token": secrets["invite token"]})
        assert accepted.status_code == 200, accepted.text

    records = [r for r in caplog.records if not _ours(r)]
    assert caplog.records, "the capture saw nothing at all: it is not wired to the logging tree"
    formatter = JsonFormatter()
    out, err = capfd.readouterr()
    logged = "\n".join([*(formatter.format(r) for r in records), out, err])
    leaked = [f"{kind} ({value[:6]}...)" for kind, value in secrets.items()
              if value in logged or value[-16:] in logged]
    where = [line[:160] for line in logged.splitlines()
             if any(v in line or v[-16:] in line for v in secrets.values())]
    assert leaked == [], f"secrets in the logs: {leaked}: {where[:3]}"
    assert len(secrets) == 8
