"""TLS trust against a real TLS listener with a self-signed certificate (no mocks in the handshake)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.agent import AgentConfig, Transient
from connectors.agent.client import AgentClient
from connectors.protocol import AGENT_VERSION, AgentFacts, RegisterRequest, RegisterResponse


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "gateway.pem", directory / "gateway.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
async def tls_gateway(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    body = msgspec.json.encode(RegisterResponse(cluster_id="cl_1", credential="mca_x"))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield f"https://localhost:{port}", cert
    server.close()
    await server.wait_closed()


async def _register(config: AgentConfig) -> RegisterResponse:
    client = AgentClient(config)
    try:
        return await client.register(RegisterRequest(token="t", facts=AgentFacts(runtime="local", agent_version=AGENT_VERSION)))
    finally:
        await client.aclose()


async def test_a_self_signed_gateway_is_refused_with_the_ca_file_hint_and_accepted_with_it(
    tls_gateway: tuple[str, Path],
) -> None:
    url, cert = tls_gateway
    with pytest.raises(Transient) as caught:
        await _register(AgentConfig(server_url=url))
    assert caught.value.line.startswith("TLS: cannot verify the certificate of localhost")
    assert "--ca-file" in caught.value.line

    answer = await _register(AgentConfig(server_url=url, ca_file=cert))
    assert answer.credential == "mca_x"
