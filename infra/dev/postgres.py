"""PostgreSQL for one machine: ``DATABASE_URL`` if set, else testcontainers when a Docker engine
answers, else the embedded server from ``pgserver`` (unix socket, data kept in the state folder)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "docker_available", "start_embedded"]

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    def __init__(self, server: Any, data_dir: Path) -> None:
        self._server = server
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._server.cleanup()


def start_embedded(data_dir: Path, *, cleanup_mode: str | None = "stop") -> EmbeddedPostgres:
    """Start (or reuse) an embedded PostgreSQL 16 whose data lives in ``data_dir``."""
    # pgserver keeps a lock file under XDG_RUNTIME_DIR; give it a private one so it stays quiet.
    runtime = data_dir.parent / "run"
    runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime.resolve()))
    import pgserver

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data_dir.resolve()), cleanup_mode=cleanup_mode)  # type: ignore[attr-defined]
    return EmbeddedPostgres(server, data_dir)


def docker_available() -> bool:
    try:
        import docker

        client = docker.from_env()
        client.ping()
        return True
    except Exception:
        return False


def start_container() -> tuple[str, Callable[[], None]]:  # pragma: no cover - needs a Docker engine
    from testcontainers.postgres import PostgresContainer

    container = PostgresContainer("postgres:16-alpine", driver=None)
    container.start()
    url: str = container.get_connection_url()
    return url, container.stop
