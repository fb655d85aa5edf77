"""The command queue of one cluster's agent.

``pending`` --poll--> ``leased`` (60 s) --ack--> ``acked`` (10 min) --result--> ``succeeded`` | ``failed``

A lease that runs out puts the command back in line for the next poll (``attempt`` + 1); after
``MAX_ATTEMPTS`` deliveries without a result it fails. Polls lease with ``FOR UPDATE SKIP LOCKED``,
so two polls of one cluster (two gateway replicas, or an agent restarted mid-poll) never get the
same command. ``enqueue`` is idempotent on ``dedupe_key`` (workflow activities retry) and issues
``pg_notify('agent_commands_<cluster>')`` in the same transaction: a waiting long poll on any gateway
replica wakes when the insert commits. Lease clocks are the database's ``now()``: one clock for
every replica.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.protocol import Command, CommandResult
from connectors.server.models import AgentCommand
from tenants.db import utcnow
from tenants.errors import NotFound

__all__ = [
    "ACK_LEASE_S",
    "LEASE_S",
    "MAX_ATTEMPTS",
    "CommandView",
    "ack",
    "channel_for",
    "complete",
    "enqueue",
    "get_command",
    "lease",
    "next_lease_expiry",
]

LEASE_S = 60  # a delivered command comes back if not acknowledged within this
ACK_LEASE_S = 600  # an acknowledged command comes back if no result arrives within this
MAX_ATTEMPTS = 5


def channel_for(cluster_id: uuid.UUID) -> str:
    """The NOTIFY channel of one cluster (47 characters: under Postgres' 63)."""
    return f"agent_commands_{cluster_id.hex}"


@dataclass(frozen=True, slots=True)
class CommandView:
    id: uuid.UUID
    kind: str
    state: str
    attempt: int
    result: dict[str, Any] | None
    error: str | None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")


_json = msgspec.json.Encoder()
_ENQUEUE = text(
    """
    WITH ins AS (
        INSERT INTO agent_commands (id, org_id, cluster_id, kind, payload, dedupe_key, state, attempt, created_at)
        VALUES (:id, :org, :c, :kind, CAST(:payload AS JSONB), :key, 'pending', 0, :now)
        ON CONFLICT ON CONSTRAINT uq_agent_commands_cluster_id_dedupe_key DO NOTHING
        RETURNING id
    )
    SELECT id, pg_notify(:ch, '') FROM ins
    """
)


async def enqueue(
    session: AsyncSession,
    *,
    org_id: uuid.UUID,
    cluster_id: uuid.UUID,
    kind: str,
    dedupe_key: str,
    payload: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Queue a command (or find the one queued before under the same ``dedupe_key``); returns its id."""
    # Insert and NOTIFY in one statement (delivered when the transaction commits); a duplicate notifies nobody.
    inserted = (
        await session.execute(_ENQUEUE, {"id": uuid.uuid4(), "org": org_id, "c": cluster_id, "kind": kind,
                                         "payload": _json.encode(payload or {}).decode(), "key": dedupe_key,
                                         "now": utcnow(), "ch": channel_for(cluster_id)})
    ).scalar_one_or_none()
    if inserted is not None:
        return inserted  # type: ignore[no-any-return]
    existing: uuid.UUID = (
        await session.execute(
            select(AgentCommand.id).where(AgentCommand.cluster_id == cluster_id, AgentCommand.dedupe_key == dedupe_key)
        )
    ).scalar_one()
    return existing


# One round trip per poll: commands out of deliveries fail, the rest that are due are leased. A poll
# is the hot path of dispatch latency, so the two updates share a statement.
_LEASE = text(
    """
    WITH due AS (
        SELECT id, attempt >= :max AS exhausted FROM agent_commands
         WHERE cluster_id = :c
           AND (state = 'pending' OR (state IN ('leased', 'acked') AND lease_expires_at < now()))
         ORDER BY created_at LIMIT :n FOR UPDATE SKIP LOCKED
    ), given_up AS (
        UPDATE agent_commands a SET state = 'failed', completed_at = now(), lease_expires_at = NULL,
               error = 'the agent did not complete this command after ' || a.attempt || ' deliveries'
          FROM due WHERE a.id = due.id AND due.exhausted
    )
    UPDATE agent_commands a SET state = 'leased', attempt = a.attempt + 1,
           lease_expires_at = now() + make_interval(secs => :lease), delivered_at = coalesce(a.delivered_at, now())
      FROM due WHERE a.id = due.id AND NOT due.exhausted
    RETURNING a.id, a.kind, a.payload, a.attempt, a.lease_expires_at, a.created_at
    """
)


async def lease(session: AsyncSession, cluster_id: uuid.UUID, *, limit: int = 10) -> list[Command]:
    """Lease up to ``limit`` deliverable commands, oldest first."""
    rows = sorted((await session.execute(_LEASE, {"c": cluster_id, "lease": LEASE_S, "n": limit,
                                                  "max": MAX_ATTEMPTS})).all(),
                  key=lambda r: r.created_at)  # RETURNING keeps no order
    return [Command(id=str(r.id), kind=r.kind, payload=r.payload or {}, attempt=r.attempt,
                    lease_expires_at=r.lease_expires_at) for r in rows]


async def next_lease_expiry(session: AsyncSession, cluster_id: uuid.UUID) -> datetime | None:
    """When the earliest outstanding lease of the cluster runs out (a poll waits no longer than that)."""
    found: datetime | None = (
        await session.execute(
            text("SELECT min(lease_expires_at) FROM agent_commands "
                 "WHERE cluster_id = :c AND state IN ('leased', 'acked')"),
            {"c": cluster_id},
        )
    ).scalar_one_or_none()
    return found


async def _owned(session: AsyncSession, cluster_id: uuid.UUID, command_id: uuid.UUID) -> AgentCommand:
    cmd = (
        await session.execute(
            select(AgentCommand).where(AgentCommand.id == command_id, AgentCommand.cluster_id == cluster_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if cmd is None:
        raise NotFound("No such command for this cluster.")
    return cmd


async def ack(session: AsyncSession, cluster_id: uuid.UUID, command_id: uuid.UUID) -> None:
    """The agent has the command and works on it: the lease grows to ``ACK_LEASE_S``. Repeats are harmless."""
    cmd = await _owned(session, cluster_id, command_id)
    if cmd.state in ("pending", "leased"):
        await session.execute(
            text("UPDATE agent_commands SET state = 'acked', acked_at = now(), "
                 "lease_expires_at = now() + make_interval(secs => :s) WHERE id = :id"),
            {"id": command_id, "s": ACK_LEASE_S},
        )


async def complete(session: AsyncSession, cluster_id: uuid.UUID, command_id: uuid.UUID, result: CommandResult) -> None:
    """Record the outcome. The first result wins; a repeat (a retried POST) changes nothing."""
    cmd = await _owned(session, cluster_id, command_id)
    if cmd.state in ("succeeded", "failed"):
        return
    cmd.state = "succeeded" if result.ok else "failed"
    cmd.result = msgspec.to_builtins(result.result)
    cmd.error = (result.error or ("" if result.ok else "the agent reported a failure without a message"))[:4000] or None
    cmd.completed_at = utcnow()
    cmd.lease_expires_at = None
    await session.flush()


async def get_command(session: AsyncSession, command_id: uuid.UUID) -> CommandView:
    cmd = (await session.execute(select(AgentCommand).where(AgentCommand.id == command_id))).scalar_one_or_none()
    if cmd is None:
        raise NotFound("No such command.")
    return CommandView(id=cmd.id, kind=cmd.kind, state=cmd.state, attempt=cmd.attempt, result=cmd.result,
                       error=cmd.error)
