"""Ingest a batch of usage records from one agent: validate, dedupe, store and roll up, all or nothing.

The caller (``POST /agent/v1/usage``) has authenticated the agent: ``org_id`` and ``cluster_id`` come
from its credential, and ``known_jobs`` are the batch's job ids that ran on that cluster. Then, in the
caller's one transaction:

1. each record is validated (``check``); the bad ones come back itemized with a reason and a code;
2. the good ones are COPYed into a per-connection temporary staging table (``ON COMMIT DELETE ROWS``);
3. one statement moves them into the partitioned ``usage_records`` with ``ON CONFLICT DO NOTHING`` on
   ``(id, window_start)`` and adds exactly the rows it inserted to ``usage_hourly``.

A crash anywhere rolls the whole transaction back: nothing half-written, and the agent sends the
batch again. A record stored before (a resend) conflicts and adds nothing, so accepted ids include
duplicates: the agent may drop every accepted and rejected id. Two identical batches at once: the
second waits on the first's uncommitted keys, then finds them and adds nothing.

Job ids are compared in their canonical form (lower-case, dashed), as the agent sends them.
Records for a month billing has closed are stored and flagged ``late`` (see ``queries.late_usage_since``);
a shared advisory lock per org orders ingest against ``queries.mark_period_closed``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.ids import UNITS, record_id_text
from billing.usage.partitions import ensure_partitions

__all__ = [
    "MAX_BATCH",
    "IngestHooks",
    "IngestLimits",
    "Rejection",
    "UsageAck",
    "UsageBatchIn",
    "UsageRecordIn",
    "check",
    "close_lock_sql",
    "ingest",
    "job_ids_of",
]

MAX_BATCH = 10_000
_MAX_BIGINT = (1 << 63) - 1
_HOUR = 3600


class UsageRecordIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """One record as the agent sends it (``connectors.agent.usage.UsageRecord`` is the same shape)."""

    id: str
    resource: str  # vcpu | memory | gpu | storage
    unit: str  # must be UNITS[resource]
    window_start: datetime
    window_end: datetime
    allocated: int
    quantity: int  # allocated x whole seconds
    job_id: str | None = None
    volume: str | None = None  # storage records name the volume instead of a job
    gpu_type: str = ""


class UsageBatchIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    records: list[UsageRecordIn]


class Rejection(msgspec.Struct, kw_only=True):
    id: str
    code: str
    reason: str


class UsageAck(msgspec.Struct, kw_only=True):
    accepted: list[str]  # stored now or before: drop them from the spool
    rejected: list[Rejection]  # will never be accepted as they are: drop them too (and say so)
    stored: int  # newly stored by this call
    duplicates: int  # accepted but already stored


@dataclass(frozen=True, slots=True)
class IngestLimits:
    max_skew_s: int = 300  # a window may end this far in the gateway's future (clock skew)
    retention_days: int = 400  # older windows are refused: their raw partition may already be gone


@dataclass(slots=True)
class IngestHooks:
    """Test seams. ``after_staging`` runs between the COPY into staging and the insert (crash injection)."""

    after_staging: Callable[[], Awaitable[None]] | None = None


@dataclass(slots=True)
class _Checked:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    months: set[date] = field(default_factory=set)


def job_ids_of(records: Iterable[UsageRecordIn]) -> set[uuid.UUID]:
    """The distinct, well-formed job ids of a batch (the caller asks which ran on the cluster)."""
    out: set[uuid.UUID] = set()
    for job in {r.job_id for r in records if r.job_id}:
        try:
            out.add(uuid.UUID(job))
        except ValueError:
            continue
    return out


def check(records: Iterable[UsageRecordIn], *, known_jobs: set[uuid.UUID], now: datetime,
          limits: IngestLimits) -> _Checked:
    """Validate each record; good ones become staging rows (first copy of an id wins)."""
    out = _Checked()
    seen: set[str] = set()
    months: set[tuple[int, int]] = set()
    latest = now + timedelta(seconds=limits.max_skew_s)
    oldest = now - timedelta(days=limits.retention_days)
    known = {str(j) for j in known_jobs}
    accepted, rows = out.accepted, out.rows  # the hot loop: thousands of records per batch
    for r in records:
        problem = _problem(r, known, latest, oldest)
        if problem is not None:
            out.rejected.append(Rejection(id=r.id, code=problem[0], reason=problem[1]))
            continue
        accepted.append(r.id)
        if r.id in seen:
            continue
        seen.add(r.id)
        start = r.window_start
        months.add((start.year, start.month))
        # ids go to COPY as text (asyncpg encodes them as uuid): they were checked equal to the computed id
        rows.append((r.id, start, r.window_end, r.job_id, r.volume, r.resource, r.gpu_type, r.allocated, r.quantity))
    out.months = {date(y, m, 1) for y, m in months}
    return out


def _problem(r: UsageRecordIn, known: set[str], latest: datetime, oldest: datetime) -> tuple[str, str] | None:
    resource, start, end = r.resource, r.window_start, r.window_end
    unit = UNITS.get(resource)
    if unit is None:
        return "unknown_resource", f"resource {resource!r} is not one of {', '.join(UNITS)}"
    if r.unit != unit:
        return "wrong_unit", f"{resource} is measured in {unit}, not {r.unit!r}"
    if start.tzinfo is None or end.tzinfo is None:
        return "bad_window", "window times need a UTC offset"
    if start.microsecond or end.microsecond:
        return "bad_window", "windows start and end on whole seconds"
    epoch = int(start.timestamp())
    seconds = int(end.timestamp()) - epoch
    if seconds <= 0:
        return "bad_window", "the window ends before it starts"
    if epoch // _HOUR != (epoch + seconds - 1) // _HOUR:
        return "bad_window", "a window may not cross the hour"
    if end > latest:
        return "window_in_future", "the window ends in the future (check the agent host's clock)"
    if start < oldest:
        return "window_too_old", "the window is older than raw usage is kept"
    allocated, quantity = r.allocated, r.quantity
    if allocated < 0 or quantity < 0:
        return "negative", "allocated and quantity must not be negative"
    if quantity != allocated * seconds or quantity > _MAX_BIGINT:
        return "quantity_mismatch", f"quantity must be allocated x {seconds} s"
    gpu_type = r.gpu_type
    if resource == "gpu":
        if not gpu_type or len(gpu_type) > 64:
            return "bad_gpu_type", "GPU records name their GPU type (at most 64 characters)"
    elif gpu_type:
        return "bad_gpu_type", f"{resource} records have no GPU type"
    if resource == "storage":
        if not r.volume or len(r.volume) > 253 or r.job_id:
            return "bad_subject", "storage records name a volume (and no job)"
        subject = r.volume
    else:
        subject = r.job_id  # type: ignore[assignment]
        if not subject or r.volume:
            return "bad_subject", f"{resource} records name a job (and no volume)"
        if subject not in known:  # known holds canonical (lower-case, dashed) ids: so must the record
            return "unknown_job", "no such job ran on this cluster"
    if record_id_text(subject, resource, gpu_type, epoch) != r.id.lower():
        return "bad_id", "the id is not the record's deterministic id (job, resource, GPU type, window start)"
    return None


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS usage_staging (
    id uuid, window_start timestamptz, window_end timestamptz, job_id uuid, volume varchar(253),
    resource varchar(16), gpu_type varchar(64), allocated bigint, quantity bigint
) ON COMMIT DELETE ROWS
"""
_STAGING_COLUMNS = ["id", "window_start", "window_end", "job_id", "volume", "resource", "gpu_type", "allocated",
                    "quantity"]

