"""The agent's HTTP calls to ``/agent/v1``, and the translation of every failure into one clear line.

Exceptions (all carry ``line``, the sentence the agent logs)::

    AgentProblem
     +-- Fatal            stop the agent with ``exit_code`` (bad token 2, credential revoked 3, upgrade 4)
     +-- Transient        retry with backoff (network, TLS, proxy, DNS, wrong URL, 5xx, 429)
     +-- CommandGone      the gateway no longer leases this command to us (404/409/410 on ack/result)
     +-- NotSupported     the gateway does not know this call (404): it is older than this agent

Failures are translated here and nowhere else, so each one reads the same wherever it happens.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
import msgspec

from connectors.agent.config import AgentConfig
from connectors.protocol import (
    AGENT_VERSION,
    AGENT_VERSION_HEADER,
    CommandBatch,
    CommandResult,
    ErrorCode,
    Heartbeat,
    HeartbeatResponse,
    JobReportAnswer,
    JobReportBatch,
    RegisterRequest,
    RegisterResponse,
)

__all__ = [
    "EXIT_BAD_TOKEN",
    "EXIT_CREDENTIAL_REVOKED",
    "EXIT_UPGRADE_REQUIRED",
    "AgentClient",
    "AgentProblem",
    "CommandGone",
    "Fatal",
    "NotSupported",
    "Transient",
    "build_http_client",
    "clock_skew_line",
]

EXIT_BAD_TOKEN = 2
EXIT_CREDENTIAL_REVOKED = 3
EXIT_UPGRADE_REQUIRED = 4
CLOCK_SKEW_WARN_S = 60.0
T = TypeVar("T")


class AgentProblem(Exception):
    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.line = line


class Fatal(AgentProblem):
    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code


class Transient(AgentProblem):
    def __init__(self, line: str, retry_after_s: float | None = None) -> None:
        super().__init__(line)
        self.retry_after_s = retry_after_s


class CommandGone(AgentProblem):
    pass


class NotSupported(AgentProblem):
    pass


def build_http_client(config: AgentConfig) -> httpx.AsyncClient:
    """An HTTPS client that trusts the system/certifi CAs plus ``--ca-file``, and honours HTTPS_PROXY."""
    verify: ssl.SSLContext | bool
    if config.insecure:
        verify = False
    else:
        context = ssl.create_default_context()
        try:
            import certifi  # httpx's own default bundle, next to the system's

            context.load_verify_locations(certifi.where())
        except (ImportError, OSError):  # pragma: no cover - certifi ships with httpx
            pass
        if config.ca_file is not None:
            context.load_verify_locations(cafile=str(config.ca_file))
        verify = context
    return httpx.AsyncClient(
        verify=verify,
        trust_env=True,  # HTTPS_PROXY / NO_PROXY, as users of corporate networks expect
        timeout=httpx.Timeout(config.request_timeout_s, connect=10.0),
        headers={"User-Agent": f"metacloud-agent/{AGENT_VERSION}"},
    )


def clock_skew_line(server_time: datetime, local_time: datetime) -> str | None:
    """A warning when the two clocks differ by more than a minute, else None."""
    if server_time.tzinfo is None:
        server_time = server_time.replace(tzinfo=UTC)
    skew = (server_time - local_time).total_seconds()
    if abs(skew) <= CLOCK_SKEW_WARN_S:
        return None
    direction = "behind" if skew > 0 else "ahead of"
    return (
        f"clock skew: this host's clock is {abs(skew):.0f} s {direction} the gateway's; enable time sync (NTP): "
        "certificate checks, token expiry and usage times depend on it"
    )


def _proxy_hint() -> str:
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), None)
    if not proxy:
        return ""
    shown = urlsplit(proxy)
    # Never echo proxy credentials.
    where = f"{shown.scheme}://{shown.hostname}" + (f":{shown.port}" if shown.port else "")
    return f" (through the proxy in HTTPS_PROXY, {where}: check it and NO_PROXY)"


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _transport_problem(exc: httpx.TransportError, config: AgentConfig, call: str) -> Transient:
    server = config.server_url
    host = urlsplit(server).hostname or server
    chain = _causes(exc)
    if isinstance(exc, httpx.ProxyError):
        return Transient(f"proxy error reaching {server}: {exc}; check HTTPS_PROXY and NO_PROXY")
    for cause in chain:
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or str(cause)
            clock = " (or this host's clock is wrong)" if "not yet valid" in why or "expired" in why else ""
            if config.ca_file is not None:
                return Transient(
                    f"TLS: the gateway's certificate is not signed by a CA in --ca-file {config.ca_file} ({why}){clock}"
                )
            return Transient(
                f"TLS: cannot verify the certificate of {host} ({why}){clock}; if a private CA or a TLS-inspecting "
                "proxy signs it, pass that CA bundle with --ca-file /path/to/ca.pem (METACLOUD_CA_FILE)"
            )
    for cause in chain:
        if isinstance(cause, ssl.SSLError):
            return Transient(
                f"TLS handshake with {host} failed ({cause.reason or cause}): is the URL's scheme right (https vs http)?"
                + _proxy_hint()
            )
        if isinstance(cause, socket.gaierror):
            return Transient(f"cannot resolve {host} (DNS failure): check --server and this host's DNS" + _proxy_hint())
        if isinstance(cause, ConnectionRefusedError):
            return Transient(
                f"connection refused by {host}: check the port in --server and that the gateway is running" + _proxy_hint()
            )
    if isinstance(exc, httpx.TimeoutException):
        return Transient(
            f"timed out during {call} to {server}: a firewall or proxy may drop the connection" + _proxy_hint()
        )
    if isinstance(exc, httpx.RemoteProtocolError):
        return Transient(
            f"{server} closed the connection without an answer during {call}: is the URL's scheme right "
            "(https vs http), or does a proxy or load balancer in between drop it?" + _proxy_hint()
        )
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        if "Name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
            return Transient(f"cannot resolve {host} (DNS failure): check --server and this host's DNS")
        return Transient(f"cannot connect to {server}: {text or type(exc).__name__}" + _proxy_hint())
    return Transient(f"connection to {server} failed during {call}: {exc or type(exc).__name__}" + _proxy_hint())


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    if "json" not in response.headers.get("content-type", ""):
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _http_problem(response: httpx.Response, config: AgentConfig, call: str, *, command: bool) -> AgentProblem:
    status = response.status_code
    body = _problem_body(response)
    code = str(body.get("code") or "")
    detail = str(body.get("detail") or body.get("title") or "").strip()
    server = config.server_url
    if status == 426 or code == ErrorCode.UPGRADE_REQUIRED:
        return Fatal(
            f"this agent (version {AGENT_VERSION}) is too old for the gateway: {detail or 'upgrade metacloud-agent'}",
            EXIT_UPGRADE_REQUIRED,
        )
    if code == ErrorCode.TOKEN_EXPIRED:
        return Fatal(
            "the registration token has expired: re-issue it on the cluster's connect page and run the new command",
            EXIT_BAD_TOKEN,
        )
    if code == ErrorCode.TOKEN_INVALID or (status == 401 and call == "register"):
        return Fatal(
            "the registration token was not accepted (unknown, already used, or revoked): create a new one on the "
            "cluster's connect page and run the new command",
            EXIT_BAD_TOKEN,
        )
    if code == ErrorCode.CREDENTIAL_REVOKED:
        return Fatal(
            "the cluster was detached or its agent credential revoked: this agent stops; to connect it again, "
            "create a new registration token in Metacloud",
            EXIT_CREDENTIAL_REVOKED,
        )
    if code == ErrorCode.CREDENTIAL_INVALID or status == 401:
        return Fatal(
            "the gateway no longer accepts this agent's credential (the cluster may have been deleted or detached): "
            "this agent stops; to connect again, create a new registration token in Metacloud",
            EXIT_CREDENTIAL_REVOKED,
        )
    if status == 407:
        return Transient("the proxy asks for authentication (HTTP 407): put user:password in HTTPS_PROXY")
    if command and status in (404, 409, 410) and body:
        return CommandGone(f"the gateway no longer leases this command to us ({detail or status})")
    if status == 404 and not code:
        return Transient(
            f"{server} is not a Metacloud gateway (HTTP 404 for {response.request.url.path}): check --server"
        )
    if status == 429:
        retry = response.headers.get("retry-after", "")
        return Transient("the gateway is rate limiting this agent (HTTP 429)", float(retry) if retry.isdigit() else None)
    if status >= 500:
        return Transient(f"the gateway answered HTTP {status} during {call} (restarting or overloaded): retrying")
    return Transient(f"the gateway refused {call} (HTTP {status}{': ' + detail if detail else ''})")


class AgentClient:
    """The ``/agent/v1`` calls. ``credential`` is the per-cluster Bearer secret once registered."""

    def __init__(
        self,
        config: AgentConfig,
        http: httpx.AsyncClient | None = None,
        *,
        credential: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_clock_skew: Callable[[str | None], None] | None = None,
    ) -> None:
        self.config = config
        self.http = http if http is not None else build_http_client(config)
        self._owns_http = http is None
        self.credential = credential
        self.clock = clock
        self.on_clock_skew = on_clock_skew

    async def aclose(self) -> None:
        if self._owns_http:
            await self.http.aclose()

    def _headers(self, *, auth: bool) -> dict[str, str]:
        headers = {AGENT_VERSION_HEADER: AGENT_VERSION}
        if auth:
            if not self.credential:
                raise RuntimeError("no credential: register first")
            headers["Authorization"] = f"Bearer {self.credential}"
        return headers

    async def _send(
        self, method: str, path: str, call: str, *, body: Any = None, auth: bool = True,
        timeout: float | None = None, command: bool = False, absent: str | None = None,
    ) -> httpx.Response:
        """One call; a failure raised as an ``AgentProblem``. ``absent``: a 404 means the gateway lacks
        this call, and raises ``NotSupported`` with that line."""
        headers = self._headers(auth=auth)
        content = None
        if body is not None:
            content = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=10.0)
        try:
            response = await self.http.request(
                method, f"{self.config.server_url}/agent/v1{path}", content=content, headers=headers, **extra
            )
        except httpx.TransportError as exc:
            raise _transport_problem(exc, self.config, call) from exc
        if response.is_success:
            return response
        if absent is not None and response.status_code == 404:
            raise NotSupported(absent)
        raise _http_problem(response, self.config, call, command=command)

    def _decode(self, response: httpx.Response, kind: type[T], call: str) -> T:
        try:
            return msgspec.json.decode(response.content, type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            ctype = response.headers.get("content-type", "?")
            raise Transient(
                f"the answer to {call} from {self.config.server_url} is not a Metacloud gateway's ({ctype}): "
                f"check --server and any proxy in between"
            ) from exc

    def _check_clock(self, server_time: datetime | None) -> None:
        if server_time is not None and self.on_clock_skew is not None:
            self.on_clock_skew(clock_skew_line(server_time, self.clock()))

    async def register(self, request: RegisterRequest) -> RegisterResponse:
        response = await self._send("POST", "/register", "register", body=request, auth=False)
        answer = self._decode(response, RegisterResponse, "register")
        self._check_clock(answer.server_time)
        return answer

    async def heartbeat(self, beat: Heartbeat) -> HeartbeatResponse:
        response = await self._send("POST", "/heartbeat", "heartbeat", body=beat)
        answer = self._decode(response, HeartbeatResponse, "heartbeat")
        self._check_clock(answer.server_time)
        return answer

    async def commands(self, wait_s: int) -> CommandBatch:
        # The read timeout must outlast the server's long poll.
        response = await self._send(
            "GET", f"/commands?wait={wait_s}", "command poll", timeout=wait_s + self.config.request_timeout_s
        )
        if response.status_code == 204 or not response.content:
            return CommandBatch()
        return self._decode(response, CommandBatch, "command poll")

    async def ack(self, command_id: str) -> None:
        await self._send("POST", f"/commands/{quote(command_id, safe='')}/ack", "command ack", command=True)

    async def result(self, command_id: str, result: CommandResult) -> None:
        await self._send("POST", f"/commands/{quote(command_id, safe='')}/result", "command result", body=result, command=True)

    async def job_reports(self, batch: JobReportBatch) -> JobReportAnswer:
        """``POST /job-reports``; ``NotSupported`` from a gateway that predates job reports (404)."""
        response = await self._send("POST", "/job-reports", "job report", body=batch, absent=(
            "the gateway does not take job reports (it is older than this agent): it asks for job status with "
            "commands instead"))
        return self._decode(response, JobReportAnswer, "job report")
