"""The CLI's HTTP client: the org's API with an API key, errors turned into one readable line.

Async (``httpx.AsyncClient``) so tests can run it against the app in-process through
``httpx.ASGITransport``; the CLI itself runs it under ``asyncio.run``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from gateway.cli_client.config import Credentials

__all__ = ["Api", "ApiError", "detail_of", "sse_events"]

USER_AGENT = "metacloud-cli/0.1"


class ApiError(Exception):
    """A failed call, with the server's words (problem+json ``detail``) when it gave any."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def detail_of(resp: httpx.Response) -> str:
    """One line from a problem+json body (plus its field errors), else the status."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"]:
        text: str = body["detail"]
        errors = body.get("errors")
        if isinstance(errors, list):
            parts = [f"{e.get('field')}: {e.get('message')}" for e in errors
                     if isinstance(e, dict) and e.get("field") and e.get("message")]
            if parts and not all(p.split(": ", 1)[1] in text for p in parts):
                text += " (" + "; ".join(parts) + ")"
        return " ".join(text.split())
    return f"the server answered HTTP {resp.status_code}"


class Api:
    """Calls under ``/api/v1/orgs/{org}``; ``async with Api(creds) as api: await api.get_json("/jobs")``."""

    def __init__(self, creds: Credentials, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0) -> None:
        self.creds = creds
        self._client = httpx.AsyncClient(
            base_url=creds.server, transport=transport, timeout=timeout,
            headers={"Authorization": f"Bearer {creds.api_key}", "Accept": "application/json",
                     "User-Agent": USER_AGENT},
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    def org_path(self, tail: str = "") -> str:
        return f"/api/v1/orgs/{quote(self.creds.org, safe='')}{tail}"

    async def request(self, method: str, tail: str, *, params: dict[str, Any] | None = None,
                      json: Any = None) -> httpx.Response:
        try:
            resp = await self._client.request(method, self.org_path(tail), params=params, json=json)
        except httpx.TimeoutException as exc:
            raise ApiError(f"{self.creds.server} did not answer in time") from exc
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach {self.creds.server}: {exc.__class__.__name__}") from exc
        return resp

    async def call(self, method: str, tail: str, *, params: dict[str, Any] | None = None,
                   json: Any = None) -> Any:
        resp = await self.request(method, tail, params=params, json=json)
        if resp.status_code >= 400:
            message = detail_of(resp)
            if resp.status_code == 401:
                message += " (run: metacloud login)"
            raise ApiError(message, status=resp.status_code)
        return resp.json() if resp.content else None

    async def get_json(self, path: str, /, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    async def post_json(self, tail: str, body: Any = None) -> Any:
        return await self.call("POST", tail, json=body)

    async def stream_lines(self, tail: str, params: dict[str, Any]) -> AsyncIterator[str]:
        """The raw lines of a streamed response (server-sent events)."""
        try:
            async with self._client.stream("GET", self.org_path(tail), params=params, timeout=None,
                                           headers={"Accept": "text/event-stream"}) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise ApiError(detail_of(resp), status=resp.status_code)
                async for line in resp.aiter_lines():
                    yield line
        except httpx.TransportError as exc:
            raise ApiError(f"lost the connection to {self.creds.server}: {exc.__class__.__name__}") from exc


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` pairs from server-sent-event lines; ``event`` is ``"message"`` unless named."""
    event, data = "message", list[str]()
    async for line in lines:
        if line == "":
            if data or event != "message":
                yield event, "\n".join(data)
            event, data = "message", list[str]()
        elif line.startswith(":"):
            continue  # a comment (keep-alive)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value or "message"
    if data:
        yield event, "\n".join(data)
