"""`metacloud dev` end to end: the real launcher in a subprocess, on a temporary state folder and free ports.

The launcher is started exactly as `make dev` starts it, with DATABASE_URL, TEMPORAL_ADDRESS and
STRIPE_API_KEY removed, so every embedded default is exercised. `stack.json` in the state folder gives
the resolved URLs and the pids of what it started.
"""

from __future__ import annotations

import asyncio
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from infra.dev._postgres import _drop_stale_postmaster_pid
from infra.dev._process import spawn, stop_stale_children
from infra.dev._state import StateDir

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0
_RESOLVED_BY_THE_STACK = ("DATABASE_URL", "APP_DATABASE_URL", "TEMPORAL_ADDRESS", "STRIPE_API_KEY", "STRIPE_API_BASE",
                 "METACLOUD_TEMPORAL_UI_PORT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Launcher:
    """One `metacloud dev` process; remembers every process it ever saw in its tree."""

    def __init__(self, state: Path, ports: dict[str, int], output: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _RESOLVED_BY_THE_STACK}
        env.update(
            METACLOUD_STATE_DIR=str(state),
            METACLOUD_PORT=str(ports["gateway"]),
            METACLOUD_TEMPORAL_PORT=str(ports["temporal"]),
            METACLOUD_STRIPE_PORT=str(ports["stripe"]),
        )
        self.env = env
        self.state = state
        self.output = output
        self.seen: dict[int, psutil.Process] = {}
        with output.open("ab") as out:
            self.proc = subprocess.Popen([str(BIN / "metacloud"), "dev"], env=env, stdout=out, stderr=out)

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self) -> dict[str, Any]:
        """stack.json once /readyz answers 200; the launcher's tree is recorded on the way."""
        deadline = time.monotonic() + READY_TIMEOUT
        stack_file = self.state / "stack.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"metacloud dev exited with {self.proc.returncode}:\n{self.log()}")
            self._record_tree()
            info = self._stack_info(stack_file)
            if info and _ok(info["readyz_url"]):
                self._record_tree(info)
                return info
            time.sleep(0.2)
        pytest.fail(f"/readyz not 200 within {READY_TIMEOUT} s:\n{self.log()}")

    def _stack_info(self, stack_file: Path) -> dict[str, Any] | None:
        try:
            info: dict[str, Any] = json.loads(stack_file.read_text())
        except (OSError, ValueError):
            return None
        return info if info.get("launcher_pid") == self.proc.pid else None

    def _record_tree(self, info: dict[str, Any] | None = None) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs = [psutil.Process(self.proc.pid)]
            if info:  # PostgreSQL is started by pg_ctl, detached from the launcher's tree
                procs.append(psutil.Process(info["pids"]["postgres"]))
            for root in procs:
                for p in [root, *root.children(recursive=True)]:
                    self.seen.setdefault(p.pid, p)

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(STOP_TIMEOUT)

    def leftovers(self) -> list[str]:
        return [f"{p.pid} {_cmdline(p)}" for p in self.seen.values() if _alive(p)]

    def kill_leftovers(self) -> None:
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(p: psutil.Process) -> bool:
    try:
        # A zombie is dead; its new parent (init) reaps it, not us.
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return "?"


