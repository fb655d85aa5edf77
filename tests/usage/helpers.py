"""Clusters, credentials and jobs for the usage tests, and records as the agent makes them."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.agent.spool import Subject
from connectors.agent.usage import UsageRecord, window_records
from connectors.protocol import AGENT_VERSION, AGENT_VERSION_HEADER
from connectors.server.credentials import format_credential
from connectors.server.jobs.models import Job
from connectors.server.models import Cluster, ClusterCredential
from tenants.db import unscoped_session, utcnow
from tenants.security import hash_token

GiB = 1 << 30


@dataclass
class AgentCluster:
    org_id: uuid.UUID
    cluster_id: uuid.UUID
    credential: str

    def headers(self) -> dict[str, str]:
        return {AGENT_VERSION_HEADER: AGENT_VERSION, "Authorization": f"Bearer {self.credential}",
                "content-type": "application/json"}


async def make_cluster(db: async_sessionmaker[AsyncSession], org_id: uuid.UUID, name: str = "gpu-east") -> AgentCluster:
    now = utcnow()
    prefix_id = secrets.token_hex(4)
    raw = format_credential(prefix_id, secrets.token_urlsafe(24))
    async with unscoped_session(db, reason="test factory") as s:
        cluster = Cluster(org_id=org_id, name=name, provider="eks", region="us-east-1", state="attached",
                          state_changed_at=now, registered_at=now, last_heartbeat_at=now)
        s.add(cluster)
        await s.flush()
        s.add(ClusterCredential(org_id=org_id, cluster_id=cluster.id, prefix=f"mca_{prefix_id}",
                                secret_hash=hash_token(raw)))
    return AgentCluster(org_id=org_id, cluster_id=cluster.id, credential=raw)


async def make_jobs(db: async_sessionmaker[AsyncSession], c: AgentCluster, n: int, *, cpu_millis: int = 2000,
                    memory_bytes: int = 4 * GiB, gpus: int = 0, gpu_type: str | None = None) -> list[uuid.UUID]:
    now = utcnow()
    async with unscoped_session(db, reason="test factory") as s:
        jobs = [Job(org_id=c.org_id, name=f"train-{i}", cpu_millis=cpu_millis, memory_bytes=memory_bytes, gpus=gpus,
                    gpu_type=gpu_type, state="running", cluster_id=c.cluster_id, queued_at=now, started_at=now,
                    updated_at=now) for i in range(n)]
        s.add_all(jobs)
        await s.flush()
        return [j.id for j in jobs]


def job_subject(job_id: uuid.UUID | str, *, cpu_millis: int = 2000, memory_bytes: int = 4 * GiB, gpus: int = 0,
                gpu_type: str = "") -> Subject:
    return Subject(subject=str(job_id), kind="job", spec={"cpu_millis": cpu_millis, "memory_bytes": memory_bytes,
                                                          "gpus": gpus, "gpu_type": gpu_type},
                   started_at=None, metered_until=None, finished_at=None)


def records(subjects: Sequence[Subject], start: int, windows: int, window_s: int = 60) -> list[UsageRecord]:
    """Consecutive windows of each subject from ``start`` (epoch seconds, aligned to the window)."""
    out: list[UsageRecord] = []
    for w in range(windows):
        for subject in subjects:
            out += window_records(subject, start + w * window_s, start + (w + 1) * window_s)
    return out


def body(recs: Sequence[UsageRecord]) -> bytes:
    return msgspec.json.encode({"records": list(recs)})


def hour_ago(hours: int = 1) -> int:
    """The start of the hour ``hours`` ago (epoch seconds): windows there are closed and valid."""
    now = int(datetime.now(UTC).timestamp())
    return now - now % 3600 - 3600 * hours
