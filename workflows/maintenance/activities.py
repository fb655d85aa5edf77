"""Activities of ``maintenance.daily``. Each is one transaction as of the workflow's clock, and each is
idempotent: a retry, or a second run the same day, finds nothing more to do.

What goes is certainly dead, and nothing refers to it: no foreign key points at web sessions, one-time
tokens, invites, registration tokens, rate-limit hits or outbox rows. Audit events name invites by id
as text beside their email (append-only, no foreign key), so they read the same afterwards; invoices
and usage refer to none of these. Users, orgs, clusters and credentials in use are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, and_, delete, or_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from billing.usage.partitions import maintain
from connectors.server.models import RegistrationToken
from tenants.db import unscoped_session
from tenants.email import MAX_ATTEMPTS
from tenants.models import EmailMessage, Invite, OneTimeToken, RateLimitHit, WebSession
from tenants.settings import Settings
from workflows.maintenance.types import CredentialCounts, PartitionCounts, Step

__all__ = ["MaintenanceActivities"]

# Every rate limit's window is an hour or less, and ``tenants.ratelimit.hit`` itself prunes a bucket's
# hits after a day; older hits of buckets nobody touches again are read by nothing.
_RATE_LIMIT_STALE = timedelta(days=1)


class MaintenanceActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    def all(self) -> list[Callable[..., Any]]:
        """Every housekeeping activity, for the worker's registry."""
        return [self.usage_partitions, self.email_outbox, self.expired_credentials]

    def _cutoff(self, step: Step) -> datetime:
        return datetime.fromisoformat(step.at) - timedelta(days=self._settings.housekeeping_keep_days)

    @activity.defn(name="maintenance.usage-partitions")
    async def usage_partitions(self, step: Step) -> PartitionCounts:
        async with unscoped_session(self._sessions, reason="raw usage partitions hold every org's records") as s:
            created, dropped = await maintain(s, now=datetime.fromisoformat(step.at),
                                              retention_days=self._settings.usage_raw_retention_days)
        return PartitionCounts(created=len(created), dropped=len(dropped))

    @activity.defn(name="maintenance.email-outbox")
    async def email_outbox(self, step: Step) -> int:
        """Mail sent long ago, and mail given up on (no column records when: while the sender runs, the
        last of its attempts comes minutes after ``created_at``, so that stands in for it). Unsent mail
        still being tried stays, however old."""
        cutoff = self._cutoff(step)
        async with unscoped_session(self._sessions, reason="the email outbox is global, not per tenant") as s:
            return await _count(s, delete(EmailMessage).where(or_(
                EmailMessage.sent_at < cutoff,
                and_(EmailMessage.sent_at.is_(None), EmailMessage.attempts >= MAX_ATTEMPTS,
                     EmailMessage.created_at < cutoff))))

    @activity.defn(name="maintenance.expired-credentials")
    async def expired_credentials(self, step: Step) -> CredentialCounts:
        """Each of these stops working at its expiry (or once used or revoked) and is never read again."""
        cutoff = self._cutoff(step)
        async with unscoped_session(self._sessions, reason="expired credentials of every user and org") as s:
            return CredentialCounts(
                web_sessions=await _count(s, delete(WebSession).where(
                    or_(WebSession.expires_at < cutoff, WebSession.revoked_at < cutoff))),
                one_time_tokens=await _count(s, delete(OneTimeToken).where(OneTimeToken.expires_at < cutoff)),
                invites=await _count(s, delete(Invite).where(Invite.expires_at < cutoff)),
                registration_tokens=await _count(s, delete(RegistrationToken).where(or_(
                    RegistrationToken.expires_at < cutoff, RegistrationToken.used_at < cutoff,
                    RegistrationToken.revoked_at < cutoff))),
                rate_limit_hits=await _count(s, delete(RateLimitHit).where(
                    RateLimitHit.created_at < datetime.fromisoformat(step.at) - _RATE_LIMIT_STALE)),
            )


async def _count(session: AsyncSession, statement: Delete) -> int:
    """Rows the statement deleted."""
    result = cast(CursorResult[Any], await session.execute(statement))  # what a DELETE always gives
    return result.rowcount
