"""Email: an outbox written in the caller's transaction, and a sender that delivers it.

* ``enqueue(session, ...)`` adds a row to ``email_outbox`` next to the change that causes the mail,
  so a mail is sent if and only if the change is committed.
* ``deliver_pending`` claims a batch with ``FOR UPDATE SKIP LOCKED`` (any number of workers may run
  it side by side; each row goes to one of them), hands each message to a transport and records
  the outcome. ``run_email_sender`` loops it in the worker process, backing off while delivery fails.
* Transports: ``SmtpTransport`` when ``SMTP_URL`` is set (``smtp://user:pass@host:587?starttls=1``
  or ``smtps://...`` for implicit TLS), else in dev and test ``FileMailbox`` (``<state>/mailbox/*.eml``).
  The dev page ``/dev/mailbox`` reads the outbox table itself, so links work even before delivery.
* Secrets: mails carry live links (verification, password reset, invites) whose tokens we otherwise keep
  only as hashes. Once a transport has handed a message elsewhere, the transaction that records
  ``sent_at`` also replaces the query values of its links with ``[redacted]`` (``scrub_links``). A
  transport whose copy stays on this machine says so with ``keeps_copy = True`` (the dev file mailbox:
  ``/dev/mailbox`` shows the links from the table); one that says nothing is scrubbed after.
  The daily ``maintenance.daily`` workflow deletes rows sent, or given up on, a while ago.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import ClassVar, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.db import unscoped_session, utcnow
from tenants.models import EmailMessage
from tenants.settings import Settings

__all__ = [
    "DeliveryReport",
    "FileMailbox",
    "OutgoingMail",
    "SmtpTransport",
    "Transport",
    "deliver_pending",
    "enqueue",
    "recent_messages",
    "run_email_sender",
    "scrub_links",
    "transport_for",
]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
_SMTP_TIMEOUT = 20.0
_LINK = re.compile(r"https?://[^\s<>\"]+")
_REDACTED = "[redacted]"


async def enqueue(session: AsyncSession, *, to: str, subject: str, body: str, kind: str) -> EmailMessage:
    """Queue a plain-text mail in the caller's transaction."""
    message = EmailMessage(to_address=to, subject=subject, body_text=body, kind=kind, attempts=0)
    session.add(message)
    await session.flush()
    return message


async def recent_messages(session: AsyncSession, *, limit: int = 50) -> list[EmailMessage]:
    rows = await session.execute(select(EmailMessage).order_by(EmailMessage.created_at.desc()).limit(limit))
    return list(rows.scalars().all())


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    id: uuid.UUID
    mail_from: str
    to: str
    subject: str
    body: str

    def mime(self) -> MimeMessage:
        msg = MimeMessage()
        msg["From"] = self.mail_from
        msg["To"] = self.to
        msg["Subject"] = self.subject
        msg["Date"] = formatdate(localtime=False)
        domain = parseaddr(self.mail_from)[1].rpartition("@")[2] or "metacloud.local"
        msg["Message-ID"] = make_msgid(idstring=self.id.hex, domain=domain)
        msg.set_content(self.body)
        return msg


class Transport(Protocol):
    """Delivers one message. May also set ``keeps_copy = True`` (see the module's docstring)."""

    async def send(self, mail: OutgoingMail) -> None: ...


def _keeps_copy(transport: Transport) -> bool:
    """Only a transport that vouches for keeping the message on this machine keeps the links in the table."""
    return bool(getattr(transport, "keeps_copy", False))


def scrub_links(body: str) -> str:
    """``body`` with the query value of every link replaced: the mail still reads, its tokens are gone."""
    return _LINK.sub(_scrub_link, body)


def _scrub_link(match: re.Match[str]) -> str:
    head, sep, query = match.group(0).partition("?")
    if not sep:
        return head
    keys = (part.partition("=")[0] for part in query.split("&"))
    return f"{head}?" + "&".join(f"{key}={_REDACTED}" for key in keys)


