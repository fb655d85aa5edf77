"""``POST /agent/v1/usage``: an agent uploads a batch of usage records from its spool.

Authenticated by the agent's credential like every agent call; the org and cluster come from it,
never from the body. The gateway composes the two sides: it asks the connectors' tables which of the
batch's jobs ran on this cluster, and hands that set with the records to ``billing.usage.ingest``,
all in the one transaction of the call. The answer lists every accepted id (stored now or before) and
every rejected one with a code and a reason, so the agent can drop both from its spool.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, post
from litestar.params import JSONBody
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billing.usage.ingest import (
    MAX_BATCH,
    IngestHooks,
    IngestLimits,
    UsageAck,
    UsageBatchIn,
    ingest,
    job_ids_of,
)
from connectors.protocol import CommandKind, ErrorCode
from connectors.server import credentials
from connectors.server.jobs.models import Job
from connectors.server.models import AgentCommand
from gateway.agent_api.handlers import _AGENT, _bearer
from gateway.deps import Runtime
from tenants.db import utcnow
from tenants.errors import InvalidInput

__all__ = ["HOOKS", "cluster_job_ids", "upload_usage"]

HOOKS = IngestHooks()  # tests inject a crash between staging and insert here
_RETRIES = 3  # deadlocks between concurrent batches of one org are retried (rare: inserts run in key order)


async def cluster_job_ids(session: AsyncSession, cluster_id: uuid.UUID, job_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``job_ids`` ran on ``cluster_id``: placed there now, or sent there by a ``start_job``
    command (a job re-queued to another cluster after this one was lost still ran here)."""
    if not job_ids:
        return set()
    found = set((await session.execute(select(Job.id).where(Job.id.in_(job_ids), Job.cluster_id == cluster_id)))
                .scalars())
    missing = job_ids - found
    if missing:
        first_part = func.split_part(AgentCommand.dedupe_key, ":", 1)
        keys = (await session.execute(select(first_part).where(
            AgentCommand.cluster_id == cluster_id, AgentCommand.kind == CommandKind.START_JOB.value,
            first_part.in_([str(m) for m in missing])))).scalars()
        found |= {uuid.UUID(k) for k in keys}
    return found


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in ("40P01", "40001") or "deadlock" in str(exc.orig).lower()


@post("/agent/v1/usage", status_code=200, summary="Upload usage records (idempotent by record id)",
      description="At most 10,000 records per call. Answers the accepted ids (including ones stored before) and "
                  "the rejected ones, each with a code and a reason.", **_AGENT)
async def upload_usage(request: Request[Any, Any, Any], data: JSONBody[UsageBatchIn], runtime: Runtime) -> UsageAck:
    if len(data.records) > MAX_BATCH:
        raise InvalidInput(f"send at most {MAX_BATCH} usage records per call", code=ErrorCode.INVALID.value)
    limits = IngestLimits(retention_days=runtime.settings.usage_raw_retention_days)
    bearer = _bearer(request)
    jobs = job_ids_of(data.records)
    for attempt in range(_RETRIES):
        now = utcnow()
        try:
            async with credentials.agent_session(runtime.sessions, bearer, now=now) as (s, agent):
                known = await cluster_job_ids(s, agent.cluster_id, jobs)
                return await ingest(s, org_id=agent.org_id, cluster_id=agent.cluster_id, records=data.records,
                                    known_jobs=known, now=now, limits=limits, hooks=HOOKS)
        except DBAPIError as exc:
            if attempt + 1 < _RETRIES and _retryable(exc):
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover
