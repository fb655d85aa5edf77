"""``POST /agent/v1/job-reports``: an agent pushes what changed about the jobs it runs.

Authenticated by the agent's credential like every agent call; the org and cluster come from it,
never from the body. The batch is applied in one transaction (``connectors.server.jobs.reports``);
the answer acknowledges each report taken (applied, or older than one taken before) and refuses each
bad one with a code and a reason, so the agent stops resending both. After the commit, the workflows
of the jobs whose state changed are woken with a ``report`` signal, best effort: one that misses it
sees the change at its next check.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.params import JSONBody

from connectors.protocol import (
    JOB_REPORT_MAX_BATCH,
    ErrorCode,
    JobReportAccepted,
    JobReportAnswer,
    JobReportBatch,
    JobReportRejected,
)
from connectors.server import credentials
from connectors.server.jobs.reports import apply_reports
from gateway.agent_api.handlers import _AGENT, _bearer
from gateway.agent_api.signals import tell_workflows
from gateway.deps import Runtime
from tenants.db import utcnow
from tenants.errors import InvalidInput
from workflows.jobs.client import signal_reported

__all__ = ["report_jobs"]


@post("/agent/v1/job-reports", status_code=200, summary="Report job status changes (idempotent)",
      description=f"At most {JOB_REPORT_MAX_BATCH} reports per call. A report not newer than the last one taken "
                  "for its job changes nothing, so resending is harmless. Answers every report: accepted (with "
                  "the job's state) or rejected (with a code and a reason).", **_AGENT)
async def report_jobs(request: Request[Any, Any, Any], data: JSONBody[JobReportBatch],
                      runtime: Runtime) -> JobReportAnswer:
    if len(data.reports) > JOB_REPORT_MAX_BATCH:
        raise InvalidInput(f"send at most {JOB_REPORT_MAX_BATCH} job reports per call", code=ErrorCode.INVALID.value)
    now = utcnow()
    async with credentials.agent_session(runtime.sessions, _bearer(request), now=now) as (s, agent):
        outcomes = await apply_reports(s, agent.cluster_id, data.reports, now=now)
    changed = sorted({o.job_id for o in outcomes if o.changed})
    if changed:
        await tell_workflows(runtime, "wake the lifecycle workflows of reported jobs",
                             lambda c: signal_reported(c, changed))
    return JobReportAnswer(
        accepted=[JobReportAccepted(job_id=o.job_id, state=o.state, applied=o.applied, done=o.done)
                  for o in outcomes if not o.code],
        rejected=[JobReportRejected(job_id=o.job_id, code=o.code, reason=o.reason) for o in outcomes if o.code])
