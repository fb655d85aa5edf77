"""Activities of the cluster workflows. Each is idempotent: state changes are compare-and-set
(``connectors.server.clusters.transition``), commands are deduplicated on their key, revocation
and sweeps are conditional updates. A retry after a worker died half-way changes nothing twice.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from connectors.server import commands, health
from connectors.server.clusters import ClusterState, transition
from connectors.server.credentials import revoke_credentials
from connectors.server.jobs.lifecycle import settle_cluster_jobs
from connectors.server.models import Cluster, ClusterInventory, RegistrationToken
from tenants.db import tenant_session, utcnow
from tenants.errors import DomainError, NotFound
from tenants.scope import TenantScope
from workflows.clusters.types import (
    ClusterRef,
    CommandOutcome,
    DetachInput,
    EnqueueInput,
    MarkInput,
    StateChange,
    SweepInput,
    SweepResult,
    ValidationCheck,
    ValidationVerdict,
    WaitCommandInput,
)

__all__ = ["ClusterActivities", "judge_validation"]

S = ClusterState
# From these a registered agent starts (again) to attach; never from detaching/detached.
_ATTACHABLE = [S.PENDING.value, S.FAILED.value, S.ATTACHED.value, S.DISCONNECTED.value]


class ClusterActivities:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sessions = sessions
        self._clock = clock
        # The worker's start stands for the control plane's: see ``sweep_heartbeats``.
        self._started = clock()

    @asynccontextmanager
    async def _session(self, org_id: str, what: str) -> AsyncIterator[AsyncSession]:
        try:
            async with tenant_session(self._sessions, TenantScope.for_system(uuid.UUID(org_id), what)) as s:
                yield s
        except NotFound as exc:  # the cluster was deleted: retrying cannot help
            raise ApplicationError(exc.message, type="NotFound", non_retryable=True) from exc
        except DomainError as exc:
            raise ApplicationError(exc.message, type=type(exc).__name__, non_retryable=True) from exc

    @activity.defn(name="clusters.mark-attaching")
    async def mark_attaching(self, inp: MarkInput) -> bool:
        """True when the cluster is attaching (now, or already: a retry); False when it is being detached."""
        async with self._session(inp.org_id, "clusters.attach") as s:
            await transition(s, uuid.UUID(inp.cluster_id), to=S.ATTACHING.value, reason=inp.reason,
                             allowed_from=_ATTACHABLE)
            state = await _state(s, inp.cluster_id)
        return state == S.ATTACHING

    @activity.defn(name="clusters.mark-attached")
    async def mark_attached(self, inp: MarkInput) -> bool:
        """Exactly once: only ``attaching`` becomes ``attached``; a retry finds it done and returns True."""
        async with self._session(inp.org_id, "clusters.attach") as s:
            await transition(s, uuid.UUID(inp.cluster_id), to=S.ATTACHED.value, reason=inp.reason,
                             allowed_from=[S.ATTACHING.value])
            state = await _state(s, inp.cluster_id)
        return state == S.ATTACHED

    @activity.defn(name="clusters.mark-failed")
    async def mark_failed(self, inp: MarkInput) -> bool:
        """``pending`` or ``attaching`` -> ``failed`` (an attached cluster whose new token expires stays attached)."""
        async with self._session(inp.org_id, "clusters.attach") as s:
            changed = await transition(s, uuid.UUID(inp.cluster_id), to=S.FAILED.value, reason=inp.reason,
                                       allowed_from=[S.PENDING.value, S.ATTACHING.value])
        return changed is not None

    @activity.defn(name="clusters.enqueue-command")
    async def enqueue_command(self, inp: EnqueueInput) -> str:
        async with self._session(inp.org_id, "clusters.commands") as s:
            command_id = await commands.enqueue(s, org_id=uuid.UUID(inp.org_id), cluster_id=uuid.UUID(inp.cluster_id),
                                                kind=inp.kind, dedupe_key=inp.dedupe_key, payload=inp.payload)
        return str(command_id)

    @activity.defn(name="clusters.wait-command")
    async def wait_command(self, inp: WaitCommandInput) -> CommandOutcome:
        """Poll the command's row until the agent reported its result (or the deadline passed), heartbeating
        so a worker that dies here is noticed within the heartbeat timeout and the wait resumes elsewhere."""
        deadline = datetime.fromisoformat(inp.deadline)
        while True:
            async with self._session(inp.org_id, "clusters.commands") as s:
                view = await commands.get_command(s, uuid.UUID(inp.command_id))
            if view.done:
                return CommandOutcome(ok=view.state == "succeeded", result=view.result or {}, error=view.error)
            if utcnow() >= deadline:
                return CommandOutcome(ok=False, timed_out=True,
                                      error=f"the agent did not complete '{view.kind}' in time (state {view.state}, "
                                            f"{view.attempt} deliveries): is it running and able to reach the server?")
            activity.heartbeat(view.state)
            await asyncio.sleep(inp.poll_s)

    @activity.defn(name="clusters.check-validation")
    async def check_validation(self, inp: ValidationCheck) -> ValidationVerdict:
        async with self._session(inp.org_id, "clusters.attach") as s:
            inv = await s.get(ClusterInventory, uuid.UUID(inp.cluster_id))
        reported = inv.gpus_by_type if inv is not None else {}
        return judge_validation(inp.result, reported)

    @activity.defn(name="clusters.sweep-heartbeats")
    async def sweep_heartbeats(self, inp: SweepInput) -> SweepResult:
        """Disconnect attached clusters silent for TTL + grace.

        Right after a (re)start of the control plane no heartbeat could land for a while, so every
        cluster looks silent. For the first TTL + restart grace of this worker's life the sweep therefore
        judges no one: a cluster is disconnected only after it failed to heartbeat for a full window in
        which we were up.
        """
        uptime = self._clock() - self._started
        if uptime < inp.ttl_s + inp.restart_grace_s:
            return SweepResult(skipped_for_restart=True)
        now = utcnow()
        gone = await health.disconnect_stale(self._sessions, cutoff=now - timedelta(seconds=inp.ttl_s + inp.grace_s),
                                             now=now)
        return SweepResult(disconnected=[StateChange(cluster_id=str(d.cluster_id), org_id=str(d.org_id),
                                                     to_state=S.DISCONNECTED.value, reason=d.reason,
                                                     at=now.isoformat()) for d in gone])

    @activity.defn(name="clusters.agent-online")
    async def agent_online(self, inp: ClusterRef) -> bool:
        """Whether the agent heartbeated within the last 45 s (worth sending it a cleanup command)."""
        async with self._session(inp.org_id, "clusters.detach") as s:
            last = (await s.execute(select(Cluster.last_heartbeat_at)
                                    .where(Cluster.id == uuid.UUID(inp.cluster_id)))).scalar_one_or_none()
        return last is not None and utcnow() - last < timedelta(seconds=45)

    @activity.defn(name="clusters.settle-jobs")
    async def settle_jobs(self, inp: DetachInput) -> int:
        """Cancel the cluster's active jobs, or let them finish (drain); returns how many still run.

        ``cancel`` sends a ``cancel_job`` command per active job and returns at once; ``drain`` checks
        every 10 s, heartbeating, until none is left (the scheduler places nothing on a cluster that is not
        attached, so the count only falls). Safe to repeat: cancelling a finished job does nothing.
        """
        cluster_id = uuid.UUID(inp.cluster_id)
        while True:
            async with self._session(inp.org_id, "clusters.detach") as s:
                left = await settle_cluster_jobs(s, cluster_id, mode=inp.jobs)
            if left == 0 or inp.jobs == "cancel":
                return left
            activity.heartbeat(left)
            await asyncio.sleep(10)

    @activity.defn(name="clusters.revoke-access")
    async def revoke_access(self, inp: ClusterRef) -> int:
        """The agent's credentials and any unused registration token stop working."""
        now = utcnow()
        cluster_id = uuid.UUID(inp.cluster_id)
        async with self._session(inp.org_id, "clusters.detach") as s:
            count = await revoke_credentials(s, cluster_id, now=now)
            await s.execute(update(RegistrationToken)
                            .where(RegistrationToken.cluster_id == cluster_id, RegistrationToken.used_at.is_(None),
                                   RegistrationToken.revoked_at.is_(None))
                            .values(revoked_at=now))
        return count

    @activity.defn(name="clusters.mark-detached")
    async def mark_detached(self, inp: MarkInput) -> bool:
        async with self._session(inp.org_id, "clusters.detach") as s:
            await transition(s, uuid.UUID(inp.cluster_id), to=S.DETACHED.value, reason=inp.reason,
                             allowed_from=[S.DETACHING.value])
            state = await _state(s, inp.cluster_id)
        return state == S.DETACHED


