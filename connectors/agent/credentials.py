"""Where the agent keeps its per-cluster credential: a 0600 file, or a Kubernetes Secret."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import msgspec

__all__ = [
    "CredentialStore",
    "CredentialStoreError",
    "FileCredentialStore",
    "MemoryCredentialStore",
    "SecretCredentialStore",
    "StoredCredential",
    "token_digest",
]


class CredentialStoreError(Exception):
    """The store cannot be read or written; the message says where and why."""


class StoredCredential(msgspec.Struct, kw_only=True):
    server_url: str
    cluster_id: str
    credential: str
    saved_at: datetime | None = None
    # SHA-256 of the registration token that produced this credential: the same install command run
    # again reuses the credential; a command with a new token registers anew.
    token_sha256: str | None = None


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CredentialStore(Protocol):
    async def load(self) -> StoredCredential | None: ...

    async def save(self, stored: StoredCredential) -> None: ...

    async def clear(self) -> None: ...

    def describe(self) -> str:
        """Where it is, for messages ("/var/lib/metacloud-agent/credential.json")."""
        ...


def _stamp(stored: StoredCredential) -> bytes:
    if stored.saved_at is None:
        stored = msgspec.structs.replace(stored, saved_at=datetime.now(UTC))
    return msgspec.json.encode(stored)


class FileCredentialStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "credential.json"

    def describe(self) -> str:
        return str(self.path)

    async def load(self) -> StoredCredential | None:
        try:
            data = await asyncio.to_thread(self.path.read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CredentialStoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            return msgspec.json.decode(data, type=StoredCredential)
        except msgspec.DecodeError:
            return None  # a damaged file is as good as none; registration reports the rest

    def _write(self, data: bytes) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Created 0600 from the first byte (no window where another user can read it), then swapped in.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    async def save(self, stored: StoredCredential) -> None:
        try:
            await asyncio.to_thread(self._write, _stamp(stored))
        except OSError as exc:
            raise CredentialStoreError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    async def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self.path.unlink)


class MemoryCredentialStore:
    """Keeps the credential in memory only (tests; an agent that must re-register on every start)."""

    def __init__(self, stored: StoredCredential | None = None) -> None:
        self.stored = stored

    def describe(self) -> str:
        return "memory"

    async def load(self) -> StoredCredential | None:
        return self.stored

    async def save(self, stored: StoredCredential) -> None:
        self.stored = stored

    async def clear(self) -> None:
        self.stored = None


class SecretCredentialStore:
    """The credential in a pre-created Secret (key ``credential.json``), read and merge-patched by the agent.

    The install manifest creates the Secret empty so the agent's Role needs only ``get`` and ``patch``
    on that one name, never ``create`` on Secrets.
    """

    KEY = "credential.json"

    def __init__(self, namespace: str, name: str, api_client: Any) -> None:
        from kubernetes import client  # imported here: a bare-host agent never needs it

        self.namespace, self.name = namespace, name
        self.core = client.CoreV1Api(api_client)

    def describe(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def _read(self) -> dict[str, Any]:
        response: Any = self.core.read_namespaced_secret(self.name, self.namespace, _request_timeout=15, _preload_content=False)
        secret: dict[str, Any] = json.loads(response.data)
        return secret

    async def _run(self, action: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:  # the client raises ApiException, urllib3 and socket errors alike
            status = getattr(exc, "status", None)
            why = f"HTTP {status}" if status else type(exc).__name__
            hint = " (the agent's Role must allow get and patch on it)" if status == 403 else ""
            raise CredentialStoreError(f"cannot {action} {self.describe()}: {why}{hint}") from exc

    async def load(self) -> StoredCredential | None:
        secret: dict[str, Any] = await self._run("read", self._read)
        encoded = (secret.get("data") or {}).get(self.KEY)
        if not encoded:
            return None
        try:
            return msgspec.json.decode(base64.b64decode(encoded), type=StoredCredential)
        except (msgspec.DecodeError, ValueError):
            return None

    def _patch(self, value: str | None) -> None:
        self.core.patch_namespaced_secret(
            self.name, self.namespace, {"data": {self.KEY: value}},
            _request_timeout=15, _preload_content=False, _content_type="application/merge-patch+json",
        )

    async def save(self, stored: StoredCredential) -> None:
        await self._run("write", self._patch, base64.b64encode(_stamp(stored)).decode())

    async def clear(self) -> None:
        await self._run("clear", self._patch, None)  # null removes the key in a merge patch
