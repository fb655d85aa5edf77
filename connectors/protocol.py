"""The agent protocol, version 1: every message between an agent and the gateway.

The agent only dials out (HTTPS). Paths, all under ``/agent/v1``:

=====================================  ==========================  =============================
call                                   body                        answer
=====================================  ==========================  =============================
``POST /agent/v1/register``            ``RegisterRequest``         ``RegisterResponse``
``POST /agent/v1/heartbeat``           ``Heartbeat``               ``HeartbeatResponse``
``GET  /agent/v1/commands?wait=25``    -                           ``CommandBatch`` (long poll)
``POST /agent/v1/commands/{id}/ack``   -                           204
``POST /agent/v1/commands/{id}/result````CommandResult``            204
``POST /agent/v1/job-reports``         ``JobReportBatch``          ``JobReportAnswer``
``GET  /agent/v1/install/{token}.yaml``-                           Kubernetes manifests
=====================================  ==========================  =============================

Every call but ``register`` and ``install`` carries ``Authorization: Bearer mca_...`` (the
per-cluster credential). Every call carries ``X-Metacloud-Agent-Version``; an agent older than
``MIN_AGENT_VERSION`` gets ``426`` with a problem body whose ``code`` is ``agent_upgrade_required``
and a ``detail`` that says how to upgrade. Errors are ``application/problem+json`` with a ``code``
from ``ErrorCode`` so the agent can print one clear line per problem.

Job reports are pushed, not asked for: the agent watches the jobs it started and posts each change
of (phase, reason, exit code) at once, and the unchanged status again every ``JOB_REPORT_REFRESH_S``
so the gateway knows its picture is current. A gateway that has heard nothing for ``JOB_REPORT_FRESH_S``
falls back to asking with ``job_status`` commands, which is also all an agent from before job reports
(or one started with reports off) gets: both kinds of agent work with both kinds of gateway.

This module imports nothing of the control plane: the agent ships with it alone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "AGENT_VERSION",
    "AGENT_VERSION_HEADER",
    "JOB_PHASES",
    "JOB_REPORT_FRESH_S",
    "JOB_REPORT_INTERVAL_S",
    "JOB_REPORT_MAX_BATCH",
    "JOB_REPORT_REFRESH_S",
    "MIN_AGENT_VERSION",
    "PROTOCOL_VERSION",
    "AgentFacts",
    "Command",
    "CommandBatch",
    "CommandKind",
    "CommandResult",
    "ErrorCode",
    "GpuCapacity",
    "Heartbeat",
    "HeartbeatResponse",
    "Inventory",
    "JobReport",
    "JobReportAccepted",
    "JobReportAnswer",
    "JobReportBatch",
    "JobReportRejected",
    "JobSpec",
    "NodeInventory",
    "RegisterRequest",
    "RegisterResponse",
    "Taint",
    "parse_version",
]

PROTOCOL_VERSION = "v1"
AGENT_VERSION = "0.1.0"
MIN_AGENT_VERSION = "0.1.0"
AGENT_VERSION_HEADER = "X-Metacloud-Agent-Version"
CREDENTIAL_PREFIX = "mca_"
JOB_REPORT_INTERVAL_S = 2.0  # the agent looks at its jobs this often and posts what changed
JOB_REPORT_REFRESH_S = 5.0  # an unchanged status is posted again this often (the reports' own heartbeat)
# The gateway trusts its record while the last report is this recent (three missed looks plus a lost
# refresh and then some); older, it asks with a ``job_status`` command.
JOB_REPORT_FRESH_S = 3 * JOB_REPORT_INTERVAL_S + 10.0
JOB_REPORT_MAX_BATCH = 500  # reports per POST; the agent sends more in several calls
# A job's phase on the runtime; "unknown": the runtime no longer has it. The agent's runtimes use these words.
JOB_PHASES = ("pending", "running", "succeeded", "failed", "unknown")


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.2.3"`` -> ``(1, 2, 3)``; anything unparsable sorts as oldest."""
    try:
        return tuple(int(part) for part in text.split("+")[0].split("-")[0].split("."))
    except ValueError:
        return (0,)


class ErrorCode(StrEnum):
    TOKEN_INVALID = "token_invalid"  # noqa: S105 - an error code, not a secret; unknown, already used, or revoked registration token
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - an error code, not a secret
    CREDENTIAL_INVALID = "credential_invalid"
    CREDENTIAL_REVOKED = "credential_revoked"  # the cluster was detached or its credential revoked: stop
    UPGRADE_REQUIRED = "agent_upgrade_required"
    INVALID = "invalid_request"


