"""Embedded PostgreSQL for the dev stack: ``infra.dev.postgres`` plus recovery from an unclean stop.

pgserver trusts ``postmaster.pid`` and its own handle list more than a launcher killed by SIGKILL
deserves: it takes any live process with the recorded pid for a running server (after a reboot that
pid is someone else), and it stops the server only when the last pid in ``.handle_pids.json`` leaves,
so a dead launcher's pid left there keeps it running forever. Both files are fixed before the start.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import psutil

from infra.dev._process import wait_gone
from infra.dev.postgres import EmbeddedPostgres, start_embedded

__all__ = ["DevPostgres", "start_dev_postgres"]


@dataclass
class DevPostgres:
    server: EmbeddedPostgres
    postmaster: psutil.Process | None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int | None:
        return self.postmaster.pid if self.postmaster else None

    def stop(self, timeout: float = 15.0) -> None:
        self.server.stop()  # pg_ctl stop (fast mode), as the user that owns the server
        if self.postmaster is not None and not wait_gone(self.postmaster, timeout):
            # SIGQUIT is PostgreSQL's immediate shutdown: no checkpoint, but WAL replay makes it safe.
            self.postmaster.send_signal(signal.SIGQUIT)
            wait_gone(self.postmaster, timeout)


def start_dev_postgres(data_dir: Path) -> DevPostgres:
    """Start (or adopt an orphaned) PostgreSQL on ``data_dir``; the launcher lock makes us its only user."""
    if data_dir.exists():
        _drop_stale_postmaster_pid(data_dir)
        # The launcher that wrote the old handle list is gone: we are the only handle now.
        (data_dir / ".handle_pids.json").unlink(missing_ok=True)
    server = start_embedded(data_dir)
    return DevPostgres(server=server, postmaster=_postmaster(data_dir))


def _drop_stale_postmaster_pid(data_dir: Path) -> None:
    """Remove ``postmaster.pid`` unless it names a live postgres serving this very data folder."""
    pid_file = data_dir / "postmaster.pid"
    if pid_file.exists() and _postmaster(data_dir) is None:
        pid_file.unlink()


def _postmaster(data_dir: Path) -> psutil.Process | None:
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        proc = psutil.Process(int(lines[0]))
        cmdline: list[str] = proc.cmdline()
        # pgserver's own reader needs all 8 lines; a file cut short by a crash counts as stale.
        complete = len(lines) == 8
    except (OSError, ValueError, IndexError, psutil.Error):
        return None
    data = str(data_dir.resolve())
    is_ours = complete and proc.name() == "postgres" and any(arg == data for arg in cmdline)
    return proc if is_ours else None

