"""The state folder of ``metacloud dev``: where every file lives, the launcher lock, ``stack.json``."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LauncherLock", "StackError", "StateDir"]


class StackError(Exception):
    """A problem the person running ``metacloud dev`` can fix; the message says how."""


@dataclass(frozen=True)
class StateDir:
    """Layout of the state folder (``.metacloud/`` unless ``METACLOUD_STATE_DIR`` says otherwise)."""

    root: Path

    @classmethod
    def create(cls, path: Path) -> StateDir:
        # Absolute, because children get it through the environment and may run elsewhere.
        state = cls(path.expanduser().resolve())
        for folder in (state.root, state.logs, state.pids):
            folder.mkdir(parents=True, exist_ok=True)
        return state

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def postgres_data(self) -> Path:
        return self.root / "postgres"

    @property
    def temporal_db(self) -> Path:
        return self.root / "temporal.db"

    @property
    def stripe_state(self) -> Path:
        return self.root / "localstripe.pickle"

    @property
    def stack_file(self) -> Path:
        return self.root / "stack.json"

    def write_stack_file(self, info: dict[str, Any]) -> None:
        """Write ``stack.json`` atomically and private to the user: it holds the database URL."""
        tmp = self.stack_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")
        os.replace(tmp, self.stack_file)

    def remove_stack_file(self) -> None:
        self.stack_file.unlink(missing_ok=True)


class LauncherLock:
    """One launcher per state folder.

    An advisory ``flock`` rather than a pid file: the kernel drops it when the launcher dies, even
    by SIGKILL, so a stale lock can never block the next start.
    """

    def __init__(self, state: StateDir) -> None:
        self._path = state.root / "launcher.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StackError(
                f"another `metacloud dev` (pid {holder}) is already running with state folder "
                f"{self._path.parent}; stop it first, or set METACLOUD_STATE_DIR to another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
