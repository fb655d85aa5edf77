"""The metascheduler's loop: one leader at a time, a pass on every ``NOTIFY metacloud_jobs`` (a job
submitted, cancelled or finished) and at least every ``period_s`` (inventory moves with heartbeats,
and every waiting job's reason is refreshed).

Leadership is a session-level Postgres advisory lock on the loop's own connection: it is released
when the connection closes, so a crashed leader never blocks the next one. Replicas that do not hold
it wait and retry. Passes commit with compare-and-set anyway, so an overlap is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from connectors.server.jobs.placement import PassOptions
from connectors.server.jobs.scheduler import PlacedJob, run_pass
from connectors.server.jobs.service import NOTIFY_CHANNEL
from connectors.server.jobs.snapshot import CapsProvider

__all__ = ["LOCK_KEY", "SchedulerLoop"]

log = logging.getLogger(__name__)

LOCK_KEY = 0x6D63_7363_6865_64  # "mcsched": the advisory lock id of the metascheduler leader
_DEBOUNCE_S = 0.01  # gather a burst of submissions into one pass


class SchedulerLoop:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], dsn: str, *,
                 caps_provider: CapsProvider | None = None,
                 on_placed: Callable[[list[PlacedJob]], Awaitable[None]] | None = None,
                 heartbeat: Callable[[], None] = lambda: None, period_s: float = 5.0,
                 opts: PassOptions | None = None) -> None:
        self.sessions = sessions
        self.dsn = dsn
        self.caps_provider = caps_provider
        self.on_placed = on_placed
        self.heartbeat = heartbeat
        self.period_s = period_s
        self.opts = opts or PassOptions()
        self.passes = 0

    async def run(self, *, budget_s: float) -> int:
        """Lead and run passes for ``budget_s`` seconds (then return, so a workflow can continue-as-new)."""
        deadline = time.monotonic() + budget_s
        conn: Any = await asyncpg.connect(self.dsn)
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                self.heartbeat()
                if time.monotonic() >= deadline:
                    return self.passes
                await asyncio.sleep(min(self.period_s, 2.0))
            wake = asyncio.Event()
            wake.set()  # a first pass at once

            def on_notify(*_: Any) -> None:
                wake.set()

            await conn.add_listener(NOTIFY_CHANNEL, on_notify)
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=max(0.0, min(self.period_s,
                                                                             deadline - time.monotonic())))
                await asyncio.sleep(_DEBOUNCE_S)
                wake.clear()
                await self.one_pass()
                self.heartbeat()
        finally:
            await conn.close()  # releases the advisory lock
        return self.passes

    async def one_pass(self) -> None:
        try:
            report = await run_pass(self.sessions, caps_provider=self.caps_provider, opts=self.opts)
        except Exception:  # a failed pass is retried on the next wake-up; the loop keeps leading
            log.exception("metascheduler pass failed")
            return
        self.passes += 1
        if report.placed:
            log.info("metascheduler placed %d jobs (%d wait, %d lost races; read %.3fs place %.3fs commit %.3fs)",
                     len(report.placed), report.waiting, report.lost_races, report.read_s, report.place_s,
                     report.commit_s)
            if self.on_placed is not None:
                try:
                    await self.on_placed(report.placed)
                except Exception:  # the lifecycle workflows also re-check the database on their own
                    log.warning("could not tell every placed job's workflow", exc_info=True)
