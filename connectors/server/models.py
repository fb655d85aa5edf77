"""Tables of connected clusters: records and their history, registration tokens, agent
credentials, the latest inventory, and the command queue."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, TenantOwned, Timestamped, new_id

__all__ = [
    "AgentCommand",
    "Cluster",
    "ClusterCredential",
    "ClusterEvent",
    "ClusterInventory",
    "RegistrationToken",
]


class Cluster(TenantOwned, Timestamped, Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_clusters_org_id_name"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), nullable=False)
    # eks | aks | gke | openshift | rancher | kubernetes | bare_host
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    region: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, nullable=False, default=dict)
    # pending | attaching | attached | disconnected | detaching | detached | failed
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    state_reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    state_changed_at: Mapped[datetime] = mapped_column(nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    runtime: Mapped[str | None] = mapped_column(String(16), nullable=True)  # kubernetes | local
    agent_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    kubernetes_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    registered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(200), nullable=True)


class ClusterEvent(TenantOwned, Base):
    """The cluster's history: every state change with its reason."""

    __tablename__ = "cluster_events"
    __table_args__ = (Index("ix_cluster_events_cluster_id_at", "cluster_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False)
    at: Mapped[datetime] = mapped_column(nullable=False)
    from_state: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_state: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")


class RegistrationToken(TenantOwned, Timestamped, Base):
    """Single use, expiring, stored only as a hash."""

    __tablename__ = "registration_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True,
                                                  nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)


class ClusterCredential(TenantOwned, Timestamped, Base):
    """The agent's per-cluster credential (``mca_<prefix>_<secret>``), stored hashed. Rotation
    keeps the previous one valid until ``expires_at`` (a short overlap)."""

    __tablename__ = "cluster_credentials"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True,
                                                  nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ClusterInventory(TenantOwned, Base):
    """The latest heartbeat's inventory, one row per cluster (overwritten, not appended)."""

    __tablename__ = "cluster_inventories"

    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True)
    reported_at: Mapped[datetime] = mapped_column(nullable=False)
    node_count: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    cpu_total_millis: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cpu_allocated_millis: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    memory_total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    memory_allocated_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    gpu_total: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    gpu_allocated: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    storage_total_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    storage_allocated_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # {"nvidia.com/gpu|A100": {"total": 8, "allocated": 2}, ...}
    gpus_by_type: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    inventory: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)  # the whole message


class AgentCommand(TenantOwned, Base):
    """A command for one cluster's agent: leased on delivery, acknowledged, redelivered when the lease
    expires, completed with a result. ``dedupe_key`` makes creation idempotent for activities."""

    __tablename__ = "agent_commands"
    __table_args__ = (
        UniqueConstraint("cluster_id", "dedupe_key", name="uq_agent_commands_cluster_id_dedupe_key"),
        Index("ix_agent_commands_cluster_id_state", "cluster_id", "state"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    cluster_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)
    dedupe_key: Mapped[str] = mapped_column(String(200), nullable=False)
    # pending | leased | acked | succeeded | failed
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    lease_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    delivered_at: Mapped[datetime | None] = mapped_column(nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