async def _state(session: AsyncSession, cluster_id: str) -> str:
    state = (await session.execute(select(Cluster.state).where(Cluster.id == uuid.UUID(cluster_id)))).scalar_one_or_none()
    if state is None:
        raise NotFound("the cluster no longer exists")
    return str(state)


def _int_map(value: Any) -> dict[str, int]:
    if isinstance(value, dict):
        return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float)}
    return {}


def _per_resource(counts: dict[str, int]) -> dict[str, int]:
    """``{"nvidia.com/gpu|A100": 8, "nvidia.com/gpu|H100": 8}`` -> ``{"nvidia.com/gpu": 16}``."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        resource = key.split("|", 1)[0]
        out[resource] = out.get(resource, 0) + n
    return out


def judge_validation(result: dict[str, Any], reported: dict[str, Any]) -> ValidationVerdict:
    """Judge the agent's ``validate`` result against the inventory it reports.

    Understood keys (others are ignored): ``problems`` (sentences), ``permissions`` ({"create jobs in
    metacloud-jobs": true, ...}), ``missing_permissions`` (list), ``gpus`` ({"nvidia.com/gpu|A100": 8}).
    Problems and missing permissions fail the attach; a GPU count that differs from the inventory is
    noted in the reason (the device plugin may still be starting) but does not.
    """
    problems = [str(p) for p in result.get("problems") or []]
    missing = [str(p) for p in result.get("missing_permissions") or []]
    missing += [str(k) for k, ok in (result.get("permissions") or {}).items() if ok is False and k not in missing]
    if missing and not problems:
        problems.append("missing permission: " + ", ".join(missing))
    if missing:
        problems.append("apply the install manifest's RBAC again, or give the agent's service account these rights")
    notes: list[str] = []
    if "gpus" in result:  # else the agent did not check GPUs: nothing to compare
        detected = _per_resource(_int_map(result.get("gpus")))
        inventory = _per_resource({str(k): int((v or {}).get("total", 0)) for k, v in (reported or {}).items()})
        for resource in sorted(set(detected) | set(inventory)):
            if detected.get(resource, 0) != inventory.get(resource, 0):
                notes.append(f"{resource}: nodes advertise {inventory.get(resource, 0)}, validation detected "
                             f"{detected.get(resource, 0)}")
    return ValidationVerdict(ok=not problems, problems=problems, notes=notes)
