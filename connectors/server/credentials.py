"""Agent credentials: ``mca_<8 hex>_<secret>``, one per cluster, stored as SHA-256, prefix visible.

* Registration mints one (and revokes any older one of the cluster).
* Rotation is asked for by an admin and completed by the agent's next heartbeat: the current
  credential gets ``expires_at = now + 10 min`` (the overlap); the heartbeat authenticated with it
  mints the new credential and returns it once in ``HeartbeatResponse.new_credential``. Nothing but
  hashes is ever stored, and a lost response heals itself: the next heartbeat with the old
  credential replaces the never-used new one with another.
* Revocation (detach, or an admin) makes the next agent call answer 401 ``credential_revoked``.

``agent_session`` is how every agent call reaches the database: it looks the credential up across
tenants (the credential names the org only after the lookup), then narrows the same transaction to
that org, so the rest of the call runs under row-level security like any tenant request.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import CREDENTIAL_PREFIX, ErrorCode
from connectors.server.clusters import ClusterState
from connectors.server.models import Cluster, ClusterCredential
from tenants import audit
from tenants.db import unscoped_session, utcnow
from tenants.errors import Conflict, NotFound, Unauthenticated
from tenants.permissions import Permission
from tenants.scope import TenantScope
from tenants.security import hash_token, new_token, tokens_equal

__all__ = [
    "ROTATION_OVERLAP",
    "AgentIdentity",
    "agent_session",
    "deliver_rotation",
    "format_credential",
    "mint_credential",
    "narrow_to_org",
    "parse_credential",
    "request_rotation",
    "revoke_agent_credentials",
    "revoke_credentials",
]

ROTATION_OVERLAP = timedelta(minutes=10)
# last_used_at is written at most this often, so the heartbeat hot path does not turn reads into writes.
_TOUCH_EVERY = timedelta(seconds=60)
_NARROW = text("select set_config('app.org_id', :org_id, true), set_config('app.unscoped', 'off', true)")

_HOW_TO_RECONNECT = ("To connect it again, re-issue a registration token on the cluster's page and run the new "
                     "install command.")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    org_id: uuid.UUID
    cluster_id: uuid.UUID
    credential_id: uuid.UUID
    prefix: str
    rotating: bool  # an admin asked for a new credential; the next heartbeat delivers it


def format_credential(prefix_id: str, secret: str) -> str:
    return f"{CREDENTIAL_PREFIX}{prefix_id}_{secret}"


def parse_credential(raw: str) -> str | None:
    """``mca_<8 hex>_<secret>`` -> the visible prefix ``mca_<8 hex>``; ``None`` when malformed."""
    if not raw.startswith(CREDENTIAL_PREFIX):
        return None
    prefix_id, sep, secret = raw[len(CREDENTIAL_PREFIX):].partition("_")
    if not sep or len(prefix_id) != 8 or len(secret) < 20:
        return None
    return CREDENTIAL_PREFIX + prefix_id


async def narrow_to_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    """From here on this (so far unscoped) transaction sees only ``org_id``'s rows."""
    await session.execute(_NARROW, {"org_id": str(org_id)})


def _unauthenticated(code: ErrorCode, message: str) -> Unauthenticated:
    return Unauthenticated(message, code=code.value)


# The lookup also narrows the transaction to the credential's org (set_config in the select list runs for
# the one row the unique prefix finds), saving a round trip on the heartbeat hot path. If the secret then
# does not match, the call fails and the transaction is rolled back.
_LOOKUP = text(
    "SELECT id, org_id, cluster_id, prefix, secret_hash, expires_at, revoked_at, last_used_at, "
    "set_config('app.org_id', org_id::text, true) AS narrowed_org, "
    "set_config('app.unscoped', 'off', true) AS narrowed "
    "FROM cluster_credentials WHERE prefix = :prefix"
)


async def _authenticate(session: AsyncSession, raw: str, now: datetime) -> AgentIdentity:
    """Check the bearer; on success the transaction sees only the credential's org from here on."""
    prefix = parse_credential(raw)
    cred = None
    if prefix is not None:
        cred = (await session.execute(_LOOKUP, {"prefix": prefix})).first()
    if cred is None or not tokens_equal(cred.secret_hash, hash_token(raw)):
        raise _unauthenticated(ErrorCode.CREDENTIAL_INVALID,
                               "This agent credential is not known to this server (wrong server URL, or a "
                               "credential from another installation). " + _HOW_TO_RECONNECT)
    if cred.revoked_at is not None:
        raise _unauthenticated(ErrorCode.CREDENTIAL_REVOKED,
                               "This cluster's agent credential was revoked (the cluster was detached, or an admin "
                               "revoked it, or the agent was registered again elsewhere). Stop this agent. "
                               + _HOW_TO_RECONNECT)
    if cred.expires_at is not None and cred.expires_at <= now:
        raise _unauthenticated(ErrorCode.CREDENTIAL_REVOKED,
                               "This agent credential was rotated and its overlap period has ended. "
                               + _HOW_TO_RECONNECT)
    if cred.last_used_at is None or now - cred.last_used_at >= _TOUCH_EVERY:
        await session.execute(update(ClusterCredential).where(ClusterCredential.id == cred.id)
                              .values(last_used_at=now))
    return AgentIdentity(org_id=cred.org_id, cluster_id=cred.cluster_id, credential_id=cred.id, prefix=cred.prefix,
                         rotating=cred.expires_at is not None)