# One statement: insert what is new (in key order, so concurrent batches lock in the same order) and
# add exactly those rows to the hourly rollups. $1 org, $2 cluster, $3 ingested_at, $4 closed months.
_MOVE = """
WITH ins AS (
    INSERT INTO usage_records (id, window_start, window_end, org_id, cluster_id, job_id, volume, resource,
                               gpu_type, allocated, quantity, ingested_at, late)
    SELECT id, window_start, window_end, $1, $2, job_id, volume, resource, gpu_type, allocated, quantity, $3,
           date_trunc('month', window_start, 'UTC')::date = ANY($4::date[])
      FROM usage_staging ORDER BY window_start, id
    ON CONFLICT (id, window_start) DO NOTHING
    RETURNING window_start, resource, gpu_type, quantity
), up AS (
    INSERT INTO usage_hourly AS h (org_id, hour, cluster_id, resource, gpu_type, quantity, records)
    SELECT $1, date_trunc('hour', window_start, 'UTC'), $2, resource, gpu_type, sum(quantity), count(*)
      FROM ins GROUP BY 2, 4, 5 ORDER BY 2, 4, 5
    ON CONFLICT (org_id, hour, cluster_id, resource, gpu_type)
    DO UPDATE SET quantity = h.quantity + excluded.quantity, records = h.records + excluded.records
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins) AS stored, (SELECT count(*) FROM up) AS hours
"""


def close_lock_sql(shared: bool) -> str:
    """The per-org lock that orders ingest (shared) against closing a period (exclusive)."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return f"SELECT {fn}(hashtext('usage-period-close'), hashtext(CAST(:org AS text))), clock_timestamp()"


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction (for COPY)."""
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def ingest(
    session: AsyncSession, *, org_id: uuid.UUID, cluster_id: uuid.UUID, records: list[UsageRecordIn],
    known_jobs: set[uuid.UUID], now: datetime | None = None, limits: IngestLimits | None = None,
    hooks: IngestHooks | None = None,
) -> UsageAck:
    """Validate and store one batch inside the caller's transaction (scoped to ``org_id``)."""
    now = now or datetime.now(UTC)
    checked = check(records, known_jobs=known_jobs, now=now, limits=limits or IngestLimits())
    stored = 0
    if checked.rows:
        await ensure_partitions(session, checked.months)
        lock = (await session.execute(text(close_lock_sql(shared=True)), {"org": str(org_id)})).one()
        ingested_at = lock[1]  # after the lock: ordered against a period close's closed_at
        closed = list((await session.execute(
            text("SELECT period_start FROM usage_period_closes WHERE org_id = :org AND period_start = ANY(:m)"),
            {"org": org_id, "m": sorted(checked.months)})).scalars())
        driver = await _driver(session)
        await driver.execute(_STAGING)
        await driver.copy_records_to_table("usage_staging", records=checked.rows, columns=_STAGING_COLUMNS)
        if hooks is not None and hooks.after_staging is not None:
            await hooks.after_staging()
        row = await driver.fetchrow(_MOVE, org_id, cluster_id, ingested_at, closed)
        stored = int(row["stored"])
    return UsageAck(accepted=checked.accepted, rejected=checked.rejected, stored=stored,
                    duplicates=len(checked.accepted) - stored)
