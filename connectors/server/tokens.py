"""Registration tokens: random, org-scoped, single use, expiring, stored only as SHA-256.

A token is shown once (in the install command right after the cluster is created or the token
re-issued). ``register_agent`` redeems it with one conditional ``UPDATE ... RETURNING``: of any
number of concurrent redemptions exactly one sees ``used_at IS NULL`` and wins; the others wait for
its row lock, re-check, and get ``token_invalid``. The same transaction records the agent's facts
and mints the cluster's credential, so a token is never consumed without a credential to show for it.
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.protocol import AgentFacts, ErrorCode
from connectors.server.clusters import ClusterState, transition
from connectors.server.credentials import mint_credential, narrow_to_org, revoke_credentials
from connectors.server.models import Cluster, RegistrationToken
from tenants import audit
from tenants.db import unscoped_session, utcnow
from tenants.errors import Conflict, NotFound, Unauthenticated
from tenants.members import acting_user_id
from tenants.permissions import Permission
from tenants.scope import TenantScope
from tenants.security import hash_token, new_token

__all__ = [
    "TOKEN_PREFIX",
    "InstallCommands",
    "IssuedToken",
    "Registration",
    "install_commands",
    "issue_token",
    "register_agent",
    "reissue_token",
    "token_is_installable",
]

TOKEN_PREFIX = "mcr_"  # noqa: S105 - the visible prefix, not a secret
AGENT_NAMESPACE = "metacloud-agent"
HELM_CHART = "oci://ghcr.io/metacloud/charts/metacloud-agent"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: uuid.UUID
    token: str  # shown once
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Registration:
    org_id: uuid.UUID
    cluster_id: uuid.UUID
    registration_id: uuid.UUID  # the new credential's id: names this registration (command dedupe keys)
    credential: str
    summary: str  # the agent's facts in a line, for the cluster's history


@dataclass(frozen=True, slots=True)
class InstallCommands:
    kubectl: str
    helm: str
    bare_host: str
    manifest_url: str


def install_commands(public_url: str, token: str) -> InstallCommands:
    base = public_url.rstrip("/")
    url = f"{base}/agent/v1/install/{token}.yaml"
    return InstallCommands(
        kubectl=f"kubectl apply -f {url}",
        helm=(f"helm install metacloud-agent {HELM_CHART} --namespace {AGENT_NAMESPACE} --create-namespace "
              f"--set server={shlex.quote(base)} --set token={shlex.quote(token)}"),
        bare_host=f"metacloud-agent --server {shlex.quote(base)} --token {shlex.quote(token)} --runtime local",
        manifest_url=url,
    )


async def issue_token(
    session: AsyncSession, *, org_id: uuid.UUID, cluster_id: uuid.UUID, ttl: timedelta,
    created_by: uuid.UUID | None = None, now: datetime | None = None,
) -> IssuedToken:
    """A new token for the cluster; any unused older one stops working."""
    now = now or utcnow()
    await session.execute(
        update(RegistrationToken)
        .where(RegistrationToken.cluster_id == cluster_id, RegistrationToken.used_at.is_(None),
               RegistrationToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    token = TOKEN_PREFIX + new_token()
    row = RegistrationToken(org_id=org_id, cluster_id=cluster_id, token_hash=hash_token(token), expires_at=now + ttl,
                            created_by=created_by, created_at=now)
    session.add(row)
    await session.flush()
    return IssuedToken(id=row.id, token=token, expires_at=row.expires_at)


async def reissue_token(
    scope: TenantScope, session: AsyncSession, cluster_id: uuid.UUID, *, ttl: timedelta, ip: str | None = None
) -> IssuedToken:
    """A fresh install command for the cluster (the old token is revoked). A cluster that failed because
    its token expired goes back to ``pending``."""
    scope.require(Permission.CLUSTERS_MANAGE)
    cluster = (
        await session.execute(select(Cluster).where(Cluster.org_id == scope.org_id, Cluster.id == cluster_id))
    ).scalar_one_or_none()
    if cluster is None:
        raise NotFound("No such cluster in this organization.")
    if cluster.state in (ClusterState.DETACHING, ClusterState.DETACHED):
        raise Conflict(f"The cluster is {cluster.state}; connect a new cluster instead.")
    issued = await issue_token(session, org_id=scope.org_id, cluster_id=cluster_id, ttl=ttl,
                               created_by=await acting_user_id(session, scope))
    await transition(session, cluster_id, to=ClusterState.PENDING.value,
                     reason="registration token re-issued; waiting for the agent to register",
                     allowed_from=[ClusterState.FAILED.value])
    await audit.record(session, action="cluster.token_reissued", actor=scope.principal, org_id=scope.org_id,
                       target_kind="cluster", target_id=cluster_id, target_display=cluster.name, ip=ip,
                       details={"expires_at": issued.expires_at.isoformat()})
    return issued


async def token_is_installable(sessions: async_sessionmaker[AsyncSession], token: str) -> bool:
    """Whether ``token`` can still register an agent (known, unused, not revoked, not expired)."""
    async with unscoped_session(sessions, reason="an install token names its org only after the lookup") as s:
        found = (
            await s.execute(
                select(RegistrationToken.id).where(
                    RegistrationToken.token_hash == hash_token(token), RegistrationToken.used_at.is_(None),
                    RegistrationToken.revoked_at.is_(None), RegistrationToken.expires_at > utcnow(),
                )
            )
        ).first()
    return found is not None


# One statement decides the winner; now() is the database's clock, the same for every gateway replica.
_REDEEM = text(
    "UPDATE registration_tokens SET used_at = now() "
    "WHERE token_hash = :h AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now() "
    "RETURNING id, org_id, cluster_id"
)
_WHY = text("SELECT used_at, revoked_at, expires_at <= now() AS expired FROM registration_tokens WHERE token_hash = :h")

_NEW_COMMAND = "Re-issue a registration token on the cluster's page in Metacloud and run the new install command."


async def _refusal(session: AsyncSession, token_hash: str) -> Unauthenticated:
    why = (await session.execute(_WHY, {"h": token_hash})).first()
    if why is None:
        return Unauthenticated("This registration token is not known to this server (check the --server URL and "
                               "copy the command again). " + _NEW_COMMAND, code=ErrorCode.TOKEN_INVALID.value)
    if why.used_at is not None:
        return Unauthenticated("This registration token was already used: a token registers one agent, once. "
                               + _NEW_COMMAND, code=ErrorCode.TOKEN_INVALID.value)
    if why.revoked_at is not None:
        return Unauthenticated("This registration token was replaced by a newer one (or the cluster was detached). "
                               + _NEW_COMMAND, code=ErrorCode.TOKEN_INVALID.value)
    return Unauthenticated("This registration token has expired. " + _NEW_COMMAND, code=ErrorCode.TOKEN_EXPIRED.value)


def _summary(facts: AgentFacts) -> str:
    parts = [f"agent {facts.agent_version}", f"runtime {facts.runtime}"]
    if facts.kubernetes_version:
        parts.append(f"Kubernetes {facts.kubernetes_version}")
    if facts.platform:
        parts.append(facts.platform)
    if facts.hostname:
        parts.append(f"host {facts.hostname}")
    return ", ".join(parts)[:300]


async def register_agent(
    sessions: async_sessionmaker[AsyncSession], token: str, facts: AgentFacts, *, now: datetime | None = None
) -> Registration:
    """Redeem ``token`` for the cluster's credential; raises ``Unauthenticated`` (token_invalid/expired)."""
    now = now or utcnow()
    token_hash = hash_token(token)
    async with unscoped_session(sessions, reason="a registration token names its org only after the lookup") as s:
        won = (await s.execute(_REDEEM, {"h": token_hash})).first()
        if won is None:
            raise await _refusal(s, token_hash)
        await narrow_to_org(s, won.org_id)
        cluster = (await s.execute(select(Cluster).where(Cluster.id == won.cluster_id).with_for_update())).scalar_one()
        if cluster.state in (ClusterState.DETACHING, ClusterState.DETACHED):
            raise Unauthenticated(f"This cluster is {cluster.state}. " + _NEW_COMMAND,
                                  code=ErrorCode.TOKEN_INVALID.value)
        # A new registration replaces any earlier agent of this cluster: its credential stops working.
        await revoke_credentials(s, cluster.id, now=now)
        credential_id, credential = await mint_credential(s, org_id=won.org_id, cluster_id=cluster.id, now=now)
        cluster.runtime = facts.runtime[:16]
        cluster.agent_version = facts.agent_version[:32]
        cluster.kubernetes_version = (facts.kubernetes_version or "")[:32] or None
        cluster.registered_at = now
        if cluster.state == ClusterState.PENDING:
            cluster.state_reason = "agent registered; waiting for the attach workflow"
        await s.flush()
    return Registration(org_id=won.org_id, cluster_id=won.cluster_id, registration_id=credential_id, credential=credential,
                        summary=_summary(facts))
