"""A job's logs, read from its cluster through the agent (``fetch_logs`` commands).

Each read queues one command and waits for its result (the agent long-polls, so a connected agent
answers in milliseconds plus the time to read the pod's log). Following re-reads every second and
hands out the lines not seen yet, until the job has finished and one last read is done.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import CommandKind
from connectors.server import commands
from connectors.server.jobs.service import get_job
from tenants.db import tenant_session
from tenants.errors import UpstreamUnavailable
from tenants.permissions import Permission
from tenants.scope import TenantScope

__all__ = ["LogRead", "follow_logs", "read_logs"]

_NO_LOGS_STATES = frozenset({"queued", "placed"})


@dataclass(frozen=True, slots=True)
class LogRead:
    lines: list[str]
    complete: bool  # the job has finished: no more lines will come


async def _wait(sessions: async_sessionmaker[AsyncSession], scope: TenantScope, command_id: uuid.UUID,
                timeout_s: float) -> commands.CommandView:
    loop = asyncio.get_running_loop()
    deadline, pause = loop.time() + timeout_s, 0.02
    while True:
        async with tenant_session(sessions, scope) as s:
            view = await commands.get_command(s, command_id)
        if view.done:
            return view
        if loop.time() >= deadline:
            raise UpstreamUnavailable("The cluster's agent did not send the logs in time; it may be offline. "
                                      "Retry in a moment.")
        await asyncio.sleep(pause)
        pause = min(0.25, pause * 1.5)


async def read_logs(sessions: async_sessionmaker[AsyncSession], scope: TenantScope, job_id: uuid.UUID, *,
                    tail: int | None = 200, timeout_s: float = 10.0) -> LogRead:
    scope.require(Permission.JOBS_READ)
    async with tenant_session(sessions, scope) as s:
        job = await get_job(scope, s, job_id)
        if job.cluster_id is None or job.state in _NO_LOGS_STATES:
            return LogRead(lines=[], complete=job.finished)
        payload: dict[str, object] = {"job_id": str(job_id)}
        if tail is not None:
            payload["tail_lines"] = tail
        command_id = await commands.enqueue(s, org_id=scope.org_id, cluster_id=job.cluster_id,
                                            kind=CommandKind.FETCH_LOGS, dedupe_key=f"logs:{job_id}:{uuid.uuid4()}",
                                            payload=payload)
    view = await _wait(sessions, scope, command_id, timeout_s)
    if view.state != "succeeded":
        raise UpstreamUnavailable(f"The agent could not read the logs: {view.error or 'no reason given'}")
    text = str((view.result or {}).get("logs") or "")
    lines = text.splitlines()
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return LogRead(lines=lines, complete=job.finished)


async def follow_logs(sessions: async_sessionmaker[AsyncSession], scope: TenantScope, job_id: uuid.UUID, *,
                      tail: int | None = 200, every_s: float = 1.0) -> AsyncIterator[str]:
    """Lines as they come (first the last ``tail``), until the job has finished."""
    seen: int | None = None
    while True:
        try:
            read = await read_logs(sessions, scope, job_id, tail=None)
        except UpstreamUnavailable:
            await asyncio.sleep(every_s)
            continue
        lines = read.lines
        if seen is None:
            start = max(0, len(lines) - tail) if tail is not None else 0
        else:
            start = seen if len(lines) >= seen else 0  # the log restarted (a new pod): show it from the top
        for line in lines[start:]:
            yield line
        seen = len(lines)
        if read.complete:
            return
        await asyncio.sleep(every_s)
