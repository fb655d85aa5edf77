"""Telling the cluster workflows about changes, without ever failing the request that made them.

The database change is committed first; the Temporal call after it is best effort. Each one has a
way back when it is lost: a registration is signalled again by the agent's heartbeats while the
cluster is still ``pending``; a detach is started again by asking to detach again; a lost reconnect
signal only loses a line in the health workflow's log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio.client import Client

from gateway.runtime import GatewayRuntime

__all__ = ["tell_workflows"]

log = logging.getLogger(__name__)


async def tell_workflows(runtime: GatewayRuntime, what: str, call: Callable[[Client], Awaitable[Any]],
                         *, timeout: float = 5.0) -> bool:
    """Run ``call`` with the Temporal client; log (never raise) when Temporal cannot be reached."""
    try:
        client = await runtime.temporal.get(timeout=min(timeout, 3.0))
        await asyncio.wait_for(call(client), timeout)
        return True
    except Exception:
        log.warning("could not %s; the cluster's workflow catches up later", what, exc_info=True)
        return False
