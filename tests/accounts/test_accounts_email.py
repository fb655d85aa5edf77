"""The outbox sender: real SMTP against aiosmtpd on loopback, retries, and several senders at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP
from litestar import Litestar
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from gateway.app import create_app
from gateway.runtime import TemporalHandle
from tenants.db import unscoped_session
from tenants.email import OutgoingMail, SmtpTransport, deliver_pending, enqueue, run_email_sender
from tenants.models import EmailMessage
from tenants.settings import Settings

FROM = "Metacloud <no-reply@metacloud.local>"


@dataclass
class Sink:
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
async def smtp_server() -> AsyncIterator[tuple[Sink, int]]:
    sink = Sink()
    server = await asyncio.get_running_loop().create_server(lambda: SMTP(sink, hostname="localhost"), "127.0.0.1", 0)
    yield sink, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _queue(db: async_sessionmaker[AsyncSession], n: int = 1) -> None:
    async with unscoped_session(db, reason="test queues mail") as s:
        for i in range(n):
            await enqueue(s, to=f"to{i}@example.com", subject=f"Hello {i}", body=f"Body {i}\n", kind="test")


async def _rows(db: async_sessionmaker[AsyncSession]) -> list[EmailMessage]:
    async with unscoped_session(db, reason="test reads the outbox") as s:
        return list((await s.execute(select(EmailMessage).order_by(EmailMessage.subject))).scalars().all())


async def test_pending_mail_is_delivered_over_smtp(db: async_sessionmaker[AsyncSession],
                                                   smtp_server: tuple[Sink, int]) -> None:
    sink, port = smtp_server
    await _queue(db, 2)
    report = await deliver_pending(db, SmtpTransport.from_url(f"smtp://127.0.0.1:{port}"), mail_from=FROM)
    assert report.sent == 2
    assert sorted(e.rcpt_tos[0] for e in sink.envelopes) == ["to0@example.com", "to1@example.com"]
    assert b"Subject: Hello 0" in b"".join(e.content for e in sink.envelopes)
    assert all(r.sent_at is not None for r in await _rows(db))
    again = await deliver_pending(db, SmtpTransport.from_url(f"smtp://127.0.0.1:{port}"), mail_from=FROM)
    assert again.sent == 0 and len(sink.envelopes) == 2, "delivered mail is not sent twice"


async def test_failed_delivery_is_recorded_and_retried(db: async_sessionmaker[AsyncSession],
                                                       smtp_server: tuple[Sink, int]) -> None:
    _, port = smtp_server
    await _queue(db)
    closed_port = SmtpTransport(host="127.0.0.1", port=1)
    assert (await deliver_pending(db, closed_port, mail_from=FROM)).failed == 1
    [row] = await _rows(db)
    assert row.sent_at is None and row.attempts == 1 and row.last_error
    assert (await deliver_pending(db, SmtpTransport(host="127.0.0.1", port=port), mail_from=FROM)).sent == 1
    [row] = await _rows(db)
    assert row.sent_at is not None and row.attempts == 2 and row.last_error is None


@dataclass
class SlowRecorder:
    sent: list[str] = field(default_factory=list)

    async def send(self, mail: OutgoingMail) -> None:
        await asyncio.sleep(0.01)
        self.sent.append(mail.to)


async def test_concurrent_senders_deliver_each_message_once(db: async_sessionmaker[AsyncSession]) -> None:
    await _queue(db, 12)
    recorder = SlowRecorder()
    reports = await asyncio.gather(*(deliver_pending(db, recorder, mail_from=FROM, batch=4) for _ in range(3)))
    assert sum(r.sent for r in reports) == 12
    assert sorted(recorder.sent) == sorted(set(recorder.sent))


async def test_the_worker_loop_delivers_to_the_file_mailbox_until_stopped(
    db: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(run_email_sender(db, settings.with_(state_dir=tmp_path), stop, interval=0.05))
    await _queue(db)
    for _ in range(100):
        if list((tmp_path / "mailbox").glob("*.eml")):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(loop, 2)
    [eml] = list((tmp_path / "mailbox").glob("*.eml"))
    assert "Subject: Hello 0" in eml.read_text()


def test_smtp_url_forms() -> None:
    t = SmtpTransport.from_url("smtps://me%40corp:p%2Fw@mail.example:2465")
    assert (t.host, t.port, t.username, t.password, t.implicit_tls) == ("mail.example", 2465, "me@corp", "p/w", True)
    assert SmtpTransport.from_url("smtp://relay?starttls=1").port == 587
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpTransport.from_url("http://relay")


async def test_dev_mailbox_does_not_exist_in_production(settings: Settings, engine: AsyncEngine,
                                                        temporal_client: Client,
                                                        db: async_sessionmaker[AsyncSession]) -> None:
    prod: Litestar = create_app(settings.with_(environment="production"), engine=engine,
                                temporal=TemporalHandle(settings, client=temporal_client))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=prod), base_url="http://testserver") as c:
        assert (await c.get("/dev/mailbox")).status_code == 404