@asynccontextmanager
async def agent_session(
    sessions: async_sessionmaker[AsyncSession], bearer: str | None, *, now: datetime | None = None
) -> AsyncIterator[tuple[AsyncSession, AgentIdentity]]:
    """One transaction for one agent call: authenticate, then work inside the credential's org."""
    if not bearer:
        raise _unauthenticated(ErrorCode.CREDENTIAL_INVALID,
                               "Send the agent credential as 'Authorization: Bearer mca_...'.")
    async with unscoped_session(sessions, reason="an agent credential names its org only after the lookup") as s:
        agent = await _authenticate(s, bearer, now or utcnow())  # narrows the transaction to the agent's org
        yield s, agent


async def mint_credential(
    session: AsyncSession, *, org_id: uuid.UUID, cluster_id: uuid.UUID, now: datetime
) -> tuple[uuid.UUID, str]:
    """A new credential for the cluster: its id and the whole secret (shown to the agent once)."""
    for _attempt in range(3):  # the 8-hex prefix is unique platform-wide; a clash (1 in 4e9) retries
        prefix_id = secrets.token_hex(4)
        raw = format_credential(prefix_id, new_token())
        cred = ClusterCredential(org_id=org_id, cluster_id=cluster_id, prefix=CREDENTIAL_PREFIX + prefix_id,
                                 secret_hash=hash_token(raw), created_at=now)
        try:
            async with session.begin_nested():
                session.add(cred)
                await session.flush()
        except IntegrityError:
            continue
        return cred.id, raw
    raise RuntimeError("could not allocate a unique credential prefix")  # pragma: no cover


async def revoke_credentials(session: AsyncSession, cluster_id: uuid.UUID, *, now: datetime) -> int:
    """Revoke every live credential of the cluster; returns how many."""
    result = await session.execute(
        update(ClusterCredential)
        .where(ClusterCredential.cluster_id == cluster_id, ClusterCredential.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ClusterCredential.id)
    )
    return len(result.all())


async def _cluster(scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID) -> Cluster:
    cluster = (
        await session.execute(select(Cluster).where(Cluster.org_id == scope.org_id, Cluster.id == cluster_id))
    ).scalar_one_or_none()
    if cluster is None:
        raise NotFound("No such cluster in this organization.")
    return cluster


async def request_rotation(
    scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *, ip: str | None = None,
    now: datetime | None = None,
) -> datetime:
    """Ask for a new agent credential; returns until when the current one keeps working."""
    scope.require(Permission.CLUSTERS_MANAGE)
    now = now or utcnow()
    cluster = await _cluster(scope, session, cluster_id)
    if cluster.state in (ClusterState.DETACHING, ClusterState.DETACHED):
        raise Conflict(f"The cluster is {cluster.state}: it has no agent credential to rotate.")
    live = (
        await session.execute(
            select(ClusterCredential)
            .where(ClusterCredential.cluster_id == cluster_id, ClusterCredential.revoked_at.is_(None))
            .with_for_update()
        )
    ).scalars().all()
    current = [c for c in live if c.expires_at is None]
    if not current:
        if any(c.expires_at is not None and c.expires_at > now for c in live):
            raise Conflict("A rotation is already under way: the agent receives its new credential with its next "
                           "heartbeat.")
        raise Conflict("The agent has not registered yet, so there is no credential to rotate.")
    until = now + ROTATION_OVERLAP
    for c in current:
        c.expires_at = until
    await session.flush()
    await audit.record(session, action="cluster.credential_rotated", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster_id, target_display=cluster.name, ip=ip,
                       details={"old_prefixes": [c.prefix for c in current], "old_valid_until": until.isoformat()})
    return until


async def deliver_rotation(session: AsyncSession, agent: AgentIdentity, *, now: datetime) -> str | None:
    """In a heartbeat made with a credential being rotated: the new credential, or ``None`` when the agent
    already switched to it. Replaces a new credential the agent never used (its delivery was lost)."""
    if not agent.rotating:
        return None
    # Serialises two heartbeats racing with the same old credential.
    await session.execute(select(ClusterCredential.id).where(ClusterCredential.id == agent.credential_id)
                          .with_for_update())
    newer = (
        await session.execute(
            select(ClusterCredential).where(
                ClusterCredential.cluster_id == agent.cluster_id, ClusterCredential.revoked_at.is_(None),
                ClusterCredential.expires_at.is_(None),
            )
        )
    ).scalars().all()
    if any(c.last_used_at is not None for c in newer):
        return None
    for c in newer:
        c.revoked_at = now
    await session.flush()
    _, raw = await mint_credential(session, org_id=agent.org_id, cluster_id=agent.cluster_id, now=now)
    return raw


async def revoke_agent_credentials(
    scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *, ip: str | None = None
) -> int:
    """An admin cuts the agent off: its next call gets 401 ``credential_revoked`` and it stops."""
    scope.require(Permission.CLUSTERS_MANAGE)
    cluster = await _cluster(scope, session, cluster_id)
    count = await revoke_credentials(session, cluster_id, now=utcnow())
    await audit.record(session, action="cluster.credential_revoked", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster_id, target_display=cluster.name, ip=ip,
                       details={"revoked": count})
    return count
