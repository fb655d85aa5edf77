"""When the lifecycle check trusts the record and when it asks the agent with a ``job_status`` command."""

from __future__ import annotations

from datetime import timedelta

from connectors.protocol import JOB_REPORT_FRESH_S
from connectors.server.jobs.lifecycle import JobSnapshot, StartOutcome, reports_current
from tenants.db import utcnow

FRESH = timedelta(seconds=1)
STALE = timedelta(seconds=JOB_REPORT_FRESH_S + 5)


def _snap(report_age: timedelta | None) -> JobSnapshot:
    return JobSnapshot(state="running", cluster_id="c", cluster_state="attached", cluster_state_since=None,
                       started_at=None, max_runtime_s=None, lost_count=0,
                       report_received_at=None if report_age is None else utcnow() - report_age)


def _start(reports: bool, age: timedelta = FRESH) -> StartOutcome:
    return StartOutcome(state="succeeded", reports=reports, completed_at=utcnow() - age)


def test_a_recent_report_is_trusted_and_a_stale_one_is_not() -> None:
    assert reports_current(_snap(FRESH), _start(reports=True))
    assert not reports_current(_snap(STALE), _start(reports=True))
    assert reports_current(_snap(FRESH), _start(reports=False))  # the agent pushes, whatever it said at the start


def test_a_pushing_agents_first_report_is_awaited_a_while_and_an_old_agent_is_asked_at_once() -> None:
    assert reports_current(_snap(None), _start(reports=True))
    assert not reports_current(_snap(None), _start(reports=True, age=STALE))
    assert not reports_current(_snap(None), _start(reports=False))