class Struct(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """Unknown fields are ignored, so a newer peer can add fields without breaking an older one."""


class AgentFacts(Struct):
    runtime: str  # "kubernetes" | "local"
    agent_version: str
    protocol_version: str = PROTOCOL_VERSION
    kubernetes_version: str | None = None
    hostname: str = ""
    platform: str = ""  # e.g. "linux/amd64", or the Kubernetes distribution when known


class RegisterRequest(Struct):
    token: str
    facts: AgentFacts


class RegisterResponse(Struct):
    cluster_id: str
    credential: str  # shown once; the agent stores it (Kubernetes Secret or a 0600 file)
    heartbeat_interval_s: int = 15
    command_wait_s: int = 25
    server_time: datetime | None = None


class Taint(Struct):
    key: str
    effect: str  # NoSchedule | PreferNoSchedule | NoExecute
    value: str | None = None


class GpuCapacity(Struct):
    """GPUs of one resource name on one node, e.g. ``nvidia.com/gpu`` or ``nvidia.com/mig-1g.5gb``."""

    resource: str
    model: str = ""  # from node labels (nvidia.com/gpu.product), "" when unknown
    allocatable: int = 0
    allocated: int = 0


class NodeInventory(Struct):
    name: str
    ready: bool = True
    cpu_allocatable_millis: int = 0
    cpu_allocated_millis: int = 0
    memory_allocatable_bytes: int = 0
    memory_allocated_bytes: int = 0
    gpus: list[GpuCapacity] = msgspec.field(default_factory=list)
    taints: list[Taint] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)


class Inventory(Struct):
    nodes: list[NodeInventory] = msgspec.field(default_factory=list)
    storage_classes: list[str] = msgspec.field(default_factory=list)
    storage_total_bytes: int = 0
    storage_allocated_bytes: int = 0
    kubernetes_version: str | None = None


class Heartbeat(Struct):
    sent_at: datetime
    agent_version: str
    inventory: Inventory


class HeartbeatResponse(Struct):
    server_time: datetime
    heartbeat_interval_s: int = 15
    # Set once after an admin rotated the credential: the agent stores it and uses it from the next
    # call on; the old one keeps working for a short overlap (10 min from the rotation).
    new_credential: str | None = None


class CommandKind(StrEnum):
    PROVISION = "provision"  # namespace, service account, quota, priority classes
    VALIDATE = "validate"  # permissions and GPU detection
    START_JOB = "start_job"
    CANCEL_JOB = "cancel_job"
    FETCH_LOGS = "fetch_logs"
    CLEANUP = "cleanup"  # detach: remove what provision created
    JOB_STATUS = "job_status"  # payload {"job_id"}: the runtime's JobStatus as a dict


class JobSpec(Struct):
    """What ``start_job`` carries: enough for either runtime."""

    job_id: str
    name: str
    image: str | None = None  # Kubernetes
    command: list[str] = msgspec.field(default_factory=list)
    args: list[str] = msgspec.field(default_factory=list)
    env: dict[str, str] = msgspec.field(default_factory=dict)
    cpu_millis: int = 1000
    memory_bytes: int = 1 << 30
    gpus: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = msgspec.field(default_factory=dict)
    tolerations: list[Taint] = msgspec.field(default_factory=list)
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    max_runtime_s: int | None = None
    priority_class: str | None = None  # Kubernetes PriorityClass name, e.g. "metacloud-normal"


class Command(Struct):
    id: str
    kind: str  # a CommandKind value; unknown kinds are answered with an error result, never a crash
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    attempt: int = 1
    lease_expires_at: datetime | None = None


class CommandBatch(Struct):
    commands: list[Command] = msgspec.field(default_factory=list)


class CommandResult(Struct):
    ok: bool
    result: dict[str, Any] = msgspec.field(default_factory=dict)
    error: str | None = None


class JobReport(Struct):
    """The runtime's status of one job, as the agent saw it at ``observed_at`` (the agent's clock).

    ``phase`` is one of ``JOB_PHASES``. The gateway ignores a report not newer than the last one it applied for the job, so
    reports may be resent, and may arrive out of order, without harm.
    """

    job_id: str
    phase: str
    observed_at: datetime
    reason: str = ""
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobReportBatch(Struct):
    reports: list[JobReport] = msgspec.field(default_factory=list)


class JobReportAccepted(Struct):
    """Taken: the agent need not send this report again. ``applied`` is False when it was not newer than
    the last one taken; ``state`` is the job's state afterwards; ``done``: the job has ended for the
    control plane, so the agent may stop watching it."""

    job_id: str
    state: str
    applied: bool
    done: bool = False


class JobReportRejected(Struct):
    """Refused for good (``code``: ``invalid`` or ``unknown_job``); resending it would not help."""

    job_id: str
    code: str
    reason: str


class JobReportAnswer(Struct):
    accepted: list[JobReportAccepted] = msgspec.field(default_factory=list)
    rejected: list[JobReportRejected] = msgspec.field(default_factory=list)
