"""Inputs and results of the housekeeping workflow and its activities: plain values."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CredentialCounts", "DailyResult", "PartitionCounts", "Step"]


@dataclass(frozen=True)
class Step:
    at: str  # the workflow's clock, ISO: every activity (and every retry of it) tidies as of one moment


@dataclass(frozen=True)
class PartitionCounts:
    created: int
    dropped: int


@dataclass(frozen=True)
class CredentialCounts:
    web_sessions: int
    one_time_tokens: int
    invites: int
    registration_tokens: int
    rate_limit_hits: int


@dataclass(frozen=True)
class DailyResult:
    partitions: PartitionCounts
    outbox_deleted: int
    credentials: CredentialCounts

    def summary(self) -> str:
        """One line for the log."""
        p, c = self.partitions, self.credentials
        return (f"partitions created={p.created} dropped={p.dropped}; outbox deleted={self.outbox_deleted}; "
                f"web_sessions={c.web_sessions} one_time_tokens={c.one_time_tokens} invites={c.invites} "
                f"registration_tokens={c.registration_tokens} rate_limit_hits={c.rate_limit_hits}")
