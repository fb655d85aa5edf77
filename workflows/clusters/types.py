"""Inputs and results of the cluster workflows and activities: frozen dataclasses of plain values
(ids as strings, moments as ISO 8601 strings), so histories stay readable and replayable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AttachInput",
    "AttachResult",
    "ClusterRef",
    "CommandOutcome",
    "DetachInput",
    "EnqueueInput",
    "HealthInput",
    "MarkInput",
    "Registered",
    "StateChange",
    "SweepInput",
    "SweepResult",
    "TokenReissued",
    "ValidationCheck",
    "ValidationVerdict",
    "WaitCommandInput",
]


@dataclass(frozen=True)
class AttachInput:
    cluster_id: str
    org_id: str
    token_expires_at: str  # ISO 8601; a `token_reissued` signal moves it
    command_timeout_s: int = 600  # how long the agent gets for provision, and again for validate


@dataclass(frozen=True)
class Registered:
    """Signal `registered`: the agent redeemed its token (``registration_id``: the credential minted for it)."""

    registration_id: str
    summary: str = ""


@dataclass(frozen=True)
class TokenReissued:
    """Signal `token_reissued`: a new token, with a new expiry."""

    expires_at: str


@dataclass(frozen=True)
class AttachResult:
    state: str  # attached | failed | abandoned (the cluster is being detached)
    reason: str


@dataclass(frozen=True)
class ClusterRef:
    cluster_id: str
    org_id: str


@dataclass(frozen=True)
class MarkInput:
    cluster_id: str
    org_id: str
    reason: str


@dataclass(frozen=True)
class EnqueueInput:
    cluster_id: str
    org_id: str
    kind: str
    dedupe_key: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitCommandInput:
    command_id: str
    org_id: str
    deadline: str  # ISO 8601: the activity answers timed_out after this (retries keep the same deadline)
    poll_s: float = 0.5


@dataclass(frozen=True)
class CommandOutcome:
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class ValidationCheck:
    cluster_id: str
    org_id: str
    result: dict[str, Any]


@dataclass(frozen=True)
class ValidationVerdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetachInput:
    cluster_id: str
    org_id: str
    jobs: str = "drain"  # drain | cancel
    cleanup_timeout_s: int = 120


@dataclass(frozen=True)
class HealthInput:
    """Heartbeats are due every ``interval_s``; a cluster silent for ``ttl_s`` + ``grace_s`` is disconnected.
    For the first ``ttl_s`` + ``restart_grace_s`` after a worker starts, nobody is (see the sweep activity)."""

    interval_s: float = 15.0
    ttl_s: float = 45.0  # 3 x the heartbeat interval
    grace_s: float = 30.0
    restart_grace_s: float = 90.0  # 2 x TTL
    sweeps_per_run: int = 240  # then continue-as-new (1 h at 15 s), so the history stays short
    recent: list[StateChange] = field(default_factory=list)


@dataclass(frozen=True)
class SweepInput:
    ttl_s: float
    grace_s: float
    restart_grace_s: float


@dataclass(frozen=True)
class StateChange:
    cluster_id: str
    org_id: str
    to_state: str
    reason: str
    at: str = ""


@dataclass(frozen=True)
class SweepResult:
    disconnected: list[StateChange] = field(default_factory=list)
    skipped_for_restart: bool = False
