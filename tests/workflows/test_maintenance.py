"""Daily housekeeping on the real Temporal dev server and real Postgres: what goes, what stays, a second
run that finds nothing, the Schedule; the outbox's scrub after delivery; retention that waits for billing."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy

from billing.ledger.models import Invoice, PlanChange
from billing.ledger.periods import Period
from billing.usage.partitions import forget_known_partitions, maintain, partition_name
from billing.usage.periods import mark_period_closed
from connectors.server.models import Cluster, RegistrationToken
from tenants.db import unscoped_session, utcnow
from tenants.email import MAX_ATTEMPTS, FileMailbox, OutgoingMail, deliver_pending, enqueue
from tenants.models import EmailMessage, Invite, OneTimeToken, RateLimitHit, WebSession
from tenants.security import hash_token, new_token
from tenants.settings import Settings
from tests.billing.helpers import add_usage
from tests.factories import MadeOrg, MadeUser, make_org, make_user
from tests.temporal_helpers import wait_for_poller
from workflows.maintenance.client import ensure_schedule, schedule_id
from workflows.maintenance.types import CredentialCounts, DailyResult, PartitionCounts
from workflows.registry import Dependencies
from workflows.worker import build_worker

FROM = "Metacloud <no-reply@metacloud.local>"
OLD = date(2020, 3, 1)  # far past any retention
NEXT = date(2020, 4, 1)
DAY = timedelta(days=1)


@pytest.fixture
async def old_partitions(db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Raw partitions for two long-gone months; whatever the test leaves of them is dropped after."""
    async with unscoped_session(db, reason="test: partitions of long-gone months") as s:
        for month in (OLD, NEXT):
            await s.execute(text("SELECT usage_ensure_partition(:m)"), {"m": month})
    yield
    for month in (OLD, NEXT):
        await owner_conn.execute(f'DROP TABLE IF EXISTS "{partition_name(month)}"')
    forget_known_partitions()


async def _exists(conn: asyncpg.Connection, month: date | datetime) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", partition_name(month)))


# --- the daily workflow -------------------------------------------------------------------------------

@pytest.fixture
async def queue(temporal_client: Client, settings: Settings, db: async_sessionmaker[AsyncSession]
                ) -> AsyncIterator[str]:
    """The product's worker (every workflow and activity) on a queue of the test's own."""
    name = f"maint-{uuid.uuid4().hex[:8]}"
    worker = build_worker(temporal_client, Dependencies(settings=settings, sessions=db), task_queue=name)
    task = asyncio.create_task(worker.run())
    await wait_for_poller(temporal_client, name)
    yield name
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@dataclass
class World:
    """Rows on both sides of every line the housekeeping draws, by the name of what each is."""

    keep: dict[str, tuple[type, uuid.UUID | int]] = field(default_factory=dict)
    gone: dict[str, tuple[type, uuid.UUID | int]] = field(default_factory=dict)


