"""Tables of the tenancy kernel: orgs, users, memberships, credentials, invites, SSO, audit, email.

Global tables (users, web sessions, one-time tokens, the email outbox, rate-limit hits) carry no
``org_id``; every table that does is under RLS (migration helper ``tenants.rls``).
Secrets we issue (passwords, session tokens, API keys, invite and email tokens) are stored only as
hashes. The one secret we must be able to use again, an OIDC client secret, is stored encrypted.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tenants.db import Base, TenantOwned, Timestamped, new_id

__all__ = [
    "ApiKey",
    "AuditEvent",
    "EmailMessage",
    "Invite",
    "Membership",
    "OneTimeToken",
    "Org",
    "RateLimitHit",
    "SsoConfig",
    "SystemProbe",
    "User",
    "WebSession",
]


class Org(Timestamped, Base):
    """An organization: the tenant. Its own row is under RLS on ``id``."""

    __tablename__ = "orgs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    plan: Mapped[str] = mapped_column(String(32), nullable=False, default="free", server_default="free")
    # active | suspended (by an operator)
    status: Mapped[str] = mapped_column(String(32), nullable=False, default="active", server_default="active")
    # soft delete: restorable until deleted_at + 30 days
    deleted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    suspended_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True, nullable=False)  # stored lower-case
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="", server_default="")
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)  # Argon2id; None for SSO-only
    email_verified_at: Mapped[datetime | None] = mapped_column(nullable=True)
    is_operator: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default="false")
    locked_until: Mapped[datetime | None] = mapped_column(nullable=True)
    last_login_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Membership(TenantOwned, Timestamped, Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("org_id", "user_id", name="uq_memberships_org_id_user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    active_org_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    last_seen_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)  # absolute timeout
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # "password" or "sso"; an org with SSO required accepts only sessions from its own IdP
    auth_method: Mapped[str] = mapped_column(String(16), nullable=False, default="password", server_default="password")
    sso_org_id: Mapped[uuid.UUID | None] = mapped_column(nullable=True)


class OneTimeToken(Timestamped, Base):
    """Email verification and password reset links: single use, expiring, stored hashed."""

    __tablename__ = "one_time_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False)  # verify_email | reset_password
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    used_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ApiKey(TenantOwned, Timestamped, Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), nullable=False)
    prefix: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)  # shown: "mc_" + 8 chars
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(nullable=True)
    last_used_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Invite(TenantOwned, Timestamped, Base):
    __tablename__ = "invites"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(nullable=False)
    accepted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    accepted_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class SsoConfig(TenantOwned, Timestamped, Base):
    """Per-org OIDC. The client secret is encrypted with the server key (it must be sent to the IdP)."""

    __tablename__ = "sso_configs"
    __table_args__ = (UniqueConstraint("org_id", name="uq_sso_configs_org_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    issuer: Mapped[str] = mapped_column(String(500), nullable=False)
    client_id: Mapped[str] = mapped_column(String(300), nullable=False)
    client_secret_encrypted: Mapped[str] = mapped_column(Text, nullable=False)
    allowed_domains: Mapped[list[str]] = mapped_column(ARRAY(String(253)), nullable=False, default=list)
    default_role: Mapped[str] = mapped_column(String(16), nullable=False, default="member")
    sso_required: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    updated_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """Append-only (the app role may not UPDATE or DELETE it). ``org_id`` is NULL for platform events."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_org_id_created_at", "org_id", "created_at"),
        # the audit log pages newest-first by id within one org (keyset pagination)
        Index("ix_audit_events_org_id_id", "org_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    org_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    actor_kind: Mapped[str] = mapped_column(String(16), nullable=False)  # user | api_key | operator | system | anonymous
    actor_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    actor_display: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    action: Mapped[str] = mapped_column(String(64), nullable=False)  # e.g. "member.role_changed"
    target_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    target_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    target_display: Mapped[str] = mapped_column(String(320), nullable=False, default="")
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, default=dict)


class EmailMessage(Timestamped, Base):
    """The outbox: written in the same transaction as the change that causes the mail."""

    __tablename__ = "email_outbox"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    to_address: Mapped[str] = mapped_column(String(320), nullable=False)
    subject: Mapped[str] = mapped_column(String(300), nullable=False)
    body_text: Mapped[str] = mapped_column(Text, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False, default="")
    sent_at: Mapped[datetime | None] = mapped_column(nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RateLimitHit(Base):
    """One failed or counted attempt in a bucket ("login:acct:<email>", "login:ip:<addr>")."""

    __tablename__ = "rate_limit_hits"
    __table_args__ = (Index("ix_rate_limit_hits_bucket_created_at", "bucket", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(String(400), nullable=False)
    created_at: Mapped[datetime] = mapped_column(nullable=False)


class SystemProbe(Timestamped, Base):
    """A round trip gateway -> Temporal -> worker -> database, written by the probe workflow."""

    __tablename__ = "system_probes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    message: Mapped[str] = mapped_column(Text, nullable=False)
    worker_identity: Mapped[str] = mapped_column(String(200), nullable=False)
