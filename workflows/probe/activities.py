from __future__ import annotations

import os
import socket
import uuid

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from tenants.db import unscoped_session
from tenants.models import SystemProbe
from workflows.probe.types import ProbeInput, ProbeResult


class ProbeActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    @activity.defn(name="system.record-probe")
    async def record_probe(self, inp: ProbeInput) -> ProbeResult:
        identity = _identity()
        # Idempotent: the probe id is the primary key, a retry inserts nothing new.
        async with unscoped_session(self._sessions, reason="system probe is not tenant data") as s:
            await s.execute(
                insert(SystemProbe)
                .values(id=uuid.UUID(inp.probe_id), message=inp.message, worker_identity=identity)
                .on_conflict_do_nothing(index_elements=["id"])
            )
        return ProbeResult(probe_id=inp.probe_id, worker_identity=identity)


def _identity() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"