async def _world(db: async_sessionmaker[AsyncSession], user: MadeUser, org: MadeOrg) -> World:
    now, w = utcnow(), World()
    ago = {"keep": now - 10 * DAY, "gone": now - 31 * DAY}  # either side of HOUSEKEEPING_KEEP_DAYS (30)
    async with unscoped_session(db, reason="test: rows old and new") as s:
        cluster = Cluster(org_id=org.id, name="c1", provider="eks", state="attached", state_changed_at=now)
        s.add(cluster)
        await s.flush()

        def session(**kw: object) -> WebSession:
            return WebSession(token_hash=hash_token(new_token()), user_id=user.id, created_at=now - 60 * DAY,
                              last_seen_at=now - 60 * DAY, **kw)

        def mail(**kw: object) -> EmailMessage:
            return EmailMessage(to_address=user.email, subject="s", body_text="b", kind="test", **kw)

        rows = {
            "live session": ("keep", session(expires_at=now + 7 * DAY)),
            "session expired 10 days ago": ("keep", session(expires_at=ago["keep"])),
            "session expired 31 days ago": ("gone", session(expires_at=ago["gone"])),
            "session revoked 31 days ago": ("gone", session(expires_at=now + 7 * DAY, revoked_at=ago["gone"])),
            "unexpired reset token": ("keep", OneTimeToken(user_id=user.id, purpose="reset_password",
                                                           token_hash=hash_token(new_token()), expires_at=now + DAY)),
            "token expired 31 days ago": ("gone", OneTimeToken(user_id=user.id, purpose="verify_email",
                                                              token_hash=hash_token(new_token()),
                                                              expires_at=ago["gone"])),
            "unexpired invite": ("keep", Invite(org_id=org.id, email="a@example.com", role="member",
                                                token_hash=hash_token(new_token()), expires_at=now + 7 * DAY)),
            "invite expired 10 days ago": ("keep", Invite(org_id=org.id, email="b@example.com", role="member",
                                                          token_hash=hash_token(new_token()), expires_at=ago["keep"])),
            "invite expired 31 days ago": ("gone", Invite(org_id=org.id, email="c@example.com", role="member",
                                                          token_hash=hash_token(new_token()), expires_at=ago["gone"])),
            "unused registration token": ("keep", RegistrationToken(
                org_id=org.id, cluster_id=cluster.id, token_hash=hash_token(new_token()), expires_at=now + DAY)),
            "registration token used 31 days ago": ("gone", RegistrationToken(
                org_id=org.id, cluster_id=cluster.id, token_hash=hash_token(new_token()),
                expires_at=ago["gone"] + DAY / 24, used_at=ago["gone"])),
            "rate-limit hit just now": ("keep", RateLimitHit(bucket="login:ip:1.2.3.4", created_at=now)),
            "rate-limit hit 2 days ago": ("gone", RateLimitHit(bucket="login:ip:1.2.3.4", created_at=now - 2 * DAY)),
            "unsent mail still tried": ("keep", mail(attempts=3, created_at=ago["gone"])),
            "mail sent 10 days ago": ("keep", mail(attempts=1, sent_at=ago["keep"], created_at=ago["keep"])),
            "mail sent 31 days ago": ("gone", mail(attempts=1, sent_at=ago["gone"], created_at=ago["gone"])),
            "mail given up 31 days ago": ("gone", mail(attempts=MAX_ATTEMPTS, created_at=ago["gone"])),
        }
        s.add_all([row for _, row in rows.values()])
        await s.flush()
        for name, (side, row) in rows.items():
            getattr(w, side)[name] = (type(row), row.id)
    return w


async def _present(db: async_sessionmaker[AsyncSession], rows: dict[str, tuple[type, uuid.UUID | int]]) -> set[str]:
    async with unscoped_session(db, reason="test: what is left") as s:
        return {name for name, (model, row_id) in rows.items() if await s.get(model, row_id) is not None}


async def test_the_daily_run_deletes_what_is_dead_keeps_what_lives_and_then_finds_nothing(
        temporal_client: Client, queue: str, db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection,
        old_partitions: None) -> None:
    user = await make_user(db)
    org = await make_org(db, members={user.id: "owner"})  # Free: billing never closes its months
    world = await _world(db, user, org)
    await add_usage(owner_conn, org.id, start=datetime(2020, 3, 5, tzinfo=UTC), hours=2, vcpu_millis=1000)

    first = await temporal_client.execute_workflow("maintenance.daily", id=f"daily-{queue}-1", task_queue=queue,
                                                   result_type=DailyResult)

    assert first.partitions.dropped == 2  # March and April 2020
    assert (first.outbox_deleted, first.credentials) == (2, CredentialCounts(
        web_sessions=2, one_time_tokens=1, invites=1, registration_tokens=1, rate_limit_hits=1))
    assert await _present(db, world.gone) == set()
    assert await _present(db, world.keep) == set(world.keep)
    assert not await _exists(owner_conn, OLD)
    assert await _exists(owner_conn, datetime.now(UTC))

    second = await temporal_client.execute_workflow("maintenance.daily", id=f"daily-{queue}-2", task_queue=queue,
                                                    result_type=DailyResult)
    assert second == DailyResult(partitions=PartitionCounts(created=0, dropped=0), outbox_deleted=0,
                                 credentials=CredentialCounts(0, 0, 0, 0, 0))
    assert await _present(db, world.keep) == set(world.keep)


