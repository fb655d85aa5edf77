"""One metascheduler pass: read a snapshot, place in memory, commit with compare-and-set.

The commit is one statement for every placement::

    UPDATE jobs SET state = 'placed', cluster_id = ..., placement_version = placement_version + 1
     WHERE id = ... AND state = 'queued' AND placement_version = <version read>

(over ``unnest`` arrays, so thousands of placements cost one round trip). A job cancelled, placed by
another scheduler, or re-queued since the snapshot does not match and is simply not placed by this
pass: two schedulers racing never place a job twice. Reasons of the jobs that wait are written in a
second statement, only where they changed.

Several replicas: the loop (``loop.py``) holds a Postgres advisory lock so normally one pass runs at a
time; the compare-and-set keeps it correct when two overlap (a paused leader, a test).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server.jobs.placement import PassOptions, PassResult, Placement, place_all
from connectors.server.jobs.snapshot import CapsProvider, read_snapshot
from tenants.db import unscoped_session, utcnow

__all__ = ["PassReport", "PlacedJob", "commit_placements", "run_pass", "write_reasons"]

_json = msgspec.json.Encoder()

_PLACE = text(
    """
    WITH v AS (
        SELECT * FROM unnest(CAST(:ids AS uuid[]), CAST(:versions AS int[]), CAST(:clusters AS uuid[]),
                             CAST(:nodes AS text[]), CAST(:assignments AS text[]))
                   AS v(id, version, cluster_id, node, assignment)
    ), placed AS (
        UPDATE jobs j SET state = 'placed', cluster_id = v.cluster_id, node_name = v.node,
               assignment = CAST(v.assignment AS jsonb), placement_version = j.placement_version + 1,
               placed_at = :now, updated_at = :now,
               reason = 'placed on cluster ' || c.name || '; dispatching'
          FROM v JOIN clusters c ON c.id = v.cluster_id
         WHERE j.id = v.id AND j.state = 'queued' AND j.placement_version = v.version
     RETURNING j.id, j.org_id, j.reason
    ), events AS (
        INSERT INTO job_events (org_id, job_id, at, state, reason)
        SELECT org_id, id, :now, 'placed', reason FROM placed
    )
    SELECT id, org_id FROM placed
    """
)
_REASONS = text(
    """
    UPDATE jobs j SET reason = v.reason, updated_at = :now
      FROM unnest(CAST(:ids AS uuid[]), CAST(:reasons AS text[])) AS v(id, reason)
     WHERE j.id = v.id AND j.state = 'queued' AND j.reason IS DISTINCT FROM v.reason
    """
)


@dataclass(frozen=True, slots=True)
class PlacedJob:
    job_id: str
    org_id: str


@dataclass(slots=True)
class PassReport:
    placed: list[PlacedJob] = field(default_factory=list)
    waiting: int = 0
    lost_races: int = 0  # placements another scheduler (or a cancel) got to first
    read_s: float = 0.0
    place_s: float = 0.0
    commit_s: float = 0.0


async def commit_placements(session: AsyncSession, placements: list[Placement],
                            now: datetime | None = None) -> list[PlacedJob]:
    """Compare-and-set every placement; returns those that won."""
    if not placements:
        return []
    rows = (await session.execute(_PLACE, {
        "ids": [uuid.UUID(p.job_id) for p in placements], "versions": [p.version for p in placements],
        "clusters": [uuid.UUID(p.cluster_id) for p in placements], "nodes": [p.node for p in placements],
        "assignments": [_json.encode(p.assignment()).decode() for p in placements], "now": now or utcnow(),
    })).all()
    return [PlacedJob(job_id=str(r.id), org_id=str(r.org_id)) for r in rows]


async def write_reasons(session: AsyncSession, waiting: dict[str, str], now: datetime | None = None) -> None:
    if waiting:
        await session.execute(_REASONS, {"ids": [uuid.UUID(i) for i in waiting], "reasons": list(waiting.values()),
                                         "now": now or utcnow()})


async def run_pass(sessions: async_sessionmaker[AsyncSession], *, caps_provider: CapsProvider | None = None,
                   opts: PassOptions | None = None, now: float | None = None) -> PassReport:
    """Read, place, commit. Short transactions: nothing is locked while placing in memory."""
    report = PassReport()
    async with unscoped_session(sessions, reason="metascheduler: reads every org's queue and capacity") as s:
        snap = await read_snapshot(s, caps_provider)
    report.read_s = snap.read_s
    if not snap.jobs:
        return report
    started = time.perf_counter()
    result: PassResult = place_all(snap.orgs, snap.jobs, time.time() if now is None else now,
                                         opts or PassOptions())
    report.place_s = time.perf_counter() - started
    started = time.perf_counter()
    async with unscoped_session(sessions, reason="metascheduler: commits placements across orgs") as s:
        report.placed = await commit_placements(s, result.placements)
        await write_reasons(s, result.waiting)
    report.commit_s = time.perf_counter() - started
    report.waiting = len(result.waiting)
    report.lost_races = len(result.placements) - len(report.placed)
    return report
