"""The real stack for browser tests: `metacloud dev` in a subprocess, on a temporary state folder and free ports.

Exactly what a developer runs with `make dev`, with DATABASE_URL, TEMPORAL_ADDRESS and STRIPE_API_KEY removed
so every embedded default (PostgreSQL, Temporal, localstripe, worker, gateway) is the real one. `stack.json`
in the state folder gives the resolved URLs once `/readyz` answers.

For iterating on a journey, ``METACLOUD_E2E_STATE_DIR`` may name the state folder of a `metacloud dev`
already running: the tests then use it and leave it running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["BIN", "RunningStack", "free_port", "start_stack"]

BIN = Path(sys.executable).parent
READY_TIMEOUT = 120.0  # ~18 s idle on 2 cores; far more when the machine is busy
STOP_TIMEOUT = 30.0
_RESOLVED_BY_THE_STACK = ("DATABASE_URL", "APP_DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY",
                          "STRIPE_API_BASE", "METACLOUD_TEMPORAL_UI_PORT", "METACLOUD_PUBLIC_URL", "METACLOUD_ENV")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunningStack:
    """A ready stack: its URLs from stack.json, and the environment to run `metacloud` commands against it."""

    info: dict[str, Any]
    state_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None  # None when reusing a stack someone else runs
    root: Path | None = None  # the temporary folder we made (removed at stop)
    output: Path | None = None
    started_in_s: float = 0.0

    @property
    def url(self) -> str:
        return str(self.info["gateway_url"])

    def cli_env(self) -> dict[str, str]:
        """The environment `metacloud <command>` needs to reach this stack's database, Temporal and Stripe."""
        env = dict(self.env)
        env.update(DATABASE_URL=str(self.info["database_url"]), TEMPORAL_ADDRESS=str(self.info["temporal_address"]))
        if self.info.get("stripe_api_key"):
            env.update(STRIPE_API_KEY=str(self.info["stripe_api_key"]), STRIPE_API_BASE=str(self.info["stripe_api_base"]))
        return env

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output and self.output.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _stack_json(state: Path, pid: int | None) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads((state / "stack.json").read_text())
    except (OSError, ValueError):
        return None
    if pid is not None and info.get("launcher_pid") != pid:
        return None
    return info


def start_stack() -> RunningStack:
    """Start `metacloud dev` and wait until the gateway and the worker answer (or reuse a running one)."""
    base_env = {k: v for k, v in os.environ.items() if k not in _RESOLVED_BY_THE_STACK}
    reuse = os.environ.get("METACLOUD_E2E_STATE_DIR")
    if reuse:
        state = Path(reuse).resolve()
        info = _stack_json(state, None)
        if info is None or not _ready(info["readyz_url"]):
            raise RuntimeError(f"METACLOUD_E2E_STATE_DIR={reuse}: no ready `metacloud dev` there")
        return RunningStack(info=info, state_dir=state, env=base_env)

    # Not under pytest's basetemp: each pytest run resets it to 0700, which would lock out the `pgserver`
    # user PostgreSQL runs as (we are root) should another session start meanwhile.
    root = Path(tempfile.mkdtemp(prefix="metacloud-e2e-"))
    state = root / "state"
    env = dict(base_env)
    env.update(
        METACLOUD_STATE_DIR=str(state),
        METACLOUD_PORT=str(free_port()),
        METACLOUD_TEMPORAL_PORT=str(free_port()),
        METACLOUD_STRIPE_PORT=str(free_port()),
        LOG_JSON="true",
    )
    output = root / "launcher.out"
    started = time.monotonic()
    with output.open("ab") as out:
        proc = subprocess.Popen([str(BIN / "metacloud"), "dev"], env=env, stdout=out, stderr=out)
    stack = RunningStack(info={}, state_dir=state, env=env, proc=proc, root=root, output=output)
    deadline = started + READY_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"metacloud dev exited with {proc.returncode}:\n{stack.log()}")
            info = _stack_json(state, proc.pid)
            if info and _ready(info["readyz_url"]):
                stack.info = info
                stack.started_in_s = time.monotonic() - started
                return stack
            time.sleep(0.2)
        raise RuntimeError(f"metacloud dev was not ready within {READY_TIMEOUT:.0f} s:\n{stack.log()}")
    except BaseException:
        with contextlib.suppress(Exception):
            stack.stop()
        raise