async def test_the_schedule_runs_daily_at_03_15_utc_and_is_made_once(temporal_client: Client) -> None:
    queue = f"maint-{uuid.uuid4().hex[:8]}"
    await ensure_schedule(temporal_client, queue)
    await ensure_schedule(temporal_client, queue)  # a second worker starting: no error, no second schedule
    handle = temporal_client.get_schedule_handle(schedule_id(queue))
    try:
        described = (await handle.describe()).schedule
        [calendar] = described.spec.calendars
        assert ([(r.start, r.end) for r in calendar.hour], [(r.start, r.end) for r in calendar.minute]) == (
            [(3, 3)], [(15, 15)])
        assert [(r.start, r.end, r.step) for r in calendar.day_of_month] == [(1, 31, 1)]  # every day
        assert described.spec.time_zone_name in (None, "", "UTC")
        assert described.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert isinstance(described.action, ScheduleActionStartWorkflow)
        assert (described.action.workflow, described.action.task_queue) == ("maintenance.daily", queue)
    finally:
        await handle.delete()


# --- the outbox keeps no token once a message has left -------------------------------------------------

@dataclass
class Relay:
    """Behaves like SMTP: the message goes to another machine, nothing of it stays here."""

    sent: list[OutgoingMail] = field(default_factory=list)

    async def send(self, mail: OutgoingMail) -> None:
        self.sent.append(mail)


async def _queue_reset_mail(db: async_sessionmaker[AsyncSession], token: str) -> None:
    async with unscoped_session(db, reason="test queues mail") as s:
        await enqueue(s, to="ada@example.com", subject="Reset your Metacloud password", kind="reset_password",
                      body=f"Choose a new one here:\n\nhttp://127.0.0.1:8000/reset/confirm?token={token}&x=1\n\n"
                           "Sign in: http://127.0.0.1:8000/login\n")


async def _body(db: async_sessionmaker[AsyncSession]) -> str:
    async with unscoped_session(db, reason="test reads the outbox") as s:
        row = (await s.execute(select(EmailMessage))).scalar_one()
        assert row.sent_at is not None
        return row.body_text


async def test_a_mail_handed_to_a_relay_keeps_no_token_in_the_outbox(db: async_sessionmaker[AsyncSession]) -> None:
    token = new_token()
    await _queue_reset_mail(db, token)
    relay = Relay()
    assert (await deliver_pending(db, relay, mail_from=FROM)).sent == 1
    assert token in relay.sent[0].body  # the recipient gets the live link
    assert await _body(db) == ("Choose a new one here:\n\n"
                               "http://127.0.0.1:8000/reset/confirm?token=[redacted]&x=[redacted]\n\n"
                               "Sign in: http://127.0.0.1:8000/login\n")


async def test_the_dev_file_mailbox_keeps_the_links_for_the_dev_mailbox_page(
        db: async_sessionmaker[AsyncSession], tmp_path: Path) -> None:
    token = new_token()
    await _queue_reset_mail(db, token)
    assert (await deliver_pending(db, FileMailbox(tmp_path), mail_from=FROM)).sent == 1
    assert f"/reset/confirm?token={token}&x=1" in await _body(db)


# --- retention waits for billing ----------------------------------------------------------------------

async def _maintain(db: async_sessionmaker[AsyncSession]) -> list[str]:
    async with unscoped_session(db, reason="test: retention") as s:
        _, dropped = await maintain(s, retention_days=400)
    return dropped


async def _payg_org(db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection) -> MadeOrg:
    org = await make_org(db)
    await owner_conn.execute("UPDATE orgs SET plan = 'payg' WHERE id = $1", org.id)
    return org


