from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeInput:
    probe_id: str
    message: str


@dataclass(frozen=True)
class ProbeResult:
    probe_id: str
    worker_identity: str
