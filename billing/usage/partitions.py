"""Monthly partitions of ``usage_records``: created ahead of time and on demand, dropped after retention.

Only the table owner may create or drop a partition, and the application connects as a role that owns
nothing (row-level security must apply to it). So the migration installs two ``SECURITY DEFINER``
functions, owned by the migrating role, that do exactly one narrow thing each:

* ``usage_ensure_partition(month date)``: create ``usage_records_pYYYYMM`` for that month if missing,
  with row-level security ENABLEd, FORCEd and the ``tenant_isolation`` policy (the statements come from
  ``tenants.rls.enable_tenant_rls_sql``, as for every tenant table), and grant the app role access.
* ``usage_drop_partitions_before(cutoff date)``: drop the partitions that end on or before ``cutoff``.

The migration calls the first for the months around now; ``ensure_partitions`` (ingest, for months
it has not seen) and ``maintain`` (the daily ``maintenance.daily`` schedule or ``metacloud usage-admin
maintain``) call them later.

Retention never outruns billing: rating reads raw records, so a month past retention is kept (with a
warning) while billing still needs it, and so is every later month (the drop function takes one cutoff):

* an org that had records in the month and a billable plan at some moment of it has no close recorded
  for it (the monthly close failed, or has not run yet);
* late records of a billed month arrived after the org's latest invoice was written, and the org will be
  closed again (they are the adjustment lines of its next invoice).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.plans import BILLABLE_PLANS
from tenants.rls import enable_tenant_rls_sql
from tenants.settings import APP_ROLE

__all__ = [
    "PARENT",
    "add_months",
    "alembic_include_object",
    "drop_expired_partitions",
    "ensure_partitions",
    "forget_known_partitions",
    "function_sql",
    "maintain",
    "month_of",
    "parse_partition_name",
    "partition_name",
    "retention_cutoff",
]

log = logging.getLogger(__name__)

PARENT = "usage_records"
_PLACEHOLDER = "__usage_partition__"
_NAME = re.compile(r"^usage_records_p(\d{4})(\d{2})$")


def month_of(moment: datetime | date) -> date:
    return date(moment.year, moment.month, 1)


def add_months(month: date, n: int) -> date:
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{PARENT}_p{month.year:04d}{month.month:02d}"


def retention_cutoff(now: datetime, retention_days: int) -> datetime:
    """Records whose window starts before this are refused, and partitions ending by it are dropped."""
    return now - timedelta(days=retention_days)


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def function_sql() -> list[str]:
    """The two functions (idempotent ``CREATE OR REPLACE``) and their grants, for the migration."""
    rls = ", ".join(_sql_literal(s) for s in enable_tenant_rls_sql(_PLACEHOLDER))
    ensure = f"""
CREATE OR REPLACE FUNCTION usage_ensure_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    first date := date_trunc('month', month)::date;
    part text := '{PARENT}_p' || to_char(date_trunc('month', month), 'YYYYMM');
    stmt text;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('usage_ensure_partition'));  -- one creator at a time
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF {PARENT} FOR VALUES FROM (%L) TO (%L)', part,
                   first::text || ' 00:00:00+00', (first + interval '1 month')::date::text || ' 00:00:00+00');
    FOREACH stmt IN ARRAY ARRAY[{rls}] LOOP
        EXECUTE replace(stmt, '{_PLACEHOLDER}', part);
    END LOOP;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO {APP_ROLE}', part);
    RETURN part;
END
$fn$"""  # noqa: S608 - constants only; the month is a bound parameter
    drop = f"""
CREATE OR REPLACE FUNCTION usage_drop_partitions_before(cutoff date) RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    part text;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = '{PARENT}'::regclass AND c.relname ~ '^{PARENT}_p[0-9]{{6}}$'
         ORDER BY c.relname
    LOOP
        IF (to_date(right(part, 6), 'YYYYMM') + interval '1 month')::date <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part);
            RETURN NEXT part;
        END IF;
    END LOOP;
END
$fn$"""  # noqa: S608 - constants only
    return [
        ensure,
        drop,
        "REVOKE ALL ON FUNCTION usage_ensure_partition(date) FROM PUBLIC",
        "REVOKE ALL ON FUNCTION usage_drop_partitions_before(date) FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION usage_ensure_partition(date) TO {APP_ROLE}",
        f"GRANT EXECUTE ON FUNCTION usage_drop_partitions_before(date) TO {APP_ROLE}",
    ]


_known: set[date] = set()  # months this process has ensured: the ingest hot path skips them


async def ensure_partitions(session: AsyncSession, months: Iterable[date]) -> list[str]:
    """Make sure each month has its partition; returns the names it had to create.

    A month is remembered only once its partition was seen to exist already: one created in this
    transaction could still be rolled back with it.
    """
    created = []
    for month in sorted({month_of(m) for m in months} - _known):
        name = partition_name(month)
        exists = (await session.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name})).scalar_one()
        if exists:
            _known.add(month)
            continue
        await session.execute(text("SELECT usage_ensure_partition(:m)"), {"m": month})
        created.append(name)
    return created


def forget_known_partitions() -> None:
    """After partitions were dropped (or in tests), check again before trusting the cache."""
    _known.clear()


_PARTITIONS = f"""
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = '{PARENT}'::regclass
"""  # noqa: S608 - constants only

# The plan in force at the month's start as ``billing.plans.plan_at`` reads the history up to its end
# (the current plan when there is none), or any billable plan that took effect during the month.
_BILLABLE_IN_MONTH = """
(COALESCE(
    (SELECT p.plan FROM billing_plan_changes p WHERE p.org_id = o.id AND p.cancelled_at IS NULL
        AND p.effective_at <= :start ORDER BY p.effective_at DESC, p.created_at DESC LIMIT 1),
    (SELECT p.plan FROM billing_plan_changes p WHERE p.org_id = o.id AND p.cancelled_at IS NULL
        AND p.effective_at < :end ORDER BY p.effective_at, p.created_at LIMIT 1),
    o.plan) = ANY(:billable)
 OR EXISTS (SELECT 1 FROM billing_plan_changes p WHERE p.org_id = o.id AND p.cancelled_at IS NULL
        AND p.effective_at > :start AND p.effective_at < :end AND p.plan = ANY(:billable)))
