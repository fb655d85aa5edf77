"""``metacloud dev``: the whole stack on one machine, with embedded defaults.

Order: stop what a killed launcher left behind -> check ports -> PostgreSQL (embedded unless
``DATABASE_URL``) -> Temporal dev server and localstripe (unless ``TEMPORAL_ADDRESS`` /
``STRIPE_API_KEY``) -> migrations, while those two start -> worker and gateway -> wait for
``/readyz`` and a probe through the worker -> banner. Ctrl-C, SIGTERM or SIGHUP stop it all in
reverse order; a child that dies stops the stack with its last log lines.

Everything lives in the state folder (``.metacloud/``, ``METACLOUD_STATE_DIR``): the database,
``temporal.db``, the localstripe store, ``logs/``, ``pids/`` and ``stack.json`` (the resolved URLs
and pids while the stack runs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from infra.dev._postgres import DevPostgres, start_dev_postgres
from infra.dev._process import Child, spawn, stop_children, stop_stale_children, tail
from infra.dev._ready import (
    PortClaim,
    ensure_ports_free,
    http_answers,
    http_ok,
    temporal_serving,
    wait_until,
)
from infra.dev._state import LauncherLock, StackError, StateDir
from tenants.settings import Settings

__all__ = ["run_dev_stack"]

BIN = Path(sys.executable).parent
LOCAL_STRIPE_KEY = "sk_test_local"  # localstripe accepts any key; this one says what it is
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Measured on 2 cores: the whole stack is ready in ~4 s when idle, ~17 s at load average 7 (the gateway's
# imports take ~13 s of it); Temporal serves in ~0.3 s. The timeouts leave room for a busy machine.
_INFRA_TIMEOUT = 30.0
_APP_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0  # Temporal needs ~1.5 s after SIGTERM, the Python children well under 1 s


def _say(message: str, *, err: bool = False) -> None:
    # After SIGHUP the terminal may be gone; a failed print must not cut the shutdown short.
    with contextlib.suppress(OSError):
        print(f"metacloud dev: {message}", file=sys.stderr if err else sys.stdout, flush=True)


class StopRequested(KeyboardInterrupt):
    """Raised from the signal handler; a KeyboardInterrupt so libraries unwind as they do for Ctrl-C."""


@dataclass
class _Signals:
    """Turns stop signals into StopRequested, except inside ``critical()`` and while stopping."""

    received: int | None = None
    force: bool = False
    stopping: bool = False
    _depth: int = 0
    _previous: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        for sig in _STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _: FrameType | None) -> None:
        if self.stopping:
            self.force = True
            _say("stopping at once (SIGKILL)")
            return
        self.received = signum
        if self._depth == 0:
            raise StopRequested

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """Defer a stop until a child is started *and* recorded, so none escapes the shutdown."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self.received is not None and not self.stopping:
            raise StopRequested

    def forced(self) -> bool:
        return self.force


