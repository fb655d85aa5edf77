"""One clear line per problem users of other platforms struggle to diagnose; the backoff schedule."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from connectors.agent import AgentConfig, Transient, backoff_delay
from connectors.agent.client import AgentClient, clock_skew_line
from connectors.agent.config import ConfigError
from connectors.protocol import AGENT_VERSION, AgentFacts, RegisterRequest
from tests.connectors.agent.fakes import SERVER


def _cert_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    exc.verify_message = message
    return exc


def _raise(exc: Exception, cause: BaseException | None = None) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc from cause

    return handler


def _answer(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: response


async def _register_problem(handler: Callable[[httpx.Request], httpx.Response], **config: object) -> str:
    cfg = AgentConfig(server_url=SERVER, token="t", **config)  # type: ignore[arg-type]
    client = AgentClient(cfg, httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    with pytest.raises(Transient) as caught:
        await client.register(RegisterRequest(token="t", facts=AgentFacts(runtime="local", agent_version=AGENT_VERSION)))
    return caught.value.line


async def test_an_untrusted_certificate_says_to_pass_the_ca_file() -> None:
    line = await _register_problem(_raise(httpx.ConnectError("verify failed"), _cert_error("self-signed certificate")))
    assert line.startswith("TLS: cannot verify the certificate of gw.example.com (self-signed certificate)")
    assert "--ca-file /path/to/ca.pem" in line


async def test_a_ca_file_that_does_not_sign_the_certificate_is_named(tmp_path: Path) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("not really a CA")
    line = await _register_problem(
        _raise(httpx.ConnectError("verify failed"), _cert_error("unable to get local issuer certificate")), ca_file=ca
    )
    assert f"not signed by a CA in --ca-file {ca}" in line


async def test_an_expired_looking_certificate_hints_at_the_clock() -> None:
    line = await _register_problem(_raise(httpx.ConnectError("x"), _cert_error("certificate is not yet valid")))
    assert "this host's clock is wrong" in line


async def test_a_proxy_failure_points_at_https_proxy() -> None:
    line = await _register_problem(_raise(httpx.ProxyError("503 Service Unavailable")))
    assert "proxy error" in line and "HTTPS_PROXY" in line


async def test_a_proxy_asking_for_credentials_says_where_to_put_them() -> None:
    line = await _register_problem(_answer(httpx.Response(407)))
    assert "HTTP 407" in line and "HTTPS_PROXY" in line


async def test_a_dns_failure_names_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    line = await _register_problem(_raise(httpx.ConnectError("dns"), socket.gaierror(-2, "Name or service not known")))
    assert line == "cannot resolve gw.example.com (DNS failure): check --server and this host's DNS"


async def test_connection_errors_mention_the_proxy_in_use_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://bob:hunter2@proxy.corp:3128")
    line = await _register_problem(_raise(httpx.ConnectError("refused"), ConnectionRefusedError(111, "refused")))
    assert "http://proxy.corp:3128" in line and "hunter2" not in line


async def test_a_404_without_a_problem_body_means_this_is_not_a_metacloud_gateway() -> None:
    line = await _register_problem(_answer(httpx.Response(404, text="<html>nginx</html>")))
    assert line == f"{SERVER} is not a Metacloud gateway (HTTP 404 for /agent/v1/register): check --server"


async def test_an_html_page_instead_of_json_is_called_out() -> None:
    line = await _register_problem(_answer(httpx.Response(200, text="<html>captive portal</html>",
                                                          headers={"content-type": "text/html"})))
    assert "is not a Metacloud gateway's (text/html)" in line


async def test_a_gateway_outage_is_transient() -> None:
    line = await _register_problem(_answer(httpx.Response(503, text="upstream down")))
    assert "HTTP 503" in line and "retrying" in line


def test_clock_skew_is_only_reported_past_a_minute() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert clock_skew_line(now + timedelta(seconds=59), now) is None
    ahead = clock_skew_line(now - timedelta(seconds=90), now)
    assert ahead is not None and "90 s ahead of the gateway's" in ahead and "NTP" in ahead


def test_backoff_doubles_from_one_second_up_to_a_60_second_cap() -> None:
    ceilings = [backoff_delay(n, rand=lambda: 1.0) for n in range(9)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff_delay(40, rand=lambda: 1.0) == 60  # no overflow on long outages


def test_backoff_uses_full_jitter_below_the_ceiling() -> None:
    delays = [backoff_delay(5) for _ in range(200)]
    assert all(0 <= d <= 32 for d in delays)
    assert max(delays) - min(delays) > 10  # spread out, so a fleet does not reconnect in lockstep
    assert backoff_delay(3, rand=lambda: 0.5) == 4


@pytest.mark.parametrize(("url", "words"), [
    ("gw.example.com", "like https://"),
    ("ftp://gw.example.com", "like https://"),
    ("https://gw.example.com/app/clusters", "without a path"),
])
def test_a_wrong_server_setting_is_refused_with_an_example(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        AgentConfig(server_url=url)


def test_plain_http_is_flagged_only_when_it_leaves_the_host() -> None:
    assert AgentConfig(server_url="http://10.0.0.5:8000").plain_http_remote
    assert not AgentConfig(server_url="http://127.0.0.1:8000/").plain_http_remote
    assert AgentConfig(server_url="https://gw.example.com/").server_url == "https://gw.example.com"
