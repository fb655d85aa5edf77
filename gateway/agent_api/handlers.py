"""``/agent/v1``: the calls of the cluster agent (see ``connectors.protocol`` for the messages).

These routes are public to the gateway's guards (an agent has no user session or API key): each
handler authenticates the agent's own credential (``agent_session``) or registration token itself.
Every call but ``install`` must carry ``X-Metacloud-Agent-Version``; an older agent than
``MIN_AGENT_VERSION`` gets 426 ``agent_upgrade_required`` before anything else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from temporalio.client import Client

from connectors.protocol import (
    AGENT_VERSION_HEADER,
    MIN_AGENT_VERSION,
    CommandBatch,
    CommandResult,
    ErrorCode,
    Heartbeat,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
    parse_version,
)
from connectors.server import commands, credentials, heartbeats, tokens
from connectors.server.clusters import ClusterState
from connectors.server.notify import notifier_for
from gateway.agent_api.signals import tell_workflows
from gateway.deps import Runtime
from gateway.errors import problem
from tenants.db import utcnow
from tenants.errors import InvalidInput
from workflows.clusters import client as wf
from workflows.clusters.types import StateChange

__all__ = ["HEARTBEAT_INTERVAL_S", "MAX_WAIT_S", "ack_command", "heartbeat", "poll_commands", "register",
           "report_result"]

HEARTBEAT_INTERVAL_S = 15
MAX_WAIT_S = 30  # below the 60 s idle timeout of common proxies and load balancers
_UPGRADE = (
    "This agent ({have}) is older than the oldest this server supports ({need}). Upgrade it: "
    "`kubectl apply -f` the install command from the cluster's page again (or `helm upgrade metacloud-agent ...`); "
    "on a bare host install the new metacloud-agent package and restart it."
)


async def require_agent_version(request: Request[Any, Any, Any]) -> Response[Any] | None:
    version = request.headers.get(AGENT_VERSION_HEADER, "")
    if version and parse_version(version) >= parse_version(MIN_AGENT_VERSION):
        return None
    detail = _UPGRADE.format(have=f"version {version}" if version else "no version header", need=MIN_AGENT_VERSION)
    return problem(426, "Agent upgrade required", detail, code=ErrorCode.UPGRADE_REQUIRED.value,
                   headers={"Upgrade": f"metacloud-agent/{MIN_AGENT_VERSION}"},
                   min_agent_version=MIN_AGENT_VERSION)


_AGENT: dict[str, Any] = {
    "opt": {"public": "agent calls carry their own credential (registration token or mca_ bearer), checked "
                      "in the handler"},
    "before_request": require_agent_version,
    "tags": ["agent"],
}


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@post("/agent/v1/register", status_code=200, summary="Redeem a registration token for the cluster's credential",
      **_AGENT)
async def register(data: JSONBody[RegisterRequest], runtime: Runtime) -> RegisterResponse:
    if not data.token or not data.facts.agent_version or not data.facts.runtime:
        raise InvalidInput("token, facts.runtime and facts.agent_version are required.",
                           code=ErrorCode.INVALID.value)
    now = utcnow()
    reg = await tokens.register_agent(runtime.sessions, data.token, data.facts, now=now)
    queue = runtime.settings.temporal_task_queue

    async def tell(client: Client) -> None:
        await wf.signal_registered(client, queue, cluster_id=reg.cluster_id, org_id=reg.org_id,
                                   registration_id=reg.registration_id, summary=reg.summary, now=now)
        await wf.ensure_health(client, queue)  # rare and idempotent: the sweep runs whenever agents do

    await tell_workflows(runtime, "signal the attach workflow", tell)
    return RegisterResponse(cluster_id=str(reg.cluster_id), credential=reg.credential,
                            heartbeat_interval_s=HEARTBEAT_INTERVAL_S, command_wait_s=25, server_time=now)


@post("/agent/v1/heartbeat", status_code=200, summary="Report liveness and inventory", **_AGENT)
async def heartbeat(request: Request[Any, Any, Any], data: JSONBody[Heartbeat], runtime: Runtime) -> HeartbeatResponse:
    now = utcnow()
    async with credentials.agent_session(runtime.sessions, _bearer(request), now=now) as (s, agent):
        outcome = await heartbeats.record_heartbeat(s, org_id=agent.org_id, cluster_id=agent.cluster_id,
                                                    heartbeat=data, now=now)
        new_credential = await credentials.deliver_rotation(s, agent, now=now) if agent.rotating else None
    queue = runtime.settings.temporal_task_queue
    if outcome.reconnected:
        change = StateChange(cluster_id=str(agent.cluster_id), org_id=str(agent.org_id),
                             to_state=ClusterState.ATTACHED.value, reason=heartbeats.RECONNECT_REASON,
                             at=now.isoformat())
        await tell_workflows(runtime, "tell the health workflow of a reconnect",
                             lambda c: wf.signal_reconnected(c, queue, change))
    elif outcome.state == ClusterState.PENDING and outcome.registered:
        # Registered but the attach workflow has not moved yet: its signal may have been lost. Repeats are
        # ignored by the workflow, and this happens only in the first seconds after registration.
        await tell_workflows(runtime, "re-signal the attach workflow", lambda c: wf.signal_registered(
            c, queue, cluster_id=agent.cluster_id, org_id=agent.org_id, registration_id=agent.credential_id,
            summary="agent heartbeating", now=now))
    return HeartbeatResponse(server_time=now, heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
                             new_credential=new_credential)


@get("/agent/v1/commands", summary="Long-poll for commands (leased for 60 s)", **_AGENT)
async def poll_commands(request: Request[Any, Any, Any], runtime: Runtime, wait: FromQuery[int] = 25) -> CommandBatch:
    """Answers at once when commands wait, else when one is queued (NOTIFY) or after ``wait`` seconds."""
    bearer = _bearer(request)
    wait = max(0, min(wait, MAX_WAIT_S))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    async with credentials.agent_session(runtime.sessions, bearer) as (s, agent):
        leased = await commands.lease(s, agent.cluster_id)
    if leased or wait == 0:
        return CommandBatch(commands=leased)
    notifier = notifier_for(runtime.settings.resolved_app_database_url)
    while True:
        async with notifier.subscribe(commands.channel_for(agent.cluster_id)) as woken:
            # LISTEN is in place: a command committed from here on wakes us, so check the queue once more.
            async with credentials.agent_session(runtime.sessions, bearer) as (s, agent):
                leased = await commands.lease(s, agent.cluster_id)
                expiry = None if leased else await commands.next_lease_expiry(s, agent.cluster_id)
            remaining = deadline - loop.time()
            if leased or remaining <= 0:
                return CommandBatch(commands=leased)
            timeout = remaining if expiry is None else min(remaining, _seconds_until(expiry) + 0.05)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=max(timeout, 0.05))


def _seconds_until(moment: datetime) -> float:
    return max(0.0, (moment - utcnow()).total_seconds())


@post("/agent/v1/commands/{command_id:uuid}/ack", status_code=204, summary="Acknowledge a delivered command",
      **_AGENT)
async def ack_command(request: Request[Any, Any, Any], command_id: FromPath[uuid.UUID], runtime: Runtime) -> None:
    async with credentials.agent_session(runtime.sessions, _bearer(request)) as (s, agent):
        await commands.ack(s, agent.cluster_id, command_id)


@post("/agent/v1/commands/{command_id:uuid}/result", status_code=204, summary="Report a command's outcome",
      **_AGENT)
async def report_result(request: Request[Any, Any, Any], command_id: FromPath[uuid.UUID],
                        data: JSONBody[CommandResult], runtime: Runtime) -> None:
    async with credentials.agent_session(runtime.sessions, _bearer(request)) as (s, agent):
        await commands.complete(s, agent.cluster_id, command_id, data)
