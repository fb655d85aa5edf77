"""The heartbeat sweep activity against the database: who is disconnected, when, and why."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server.models import Cluster
from tenants.db import unscoped_session, utcnow
from tests.factories import make_org
from workflows.clusters.activities import ClusterActivities
from workflows.clusters.types import SweepInput


async def test_the_sweep_spares_everyone_right_after_a_restart_then_disconnects_the_silent(
    db: async_sessionmaker[AsyncSession],
) -> None:
    org = await make_org(db)
    now = utcnow()
    async with unscoped_session(db, reason="test setup") as s:
        for name, age in (("silent", 120), ("alive", 5)):
            s.add(Cluster(org_id=org.id, name=name, provider="eks", state="attached", state_changed_at=now,
                          registered_at=now - timedelta(hours=1), last_heartbeat_at=now - timedelta(seconds=age)))
    clock = [1000.0]
    activities = ClusterActivities(db, clock=lambda: clock[0])  # the worker starts at t=1000
    sweep = SweepInput(ttl_s=45, grace_s=30, restart_grace_s=90)

    clock[0] += 60  # a minute after a restart every cluster looks silent: nobody is judged yet
    assert (await activities.sweep_heartbeats(sweep)).skipped_for_restart
    clock[0] += 80  # past TTL + restart grace
    result = await activities.sweep_heartbeats(sweep)
    again = await activities.sweep_heartbeats(sweep)

    assert [c.to_state for c in result.disconnected] == ["disconnected"]
    assert again.disconnected == []  # idempotent: the change happened once
    async with unscoped_session(db, reason="test check") as s:
        rows = {c.name: c for c in (await s.execute(Cluster.__table__.select())).all()}
    assert rows["alive"].state == "attached" and rows["silent"].state == "disconnected"
    assert re.fullmatch(r"no heartbeat since \d\d:\d\d:\d\d UTC \(agent stopped, or network/proxy blocks outbound "
                        r"HTTPS\)", rows["silent"].state_reason)
