"""Where the CLI keeps its login: ``~/.config/metacloud/credentials.json`` (``$XDG_CONFIG_HOME`` honoured),
written with mode 0600 in a 0700 folder, replaced atomically so a crash never leaves half a file.

``METACLOUD_SERVER``, ``METACLOUD_ORG`` and ``METACLOUD_API_KEY`` override the file (for CI jobs that
must not write a home folder).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Credentials", "default_path", "load", "save"]


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    org: str
    api_key: str

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Credentials(server={self.server!r}, org={self.org!r}, api_key='***')"


def default_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "metacloud" / "credentials.json"


def load(path: Path, env: Mapping[str, str] | None = None) -> Credentials | None:
    """The stored login with environment overrides; ``None`` when there is none at all."""
    env = os.environ if env is None else env
    stored: dict[str, str] = {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict):
            stored = {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, ValueError):
        pass
    server = env.get("METACLOUD_SERVER") or stored.get("server", "")
    org = env.get("METACLOUD_ORG") or stored.get("org", "")
    key = env.get("METACLOUD_API_KEY") or stored.get("api_key", "")
    if not (server and org and key):
        return None
    return Credentials(server=server.rstrip("/"), org=org, api_key=key)


def save(path: Path, creds: Credentials) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps({"server": creds.server, "org": creds.org, "api_key": creds.api_key}, indent=2) + "\n"
    # mkstemp creates the file 0600 before a byte is written: the key is never readable by others
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
