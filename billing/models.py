"""Plans and their entitlements (caps), as data: the migration seeds them, code never hard-codes a cap.

``plan_entitlements`` holds one row per (plan, resource) with ``cap`` = the most an org on that plan
may have allocated at once across its clusters; ``NULL`` means unlimited, ``0`` means none (Free: no
GPUs). ``org_entitlements`` overrides a resource's cap for one org (an Enterprise contract).
Resources: ``cpu_millis``, ``memory_bytes``, ``gpus``.
"""

from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, TenantOwned, Timestamped, new_id

__all__ = ["RESOURCES", "OrgEntitlement", "Plan", "PlanEntitlement"]

RESOURCES = ("cpu_millis", "memory_bytes", "gpus")


class Plan(Base):
    __tablename__ = "plans"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # orgs.plan refers to it by name
    title: Mapped[str] = mapped_column(String(64), nullable=False)
    sort_order: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class PlanEntitlement(Base):
    __tablename__ = "plan_entitlements"

    plan: Mapped[str] = mapped_column(ForeignKey("plans.name", ondelete="CASCADE"), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    cap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class OrgEntitlement(TenantOwned, Timestamped, Base):
    """A per-org cap that replaces the plan's for one resource (``NULL`` = unlimited)."""

    __tablename__ = "org_entitlements"

    __table_args__ = (UniqueConstraint("org_id", "resource", name="uq_org_entitlements_org_id_resource"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    resource: Mapped[str] = mapped_column(String(32), nullable=False)
    cap: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