async def test_a_month_billing_has_not_closed_outlives_retention_with_every_later_month(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, old_partitions: None) -> None:
    org = await _payg_org(db, owner_conn)
    await add_usage(owner_conn, org.id, start=datetime(2020, 3, 5, tzinfo=UTC), hours=2, vcpu_millis=1000)
    assert await _maintain(db) == []
    assert await _exists(owner_conn, OLD) and await _exists(owner_conn, NEXT)
    async with unscoped_session(db, reason="test: billing closes March") as s:
        await mark_period_closed(s, org.id, OLD)
    assert await _maintain(db) == [partition_name(OLD), partition_name(NEXT)]


@pytest.mark.parametrize(("now_on", "history", "held"), [
    ("payg", [("free", "2019-01-01"), ("payg", "2021-01-01")], False),  # Free all March, upgraded later
    ("payg", [("free", "2019-01-01"), ("payg", "2020-03-15")], True),  # upgraded during March
    ("free", [("payg", "2019-01-01"), ("free", "2020-02-01")], False),  # downgraded before March
    ("free", [("payg", "2019-01-01"), ("free", "2020-04-01")], True),  # Pay-as-you-go all March
])
async def test_only_a_month_with_a_billable_plan_in_it_waits_for_its_close(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, old_partitions: None,
        now_on: str, history: list[tuple[str, str]], held: bool) -> None:
    org = await make_org(db)
    await owner_conn.execute("UPDATE orgs SET plan = $1 WHERE id = $2", now_on, org.id)
    async with unscoped_session(db, reason="test: the org's plan history") as s:
        s.add_all([PlanChange(org_id=org.id, plan=plan, effective_at=datetime.fromisoformat(at).replace(tzinfo=UTC))
                   for plan, at in history])
    await add_usage(owner_conn, org.id, start=datetime(2020, 3, 5, tzinfo=UTC), hours=2, vcpu_millis=1000)
    assert await _maintain(db) == ([] if held else [partition_name(OLD), partition_name(NEXT)])


async def test_late_usage_no_invoice_carries_yet_holds_its_month(
        db: async_sessionmaker[AsyncSession], owner_conn: asyncpg.Connection, old_partitions: None) -> None:
    org = await _payg_org(db, owner_conn)
    closed = datetime(2020, 4, 3, tzinfo=UTC)
    async with unscoped_session(db, reason="test: March closed and invoiced") as s:
        await s.execute(text("INSERT INTO usage_period_closes VALUES (:o, :m, :at)"),
                        {"o": org.id, "m": OLD, "at": closed})
        s.add(_invoice(org, OLD, closed))
    await add_usage(owner_conn, org.id, start=datetime(2020, 3, 30, tzinfo=UTC), hours=2, vcpu_millis=1000,
                    ingested_at=closed + DAY, late=True)
    assert await _maintain(db) == []
    async with unscoped_session(db, reason="test: April's invoice carries the late usage") as s:
        await s.execute(text("INSERT INTO usage_period_closes VALUES (:o, :m, :at)"),
                        {"o": org.id, "m": NEXT, "at": closed + 30 * DAY})
        s.add(_invoice(org, NEXT, closed + 30 * DAY))
    assert await _maintain(db) == [partition_name(OLD), partition_name(NEXT)]


def _invoice(org: MadeOrg, month: date, closed: datetime) -> Invoice:
    period = Period(f"{month:%Y-%m}")
    return Invoice(org_id=org.id, number=f"T-{period.compact}-{org.id.hex[:8]}", period=period,
                   period_start=period.start, period_end=period.end, status="paid", plan="payg",
                   usage_closed_at=closed)


def test_a_keep_of_less_than_a_day_is_refused() -> None:
    assert Settings.from_env({"HOUSEKEEPING_KEEP_DAYS": "45"}).housekeeping_keep_days == 45
    with pytest.raises(ValueError, match="HOUSEKEEPING_KEEP_DAYS"):
        Settings.from_env({"HOUSEKEEPING_KEEP_DAYS": "0"})