def _wait_all_gone(launcher: Launcher, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while launcher.leftovers() and time.monotonic() < deadline:
        time.sleep(0.1)
    return launcher.leftovers()


def _sql(url: str, query: str, *args: object) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    # A private loop: the suite's session loop must stay untouched.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(go())
    finally:
        loop.close()


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # Not under pytest's basetemp: each new pytest session chmods /tmp/pytest-of-USER back to 0700, which
    # (running as root) locks out the `pgserver` user PostgreSQL runs as, should another session start meanwhile.
    root = Path(tempfile.mkdtemp(prefix="metacloud-dev-test-"))
    yield root / "state"
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ports() -> dict[str, int]:
    return {"gateway": _free_port(), "temporal": _free_port(), "stripe": _free_port()}


@pytest.fixture
def launch(stack_dir: Path, ports: dict[str, int], tmp_path: Path) -> Iterator[Callable[[], Launcher]]:
    """Start launchers on one state folder; whatever a failed test leaves running is stopped, then killed."""
    started: list[Launcher] = []

    def _launch() -> Launcher:
        started.append(Launcher(stack_dir, ports, tmp_path / f"launcher-{len(started)}.out"))
        return started[-1]

    yield _launch
    for launcher in started:
        if launcher.proc.poll() is None:
            launcher.proc.send_signal(signal.SIGINT)
            try:
                launcher.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                launcher.proc.kill()
        launcher.kill_leftovers()


def test_stops_clean_keeps_data_and_recovers_from_a_sigkilled_launcher(
    launch: Callable[[], Launcher], stack_dir: Path
) -> None:
    # One story, because every start costs seconds: start, Ctrl-C, restart, SIGKILL, restart.
    first = launch()
    info = first.wait_ready()
    assert set(info["pids"]) == {"postgres", "temporal", "localstripe", "worker", "gateway"}
    assert info["database_url"].endswith(f"host={stack_dir / 'postgres'}")
    _sql(info["database_url"], "INSERT INTO orgs (id, slug, name) VALUES (gen_random_uuid(), $1, $2)",
         "kept", "Kept Inc")
    stripe_auth = (info["stripe_api_key"], "")
    customer = httpx.post(f"{info['stripe_api_base']}/v1/customers", data={"email": "kept@example.com"},
                          auth=stripe_auth, timeout=5).json()["id"]

    # Ctrl-C: exit 0, nothing left, no pid files, no stack.json
    assert first.stop(signal.SIGINT) == 0, first.log()
    assert _wait_all_gone(first) == []
    assert list((stack_dir / "pids").iterdir()) == []
    assert not (stack_dir / "stack.json").exists()

    # Restart: the data is still there, in PostgreSQL and in localstripe's store in the state folder.
    second = launch()
    info = second.wait_ready()
    rows = _sql(info["database_url"], "SELECT name FROM orgs WHERE slug = $1", "kept")
    assert [r["name"] for r in rows] == ["Kept Inc"]
    got = httpx.get(f"{info['stripe_api_base']}/v1/customers/{customer}", auth=stripe_auth, timeout=5)
    assert got.status_code == 200
    assert (stack_dir / "localstripe.pickle").exists()

    # A second launcher on the same state folder refuses at once.
    refused = subprocess.run([str(BIN / "metacloud"), "dev"], env=second.env, capture_output=True, text=True,
                             timeout=30)
    assert refused.returncode == 1
    assert "already running" in refused.stderr

    # SIGKILL: no cleanup ran; the next start stops the leftovers and adopts PostgreSQL.
    second.proc.kill()
    second.proc.wait()
    third = launch()
    info = third.wait_ready()
    assert _sql(info["database_url"], "SELECT count(*) AS n FROM orgs WHERE slug = $1", "kept")[0]["n"] == 1

    assert third.stop(signal.SIGTERM) == 0, third.log()
    for launcher in (second, third):
        assert _wait_all_gone(launcher) == []


def test_a_taken_port_is_named_with_the_setting_to_change(
    stack_dir: Path, ports: dict[str, int], tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["stripe"]))
        holder.listen()
        launcher = Launcher(stack_dir, ports, tmp_path / "launcher.out")
        assert launcher.proc.wait(STOP_TIMEOUT) == 1
    assert f"port {ports['stripe']} (localstripe) is already in use" in launcher.log()
    assert "METACLOUD_STRIPE_PORT" in launcher.log()
    assert not (stack_dir / "postgres").exists()  # it failed before starting anything


def test_a_stale_postmaster_pid_is_dropped(tmp_path: Path) -> None:
    data = tmp_path / "postgres"
    data.mkdir()
    stale = data / "postmaster.pid"
    # A live pid that is not PostgreSQL (as after a reboot), so pgserver would take it for a running server.
    stale.write_text(f"{os.getpid()}\n{data}\n1700000000\n5432\n{data}\n\n  1 2\nready\n")
    _drop_stale_postmaster_pid(data)
    assert not stale.exists()


def test_stale_pid_files_stop_only_our_own_processes(tmp_path: Path) -> None:
    state = StateDir.create(tmp_path / "state")
    ours = spawn("sleeper", ["sleep", "60"], os.environ, state)
    # A pid file that names a live process which is not ours (the pid was reused): it must survive.
    (state.pids / "impostor.pid").write_text(json.dumps(
        {"pid": os.getpid(), "create_time": psutil.Process().create_time(), "argv": ["sleep", "60"]}))

    stopped = stop_stale_children(state)

    assert stopped == [f"sleeper (pid {ours.pid})"]
    assert ours.popen.wait(5) == -signal.SIGTERM
    assert list(state.pids.iterdir()) == []
