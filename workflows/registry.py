"""Every workflow and activity the worker runs, in one list. New modules add themselves here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tenants.settings import Settings
from workflows.probe.activities import ProbeActivities
from workflows.probe.workflow import ProbeWorkflow

__all__ = ["Dependencies", "Registry", "build_registry"]


@dataclass(frozen=True)
class Dependencies:
    settings: Settings
    sessions: async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class Registry:
    workflows: Sequence[type]
    activities: Sequence[Callable[..., Any]]


def build_registry(deps: Dependencies) -> Registry:
    probe = ProbeActivities(deps.sessions)
    return Registry(
        workflows=[ProbeWorkflow],
        activities=[probe.record_probe],
    )
