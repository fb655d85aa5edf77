"""Every route handler of the gateway, in one list (route-walk tests enumerate the app from it)."""

from __future__ import annotations

from typing import Any

from gateway.health import healthz, readyz

__all__ = ["route_handlers"]


def route_handlers() -> list[Any]:
    return [healthz, readyz]
