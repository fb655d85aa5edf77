"""Hourly rollups: rebuilt from raw records, and compared with them.

Ingest keeps ``usage_hourly`` in step incrementally (``billing.usage.ingest``). ``rebuild_rollups``
recomputes it from ``usage_records`` for a range (after a bug, a restore, or to prove the increments
right), holding a lock that makes concurrent ingests wait so none of their increments is lost. It only
rebuilds hours whose raw records are still kept: older rollups are the history and stay as they are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.partitions import PARENT, parse_partition_name

__all__ = ["RollupMismatch", "compare_rollups", "oldest_raw_month", "rebuild_rollups"]

_RECOMPUTE = """
SELECT org_id, date_trunc('hour', window_start, 'UTC') AS hour, cluster_id, resource, gpu_type,
       sum(quantity) AS quantity, count(*) AS records
  FROM usage_records WHERE window_start >= :start AND window_start < :end {org}
 GROUP BY 1, 2, 3, 4, 5
"""

_STORED = """
SELECT org_id, hour, cluster_id, resource, gpu_type, quantity, records
  FROM usage_hourly WHERE hour >= :start AND hour < :end {org}
"""


@dataclass(frozen=True, slots=True)
class RollupMismatch:
    org_id: uuid.UUID
    hour: datetime
    cluster_id: uuid.UUID
    resource: str
    gpu_type: str
    stored: tuple[int, int] | None  # (quantity, records) in usage_hourly
    recomputed: tuple[int, int] | None  # from usage_records


async def oldest_raw_month(session: AsyncSession) -> date | None:
    """The first month whose raw partition still exists."""
    rows = await session.execute(text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = CAST(:parent AS regclass)"), {"parent": PARENT})
    months = [m for (name,) in rows if (m := parse_partition_name(name)) is not None]
    return min(months) if months else None


async def _range(session: AsyncSession, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    oldest = await oldest_raw_month(session)
    floor = datetime.combine(oldest, time(0), tzinfo=UTC) if oldest else datetime(1970, 1, 1, tzinfo=UTC)
    return max(start or floor, floor), end or datetime(9999, 1, 1, tzinfo=UTC)


async def rebuild_rollups(session: AsyncSession, *, org_id: uuid.UUID | None = None, start: datetime | None = None,
                          end: datetime | None = None) -> int:
    """Replace the rollups of ``[start, end)`` (hours; default: all with raw records) by a recomputation.

    Returns the number of rollup rows written. An unscoped session rebuilds every org (``org_id`` None);
    a tenant session rebuilds its own org.
    """
    # Ingest's statement holds ROW EXCLUSIVE on usage_hourly until it commits; this mode waits for those
    # and holds new ones off, so the recomputation sees every committed record and no increment is lost.
    await session.execute(text("LOCK TABLE usage_hourly IN SHARE ROW EXCLUSIVE MODE"))
    lo, hi = await _range(session, start, end)
    org_filter = "AND org_id = :org" if org_id is not None else ""
    params: dict[str, object] = {"start": lo, "end": hi}
    if org_id is not None:
        params["org"] = org_id
    await session.execute(text(f"DELETE FROM usage_hourly WHERE hour >= :start AND hour < :end {org_filter}"),  # noqa: S608
                          params)
    result = await session.execute(text(
        "INSERT INTO usage_hourly (org_id, hour, cluster_id, resource, gpu_type, quantity, records) "
        + _RECOMPUTE.format(org=org_filter)), params)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def compare_rollups(session: AsyncSession, *, org_id: uuid.UUID | None = None, start: datetime | None = None,
                          end: datetime | None = None) -> list[RollupMismatch]:
    """Every rollup row that differs from a recomputation from raw records (empty: they agree)."""
    lo, hi = await _range(session, start, end)
    org_filter = "AND org_id = :org" if org_id is not None else ""
    params: dict[str, object] = {"start": lo, "end": hi}
    if org_id is not None:
        params["org"] = org_id
    recomputed = {(r.org_id, r.hour, r.cluster_id, r.resource, r.gpu_type): (int(r.quantity), int(r.records))
                  for r in (await session.execute(text(_RECOMPUTE.format(org=org_filter)), params)).all()}
    stored_sql = _STORED.format(org=org_filter)
    stored = {(r.org_id, r.hour, r.cluster_id, r.resource, r.gpu_type): (int(r.quantity), int(r.records))
              for r in (await session.execute(text(stored_sql), params)).all()}
    return [RollupMismatch(*key, stored=stored.get(key), recomputed=recomputed.get(key))
            for key in sorted(set(recomputed) | set(stored), key=str)
            if stored.get(key) != recomputed.get(key)]