"""

# Orgs the monthly close visits (as ``billing.ledger.invoices.orgs_to_close``) for the current month.
_CLOSED_AGAIN = """
(o.plan = ANY(:billable) OR EXISTS (SELECT 1 FROM billing_plan_changes p WHERE p.org_id = o.id
        AND p.cancelled_at IS NULL AND p.effective_at >= :current))
"""

_UNCLOSED = f"""
SELECT o.slug FROM orgs o
 WHERE o.deleted_at IS NULL
   AND NOT EXISTS (SELECT 1 FROM usage_period_closes c WHERE c.org_id = o.id AND c.period_start = :month)
   AND EXISTS (SELECT 1 FROM {PARENT} r WHERE r.org_id = o.id AND r.window_start >= :start
                 AND r.window_start < :end)
   AND {_BILLABLE_IN_MONTH}
 LIMIT 1
"""  # noqa: S608 - constants only

_UNBILLED_LATE = f"""
SELECT o.slug FROM {PARENT} r JOIN orgs o ON o.id = r.org_id
 WHERE r.late AND r.window_start >= :start AND r.window_start < :end AND o.deleted_at IS NULL
   AND EXISTS (SELECT 1 FROM invoices i WHERE i.org_id = o.id AND i.period_start = :start)
   AND r.ingested_at >= (SELECT max(i.usage_closed_at) FROM invoices i WHERE i.org_id = o.id)
   AND {_CLOSED_AGAIN}
 LIMIT 1
"""  # noqa: S608 - constants only


async def _needed_by_billing(session: AsyncSession, month: date, *, now: datetime) -> str | None:
    """Why billing still needs ``month``'s raw records (naming one org), or ``None``."""
    params = {"month": month, "start": _midnight(month), "end": _midnight(add_months(month, 1)),
              "billable": sorted(BILLABLE_PLANS), "current": _midnight(month_of(now))}
    slug = (await session.execute(text(_UNCLOSED), params)).scalar()
    if slug is not None:
        return f"org {slug} has usage in it and billing has not closed it"
    slug = (await session.execute(text(_UNBILLED_LATE), params)).scalar()
    if slug is not None:
        return f"org {slug} has late usage of it that no invoice carries yet"
    return None


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


async def _drop_cutoff(session: AsyncSession, cutoff: date, *, now: datetime) -> date:
    """``cutoff``, or the first month before it that billing still needs (it and later months stay)."""
    names = (await session.execute(text(_PARTITIONS))).scalars()
    months = sorted(m for m in map(parse_partition_name, names) if m is not None and add_months(m, 1) <= cutoff)
    for month in months:
        reason = await _needed_by_billing(session, month, now=now)
        if reason is not None:
            log.warning("raw usage partition %s kept past retention: %s", partition_name(month), reason)
            return month
    return cutoff


async def drop_expired_partitions(session: AsyncSession, *, now: datetime, retention_days: int) -> list[str]:
    """Drop raw-record partitions that lie wholly before the retention cutoff and that billing no longer
    needs (see the module's docstring); rollups stay."""
    cutoff = await _drop_cutoff(session, month_of(retention_cutoff(now, retention_days)), now=now)
    rows = await session.execute(text("SELECT usage_drop_partitions_before(:c)"), {"c": cutoff})
    dropped = [r[0] for r in rows]
    if dropped:
        forget_known_partitions()
    return dropped


async def maintain(session: AsyncSession, *, now: datetime | None = None, retention_days: int,
                   months_ahead: int = 3) -> tuple[list[str], list[str]]:
    """Create this month's and the next ``months_ahead`` partitions; drop the expired ones."""
    now = now or datetime.now(UTC)
    first = month_of(now)
    forget_known_partitions()
    created = await ensure_partitions(session, [add_months(first, i) for i in range(-1, months_ahead + 1)])
    dropped = await drop_expired_partitions(session, now=now, retention_days=retention_days)
    return created, dropped


def parse_partition_name(name: str) -> date | None:
    m = _NAME.match(name)
    return date(int(m.group(1)), int(m.group(2)), 1) if m else None


def alembic_include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """For Alembic's comparison: monthly partitions (and their indexes) exist only in the database, by
    design; they are not schema drift. Everything else is compared as usual."""
    table = obj if type_ == "table" else getattr(obj, "table", None)
    table_name = getattr(table, "name", None)
    return not (reflected and compare_to is None and isinstance(table_name, str)
                and parse_partition_name(table_name) is not None)
