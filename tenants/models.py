"""Tables of the tenancy kernel. Later modules add their own models beside their code."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, Timestamped, new_id

__all__ = ["Org", "SystemProbe"]


class Org(Timestamped, Base):
    """An organization: the tenant. Its own row is under RLS on ``id``."""

    __tablename__ = "orgs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    plan: Mapped[str] = mapped_column(String(32), nullable=False, default="free", server_default="free")
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="active", server_default="active")
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SystemProbe(Timestamped, Base):
    """A round trip gateway -> Temporal -> worker -> database, written by the probe workflow."""

    __tablename__ = "system_probes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    worker_identity: Mapped[str] = mapped_column(String(200), nullable=False)
