"""Tables of jobs: the job records, their status timeline, and the org's governance policies.

``jobs.state`` is one of ``queued | placed | dispatched | running | succeeded | failed | cancelled |
timed_out | lost``; ``reason`` says in words why a job waits or why it ended, and is rewritten by each
scheduler pass while the job is queued. ``placement_version`` is the compare-and-set token: a
placement commits only if the row is still ``queued`` at the version the scheduler read.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, TenantOwned, Timestamped, new_id

__all__ = ["ACTIVE_STATES", "FINISHED_STATES", "JOB_STATES", "GovernancePolicy", "Job", "JobEvent"]

JOB_STATES = ("queued", "placed", "dispatched", "running", "succeeded", "failed", "cancelled", "timed_out", "lost")
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out", "lost"})
# States that hold capacity on a cluster (placed and dispatched ones may not show in inventory yet).
ACTIVE_STATES = frozenset({"placed", "dispatched", "running"})


class Job(TenantOwned, Timestamped, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_org_id_created_at_id", "org_id", "created_at", "id"),  # list: keyset, newest first
        Index("ix_jobs_state", "state"),  # the scheduler reads queued + active jobs of every org
        Index("ix_jobs_cluster_id_state", "cluster_id", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    submitted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    # The role it was submitted under (the member's, or the API key's): placement applies that role's policy.
    submitted_role: Mapped[str] = mapped_column(String(16), nullable=False, default="member")
    image: Mapped[str | None] = mapped_column(String(512), nullable=True)
    command: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
    args: Mapped[list[str]] = mapped_column(JSONB, nullable=False, default=list)
    env: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, default=dict)
    cpu_millis: Mapped[int] = mapped_column(BigInteger, nullable=False)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    gpus: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    gpu_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # {"mode": "auto"|"cluster"|"region"|"labels", "cluster": str|None, "region": str|None, "labels": {}}
    placement: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    priority: Mapped[int] = mapped_column(Integer, nullable=False, default=50)
    max_runtime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_lost: Mapped[str] = mapped_column(String(16), nullable=False, default="requeue")  # requeue | fail
    lost_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="queued")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), nullable=True)
    node_name: Mapped[str | None] = mapped_column(String(253), nullable=True)  # the node capacity was counted on
    # What placement decided beyond the cluster: {"gpu_resource", "gpu_model", "node_selector", "tolerations"}.
    assignment: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    placement_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    # When it (re-)entered the queue: age for priority order and aging.
    queued_at: Mapped[datetime] = mapped_column(nullable=False)
    placed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    dispatched_at: Mapped[datetime | None] = mapped_column(nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(nullable=True)
    rerun_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The last agent job report taken: when the agent saw it (its clock; an older report is ignored) and
    # when it arrived (ours; the lifecycle workflow asks with ``job_status`` commands only while it is stale).
    report_observed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    report_received_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)


class JobEvent(TenantOwned, Base):
    """The job's status timeline: every state change (and every change of its waiting reason's kind)."""

    __tablename__ = "job_events"
    __table_args__ = (Index("ix_job_events_job_id_at", "job_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = mapped_column(nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")


class GovernancePolicy(TenantOwned, Base):
    """One rule set of an org, for everyone (``subject_kind='org'``, ``subject=''``), a role
    (``'role'``, role name) or a member (``'member'``, user id). The most specific one applies:
    member, else role, else org; none means no restriction. ``None`` lists/limits mean "any"."""

    __tablename__ = "governance_policies"
    __table_args__ = (
        UniqueConstraint("org_id", "subject_kind", "subject", name="uq_governance_policies_org_id_subject"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    subject_kind: Mapped[str] = mapped_column(String(16), nullable=False)  # org | role | member
    subject: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    allowed_clusters: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)  # cluster ids or names
    allowed_regions: Mapped[list[str] | None] = mapped_column(JSONB, nullable=True)
    gpus_allowed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    max_cpu_millis: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    max_gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(nullable=False)
    updated_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
