"""Child processes of ``metacloud dev``: start with a log file and a pid file, stop for sure.

Each child is a session leader (its own process group), so a Ctrl-C at the terminal reaches only the
launcher, which stops the children in order; and stopping a child signals its whole group. On Linux a
child also gets SIGTERM when the launcher dies (``PR_SET_PDEATHSIG``), which covers a SIGKILLed
launcher; the pid files cover the rest (other systems, a child that ignored the signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from infra.dev._state import StateDir

__all__ = ["Child", "spawn", "stop_children", "stop_stale_children", "tail", "wait_gone"]

_PR_SET_PDEATHSIG = 1


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    pid_file: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def exited(self) -> bool:
        return self.popen.poll() is not None


def _preexec_die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child

    def _set() -> None:
        # Fires when the spawning *thread* ends: the launcher spawns only from its main thread.
        libc.prctl(_PR_SET_PDEATHSIG, ctypes.c_ulong(signal.SIGTERM))  # the kernel reads an unsigned long

    return _set


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], state: StateDir) -> Child:
    """Start ``argv`` with output appended to ``STATE/logs/NAME.log``; record it in ``STATE/pids/NAME.pid``."""
    log_path = state.logs / f"{name}.log"
    with log_path.open("ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"\n=== {stamp} metacloud dev started: {' '.join(argv)}\n".encode())
        log.flush()
        popen = subprocess.Popen(  # noqa: S603 - argv is built by the launcher, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            # preexec_fn is unsafe only with other threads running; the launcher runs none while it spawns.
            preexec_fn=_preexec_die_with_parent(),
        )
    pid_file = state.pids / f"{name}.pid"
    _write_pid_file(pid_file, popen.pid, argv)
    return Child(name=name, popen=popen, log_path=log_path, pid_file=pid_file)


def _write_pid_file(path: Path, pid: int, argv: Sequence[str]) -> None:
    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        created = 0.0
    # pid + start time name one process for good; argv lets the next launcher check the command line too.
    path.write_text(json.dumps({"pid": pid, "create_time": created, "argv": list(argv)}))


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the child's process group (it leads one), or the process alone if it left it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_children(children: Sequence[Child], *, timeout: float, force: Callable[[], bool]) -> None:
    """SIGTERM every child at once, wait up to ``timeout`` (less if ``force()`` turns true), then SIGKILL."""
    running = [c for c in children if not c.exited()]
    for child in running:
        _signal_group(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(not c.exited() for c in running) and time.monotonic() < deadline and not force():
        time.sleep(0.05)
    for child in running:
        if not child.exited():
            _signal_group(child.pid, signal.SIGKILL)
            child.popen.wait()
    for child in children:
        if _group_alive(child.pid):  # whatever the child started in its group must not outlive it
            _signal_group(child.pid, signal.SIGKILL)
        child.pid_file.unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _matching_process(record: Mapping[str, Any]) -> psutil.Process | None:
    """The live process a pid file describes, or None if that pid is now someone else (or nobody)."""
    try:
        proc = psutil.Process(int(record["pid"]))
        same_start = abs(proc.create_time() - float(record["create_time"])) < 0.5
        cmdline: list[str] = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
        return None
    # A script runs as `python SCRIPT ARGS`, so compare the recorded arguments with the end of the command line.
    args = [str(a) for a in record.get("argv", [])[1:]]
    ours = same_start and (not args or cmdline[-len(args) :] == args)
    return proc if ours else None


def stop_stale_children(state: StateDir, *, timeout: float = 10.0) -> list[str]:
    """Stop children a previous launcher left behind (it was SIGKILLed); return what was stopped.

    Waits until each is gone: a Temporal dev server holds its SQLite file until it exits, and a new
    one on the same file fails with SQLITE_BUSY meanwhile (~1.5 s after SIGTERM).
    """
    stopped: list[str] = []
    for pid_file in sorted(state.pids.glob("*.pid")):
        try:
            record = json.loads(pid_file.read_text())
        except (OSError, ValueError):
            record = {}
        proc = _matching_process(record) if isinstance(record, dict) else None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
            if not wait_gone(proc, timeout):
                _signal_group(proc.pid, signal.SIGKILL)
                wait_gone(proc, timeout)
            stopped.append(f"{pid_file.stem} (pid {proc.pid})")
        pid_file.unlink(missing_ok=True)
    return stopped


def wait_gone(proc: psutil.Process, timeout: float) -> bool:
    """Wait for a process that is not our child; a zombie counts as gone (its parent reaps it, not us)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for the message when a child dies."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
