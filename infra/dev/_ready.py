"""Is a port free, is a service ready: the checks ``metacloud dev`` waits on."""

from __future__ import annotations

import errno
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.dev._process import Child, tail
from infra.dev._state import StackError

__all__ = [
    "ChildDied",
    "PortClaim",
    "ensure_ports_free",
    "http_answers",
    "http_ok",
    "temporal_serving",
    "wait_until",
]


class ChildDied(StackError):
    def __init__(self, child: Child) -> None:
        code = child.popen.returncode
        last = tail(child.log_path)
        super().__init__(
            f"{child.name} exited with code {code} during startup; last lines of {child.log_path}:\n{last}"
        )
        self.child = child


@dataclass(frozen=True)
class PortClaim:
    port: int
    what: str
    env_var: str
    host: str = "127.0.0.1"


def ensure_ports_free(claims: Sequence[PortClaim]) -> None:
    """Fail before starting anything if a port is taken, naming the setting that moves it."""
    for claim in claims:
        with socket.socket(socket.AF_INET6 if ":" in claim.host else socket.AF_INET) as sock:
            # Like the servers themselves: a port whose old connections sit in TIME_WAIT is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((claim.host, claim.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                raise StackError(
                    f"port {claim.port} ({claim.what}) is already in use on {claim.host}: stop what holds it "
                    f"or set {claim.env_var} to a free port"
                ) from None


def wait_until(
    check: Callable[[], bool], *, what: str, timeout: float, children: Sequence[Child], log: Path | None = None
) -> None:
    """Poll ``check`` until true; fail at once if a child dies, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        for child in children:
            if child.exited():
                raise ChildDied(child)
        if check():
            return
        if time.monotonic() > deadline:
            where = f"; see {log}" if log else ""
            raise StackError(f"{what} was not ready after {timeout:.0f} s{where}")
        time.sleep(0.1)


def temporal_serving(temporal_bin: Path, address: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            out = subprocess.run(  # noqa: S603 - fixed argv
                [str(temporal_bin), "operator", "cluster", "health", "--address", address],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and "SERVING" in out.stdout

    return check


def http_answers(url: str) -> Callable[[], bool]:
    """Any HTTP answer counts (localstripe says 401 without a key)."""

    def check() -> bool:
        try:
            httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return True

    return check


def http_ok(url: str, *, timeout: float = 5) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return check
