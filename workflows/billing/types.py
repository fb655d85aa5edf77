"""Inputs and results of the billing workflows and activities: plain values, ids as strings."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_GRACE_S",
    "CloseInput",
    "CloseResult",
    "DunningInput",
    "DunningState",
    "DunningStep",
    "MonthlyCloseInput",
    "OrgsToCloseInput",
    "PlanChangesInput",
    "PushInput",
    "PushResult",
    "StartClosesInput",
    "WriteInput",
    "WrittenResult",
    "close_workflow_id",
    "dunning_workflow_id",
]

DEFAULT_GRACE_S = 2 * 24 * 3600  # late usage may still arrive for two days after the month ends


def close_workflow_id(org_id: str, period: str) -> str:
    return f"billing-close-{org_id}-{period}"


def dunning_workflow_id(invoice_id: str) -> str:
    return f"billing-dunning-{invoice_id}"


@dataclass(frozen=True)
class CloseInput:
    org_id: str
    period: str  # "2026-11"
    grace_s: int = DEFAULT_GRACE_S


@dataclass(frozen=True)
class CloseResult:
    org_id: str
    period: str
    status: str  # nothing_to_bill | paid | open | failed | sent | ...
    invoice_id: str | None = None
    number: str = ""
    total_cents: int = 0
    stripe_invoice_id: str | None = None
    payment: str = "none"


@dataclass(frozen=True)
class WriteInput:
    org_id: str
    period: str
    at: str  # the workflow's clock, ISO


@dataclass(frozen=True)
class WrittenResult:
    invoice_id: str | None
    number: str = ""
    total_cents: int = 0
    collection: str = "card"
    due_at: str | None = None


@dataclass(frozen=True)
class PushInput:
    org_id: str
    invoice_id: str


@dataclass(frozen=True)
class PushResult:
    invoice_id: str
    status: str
    payment: str  # paid | failed | sent | none
    stripe_invoice_id: str | None
    total_cents: int
    dunning_started: bool = False


@dataclass(frozen=True)
class DunningInput:
    org_id: str
    invoice_id: str
    failed_at: str  # ISO: when the payment failed (or the invoice fell due)
    collection: str = "card"  # card: retries; invoice: reminders only
    grace_days: int = 7
    retry_days: list[int] = field(default_factory=lambda: [1, 3, 5])
    due_at: str | None = None  # invoice collection: dunning starts when the invoice falls due
    check_every_s: int = 24 * 3600
    max_checks: int = 120


@dataclass(frozen=True)
class DunningStep:
    org_id: str
    invoice_id: str
    at: str  # the workflow's clock, ISO


@dataclass(frozen=True)
class DunningState:
    settled: bool  # paid or voided
    state: str  # ok | past_due | blocked
    grace_until: str | None = None


@dataclass(frozen=True)
class MonthlyCloseInput:
    period: str | None = None  # default: the month before the run
    grace_s: int = DEFAULT_GRACE_S


@dataclass(frozen=True)
class PlanChangesInput:
    at: str


@dataclass(frozen=True)
class OrgsToCloseInput:
    period: str


@dataclass(frozen=True)
class StartClosesInput:
    org_ids: list[str]
    period: str
    grace_s: int
    task_queue: str