@dataclass
class _Stack:
    settings: Settings
    state: StateDir
    signals: _Signals
    postgres: DevPostgres | None = None
    infra: list[Child] = field(default_factory=list)  # Temporal, localstripe: stopped last
    apps: list[Child] = field(default_factory=list)  # worker, gateway: stopped first
    started: float = field(default_factory=time.monotonic)

    # --- start

    def _progress(self, message: str) -> None:
        _say(f"{message} ({time.monotonic() - self.started:.1f} s)")

    def start(self) -> None:
        self.state.remove_stack_file()  # left by a launcher that was killed
        stale = stop_stale_children(self.state)
        if stale:
            _say("stopped what a previous launcher left running: " + ", ".join(stale))
        ensure_ports_free(self._port_claims())
        self._start_postgres()
        self._start_temporal()
        self._start_localstripe()
        self._migrate()
        self._wait_infra()
        env = self._child_env()
        with self.signals.critical():
            self.apps.append(spawn("worker", _metacloud("worker"), env, self.state))
        with self.signals.critical():
            self.apps.append(spawn("gateway", _metacloud("gateway"), env, self.state))
        self._wait_apps()

    def _port_claims(self) -> list[PortClaim]:
        s = self.settings
        claims = [PortClaim(s.port, "gateway", "METACLOUD_PORT", host=s.host)]
        if not s.temporal_address:
            claims.append(PortClaim(s.temporal_port, "Temporal", "METACLOUD_TEMPORAL_PORT"))
            if s.temporal_ui_port:
                claims.append(PortClaim(s.temporal_ui_port, "Temporal UI", "METACLOUD_TEMPORAL_UI_PORT"))
        if not s.stripe_api_key:
            claims.append(PortClaim(s.stripe_port, "localstripe", "METACLOUD_STRIPE_PORT"))
        return claims

    def _start_postgres(self) -> None:
        if self.settings.database_url:
            return
        try:
            with self.signals.critical():
                self.postgres = start_dev_postgres(self.state.postgres_data)
        except Exception as exc:
            raise StackError(
                f"embedded PostgreSQL did not start ({type(exc).__name__}: {exc}); "
                f"see {self.state.postgres_data / 'log'}"
            ) from exc
        self.settings = self.settings.with_(database_url=self.postgres.url)
        self._progress("PostgreSQL ready")

    def _start_temporal(self) -> None:
        s = self.settings
        if s.temporal_address:
            return
        binary = BIN / "temporal"
        if not binary.exists():
            raise StackError(
                f"the temporal CLI is missing at {binary}: reinstall with `make venv`, or set TEMPORAL_ADDRESS"
            )
        argv = [str(binary), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(s.temporal_port),
                "--db-filename", str(self.state.temporal_db), "--log-level", "warn"]
        argv += ["--ui-port", str(s.temporal_ui_port)] if s.temporal_ui_port else ["--headless"]
        with self.signals.critical():
            self.infra.append(spawn("temporal", argv, os.environ, self.state))
        self.settings = s.with_(temporal_address=f"127.0.0.1:{s.temporal_port}")

    def _start_localstripe(self) -> None:
        s = self.settings
        if s.stripe_api_key:
            return
        argv = [sys.executable, "-m", "infra.dev.localstripe_server", "--port", str(s.stripe_port),
                "--state-file", str(self.state.stripe_state)]
        with self.signals.critical():
            self.infra.append(spawn("localstripe", argv, _python_env(), self.state))
        self.settings = s.with_(
            stripe_api_key=LOCAL_STRIPE_KEY, stripe_api_base=f"http://127.0.0.1:{s.stripe_port}"
        )

    def _migrate(self) -> None:
        from infra.migrate import upgrade

        try:
            upgrade(self.settings)
        except Exception as exc:
            raise StackError(
                f"database migration failed: {type(exc).__name__}: {exc}\n"
                "  run `metacloud migrate` with the same DATABASE_URL for the full traceback"
            ) from exc
        self._progress("migrations applied")

    def _wait_infra(self) -> None:
        for child in self.infra:
            if child.name == "temporal":
                check = temporal_serving(BIN / "temporal", self.settings.temporal_address or "")
            else:
                check = http_answers(f"{self.settings.stripe_api_base}/v1/customers")
            wait_until(check, what=child.name, timeout=_INFRA_TIMEOUT, children=self.infra, log=child.log_path)
            self._progress(f"{child.name} ready")

    def _wait_apps(self) -> None:
        everything = self.infra + self.apps
        logs = self.state.logs / "gateway.log"
        wait_until(http_ok(self.readyz_url), what="the gateway (/readyz)", timeout=_APP_TIMEOUT,
                   children=everything, log=logs)
        self._progress("gateway ready (/readyz)")
        # /readyz?deep=true runs a probe workflow: it passes only once the worker polls its task queue.
        wait_until(http_ok(self.readyz_url + "?deep=true", timeout=15), what="the worker (probe workflow)",
                   timeout=_APP_TIMEOUT, children=everything, log=self.state.logs / "worker.log")
        self._progress("worker ready (probe workflow)")

    def _child_env(self) -> dict[str, str]:
        """The launcher's environment plus what it resolved: children build the same Settings from it."""
        s = self.settings
        env = _python_env()
        env.update(
            METACLOUD_STATE_DIR=str(self.state.root),
            METACLOUD_HOST=s.host,
            METACLOUD_PORT=str(s.port),
            DATABASE_URL=s.owner_database_url,
            TEMPORAL_ADDRESS=s.temporal_address or "",
        )
        if s.stripe_api_key:
            env["STRIPE_API_KEY"] = s.stripe_api_key
        if s.stripe_api_base:
            env["STRIPE_API_BASE"] = s.stripe_api_base
        return env

    # --- running

    @property
    def gateway_url(self) -> str:
        host = self.settings.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        return f"http://{host}:{self.settings.port}"

    @property
    def readyz_url(self) -> str:
        return f"{self.gateway_url}/readyz"

    def supervise(self) -> int:
        """Wait for a stop signal (StopRequested); return 1 if a child or PostgreSQL dies first."""
        while True:
            for child in self.infra + self.apps:
                if child.exited():
                    _say(f"{child.name} exited unexpectedly with code {child.popen.returncode}; "
                         f"last lines of {child.log_path}:\n{tail(child.log_path)}")
                    return 1
            if self.postgres and self.postgres.postmaster and not self.postgres.postmaster.is_running():
                log = self.state.postgres_data / "log"
                _say(f"PostgreSQL exited unexpectedly; last lines of {log}:\n{tail(log)}")
                return 1
            time.sleep(0.5)

    def stack_info(self) -> dict[str, Any]:
        s = self.settings
        pids = {c.name: c.pid for c in self.infra + self.apps}
        if self.postgres and self.postgres.pid:
            pids["postgres"] = self.postgres.pid
        return {
            "launcher_pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "state_dir": str(self.state.root),
            "logs_dir": str(self.state.logs),
            "gateway_url": self.gateway_url,
            "openapi_url": f"{self.gateway_url}/schema",
            "readyz_url": self.readyz_url,
            "database_url": s.owner_database_url,
            "app_database_url": s.resolved_app_database_url,
            "temporal_address": s.temporal_address,
            "temporal_ui_url": self._temporal_ui_url(),
            "stripe_api_base": s.stripe_api_base,
            "stripe_api_key": s.stripe_api_key if s.stripe_api_key == LOCAL_STRIPE_KEY else None,
            "pids": pids,
        }

    def _temporal_ui_url(self) -> str | None:
        if self.settings.temporal_ui_port and any(c.name == "temporal" for c in self.infra):
            return f"http://127.0.0.1:{self.settings.temporal_ui_port}"
        return None

    def banner(self) -> str:
        s = self.settings
        temporal = s.temporal_address or ""
        if ui := self._temporal_ui_url():
            temporal += f"   (UI {ui})"
        stripe = (f"{s.stripe_api_base}   (STRIPE_API_KEY={LOCAL_STRIPE_KEY})"
                  if s.stripe_api_key == LOCAL_STRIPE_KEY else "live Stripe (STRIPE_API_KEY)")
        database = f"embedded, data in {self.state.postgres_data}" if self.postgres else "DATABASE_URL"
        rows = [
            ("gateway", self.gateway_url),
            ("OpenAPI", f"{self.gateway_url}/schema"),
            ("Temporal", temporal),
            ("Stripe", stripe),
            ("PostgreSQL", database),
            ("state", f"{self.state.root}   (logs in logs/, URLs and pids in stack.json)"),
        ]
        return "\n".join([
            f"metacloud dev is ready in {time.monotonic() - self.started:.1f} s",
            *(f"  {name:<11} {value}" for name, value in rows),
            f"Press Ctrl-C to stop everything (or: kill {os.getpid()}).",
        ])

    # --- stop

    @property
    def started_anything(self) -> bool:
        return bool(self.postgres or self.infra or self.apps)

    def stop(self) -> None:
        """Apps first (they hold connections to the rest), then Temporal and localstripe, then PostgreSQL."""
        self.state.remove_stack_file()
        stop_children(self.apps, timeout=_STOP_TIMEOUT, force=self.signals.forced)
        stop_children(self.infra, timeout=_STOP_TIMEOUT, force=self.signals.forced)
        if self.postgres is not None:
            self.postgres.stop()


