"""Monthly partitions of ``usage_records``: created ahead of time and on demand, dropped after retention.

Only the table owner may create or drop a partition, and the application connects as a role that owns
nothing (row-level security must apply to it). So the migration installs two ``SECURITY DEFINER``
functions, owned by the migrating role, that do exactly one narrow thing each:

* ``usage_ensure_partition(month date)``: create ``usage_records_pYYYYMM`` for that month if missing,
  with row-level security ENABLEd, FORCEd and the ``tenant_isolation`` policy (the statements come from
  ``tenants.rls.enable_tenant_rls_sql``, as for every tenant table), and grant the app role access.
* ``usage_drop_partitions_before(cutoff date)``: drop the partitions that end on or before ``cutoff``.

The migration calls the first for the months around now; ``ensure_partitions`` (ingest, for months
it has not seen) and ``maintain`` (a schedule or ``metacloud usage-admin maintain``) call them later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

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


async def drop_expired_partitions(session: AsyncSession, *, now: datetime, retention_days: int) -> list[str]:
    """Drop raw-record partitions that lie wholly before the retention cutoff; rollups stay."""
    cutoff = month_of(retention_cutoff(now, retention_days))  # drop only whole months before it
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