@dataclass(frozen=True, slots=True)
class SmtpTransport:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    implicit_tls: bool = False
    starttls: bool = False

    @classmethod
    def from_url(cls, url: str) -> SmtpTransport:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:587?starttls=1 or smtps://host:465")
        query = parse_qs(parts.query)
        starttls = query.get("starttls", ["0"])[0].lower() in {"1", "true", "yes", "on"}
        implicit = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if implicit else 587 if starttls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            implicit_tls=implicit,
            starttls=starttls,
        )

    def _send_blocking(self, mail: OutgoingMail) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if self.implicit_tls:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=_SMTP_TIMEOUT, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=_SMTP_TIMEOUT)
        with smtp:
            if self.starttls:
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password or "")
            smtp.send_message(mail.mime())

    async def send(self, mail: OutgoingMail) -> None:
        # smtplib is blocking; a thread keeps the worker's event loop free.
        await asyncio.to_thread(self._send_blocking, mail)


@dataclass(frozen=True, slots=True)
class FileMailbox:
    """Dev and test delivery: one ``.eml`` file per message in a folder."""

    keeps_copy: ClassVar[bool] = True  # the message stays on this disk; /dev/mailbox shows its links

    folder: Path

    def _write(self, mail: OutgoingMail) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"{mail.id}.eml").write_bytes(bytes(mail.mime()))

    async def send(self, mail: OutgoingMail) -> None:
        await asyncio.to_thread(self._write, mail)


def transport_for(settings: Settings) -> Transport | None:
    """SMTP when configured; the file mailbox outside production; ``None`` (do not send) otherwise."""
    if settings.smtp_url:
        return SmtpTransport.from_url(settings.smtp_url)
    if settings.is_production:
        return None
    return FileMailbox(settings.state_dir / "mailbox")


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    sent: int = 0
    failed: int = 0


async def deliver_pending(
    sessions: async_sessionmaker[AsyncSession], transport: Transport, *, mail_from: str, batch: int = 20
) -> DeliveryReport:
    """Deliver up to ``batch`` pending messages; rows another worker holds are skipped, not waited for.
    A delivered row loses its links' tokens in the same transaction, unless the transport keeps a copy."""
    sent = failed = 0
    scrub = not _keeps_copy(transport)
    async with unscoped_session(sessions, reason="the email outbox is global, not per tenant") as s:
        rows = (
            await s.execute(
                select(EmailMessage)
                .where(EmailMessage.sent_at.is_(None), EmailMessage.attempts < MAX_ATTEMPTS)
                .order_by(EmailMessage.created_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        ).scalars().all()
        for row in rows:
            mail = OutgoingMail(id=row.id, mail_from=mail_from, to=row.to_address, subject=row.subject,
                                body=row.body_text)
            row.attempts += 1
            try:
                await transport.send(mail)
            except Exception as exc:  # any failure is recorded on the row and retried later
                row.last_error = f"{type(exc).__name__}: {exc}"[:500]
                failed += 1
                log.warning("email delivery failed", extra={"email_id": str(row.id), "attempt": row.attempts,
                                                            "error": row.last_error})
            else:
                row.sent_at = utcnow()
                row.last_error = None
                if scrub:
                    row.body_text = scrub_links(row.body_text)
                sent += 1
    return DeliveryReport(sent=sent, failed=failed)


async def run_email_sender(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    stop: asyncio.Event,
    *,
    transport: Transport | None = None,
    interval: float = 2.0,
    max_backoff: float = 300.0,
) -> None:
    """Deliver the outbox until ``stop`` is set. Doubles its pause (up to 5 min) while deliveries fail."""
    transport = transport or transport_for(settings)
    if transport is None:
        log.error("SMTP_URL is not set: email stays in the outbox until it is")
        return
    delay = interval
    while not stop.is_set():
        report = DeliveryReport()
        try:
            report = await deliver_pending(sessions, transport, mail_from=settings.mail_from)
            delay = interval if report.failed == 0 else min(max_backoff, delay * 2)
        except Exception:
            log.exception("email sender pass failed")
            delay = min(max_backoff, delay * 2)
        if report.sent and not report.failed:
            continue  # a full batch may mean more is waiting
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
