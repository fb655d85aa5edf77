"""Job reports: the agent tells the gateway what its jobs do, instead of being asked job by job.

``JobReporter.run`` looks at the status of every watched job each ``interval_s`` (default 2 s) and
posts, in batches of ``JOB_REPORT_MAX_BATCH``, the reports that are due: a job whose (phase, reason,
exit code) differs from the last one the gateway acknowledged, or whose last acknowledged report is
``refresh_s`` old (the refresh tells the gateway its record is current, so it does not fall back to
``job_status`` commands). A report counts as delivered only once acknowledged; until then the next
round makes it again, with a newer ``observed_at``, which the gateway applies once (it ignores any
report not newer than the last it took). Network trouble backs off like every agent call.

Watched: each job this agent starts (``watch``, from the command executor; its first report goes out
at once, and the answer to ``start_job`` tells the gateway to wait for it), and, when the reporter
starts, every job the runtime holds (``runtime.jobs()``): an agent with an empty state folder picks
up the jobs of the one before. A job leaves the watch once the gateway acknowledged a final report
(succeeded, failed, unknown) or says the job has ended for it, or refused it (not this cluster's).
At most ``max_watched`` jobs are watched; the gateway asks about any other with ``job_status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from connectors.agent.client import AgentClient, Fatal, NotSupported, Transient
from connectors.protocol import (
    JOB_REPORT_INTERVAL_S,
    JOB_REPORT_MAX_BATCH,
    JOB_REPORT_REFRESH_S,
    JobReport,
    JobReportAnswer,
    JobReportBatch,
)
from connectors.runtimes.base import JobStatus, RunningJob

__all__ = ["FINAL_PHASES", "JobReporter", "StatusRuntime"]

log = logging.getLogger("metacloud.agent")

FINAL_PHASES = frozenset({"succeeded", "failed", "unknown"})


class StatusRuntime(Protocol):
    async def job_statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]: ...

    async def jobs(self) -> list[RunningJob]: ...


@dataclass
class _Watch:
    acked: tuple[str, str, int | None] | None = None  # (phase, reason, exit code) the gateway last acknowledged
    acked_at: float = 0.0  # loop time of that acknowledgement


def _key(report: JobReport) -> tuple[str, str, int | None]:
    return report.phase, report.reason, report.exit_code


class JobReporter:
    def __init__(self, runtime: StatusRuntime, *, interval_s: float = JOB_REPORT_INTERVAL_S,
                 refresh_s: float = JOB_REPORT_REFRESH_S, max_watched: int = 10_000, backoff_cap_s: float = 60.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rand: Callable[[], float] = random.random) -> None:
        self.runtime = runtime
        self.interval_s = interval_s
        self.refresh_s = refresh_s
        self.max_watched = max_watched
        self.backoff_cap_s = backoff_cap_s
        self.clock = clock
        self.rand = rand
        self.watched: dict[str, _Watch] = {}
        self.sent = 0  # reports acknowledged (tests and diagnostics)
        self._adopted = False
        self._wake = asyncio.Event()
        self._full_logged = False

    def watch(self, job_id: str) -> None:
        """Report on ``job_id`` from now on (a job already watched keeps its place)."""
        if job_id in self.watched:
            return
        if len(self.watched) >= self.max_watched:
            if not self._full_logged:
                log.warning("job reports: already watching %d jobs; the gateway asks about job %s (and any other "
                            "beyond) with job_status commands", len(self.watched), job_id)
                self._full_logged = True
            return
        self.watched[job_id] = _Watch()
        self._wake.set()  # its first report goes out now, not at the next look

    async def _adopt(self) -> None:
        """Watch every job the runtime holds (once it could be listed): nothing is lost with the state folder."""
        try:
            listed = await self.runtime.jobs()
        except Exception as exc:  # the runtime is down: the jobs started from now on are watched anyway
            log.debug("job reports: listing the runtime's jobs failed, trying again: %r", exc)
            return
        for job in listed:
            self.watch(job.job_id)
        self._adopted = True

    async def due(self, now: float) -> list[JobReport]:
        """The reports to send: changed since the last acknowledged one, or due for a refresh."""
        if not self.watched:
            return []
        try:
            statuses = await self.runtime.job_statuses(list(self.watched))
        except Exception as exc:  # the runtime is down: no reports this round, the gateway's records stand
            log.debug("job reports: reading the jobs' status failed: %r", exc)
            return []
        observed = self.clock()
        due = []
        for job_id, status in statuses.items():
            watch = self.watched.get(job_id)
            report = JobReport(job_id=job_id, phase=str(status.phase), reason=status.reason,
                               exit_code=status.exit_code, started_at=status.started_at,
                               finished_at=status.finished_at, observed_at=observed)
            if watch is not None and (watch.acked != _key(report) or now - watch.acked_at >= self.refresh_s):
                due.append(report)
        return due

    def _take(self, sent: list[JobReport], answer: JobReportAnswer, now: float) -> None:
        by_job = {r.job_id: r for r in sent}
        for ok in answer.accepted:
            report, watch = by_job.get(ok.job_id), self.watched.get(ok.job_id)
            if report is None or watch is None:
                continue
            self.sent += 1
            if ok.done or report.phase in FINAL_PHASES:
                del self.watched[ok.job_id]
            else:
                watch.acked, watch.acked_at = _key(report), now
        for refused in answer.rejected:
            if refused.job_id in by_job and self.watched.pop(refused.job_id, None) is not None:
                log.warning("job reports: the gateway refused the report of job %s (%s: %s); not reporting it again",
                            refused.job_id, refused.code, refused.reason)

    async def round(self, client: AgentClient, now: float) -> int:
        """One look at every watched job and one post per batch of due reports; returns the reports sent."""
        if not self._adopted:
            await self._adopt()
        reports = await self.due(now)
        for start in range(0, len(reports), JOB_REPORT_MAX_BATCH):
            batch = reports[start:start + JOB_REPORT_MAX_BATCH]
            self._take(batch, await client.job_reports(JobReportBatch(reports=batch)), now)
        if len(self.watched) < self.max_watched:
            self._full_logged = False
        return len(reports)

    async def run(self, client: AgentClient, *, on_problem: Callable[[str | None], None]) -> None:
        """Report until cancelled; returns when the gateway does not take job reports (it asks instead)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            self._wake.clear()  # a job watched from here on wakes the wait below
            try:
                await self.round(client, loop.time())
            except NotSupported as absent:
                log.info("%s", absent.line)
                return
            except Transient as problem:
                on_problem(f"job reports: {problem.line}")
                delay = problem.retry_after_s if problem.retry_after_s is not None else \
                    self.rand() * min(self.backoff_cap_s, float(2 ** min(attempt, 32)))
                attempt += 1
                await asyncio.sleep(max(delay, self.interval_s))
                continue
            except Fatal:
                raise
            except Exception:  # a bug here must not stop the agent: the gateway falls back to asking
                log.exception("job reports failed; trying again")
                await asyncio.sleep(self.interval_s)
                continue
            if attempt:
                on_problem(None)
            attempt = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