def _metacloud(*args: str) -> list[str]:
    script = BIN / "metacloud"
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "gateway.cli", *args]


def _python_env() -> dict[str, str]:
    # Unbuffered, so the last log lines shown when a child dies are really its last.
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run_dev_stack(settings: Settings) -> int:
    """Run the stack until a stop signal (exit 0) or a failure (exit 1, with the reason printed)."""
    state = StateDir.create(settings.state_dir)
    lock = LauncherLock(state)
    try:
        lock.acquire()
    except StackError as exc:
        _say(str(exc), err=True)
        return 1
    signals = _Signals()
    stack = _Stack(settings=settings, state=state, signals=signals)
    signals.install()
    try:
        stack.start()
        state.write_stack_file(stack.stack_info())
        with contextlib.suppress(OSError):
            print(stack.banner(), flush=True)
        return stack.supervise()
    except StopRequested:
        return 0
    except StackError as exc:
        _say(str(exc), err=True)
        return 1
    finally:
        _shutdown(stack)
        signals.restore()
        lock.release()


def _shutdown(stack: _Stack) -> None:
    stack.signals.stopping = True  # from here a signal only hurries the stop, it never interrupts it
    if not stack.started_anything:
        return
    t0 = time.monotonic()
    if stack.signals.received == signal.SIGINT:
        with contextlib.suppress(OSError):
            print(flush=True)  # the terminal echoed ^C: start on a fresh line
    _say("stopping (Ctrl-C again to kill at once)")
    stack.stop()
    _say(f"stopped in {time.monotonic() - t0:.1f} s; data kept in {stack.state.root}")
