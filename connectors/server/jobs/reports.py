"""Job reports pushed by an agent (``POST /agent/v1/job-reports``), folded into the job records.

Each report is checked on its own and answered on its own: a bad one is refused with a code and a
reason while the rest of the batch is applied. A report is taken only for a job of the reporting
cluster (the caller's credential names it; the session is already narrowed to its org), and applied
only if the agent observed it after the last one taken for the job (``jobs.report_observed_at``), so a
resent, replayed or reordered report never turns a newer state back. Applying goes through
``lifecycle.apply_status``, the same fold as the answer to a ``job_status`` command.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import JOB_PHASES, JobReport
from connectors.server.jobs import lifecycle
from connectors.server.jobs.models import FINISHED_STATES, Job

__all__ = ["INVALID", "MAX_CLOCK_AHEAD", "UNKNOWN_JOB", "ReportOutcome", "apply_reports"]

INVALID = "invalid"
UNKNOWN_JOB = "unknown_job"
# An agent's clock may run ahead of ours by this much; a report from further ahead would hold back every
# later one of the job (they look older), so it is refused with a word about the clock.
MAX_CLOCK_AHEAD = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class ReportOutcome:
    """What became of one report: refused (``code`` set), or taken (``applied`` when it was newer)."""

    job_id: str
    state: str = ""
    applied: bool = False
    changed: bool = False  # the job's state changed (its workflow is woken)
    code: str = ""
    reason: str = ""

    @property
    def done(self) -> bool:
        """The job ended here: the agent need not report it again."""
        return self.state in FINISHED_STATES


def _utc(moment: datetime) -> datetime:
    """A time without an offset is taken as UTC (what the agent sends)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _problem(report: JobReport, now: datetime) -> str | None:
    """Why the report cannot be taken, in words, or None."""
    if report.phase not in JOB_PHASES:
        return f"unknown phase {report.phase!r} (one of {', '.join(JOB_PHASES)})"
    started = report.started_at and _utc(report.started_at)
    finished = report.finished_at and _utc(report.finished_at)
    latest = now + MAX_CLOCK_AHEAD
    if _utc(report.observed_at) > latest:
        return "observed_at is in the future: check this host's clock (enable time sync, NTP)"
    if (started and started > latest) or (finished and finished > latest):
        return "started_at or finished_at is in the future: check this host's clock (enable time sync, NTP)"
    if started and finished and finished < started:
        return "finished_at is before started_at"
    return None


async def _apply_one(session: AsyncSession, cluster_id: uuid.UUID, report: JobReport, now: datetime) -> ReportOutcome:
    problem = _problem(report, now)
    if problem is not None:
        return ReportOutcome(job_id=report.job_id, code=INVALID, reason=problem)
    try:
        job_id = uuid.UUID(report.job_id)
    except ValueError:
        return ReportOutcome(job_id=report.job_id, code=INVALID, reason="job_id is not a job id")
    job = (await session.execute(select(Job).where(Job.id == job_id).with_for_update())).scalar_one_or_none()
    if job is None or job.cluster_id != cluster_id:  # another org's job is invisible here (RLS): the same answer
        return ReportOutcome(job_id=report.job_id, code=UNKNOWN_JOB,
                             reason="no job of that id is placed on this cluster (it ended elsewhere, or never was)")
    observed = _utc(report.observed_at)
    if job.report_observed_at is not None and observed <= job.report_observed_at:
        return ReportOutcome(job_id=report.job_id, state=job.state)
    before = job.state
    job.report_observed_at, job.report_received_at = observed, now
    state = await lifecycle.apply_status(session, job_id, msgspec.to_builtins(report))
    return ReportOutcome(job_id=report.job_id, state=state, applied=True, changed=state != before)


async def apply_reports(session: AsyncSession, cluster_id: uuid.UUID, reports: list[JobReport], *,
                        now: datetime) -> list[ReportOutcome]:
    """Take the reports of ``cluster_id``'s agent in the caller's transaction; one outcome per report.

    Rows are locked in job id order (and a job's reports applied oldest first), so two batches that
    name the same jobs never deadlock.
    """
    ordered = sorted(reports, key=lambda r: (r.job_id, _utc(r.observed_at)))
    return [await _apply_one(session, cluster_id, report, now) for report in ordered]
