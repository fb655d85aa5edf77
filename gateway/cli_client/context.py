"""What a client command runs with: streams, the credentials file, and the HTTP transport (tests)."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx

from gateway.cli_client.config import default_path

__all__ = ["Context"]


@dataclass
class Context:
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    config_path: Path = field(default_factory=default_path)
    transport: httpx.AsyncBaseTransport | None = None  # tests: httpx.ASGITransport(app)
    poll_interval: float = 2.0  # jobs submit --wait
    prompt: Callable[[str], str] = getpass.getpass
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
