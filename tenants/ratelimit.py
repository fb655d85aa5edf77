"""Sliding-window rate limits kept in PostgreSQL (``rate_limit_hits``), so every gateway replica agrees.

A bucket is ``<limit name>:<key>`` (``login:acct:ada@example.com``, ``login:ip:203.0.113.9``).
Buckets are keyed by what the caller typed, never by whether an account exists, so a limit
answers the same for a registered and an unknown email.

Check and hit are two statements, so under concurrency a burst may get a few attempts past a
limit; the limits are about brute force over minutes, where that does not matter. Each hit
deletes its bucket's hits older than a day, so the table stays small without a sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tenants.errors import RateLimited
from tenants.models import RateLimitHit

__all__ = [
    "LOGIN_FAILURES_PER_ACCOUNT",
    "LOGIN_FAILURES_PER_IP",
    "LOGIN_LOCK",
    "MAILS_PER_ACCOUNT",
    "REQUESTS_PER_IP",
    "SIGNUPS_PER_ACCOUNT",
    "SIGNUPS_PER_IP",
    "Limit",
    "check",
    "clear",
    "hit",
    "retry_after",
]

_KEEP = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    max_hits: int
    window: timedelta

    def bucket(self, key: str) -> str:
        return f"{self.name}:{key.strip().lower()}"[:400]


# Failed sign-ins: 10 per account lock it for 15 minutes; 50 from one address slow that address down.
LOGIN_FAILURES_PER_ACCOUNT = Limit("login:acct", 10, timedelta(minutes=15))
LOGIN_FAILURES_PER_IP = Limit("login:ip", 50, timedelta(minutes=15))
# One hit when an account gets locked: the lock lasts one window from then.
LOGIN_LOCK = Limit("login:lock", 1, timedelta(minutes=15))
# Attempts (not failures): signups, and mails a stranger can make us send (reset, resend).
SIGNUPS_PER_IP = Limit("signup:ip", 20, timedelta(hours=1))
SIGNUPS_PER_ACCOUNT = Limit("signup:acct", 5, timedelta(hours=1))
REQUESTS_PER_IP = Limit("mailreq:ip", 20, timedelta(hours=1))
MAILS_PER_ACCOUNT = Limit("mailreq:acct", 5, timedelta(hours=1))


async def retry_after(session: AsyncSession, limit: Limit, key: str, *, now: datetime) -> int | None:
    """Seconds until one more attempt fits in the window, or ``None`` while under the limit."""
    rows = (
        await session.execute(
            select(RateLimitHit.created_at)
            .where(RateLimitHit.bucket == limit.bucket(key), RateLimitHit.created_at > now - limit.window)
            .order_by(RateLimitHit.created_at.desc())
            .limit(limit.max_hits)
        )
    ).scalars().all()
    if len(rows) < limit.max_hits:
        return None
    return max(1, math.ceil((rows[-1] + limit.window - now).total_seconds()))


async def check(session: AsyncSession, limit: Limit, key: str, *, now: datetime, message: str) -> None:
    """Raise ``RateLimited`` (429 with Retry-After) when the bucket is full."""
    wait = await retry_after(session, limit, key, now=now)
    if wait is not None:
        minutes = max(1, math.ceil(wait / 60))
        raise RateLimited(f"{message} Try again in {minutes} minute{'s' if minutes > 1 else ''}.",
                          retry_after=wait)


async def hit(session: AsyncSession, limit: Limit, key: str, *, now: datetime) -> None:
    bucket = limit.bucket(key)
    await session.execute(
        delete(RateLimitHit).where(RateLimitHit.bucket == bucket, RateLimitHit.created_at < now - _KEEP)
    )
    session.add(RateLimitHit(bucket=bucket, created_at=now))
    await session.flush()


async def clear(session: AsyncSession, limit: Limit, key: str) -> None:
    await session.execute(delete(RateLimitHit).where(RateLimitHit.bucket == limit.bucket(key)))
