"""Wake waiting long polls when a command is queued: one ``LISTEN`` connection per process.

Why one shared connection and not one per waiting poll: every agent keeps a poll open almost all
the time, so a connection per poll would mean one Postgres backend per connected agent (10,000
agents, 10,000 backends). One asyncpg connection per gateway process instead ``LISTEN``s on the
channels of the clusters whose polls wait here, and fans each notification out to those polls'
events in memory. ``NOTIFY`` reaches every listening backend, so whichever replica holds the poll
wakes within milliseconds of the commit.

A channel stays listened for a minute after its last waiter left (agents poll again at once, so this
saves a LISTEN/UNLISTEN pair per poll); idle channels are dropped lazily. If the connection breaks,
every waiter is woken (it re-checks the queue) and the next subscription reconnects.
LISTEN/NOTIFY needs no grants beyond CONNECT, so the app role suffices.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

__all__ = ["CommandNotifier", "notifier_for"]

log = logging.getLogger(__name__)

_KEEP_IDLE_S = 60.0
_SWEEP_EVERY_S = 30.0


class CommandNotifier:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None  # asyncpg.Connection
        self._lock = asyncio.Lock()  # one operation at a time on the connection
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._listening: set[str] = set()
        self._idle_since: dict[str, float] = {}
        self._last_sweep = time.monotonic()

    @property
    def listening(self) -> frozenset[str]:
        return frozenset(self._listening)

    def waiting(self, channel: str) -> int:
        """How many polls wait on ``channel`` right now (benchmarks and tests)."""
        return len(self._waiters.get(channel, ()))

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Event]:
        """An event set on every NOTIFY of ``channel`` while the block runs. LISTEN is in place when the
        block starts, so check the queue inside it: nothing committed after that check is missed."""
        event = asyncio.Event()
        self._waiters.setdefault(channel, set()).add(event)
        self._idle_since.pop(channel, None)
        try:
            await self._listen(channel)
            yield event
        finally:
            waiters = self._waiters.get(channel)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[channel]
                    self._idle_since[channel] = time.monotonic()

    async def _listen(self, channel: str) -> None:
        async with self._lock:
            conn = await self._connection()
            if channel not in self._listening:
                await conn.add_listener(channel, self._on_notify)
                self._listening.add(channel)
            await self._drop_idle(conn)

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._listening.clear()
            self._conn = await asyncpg.connect(self._dsn)
            self._conn.add_termination_listener(self._on_lost)
        return self._conn

    async def _drop_idle(self, conn: Any) -> None:
        now = time.monotonic()
        if now - self._last_sweep < _SWEEP_EVERY_S:
            return
        self._last_sweep = now
        for channel, since in list(self._idle_since.items()):
            if now - since >= _KEEP_IDLE_S and channel not in self._waiters:
                del self._idle_since[channel]
                if channel in self._listening:
                    self._listening.discard(channel)
                    await conn.remove_listener(channel, self._on_notify)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        for event in self._waiters.get(channel, ()):
            event.set()

    def _on_lost(self, _conn: Any) -> None:
        log.warning("command notifier lost its database connection; waiting polls re-check and reconnect")
        self._conn = None
        self._listening.clear()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    async def aclose(self) -> None:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.close()
            self._conn = None
            self._listening.clear()


_notifiers: dict[tuple[str, int], CommandNotifier] = {}


def notifier_for(dsn: str) -> CommandNotifier:
    """The process's notifier for ``dsn`` (one per event loop: a connection belongs to its loop)."""
    key = (dsn, id(asyncio.get_running_loop()))
    notifier = _notifiers.get(key)
    if notifier is None:
        notifier = _notifiers[key] = CommandNotifier(dsn)
    return notifier
